"""Cost of circuit work, as ratios measured in one run on one machine:

- EAP scores of a batch / one forward+backward pass of the same batch (target <= 3);
- EAP-IG (5 steps) / one forward+backward pass;
- evaluating an edge circuit (counterfactual ablation of every edge outside the circuit,
  corrupted activations stored once beforehand) / a plain forward pass (target <= 1.5);
- the same for removing a circuit's edges (mean ablation inside it).

    python scripts/performance/circuits.py --model smollm2 --examples 16 --repeats 5 \
        --markdown docs/generated/circuit_cost.md

Timings are the best of ``--repeats`` runs each, interleaved. ``--markdown`` writes the table
that the docs' performance page includes (regenerate it, do not edit it).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from tl_unlearn import load_model
from tl_unlearn.circuits.attribution import edge_attribution
from tl_unlearn.circuits.edge_ablation import edge_ablation, prepare_edge_values
from tl_unlearn.circuits.faithfulness import random_scores
from tl_unlearn.data.tasks import ioi_task
from tl_unlearn.engine.scoring import answer_logit_diff
from tl_unlearn.interventions.counterfactual import counterfactual_pair


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
    ap.add_argument("--markdown", help="also write the table to this markdown file")
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    targets = {"EAP": "<= 3 forward+backward"}
    lines = [
        f"`python scripts/performance/circuits.py --model {args.model} --examples {n} "
        f"--repeats {args.repeats}`: {n} IOI pairs of {tokens.shape[1]} tokens, "
        f"{scores.n_real_edges:,} edges; the best of {args.repeats} interleaved runs of each "
        f"job; peak RSS {peak:.2f} GB. Evaluating an edge circuit has the target <= 1.5 "
        "forward passes.",
        "",
        "| job | seconds | / forward | / forward+backward | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, t in times.items():
        lines.append(
            f"| {name} | {t:.3f} | {t / fwd:.2f} | {t / fb:.2f} | {targets.get(name, '')} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    print(json.dumps({"times": times, "peak_rss_gb": peak}))
    if args.markdown:
        from tl_unlearn.core.files import atomic_write_text

        atomic_write_text(
            args.markdown, "<!-- written by scripts/performance/circuits.py -->\n" + table
        )


if __name__ == "__main__":
    main()
