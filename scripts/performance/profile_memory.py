"""Peak resident memory of each phase of a benchmark run (issue 13: profile, don't guess).

A thread samples the process's RSS every 2 ms; each benchmark phase (model load, evaluation,
each method's fit and sweep, extra metrics, generation) prints the RSS before it, its own
peak and the RSS after it, nested phases indented.

    python scripts/performance/profile_memory.py                      # the default run on SmolLM2
    python scripts/performance/profile_memory.py '{"model": "tiny"}'  # BenchmarkConfig fields as JSON
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time

import psutil
import torch

import tl_unlearn.benchmark.runner as bench
import tl_unlearn.metrics.distances  # noqa: F401  (the modules, not their functions)
import tl_unlearn.metrics.relearning  # noqa: F401
import tl_unlearn.models.loading as models

PROC = psutil.Process()
STATE = {"peak": 0, "depth": 0}


def _sample() -> None:
    while True:
        STATE["peak"] = max(STATE["peak"], PROC.memory_info().rss)
        time.sleep(0.002)


def _wrap(module, name: str) -> None:
    fn = getattr(module, name)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        before = PROC.memory_info().rss
        outer, STATE["peak"] = STATE["peak"], before
        t0 = time.perf_counter()
        STATE["depth"] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            STATE["depth"] -= 1
            print(
                f"{'  ' * STATE['depth']}{name}: before {before / 1e9:.2f} GB, peak "
                f"{STATE['peak'] / 1e9:.2f} GB, after {PROC.memory_info().rss / 1e9:.2f} GB, "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            STATE["peak"] = max(outer, STATE["peak"])

    setattr(module, name, wrapped)


def main() -> None:
    torch.set_num_threads(2)
    threading.Thread(target=_sample, daemon=True).start()
    for name in (
        "fit_method",
        "selectivity_curve",
        "evaluate",
        "output_distances_many",
        "random_baselines",
        "membership_inference",
        "logit_lens_diff",
        "activation_distances",
        "_generation",
        "degree_of_removal",
    ):
        _wrap(bench, name)
    _wrap(models, "load_model")
    relearn = sys.modules["tl_unlearn.metrics.relearning"]  # the package exports a function too
    for name in ("relearn", "zrf_scores", "completeness"):  # inside degree_of_removal
        _wrap(relearn, name)
    _wrap(sys.modules["tl_unlearn.metrics.distances"], "random_twin")
    cfg = bench.BenchmarkConfig(**json.loads(sys.argv[1])) if len(sys.argv) > 1 else None
    result = bench.run_benchmark(cfg, output_dir=None, progress=False)
    print(
        f"whole run: peak RSS {STATE['peak'] / 1e9:.2f} GB, {result.timings['total']:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
