"""ActAdd "weddings" on SmolLM2: topic-word frequency and fluency of continuations of neutral
prompts, steered vs unsteered (issue 15's check).

The layer is chosen on the first 4 neutral prompts (tuning) by the largest wedding-word
frequency at coefficient 4; the whole coefficient curve is then reported on the other 12
prompts (held out), with bootstrap intervals over prompts and samples.

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

PLUS, MINUS = "I talk about weddings constantly", "I do not talk about weddings constantly"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--layers", default="4,8,12,16")
    ap.add_argument("--coeffs", default="1,2,4,8")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    tune, held_out = list(NEUTRAL_PROMPTS[:4]), list(NEUTRAL_PROMPTS[4:])
    kw = dict(topic="wedding", max_new_tokens=args.tokens, n_samples=args.samples, seed=0,
              progress=False)
    t0 = time.perf_counter()
    tuning = {}
    for layer in (int(x) for x in args.layers.split(",")):
        gb = generation_behaviour(model, tune, actadd(model, PLUS, MINUS, layer, 4.0), **kw)
        tuning[layer] = gb.runs[0].value("topic_frequency")
        print(f"tuning: layer {layer}: wedding-word frequency at c=4 {tuning[layer]:.4f}")
    layer = max(tuning, key=tuning.get)
    coeffs = [float(c) for c in args.coeffs.split(",")]
    gb = generation_behaviour(model, held_out,
                              lambda c: actadd(model, PLUS, MINUS, layer, c), coeffs,
                              level_name="ActAdd coefficient", label=f"actadd weddings L{layer}",
                              **kw)
    df = gb.to_dataframe()
    print(f"chosen layer {layer}; held-out prompts {len(held_out)} x {gb.settings['n_samples']} "
          f"samples x {args.tokens} tokens; {time.perf_counter() - t0:.0f} s")
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
