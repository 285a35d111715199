"""Units of work that travel: a sweep as JSON specs, run in-process or on a Ray cluster.

A sweep is cut into **units**: small JSON-serialisable specs (which component to ablate, on
which shard of the data). A **worker** rebuilds everything it needs from the job's spec once
(the model, the data, the ablation means, the clean baseline) and evaluates units; it returns
an :class:`~tl_unlearn.metrics.evaluation.Evaluation` with its per-sequence statistics, as a
dict. The same worker code runs in every executor:

- ``executor="inprocess"`` (the default): one worker in this process;
- ``executor="ray"``: one worker per Ray actor (``ray.init(address)``, or a local cluster
  when no address is given), each with its threads set explicitly (Ray gives an actor one
  by default). A unit whose actor dies is retried on a new actor.

Results are merged in a fixed order (by component, shards in order) from the per-sequence
statistics, so every executor gives the same metrics and, for the same seed, the same
bootstrap intervals. With a ``run_dir``, each finished unit is written there atomically;
``resume=True`` reads the finished ones back and computes only the rest.

This first version distributes **component maps** (every head / MLP ablated alone: the
sweep that outgrows one process first on a real model). Ray is an optional dependency:
``pip install 'tl_unlearn[ray]'``.

Examples:
    >>> job = MapJob(model="tiny", tokens=400, seq_len=32, shards=2)
    >>> units = job.units((2, 4, False))  # (n_layers, n_heads, attn_only) of the tiny model
    >>> len(units), units[0].to_dict()
    (18, {'component': None, 'shard': 0})
    >>> cmap = component_map_job(job, progress=False)
    >>> len(cmap.components)
    8
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "EXECUTORS",
    "MapJob",
    "Unit",
    "Worker",
    "component_map_job",
    "merge_evaluations",
]

EXECUTORS = ("inprocess", "ray")


@dataclass(frozen=True)
class Unit:
    """One unit of work: ablate ``component`` (``None``: the original model) on one shard.

    Examples:
        >>> Unit.from_dict(Unit((1, 2), 0).to_dict()) == Unit((1, 2), 0)
        True
    """

    component: tuple[int, int | None] | None
    shard: int

    @property
    def key(self) -> str:
        """A file name for the unit's result."""
        c = (
            "original"
            if self.component is None
            else f"L{self.component[0]}"
            + ("mlp" if self.component[1] is None else f"H{self.component[1]}")
        )
        return f"{c}-shard{self.shard}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": None if self.component is None else list(self.component),
            "shard": self.shard,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        c = d["component"]
        return cls(
            None if c is None else (int(c[0]), None if c[1] is None else int(c[1])), int(d["shard"])
        )


