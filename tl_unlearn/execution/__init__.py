"""Execution: units of work run in this process or on Ray actors, sharded and resumable.

- :mod:`~tl_unlearn.execution.units`: units (small JSON specs) and shards of the data.
- :mod:`~tl_unlearn.execution.executors`: :class:`Execution` (where units run), the
  in-process and Ray executors.
- :mod:`~tl_unlearn.execution.run_folder`: run folders and resume (:class:`RunFolder`,
  :class:`UnitRunner`).

What runs is defined above this layer: the benchmark's units
(:mod:`tl_unlearn.benchmark.units`) and the component-map and attribution jobs
(:mod:`tl_unlearn.benchmark.jobs`).
"""

from tl_unlearn.execution.executors import Execution

__all__ = ["Execution"]
