"""Cost of circuit work, as ratios measured in one run on one machine:

- EAP scores of a batch / one forward+backward pass of the same batch (target <= 3);
- EAP-IG (5 steps) / one forward+backward pass;
- evaluating an edge circuit (counterfactual ablation of every edge outside the circuit,
  corrupted activations stored once beforehand) / a plain forward pass (target <= 1.5);
- the same for removing a circuit's edges (mean ablation inside it).

    python scripts/benchmark_circuits.py --model smollm2 --examples 16 --repeats 3

Timings are the best of ``--repeats`` runs each, interleaved.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from tl_unlearn import load_model
from tl_unlearn.attribution import answer_logit_diff, edge_attribution
from tl_unlearn.edges import edge_ablation, prepare_edge_values
from tl_unlearn.faithfulness import random_scores
from tl_unlearn.interventions.counterfactual import counterfactual_pair
from tl_unlearn.tasks import ioi_task


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.01, help="edges kept / removed")
    args = ap.parse_args()
    model = load_model(args.model)
    for p in model.parameters():
        p.requires_grad_(False)
    clean, corrupted = counterfactual_pair(
        ioi_task(model.tokenizer), model.tokenizer, max_examples=args.examples
    )
    n = len(clean)
    tokens = clean.tokens

    def forward() -> None:
        with torch.no_grad():
            answer_logit_diff(model(tokens), clean)

    def forward_backward() -> None:
        emb = {}

        def leaf(acts, hook):
            emb["x"] = acts.detach().requires_grad_(True)
            return emb["x"]

        with model.hooks(fwd_hooks=[("hook_embed", leaf)]):
            answer_logit_diff(model(tokens), clean).sum().backward()

    scores = edge_attribution(model, clean, corrupted, batch_size=n)
    k = max(1, round(args.fraction * scores.n_real_edges))
    keep = scores.top(k)
    cf = prepare_edge_values(
        model, "counterfactual", clean=clean, corrupted=corrupted, batch_size=n
    )
    mean = prepare_edge_values(model, "mean", reference=corrupted, batch_size=n)
    outside = edge_ablation(model, keep, prepared=cf)
    inside = edge_ablation(
        model, random_scores(scores, 0).top(k), "mean", ablate="inside", prepared=mean
    )

    def run_with(iv):
        def go() -> None:
            with torch.no_grad(), iv.applied(model):
                answer_logit_diff(model(tokens), clean)

        return go

    jobs = {
        "forward": forward,
        "forward+backward": forward_backward,
        "EAP": lambda: edge_attribution(model, clean, corrupted, batch_size=n),
        "EAP-IG (5 steps)": lambda: edge_attribution(
            model, clean, corrupted, method="eap-ig", steps=5, batch_size=n
        ),
        f"edge circuit kept ({k} edges, counterfactual outside)": run_with(outside),
        f"edge circuit removed ({k} edges, mean inside)": run_with(inside),
    }
    for job in jobs.values():  # warm-up
        job()
    times = {name: float("inf") for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            times[name] = min(times[name], best(job, 1))
    fwd, fb = times["forward"], times["forward+backward"]
    print(
        f"{args.model}: {n} IOI examples, {tokens.shape[1]} positions, "
        f"{scores.n_real_edges} edges; best of {args.repeats}"
    )
    print("| job | seconds | / forward | / forward+backward |")
    print("| --- | --- | --- | --- |")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {t / fwd:.2f} | {t / fb:.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak RSS {peak:.2f} GB")
    print(json.dumps({"times": times, "peak_rss_gb": peak}))


if __name__ == "__main__":
    main()
