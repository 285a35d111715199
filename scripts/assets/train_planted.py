"""Train the planted-circuit models and their retrained twins, verify them, commit them.

    python scripts/assets/train_planted.py                       # every model and twin
    python scripts/assets/train_planted.py --only planted-induction --markdown docs/generated

Each model is trained from its seed (``tl_unlearn.models.planted.PLANTED``), verified by
ablating every subset of its components (``verify_planted``), and written with its training
log (steps, losses, wall time and the metrics a retrain must reproduce) to
``tl_unlearn/assets/planted/<name>`` and ``<name>-twin``. A model whose verification fails is
not written (the script exits 1).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

import torch

from tl_unlearn.circuits.ground_truth import reproduction_metrics, verify_planted
from tl_unlearn.models.planted import (
    PLANTED,
    PLANTED_DIR,
    load_planted,
    save_planted,
    train_planted,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=list(PLANTED), choices=list(PLANTED))
    ap.add_argument(
        "--markdown", help="also write each model's table to <this folder>/planted-<name>.md"
    )
    ap.add_argument("--dry-run", action="store_true", help="train and verify, write nothing")
    ap.add_argument(
        "--verify-only",
        action="store_true",
        help="verify the committed weights (and rewrite their tables), no training",
    )
    args = ap.parse_args()
    failed = False
    for name in args.only:
        spec = PLANTED[name]
        if args.verify_only:
            model, twin = load_planted(name), load_planted(name, twin=True)
            log, twin_log = (
                json.loads((PLANTED_DIR / f / "train_log.json").read_text())
                for f in (name, f"{name}-twin")
            )
        else:
            twin, twin_log = train_planted(spec, twin=True)
            model, log = train_planted(spec, init=twin)
        ver = verify_planted(spec, model)
        log["metrics"] = reproduction_metrics(spec, model)
        twin_log["metrics"] = reproduction_metrics(spec, twin)
        print(name, json.dumps({"train_s": log["seconds"], "twin_s": twin_log["seconds"]}))
        print(ver.to_markdown())
        print("twin", json.dumps(twin_log["metrics"]))
        failed |= not ver.holds
        if ver.holds and not (args.dry_run or args.verify_only):
            save_planted(model, log, PLANTED_DIR / name)
            save_planted(twin, twin_log, PLANTED_DIR / f"{name}-twin")
        section = [
            f"**{name}** (C = {', '.join(spec.circuit_nodes)}; {len(spec.components)} "
            f"components, {2 ** len(spec.components)} subsets ablated; chance "
            f"{spec.chance:.4f}). Training: the twin (R, and F prompts without answers), {spec.twin_steps} steps in "
            f"{twin_log['seconds']:.0f} s, then the planted model from it, {spec.steps} "
            f"steps in {log['seconds']:.0f} s, on "
            f"{torch.get_num_threads()} CPU threads; peak RSS so far "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB. The twin's "
            f"forget top-1: {twin_log['metrics']['clean forget']:.4f}, retain top-1: "
            f"{twin_log['metrics']['clean retain']:.4f}.",
            "",
            ver.to_markdown(),
        ]
        if args.markdown and ver.holds and not args.dry_run:
            from tl_unlearn.core.files import atomic_write_text

            atomic_write_text(
                f"{args.markdown}/planted-{name}.md",
                "<!-- written by scripts/assets/train_planted.py -->\n" + "\n".join(section),
            )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
