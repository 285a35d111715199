"""ActAdd "weddings" on SmolLM2: topic-word frequency and fluency of continuations of neutral
prompts, steered vs unsteered (issue 15's check).

The layer and the prompt pair are chosen on the first 4 neutral prompts (tuning): the largest
wedding-word frequency over a grid of layers and coefficients, among settings whose
continuations stay within 4x the unsteered perplexity. The whole coefficient curve at the
chosen layer is then reported on the other 12 prompts (held out), with bootstrap intervals
over prompts and samples.

    python scripts/generation_wedding.py [--json out.json] [--samples 4] [--tokens 24]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tl_unlearn import load_model
from tl_unlearn.interventions import actadd
from tl_unlearn.metrics.generation import NEUTRAL_PROMPTS, generation_behaviour

PAIRS = [("I talk about weddings constantly", "I do not talk about weddings constantly"),
         (" weddings", " ")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--layers", default="2,4,6,8,12")
    ap.add_argument("--tune-coeffs", default="4,8,16")
    ap.add_argument("--coeffs", default="1,2,4,8,16")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    tune, held_out = list(NEUTRAL_PROMPTS[:4]), list(NEUTRAL_PROMPTS[4:])
    kw = dict(topic="wedding", max_new_tokens=args.tokens, n_samples=args.samples, seed=0,
              progress=False)
    t0 = time.perf_counter()
    tuning = {}
    tune_coeffs = [float(c) for c in args.tune_coeffs.split(",")]
    for pair in PAIRS:
        for layer in (int(x) for x in args.layers.split(",")):
            gb = generation_behaviour(model, tune, lambda c, l=layer, p=pair: actadd(
                model, *p, l, c), tune_coeffs, **kw)
            base = gb.original.value("fluency_perplexity")
            for run in gb.runs:
                freq = run.value("topic_frequency")
                ratio = run.value("fluency_perplexity") / base
                tuning[f"{pair[0].strip()}|L{layer}|c={run.level:g}"] = (freq, ratio)
                print(f"tuning: {pair[0]!r} L{layer} c={run.level:g}: wedding {freq:.4f}, "
                      f"ppl ratio {ratio:.2f} (unsteered wedding "
                      f"{gb.original.value('topic_frequency'):.4f})", flush=True)
    ok = {k: v for k, v in tuning.items() if v[1] <= 4.0}
    best = max(ok or tuning, key=lambda k: (ok or tuning)[k][0])
    plus = next(p for p in PAIRS if p[0].strip() == best.split("|")[0])
    layer = int(best.split("|")[1][1:])
    PLUS, MINUS = plus
    coeffs = [float(c) for c in args.coeffs.split(",")]
    gb = generation_behaviour(model, held_out,
                              lambda c: actadd(model, PLUS, MINUS, layer, c), coeffs,
                              level_name="ActAdd coefficient", label=f"actadd weddings L{layer}",
                              **kw)
    df = gb.to_dataframe()
    print(f"chosen {best}; pair {PLUS!r} - {MINUS!r}; held-out prompts {len(held_out)} x {gb.settings['n_samples']} "
          f"samples x {args.tokens} tokens; {time.perf_counter() - t0:.0f} s")
    df["label"] = df["label"].str.slice(0, 12)
    for m in ("topic_frequency", "fluency_perplexity", "repetition", "distinct_2"):
        print(f"\n{m}")
        print(df[df.metric == m].drop(columns="metric").to_string(index=False,
                                                                  float_format="{:.4f}".format))
    for r in gb.samples(2):
        print(f"[{r['label']}] {r['prompt']!r} -> {r['continuation']!r}")
    if args.json:
        gb.save(args.json)
        with open(args.json + ".tuning.json", "w") as fh:
            json.dump(tuning, fh)


if __name__ == "__main__":
    main()