@dataclass(frozen=True)
class MapJob:
    """Everything a worker needs to rebuild a component map's state (JSON-serialisable).

    Attributes:
        model: ``"tiny"``, ``"smollm2"``, a planted model name or a TransformerLens name.
        forget: Forget corpus or task (the benchmark's names).
        retain: Retain corpus or task.
        components: ``"heads"``, ``"mlp"`` or ``"both"``.
        method: ``"zero"`` or ``"mean"`` (means over the retain fit split).
        tokens: Evaluation tokens per side.
        seq_len: Tokens per sequence.
        batch_size: Sequences per forward pass.
        seed: Seed of the data order.
        shards: Pieces each dataset is cut into (each is a unit of its own).
        threads: Torch threads per worker (0: leave as it is).
        device: Where each worker puts its model (``"cpu"``, ``"cuda"``).
    """

    model: str = "tiny"
    forget: str = "python_code"
    retain: str = "wikipedia"
    components: str = "heads"
    method: str = "zero"
    tokens: int = 2000
    seq_len: int = 64
    batch_size: int = 8
    seed: int = 0
    shards: int = 1
    threads: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.components not in ("heads", "mlp", "both"):
            raise ValueError(
                f"components must be 'heads', 'mlp' or 'both', got {self.components!r}."
            )
        if self.method not in ("zero", "mean"):
            raise ValueError(f"method must be 'zero' or 'mean', got {self.method!r}.")
        for name in ("tokens", "seq_len", "batch_size", "shards"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MapJob:
        return cls(**d)

    def component_list(self, n_layers: int, n_heads: int, attn_only: bool = False) -> list:
        """The components the map ablates, in order."""
        from tl_unlearn.circuits import component_list

        return component_list(n_layers, n_heads, self.components, attn_only=attn_only)

    def units(self, layout: tuple[int, int, bool]) -> list[Unit]:
        """The units of a model of ``layout`` (``(n_layers, n_heads, attn_only)``), in the
        fixed order results are merged in: the original model first, then each component;
        shards in order within each."""
        comps: list[Any] = [None, *self.component_list(*layout)]
        return [Unit(c, s) for c in comps for s in range(self.shards)]


class Worker:
    """Rebuilds a job's state once and evaluates its units (the code every executor runs).

    Args:
        job: The :class:`MapJob` as a dict.
    """

    def __init__(self, job: dict[str, Any]) -> None:
        import torch

        from tl_unlearn.circuits import component_means
        from tl_unlearn.models import load_model
        from tl_unlearn.tasks import make_task

        self.job = MapJob.from_dict(job)
        if self.job.threads:
            torch.set_num_threads(self.job.threads)
        self.model = load_model(self.job.model)
        if self.job.device != "cpu":
            self.model.to(self.job.device, print_details=False)
        task = make_task(self.job.forget, self.job.retain)
        kw = {"seq_len": self.job.seq_len, "max_tokens": self.job.tokens, "seed": self.job.seed}
        ev = task.tokenize(self.model.tokenizer, "eval", **kw)
        self.shards = [
            {name: d.rows(torch.as_tensor(part[name])) for name, d in ev.items()}
            for part in _shard_slices({n: len(d) for n, d in ev.items()}, self.job.shards)
        ]
        self.means = None
        if self.job.method == "mean":
            fit = task.tokenize(self.model.tokenizer, "fit", **kw)
            self.means = component_means(self.model, fit["retain"], self.job.batch_size)

    def run(self, unit: dict[str, Any]) -> dict[str, Any]:
        """Evaluate one unit; its :class:`Evaluation` as a dict."""
        from tl_unlearn.circuits import component_intervention
        from tl_unlearn.metrics.evaluation import evaluate

        u = Unit.from_dict(unit)
        hooks = (
            []
            if u.component is None
            else component_intervention(
                self.model, [u.component], self.job.method, means=self.means
            )
        )
        ev = evaluate(
            self.model,
            self.shards[u.shard],
            hooks,
            batch_size=self.job.batch_size,
            skip_common=0,  # common tokens are counted per dataset, not per shard
            progress=False,
        )
        return ev.to_dict()

    def layout(self) -> tuple[int, int, bool]:
        """``(n_layers, n_heads, attn_only)`` of the worker's model."""
        cfg = self.model.cfg
        return cfg.n_layers, cfg.n_heads, bool(cfg.attn_only)

    def pid(self) -> int:
        return os.getpid()


def _shard_slices(sizes: dict[str, int], shards: int) -> list[dict[str, np.ndarray]]:
    """Each dataset's sequences cut into ``shards`` contiguous pieces (in order)."""
    return [
        {name: part for name, part in zip(sizes, parts)}
        for parts in zip(*(np.array_split(np.arange(n), shards) for n in sizes.values()))
    ]


def merge_evaluations(parts: Sequence[Any], label: str = "") -> Any:
    """One evaluation from evaluations of consecutive pieces of the same datasets: the
    per-sequence statistics concatenated in order and every metric recomputed from them.

    Examples:
        >>> from tl_unlearn import DatasetMetrics, Evaluation
        >>> a = Evaluation({"f": DatasetMetrics("f", 2, 1.0, {1: 1.0}, units={"n": [2], "loss": [2], "top1": [2]})})
        >>> b = Evaluation({"f": DatasetMetrics("f", 2, 3.0, {1: 0.0}, units={"n": [2], "loss": [6], "top1": [0]})})
        >>> merge_evaluations([a, b])["f"].accuracy[1], merge_evaluations([a, b])["f"].loss
        (0.5, 2.0)
    """
    from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation

    if not parts:
        raise ValueError("Nothing to merge.")
    datasets = {}
    for name, first in parts[0].datasets.items():
        units: dict[str, list] = {k: [] for k in first.units}
        for p in parts:
            for k in units:
                units[k] += list(p.datasets[name].units[k])
        n = len(units.get("n", []))
        whole = DatasetMetrics(
            name, 0, 0.0, first.accuracy, first.accuracy_skip, 0, first.answer, first.custom,
            n, units,
        )  # fmt: skip
        datasets[name] = whole.rows(np.arange(n))
    return Evaluation(datasets, label or parts[0].label, sum(p.seconds for p in parts))


class _RayPool:
    """Ray actors running :class:`Worker`; a unit whose actor died is retried on a new one."""

    def __init__(self, job: MapJob, actors: int, address: str | None, num_gpus: float) -> None:
        try:
            import ray
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "executor='ray' needs Ray: pip install 'tl_unlearn[ray]' (or pip install ray)."
            ) from None
        self.ray = ray
        self.started = False
        threads = max(1, job.threads)
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=actors * threads, include_dashboard=False, log_to_driver=False)
            self.started = True
        self.cls = ray.remote(num_cpus=threads, num_gpus=num_gpus)(Worker)
        self.job = job.to_dict()
        self.actors = [self.cls.remote(self.job) for _ in range(actors)]
        self.retries = 0

    def layout(self) -> tuple[int, int, bool]:
        """The model's layout, from the first actor (the driver loads no model)."""
        return tuple(self.ray.get(self.actors[0].layout.remote()))

    def run(self, units: list[Unit], done: Callable[[Unit, dict], None], progress: bool) -> None:
        ray = self.ray
        queue = list(units)
        running: dict[Any, tuple[Unit, int]] = {}
        free = list(range(len(self.actors)))
        bar = tqdm(total=len(units), desc="units", disable=not progress)
        while queue or running:
            while queue and free:
                i = free.pop(0)
                u = queue.pop(0)
                running[self.actors[i].run.remote(u.to_dict())] = (u, i)
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                u, i = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError:
                    self.retries += 1
                    self.actors[i] = self.cls.remote(self.job)  # a fresh actor in its place
                    queue.insert(0, u)
                else:
                    done(u, result)
                    bar.update(1)
                free.append(i)
        bar.close()

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


