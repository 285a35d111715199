"""Run the ground-truth tier (every method on the planted models) and write its table.

    python scripts/docs_tables/ground_truth_tier.py --markdown docs/generated/ground-truth-tier.md

The same run as ``tl-unlearn run --config ground-truth``; this script adds the wall time and
peak RSS of the whole process (imports included) to the table.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

T0 = time.perf_counter()

from tl_unlearn.benchmark.tier import run_ground_truth_tier  # noqa: E402
from tl_unlearn.core.files import atomic_write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", help="write the table here")
    ap.add_argument("--output", help="also write results.json and the reports in this folder")
    args = ap.parse_args()
    tier = run_ground_truth_tier(progress=False)
    wall = time.perf_counter() - T0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    s = tier.settings
    text = (
        tier.to_markdown()
        + "\n\n"
        + f"Settings: {s['fits']} fit samples of {s['n_fit']} sequences per task, "
        f"{s['n_eval']} evaluation sequences per task, {s['baseline_seeds']} random baselines "
        f"per method, seed {s['seed']}. Skipped: "
        + "; ".join(f"{m}: {', '.join(v)}" for m, v in s["skipped"].items() if v)
        + f". Wall time {wall:.0f} s (the tier itself {tier.seconds:.0f} s) on "
        f"{torch.get_num_threads()} CPU threads; peak RSS {rss:.2f} GB."
    )
    print(text)
    if args.output:
        tier.write(args.output)
    if args.markdown:
        atomic_write_text(Path(args.markdown), text + "\n")


if __name__ == "__main__":
    main()
