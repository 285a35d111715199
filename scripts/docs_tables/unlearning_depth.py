"""Unlearning depth (UDS) of removal against suppression, and how fast relearning undoes each.

    python scripts/docs_tables/unlearning_depth.py --markdown docs/generated/depth.md

1. On each planted model (its twin never saw an F answer): UDS of mean-ablating the circuit
   C, each component of C alone, two heads outside C, and a suppression (the last residual
   pushed away from the F tokens' unembedding: the outputs lose F, every earlier layer keeps
   it), with each one's forget top-1.
2. Relearning: fine-tune every weight on F with the intervention held (AdamW, lr 1e-3) until
   half of the forget drop is won back; steps over 3 seeds, C ablation against suppression.
3. The tiny model with its twin (trained on the retain corpus only): UDS of five
   interventions on held-out Python code.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from tl_unlearn.metrics.depth import unlearning_depth
from tl_unlearn.metrics.relearning import relearn
from tl_unlearn.models.planted import (
    PLANTED,
    _ablation_hooks,
    component_means,
    load_planted,
    planted_data,
    suppression_hooks,
    task_accuracy,
)


def planted_rows(name: str, n: int, seeds: int, steps: int) -> tuple[list[str], list[str]]:
    spec = PLANTED[name]
    model, twin = load_planted(name), load_planted(name, twin=True)
    data = planted_data(spec, n, seed=3_000_001)
    ref = planted_data(spec, n, seed=3_000_002)
    means = component_means(model, torch.cat([ref["forget"].tokens, ref["retain"].tokens]))
    outside = [c for c in spec.components if c not in spec.circuit_nodes and c.startswith("a")]
    rng = np.random.default_rng(0)
    two = sorted(rng.choice(outside, 2, replace=False).tolist())
    interventions = {
        f"C ablated ({', '.join(spec.circuit_nodes)})": _ablation_hooks(
            list(spec.circuit_nodes), means
        ),
        **{f"{c} ablated alone": _ablation_hooks([c], means) for c in spec.circuit_nodes},
        f"two heads outside C ({', '.join(two)})": _ablation_hooks(two, means),
        "suppression (last residual pushed off the F tokens, R kept)": suppression_hooks(
            model, spec
        ),
    }
    rows = []
    for label, hooks in interventions.items():
        d = unlearning_depth(model, data["forget"], hooks, twin, label=label)
        with model.hooks(fwd_hooks=hooks):
            acc = task_accuracy(model, data)
        rows.append(
            f"| {name} | {label} | {acc['forget']:.3f} | {acc['retain']:.3f} | {d.interval} |"
        )
    twin_acc = task_accuracy(twin, data)
    rows.append(
        f"| {name} | the twin itself | {twin_acc['forget']:.3f} | {twin_acc['retain']:.3f} "
        f"| {unlearning_depth(model, data['forget'], twin, twin).interval} |"
    )
    fit = planted_data(spec, 256, seed=3_000_003)["forget"]
    relearn_rows = []
    for label in (
        f"C ablated ({', '.join(spec.circuit_nodes)})",
        next(iter(reversed(interventions))),
    ):
        runs = [
            relearn(
                model,
                fit,
                data["forget"],
                interventions[label],
                recover=0.5,
                lr=1e-3,
                max_steps=steps,
                eval_every=5,
                batch_size=16,
                seed=s,
                label=label,
            )  # fmt: skip
            for s in range(seeds)
        ]
        taken = [r.steps if r.reached else float("inf") for r in runs]
        relearn_rows.append(
            f"| {name} | {label} | {runs[0].curve[0][1]:.3f} | "
            + ", ".join(
                "not in " + str(steps) if not np.isfinite(t) else str(int(t)) for t in taken
            )
            + " |"
        )
    return rows, relearn_rows


def tiny_rows(tokens: int) -> list[str]:
    from tl_unlearn import actadd, load_tiny_model, make_task, pruning_scores
    from tl_unlearn.circuits.maps import component_intervention
    from tl_unlearn.interventions import zero_ablation
    from tl_unlearn.metrics.evaluation import evaluate

    model, twin = load_tiny_model(), load_tiny_model(twin=True)
    fit = make_task().tokenize(model.tokenizer, "fit", seq_len=64, max_tokens=tokens)
    ev = make_task().tokenize(model.tokenizer, "eval", seq_len=64, max_tokens=tokens)
    ps = pruning_scores(model, fit["forget"], fit["retain"])
    interventions = {
        "prune-abs, 5% of MLP neurons": ps.intervention(0.05),
        "random MLP neurons, 5%": ps.rescored("random", seed=1).intervention(0.05),
        "heads L1H0 + L1H1 mean-ablated": component_intervention(
            model, [(1, 0), (1, 1)], "mean", reference=fit["retain"]
        ),
        "MLP 1 zero-ablated": zero_ablation(model, hook_points=["blocks.1.hook_mlp_out"]),
        "actadd 'def' - 'The', layer 1, c = 4": actadd(model, "def", "The", layer=1, coeff=4.0),
    }
    rows = []
    base = evaluate(model, ev, progress=False)
    for label, iv in interventions.items():
        d = unlearning_depth(model, ev["forget"], iv, twin, label=label)
        e = evaluate(model, ev, iv, progress=False)
        rows.append(
            f"| {label} | {base['forget'].accuracy[1] - e['forget'].accuracy[1]:+.3f} "
            f"| {base['retain'].accuracy[1] - e['retain'].accuracy[1]:+.3f} | {d.interval} |"
        )
    d = unlearning_depth(model, twin, twin, ev["forget"], label="twin")
    rows.append(f"| the twin itself | | | {d.interval} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=256, help="forget examples per planted model")
    ap.add_argument("--seeds", type=int, default=3, help="relearning seeds")
    ap.add_argument("--steps", type=int, default=300, help="relearning step budget")
    ap.add_argument("--tiny-tokens", type=int, default=8000, help="tokens per side, tiny model")
    ap.add_argument("--markdown", help="write the tables to this file")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    depth, again = [], []
    for name in PLANTED:
        rows, relearn_rows = planted_rows(name, args.examples, args.seeds, args.steps)
        depth += rows
        again += relearn_rows
    tiny = tiny_rows(args.tiny_tokens)
    text = "\n".join(
        [
            f"Planted models ({args.examples} held-out forget examples; UDS with a 95% "
            "bootstrap interval over examples):",
            "",
            "| model | intervention | forget top-1 | retain top-1 | UDS |",
            "| --- | --- | --- | --- | --- |",
            *depth,
            "",
            f"Relearning with the intervention held (every weight, AdamW lr 1e-3, 16 "
            f"sequences a step): steps until half of the forget drop is won back, "
            f"{args.seeds} seeds, budget {args.steps} steps:",
            "",
            "| model | intervention | forget top-1 at step 0 | steps (per seed) |",
            "| --- | --- | --- | --- |",
            *again,
            "",
            f"Tiny model and its retrained twin (held-out Python code, {args.tiny_tokens} "
            "tokens per side, sequences of 64):",
            "",
            "| intervention | forget top-1 drop | retain top-1 drop | UDS |",
            "| --- | --- | --- | --- |",
            *tiny,
            "",
            f"Wall time {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} CPU "
            f"threads; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB.",
        ]
    )
    print(text)
    if args.markdown:
        from pathlib import Path

        from tl_unlearn.core.files import atomic_write_text

        atomic_write_text(Path(args.markdown), text + "\n")


if __name__ == "__main__":
    main()
