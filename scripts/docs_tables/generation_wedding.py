"""ActAdd "weddings" on SmolLM2: topic-word frequency and fluency of continuations of neutral
prompts, steered vs unsteered (issue 15's check).

The layer, the coefficient and the injection (``front``: the paper's per-position difference
at the prompt's first positions; ``all``: the mean difference at every position) are chosen on
the first 4 neutral prompts (tuning): the largest wedding-word frequency over a grid of layers
and coefficients (by default with greedy decoding: one continuation per prompt, which shows
the steering without sampling noise; ``--samples N`` samples N per prompt at temperature 1).
The prompt pair (a wedding sentence minus a weather sentence of the same shape) came from
greedy probes on the same 4 prompts. The whole coefficient curve of the chosen injection and
layer is then reported on the other 47 prompts (held out), with bootstrap intervals over
prompts and samples.

    python scripts/docs_tables/generation_wedding.py [--json out.json] [--samples 4] [--tokens 24]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tl_unlearn import load_model
from tl_unlearn.interventions import actadd
from tl_unlearn.metrics.generation import NEUTRAL_PROMPTS, generation_behaviour

PAIR = (
    "The wedding was lovely: the bride and groom were married at the ceremony",
    "The weather was lovely: the sun and sky were clear at the beach",
)
MODES = ("front", "all")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument(
        "--samples",
        type=int,
        default=0,
        help="sampled continuations per prompt (0: one greedy continuation)",
    )
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--layers", default="1,2,4")
    ap.add_argument("--tune-coeffs", default="1,4")
    ap.add_argument(
        "--all-coeffs", default="0.5,1", help="tuning coefficients of the all-positions injection"
    )
    ap.add_argument("--coeffs", default="0.25,0.5,1,2,4")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    tune, held_out = list(NEUTRAL_PROMPTS[:4]), list(NEUTRAL_PROMPTS[4:])
    kw = dict(
        topic="wedding",
        max_new_tokens=args.tokens,
        n_samples=max(1, args.samples),
        greedy=args.samples == 0,
        seed=0,
        progress=False,
    )
    t0 = time.perf_counter()
    tuning = {}
    grids = {
        "front": [float(c) for c in args.tune_coeffs.split(",")],
        "all": [float(c) for c in args.all_coeffs.split(",")],
    }
    for mode in MODES:
        for layer in (int(x) for x in args.layers.split(",")):
            gb = generation_behaviour(
                model,
                tune,
                lambda c, l=layer, m=mode: actadd(model, *PAIR, l, c, positions=m),
                grids[mode],
                **kw,
            )
            base = gb.original.value("fluency_perplexity")
            for run in gb.runs:
                freq = run.value("topic_frequency")
                ratio = run.value("fluency_perplexity") / base
                tuning[f"{mode}|{layer}|{run.level:g}"] = (freq, ratio)
                print(
                    f"tuning: {mode} L{layer} c={run.level:g}: wedding {freq:.4f}, ppl ratio "
                    f"{ratio:.2f} (unsteered wedding "
                    f"{gb.original.value('topic_frequency'):.4f})",
                    flush=True,
                )
    best = max(tuning, key=lambda k: tuning[k][0])
    mode, layer, _ = best.split("|")
    PLUS, MINUS = PAIR
    layer = int(layer)
    coeffs = [float(c) for c in args.coeffs.split(",")]
    gb = generation_behaviour(
        model,
        held_out,
        lambda c: actadd(model, PLUS, MINUS, layer, c, positions=mode),
        coeffs,
        level_name="ActAdd coefficient",
        label=f"actadd weddings L{layer} {mode}",
        **kw,
    )
    df = gb.to_dataframe()
    print(
        f"chosen: {mode} positions, layer {layer}, pair {PLUS!r} - {MINUS!r}; held-out "
        f"prompts {len(held_out)} x {gb.settings['n_samples']} samples x {args.tokens} "
        f"tokens; {time.perf_counter() - t0:.0f} s"
    )
    df["label"] = df["label"].str.slice(0, 12)
    for m in ("topic_frequency", "fluency_perplexity", "repetition", "distinct_2"):
        print(f"\n{m}")
        print(
            df[df.metric == m]
            .drop(columns="metric")
            .to_string(index=False, float_format="{:.4f}".format)
        )
    for r in gb.samples(2):
        print(f"[{r['label']}] {r['prompt']!r} -> {r['continuation']!r}")
    if args.json:
        gb.save(args.json)
        with open(args.json + ".tuning.json", "w") as fh:
            json.dump(tuning, fh)


if __name__ == "__main__":
    main()