def component_map_job(
    job: MapJob,
    *,
    executor: str = "inprocess",
    actors: int = 2,
    address: str | None = None,
    num_gpus: float = 0.0,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_unit: Callable[[int, Any], None] | None = None,
) -> Any:
    """A component selectivity map computed unit by unit, in-process or on Ray.

    Args:
        job: What to compute.
        executor: ``"inprocess"`` or ``"ray"``.
        actors: Ray actors (each loads the model and data once).
        address: A Ray cluster's address (default: start a local one).
        num_gpus: GPUs per actor (a fraction shares one GPU between small models).
        run_dir: Folder where each finished unit is written (atomically) with the job.
        resume: Read the units already in ``run_dir`` back and compute only the others.
        progress: Progress bar over units.
        on_unit: Called after each finished unit with the number finished so far and the
            Ray pool (None in-process); a test kills an actor or interrupts the run there.

    Returns:
        The :class:`~tl_unlearn.circuits.ComponentMap`; ``info`` says how many units were
        computed now, read back, and retried.

    Raises:
        ValueError: An unknown executor, ``resume`` without ``run_dir``, or a ``run_dir``
            that holds another job, before any work.
    """
    from tl_unlearn.circuits import ComponentMap
    from tl_unlearn.files import atomic_write_text
    from tl_unlearn.metrics.evaluation import Evaluation

    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise ValueError(f"Unknown executor {executor!r}; choose one of {EXECUTORS}.")
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to resume.")
    if not isinstance(actors, int) or isinstance(actors, bool) or actors < 1:
        raise ValueError(f"actors must be a positive integer, got {actors!r}.")
    folder = None if run_dir is None else Path(run_dir)
    if folder is not None:
        spec = folder / "job.json"
        if spec.exists():
            if json.loads(spec.read_text()) != job.to_dict():
                raise ValueError(f"{folder} holds another job ({spec}); use a new run_dir.")
        elif resume:
            raise ValueError(f"Nothing to resume in {folder}: it has no job.json.")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "units").mkdir(exist_ok=True)
        atomic_write_text(spec, json.dumps(job.to_dict(), indent=1))
    import torch

    layout_file = None if folder is None else folder / "layout.json"
    layout = None
    if resume and layout_file is not None and layout_file.exists():
        n_layers, n_heads, attn_only = json.loads(layout_file.read_text())
        layout = (int(n_layers), int(n_heads), bool(attn_only))
    results: dict[Unit, Any] = {}
    worker: Worker | None = None
    pool: _RayPool | None = None
    threads = torch.get_num_threads()  # an in-process worker sets its own; restored after

    def start() -> tuple[int, int, bool]:
        """Start the executor's workers (each loads the model once); the model's layout."""
        nonlocal worker, pool
        if executor == "inprocess":
            worker = Worker(job.to_dict())
            return worker.layout()
        pool = _RayPool(job, actors, address, num_gpus)
        return pool.layout()

    def done(u: Unit, result: dict[str, Any]) -> None:
        results[u] = Evaluation.from_dict(result)
        if folder is not None:
            atomic_write_text(folder / "units" / f"{u.key}.json", json.dumps(result))
        if on_unit is not None:
            on_unit(len(results) - read_back, pool)

    retries = 0
    try:
        if layout is None:
            layout = start()
            if layout_file is not None:
                atomic_write_text(layout_file, json.dumps(list(layout)))
        units = job.units(layout)
        if resume and folder is not None:
            for u in units:
                path = folder / "units" / f"{u.key}.json"
                if path.exists():
                    results[u] = Evaluation.from_dict(json.loads(path.read_text()))
        read_back = len(results)
        todo = [u for u in units if u not in results]
        if todo and worker is None and pool is None:
            start()
        if todo and worker is not None:
            for u in tqdm(todo, desc="units", disable=not progress):
                done(u, worker.run(u.to_dict()))
        elif todo and pool is not None:
            pool.run(todo, done, progress)
            retries = pool.retries
    finally:
        if pool is not None:
            pool.close()
        torch.set_num_threads(threads)
    comps = job.component_list(*layout)
    merged = [
        merge_evaluations([results[Unit(c, s)] for s in range(job.shards)], label)
        for c, label in [(None, "original")] + [(c, f"{job.method} {c}") for c in comps]
    ]
    return ComponentMap(
        comps,
        merged[0],
        merged[1:],
        "top1",
        job.method,
        layout[0],
        layout[1],
        info={
            "units": len(units),
            "computed": len(todo),
            "read_back": read_back,
            "retried": retries,
            "executor": executor,
            "job": job.to_dict(),
        },
        label=f"component map ({executor})",
        seconds=time.perf_counter() - t0,
    )
