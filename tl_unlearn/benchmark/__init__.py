"""The benchmark: every method swept on a forget/retain task, against random baselines, with
an HTML report.

- :mod:`~tl_unlearn.benchmark.config`: :class:`BenchmarkConfig` (checked whole before any work)
  and the presets.
- :mod:`~tl_unlearn.benchmark.result`: :class:`BenchmarkResult`.
- :mod:`~tl_unlearn.benchmark.runner`: :func:`run_benchmark`.
- :mod:`~tl_unlearn.benchmark.units`: the benchmark as units of work.
- :mod:`~tl_unlearn.benchmark.jobs`: the component-map and attribution jobs.
- :mod:`~tl_unlearn.benchmark.methods`: the methods, one module per family, and their registry.
- :mod:`~tl_unlearn.benchmark.report`: the HTML report.
- :mod:`~tl_unlearn.benchmark.tier`: the ground-truth tier on the planted models.
"""

from tl_unlearn.benchmark.config import BenchmarkConfig
from tl_unlearn.benchmark.result import BenchmarkResult
from tl_unlearn.benchmark.runner import run_benchmark

__all__ = ["BenchmarkConfig", "BenchmarkResult", "run_benchmark"]
