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
bootstrap intervals. With a run folder (:class:`RunFolder`), each finished unit is written
there atomically; ``resume=True`` reads the finished ones back and computes only the rest.

This module holds the machinery every sweep shares (:class:`Execution`, the executors,
:class:`RunFolder`, :class:`UnitRunner`) and the **component map** job; the benchmark's
own units (method sweeps, random baselines, relearning attacks) are in
:mod:`tl_unlearn.benchmark_units` and run through ``run_benchmark(executor=...)``. Ray is an
optional dependency: ``pip install 'tl_unlearn[ray]'``.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tl_unlearn.metrics.evaluation import merge_evaluations

__all__ = [
    "EXECUTORS",
    "AttributionJob",
    "AttributionWorker",
    "Execution",
    "InProcessExecutor",
    "MapJob",
    "RayExecutor",
    "RunFolder",
    "ShardUnit",
    "Unit",
    "UnitRunner",
    "Worker",
    "attribution_job",
    "component_map_job",
    "merge_evaluations",
    "open_executor",
]

EXECUTORS = ("inprocess", "ray")


def check_positive_ints(owner: Any, *names: str, **values: Any) -> None:
    """Raise a ValueError naming the first of ``owner``'s attributes ``names`` (or of
    ``values``) that is not a positive integer (a bool is not one).

    Examples:
        >>> check_positive_ints(None, shards=0)
        Traceback (most recent call last):
        ...
        ValueError: shards must be a positive integer, got 0.
    """
    for name, value in [*((n, getattr(owner, n)) for n in names), *values.items()]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


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
        check_positive_ints(self, "tokens", "seq_len", "batch_size", "shards")

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


@dataclass(frozen=True)
class Execution:
    """Where units run: in this process (the default) or on Ray actors.

    Attributes:
        kind: ``"inprocess"`` or ``"ray"``.
        actors: Ray actors (each loads the model and data once).
        address: A Ray cluster's address (default: start a local one).
        threads: Torch threads per Ray actor (Ray gives an actor one by default).
        num_gpus: GPUs per actor (a fraction shares one GPU between small models).

    Examples:
        >>> from tl_unlearn import Execution
        >>> Execution.of("ray").actors
        2
        >>> Execution.of("dask")
        Traceback (most recent call last):
        ...
        ValueError: Unknown executor 'dask'; choose one of ('inprocess', 'ray').
    """

    kind: str = "inprocess"
    actors: int = 2
    address: str | None = None
    threads: int = 1
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"Unknown executor {self.kind!r}; choose one of {EXECUTORS}.")
        check_positive_ints(self, "actors", "threads")
        if not isinstance(self.num_gpus, (int, float)) or self.num_gpus < 0:
            raise ValueError(f"num_gpus must be a number >= 0, got {self.num_gpus!r}.")

    @classmethod
    def of(cls, executor: str | Execution) -> Execution:
        """``executor`` as an :class:`Execution` (a name takes the defaults)."""
        return executor if isinstance(executor, Execution) else cls(executor)

    @property
    def remote(self) -> bool:
        return self.kind == "ray"


class InProcessExecutor:
    """Runs units one after another on a worker in this process."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.pending: list[Any] = []
        self.retries = 0
        self.actors: list[Any] = []

    def submit(self, units: Sequence[Any]) -> None:
        self.pending += list(units)

    def collect(self, done: Callable[[Any, dict], None], progress: bool, desc: str) -> None:
        todo, self.pending = self.pending, []
        for u in tqdm(todo, desc=desc, disable=not progress or not todo):
            done(u, self.worker.run(u.to_dict()))

    def close(self) -> None:
        pass


class RayExecutor:
    """Ray actors, each a ``worker_cls(payload)``; a unit whose actor died is retried on a
    fresh actor. Units are handed out as actors come free (submitted ones start at once)."""

    def __init__(self, worker_cls: type, payload: dict[str, Any], execution: Execution) -> None:
        try:
            import ray
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "executor='ray' needs Ray: pip install 'tl_unlearn[ray]' (or pip install ray)."
            ) from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if execution.address:
                ray.init(address=execution.address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=execution.actors * execution.threads,
                    include_dashboard=False,
                    log_to_driver=False,
                )
            self.started = True
        self.cls = ray.remote(num_cpus=execution.threads, num_gpus=execution.num_gpus)(worker_cls)
        self.payload = payload
        self.actors = [self.cls.remote(payload) for _ in range(execution.actors)]
        self.retries = 0
        self.queue: list[Any] = []
        self.running: dict[Any, tuple[Any, int]] = {}
        self.free = list(range(execution.actors))

    def call(self, method: str) -> Any:
        """``method()`` of the first actor, waited for."""
        return self.ray.get(getattr(self.actors[0], method).remote())

    def _fill(self) -> None:
        while self.queue and self.free:
            i = self.free.pop(0)
            u = self.queue.pop(0)
            self.running[self.actors[i].run.remote(u.to_dict())] = (u, i)

    def submit(self, units: Sequence[Any]) -> None:
        self.queue += list(units)
        self._fill()

    def collect(self, done: Callable[[Any, dict], None], progress: bool, desc: str) -> None:
        ray = self.ray
        bar = tqdm(total=len(self.queue) + len(self.running), desc=desc, disable=not progress)
        while self.queue or self.running:
            self._fill()
            ready, _ = ray.wait(list(self.running), num_returns=1)
            for ref in ready:
                u, i = self.running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError:
                    self.retries += 1
                    self.actors[i] = self.cls.remote(self.payload)  # a fresh actor in its place
                    self.queue.insert(0, u)
                else:
                    done(u, result)
                    bar.update(1)
                self.free.append(i)
        bar.close()

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


def open_executor(
    execution: Execution, local: Callable[[], Any], worker_cls: type, payload: dict[str, Any]
) -> InProcessExecutor | RayExecutor:
    """The executor of ``execution``: ``local()`` as the worker in-process, else Ray actors
    built from ``payload``."""
    if execution.remote:
        return RayExecutor(worker_cls, payload, execution)
    return InProcessExecutor(local())


class RunFolder:
    """A run's folder: ``job.json`` and one JSON file per finished unit (each written
    atomically), so an interrupted run can resume.

    Args:
        path: The folder.
        job: The job (JSON), which a resumed run must match.
        resume: Keep the finished units (the folder must hold the same job).
        overwrite: Without ``resume``, start over in a folder holding another job (else
            refuse it).

    Raises:
        ValueError: ``resume`` and no job there, or another job there (before any work).
    """

    def __init__(
        self, path: str | Path, job: dict[str, Any], resume: bool, overwrite: bool = False
    ) -> None:
        from tl_unlearn.files import atomic_write_text

        self.path = Path(path)
        self.units = self.path / "units"
        spec = self.path / "job.json"
        same = spec.exists() and json.loads(spec.read_text()) == json.loads(json.dumps(job))
        if resume and not spec.exists():
            raise ValueError(f"Nothing to resume in {self.path}: it has no job.json.")
        if spec.exists() and not same and (resume or not overwrite):
            raise ValueError(f"{self.path} holds another job ({spec}); use a new folder.")
        self.path.mkdir(parents=True, exist_ok=True)
        self.units.mkdir(exist_ok=True)
        if not resume:
            for old in self.units.glob("*.json"):
                old.unlink()
        atomic_write_text(spec, json.dumps(job, indent=1))

    @staticmethod
    def stored_job(path: str | Path) -> dict[str, Any] | None:
        """The job of the run folder at ``path`` (None when it holds none)."""
        try:
            job = json.loads((Path(path) / "job.json").read_text())
        except (OSError, ValueError):
            return None
        return job if isinstance(job, dict) else None

    def read(self, unit: Any) -> dict[str, Any] | None:
        """A finished unit's result (None when not finished, or finished for another spec)."""
        path = self.units / f"{unit.key}.json"
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        return stored["result"] if stored.get("unit") == unit.to_dict() else None

    def remove(self) -> None:
        """Remove the units and the job (the run is finished and written)."""
        import shutil

        shutil.rmtree(self.units, ignore_errors=True)
        (self.path / "job.json").unlink(missing_ok=True)

    def write(self, unit: Any, result: dict[str, Any]) -> None:
        from tl_unlearn.files import atomic_write_text

        atomic_write_text(
            self.units / f"{unit.key}.json", json.dumps({"unit": unit.to_dict(), "result": result})
        )


class UnitRunner:
    """Submits units to an executor and collects their results (as dicts, by unit), reading
    finished ones back from a :class:`RunFolder` when resuming and writing new ones there.

    ``on_unit(n, executor)`` is called after each unit computed now, ``n`` counting them.
    """

    def __init__(
        self,
        executor: InProcessExecutor | RayExecutor,
        folder: RunFolder | None = None,
        resume: bool = False,
        on_unit: Callable[[int, Any], None] | None = None,
    ) -> None:
        self.executor = executor
        self.folder = folder
        self.resume = resume
        self.on_unit = on_unit
        self.results: dict[Any, dict[str, Any]] = {}
        self.computed = 0
        self.read_back = 0

    def restore(self, units: Sequence[Any]) -> list[Any]:
        """Read the finished ``units`` back (when resuming); the units still to compute."""
        todo = []
        for u in units:
            stored = self.folder.read(u) if self.resume and self.folder is not None else None
            if stored is None:
                todo.append(u)
            else:
                self.results[u] = stored
                self.read_back += 1
        return todo

    def submit(self, units: Sequence[Any]) -> None:
        """Submit the units not read back to the executor."""
        self.executor.submit(self.restore(units))

    def _done(self, unit: Any, result: dict[str, Any]) -> None:
        self.results[unit] = result
        if self.folder is not None:
            self.folder.write(unit, result)
        self.computed += 1
        if self.on_unit is not None:
            self.on_unit(self.computed, self.executor)

    def collect(self, progress: bool = False, desc: str = "units") -> dict[Any, dict[str, Any]]:
        """Wait for every submitted unit; all results so far."""
        self.executor.collect(self._done, progress, desc)
        return self.results

    @property
    def info(self) -> dict[str, int]:
        return {
            "units": len(self.results),
            "computed": self.computed,
            "read_back": self.read_back,
            "retried": self.executor.retries,
        }


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
            executor (its Ray actors in `actors`); a test kills an actor or interrupts the run there.

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
    execution = Execution(executor, actors, address, max(1, job.threads), num_gpus)
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to resume.")
    folder = None if run_dir is None else RunFolder(run_dir, job.to_dict(), resume)
    import torch

    layout_file = None if folder is None else folder.path / "layout.json"
    layout = None
    if resume and layout_file is not None and layout_file.exists():
        n_layers, n_heads, attn_only = json.loads(layout_file.read_text())
        layout = (int(n_layers), int(n_heads), bool(attn_only))
    threads = torch.get_num_threads()  # an in-process worker sets its own; restored after
    executor_: InProcessExecutor | RayExecutor | None = None
    try:
        if layout is None:  # the workers load the model; the driver loads none
            executor_ = open_executor(
                execution, lambda: Worker(job.to_dict()), Worker, job.to_dict()
            )
            layout = executor_.call("layout") if execution.remote else executor_.worker.layout()
            if layout_file is not None:
                atomic_write_text(layout_file, json.dumps(list(layout)))
        units = job.units(tuple(layout))
        runner = UnitRunner(executor_ or InProcessExecutor(None), folder, resume, on_unit)
        todo = runner.restore(units)
        if todo and executor_ is None:
            executor_ = runner.executor = open_executor(
                execution, lambda: Worker(job.to_dict()), Worker, job.to_dict()
            )
        runner.executor.submit(todo)
        results = {u: Evaluation.from_dict(r) for u, r in runner.collect(progress).items()}
    finally:
        if executor_ is not None:
            executor_.close()
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
        info={**runner.info, "executor": executor, "job": job.to_dict()},
        label=f"component map ({executor})",
        seconds=time.perf_counter() - t0,
    )


@dataclass(frozen=True)
class ShardUnit:
    """One shard of a job whose units differ only by their data.

    Examples:
        >>> from tl_unlearn.scale import ShardUnit
        >>> ShardUnit(2).key
        'shard2'
    """

    shard: int

    @property
    def key(self) -> str:
        return f"shard{self.shard}"

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard}


@dataclass(frozen=True)
class AttributionJob:
    """An attribution sweep (EAP or EAP-IG edge scores over clean/corrupted forget pairs),
    cut into shards of the pairs; what every worker rebuilds its state from (JSON).

    The pairs are the benchmark's: the forget task's fit split, its first ``examples``
    pairs, as the ``eap`` / ``eap-ig`` methods fit them (the same data, the same metric).

    Attributes:
        model: A model name (:func:`~tl_unlearn.models.load_model`).
        forget: A forget task with corrupted prompts (``ioi``, ``greater_than``,
            ``induction``, or a task file).
        method: ``"eap"`` or ``"eap-ig"``.
        examples: Clean/corrupted pairs attributed.
        steps: Integration steps of EAP-IG.
        fit_tokens: Token budget of the fit split the pairs come from.
        seq_len: Tokens per sequence.
        batch_size: Pairs per pass.
        seed: Seed of the data order.
        shards: Pieces the pairs are cut into (each a unit).
        threads: Torch threads per worker (0: leave as it is).
        device: Where each worker puts its model.
    """

    model: str = "tiny"
    forget: str = "ioi"
    method: str = "eap-ig"
    examples: int = 16
    steps: int = 5
    fit_tokens: int = 4000
    seq_len: int = 128
    batch_size: int = 8
    seed: int = 0
    shards: int = 1
    threads: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in ("eap", "eap-ig"):
            raise ValueError(f"method must be 'eap' or 'eap-ig', got {self.method!r}.")
        check_positive_ints(
            self, "examples", "steps", "fit_tokens", "seq_len", "batch_size", "shards"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttributionJob:
        return cls(**d)

    def config(self) -> Any:
        """The benchmark configuration whose edge method fits on these pairs."""
        from tl_unlearn.runs import BenchmarkConfig

        return BenchmarkConfig(
            model=self.model,
            forget=self.forget,
            methods=[self.method],
            seq_len=self.seq_len,
            fit_tokens=self.fit_tokens,
            eval_tokens=self.seq_len,  # one sequence: the job reads the fit split only
            batch_size=self.batch_size,
            seed=self.seed,
            device=self.device,
            options={
                f"{self.method}.attribution_examples": self.examples,
                "eap-ig.steps": self.steps,
            },
        )


class AttributionWorker:
    """Rebuilds an :class:`AttributionJob`'s model and pairs once and attributes shards."""

    def __init__(self, job: dict[str, Any]) -> None:
        import torch

        from tl_unlearn.benchmark_units import prepare_data
        from tl_unlearn.methods import _patch_metric
        from tl_unlearn.models import load_model
        from tl_unlearn.tasks import make_task

        self.job = AttributionJob.from_dict(job)
        if self.job.threads:
            torch.set_num_threads(self.job.threads)
        config = self.job.config()
        self.model = load_model(config.model, device=config.device)
        _, _, ctx = prepare_data(config, make_task(config.forget, config.retain), self.model)
        if ctx.forget_fit_corrupted is None:
            raise ValueError(f"forget={self.job.forget!r} has no corrupted prompts to patch from.")
        self.clean = ctx.forget_fit.head(self.job.examples)
        self.corrupted = ctx.forget_fit_corrupted.head(self.job.examples)
        self.metric = _patch_metric(self.clean)

    def run(self, unit: dict[str, Any]) -> dict[str, Any]:
        """EAP(-IG) scores of one shard of the pairs (weighted as part of all of them)."""
        from tl_unlearn.attribution import edge_attribution

        rows = np.array_split(np.arange(len(self.clean)), self.job.shards)[int(unit["shard"])]
        c = edge_attribution(
            self.model,
            self.clean,
            self.corrupted,
            self.metric,
            method=self.job.method,  # type: ignore[arg-type]
            steps=self.job.steps,
            batch_size=self.job.batch_size,
            rows=rows.tolist(),
        )
        return {
            "n_layers": c.n_layers,
            "n_heads": c.n_heads,
            "d_model": c.d_model,
            "label": c.label,
            "info": c.info,
            "scores": c.scores.tolist(),
            "n_pairs": len(self.clean),
            "seconds": c.seconds,
        }


def attribution_job(
    job: AttributionJob,
    *,
    executor: str | Execution = "inprocess",
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_unit: Callable[[int, Any], None] | None = None,
) -> Any:
    """EAP / EAP-IG edge scores computed shard by shard, in-process or on Ray.

    Each shard's scores are its pairs' contributions to the mean over all pairs, so the
    shards' scores, summed in order, are the scores of all the pairs at once
    (:func:`~tl_unlearn.attribution.edge_attribution`).

    Args:
        job: What to attribute.
        executor: ``"inprocess"``, ``"ray"``, or an :class:`Execution`.
        run_dir: Folder where each finished shard is written (atomically) with the job.
        resume: Read the shards already in ``run_dir`` back and compute only the others.
        progress: Progress bar over shards.
        on_unit: Called after each shard computed now, with their count and the executor.

    Returns:
        The scored :class:`~tl_unlearn.edges.Circuit` (``.top(n)``: the best ``n`` edges);
        ``info`` says how many shards were computed now, read back and retried.

    Examples:
        >>> from tl_unlearn.scale import AttributionJob, attribution_job
        >>> job = AttributionJob(model="tiny", forget="ioi", method="eap", examples=4,
        ...                      seq_len=32, fit_tokens=400, shards=2)
        >>> scores = attribution_job(job, progress=False)
        >>> scores.top(5).n_edges, scores.info["computed"]
        (5, 2)
    """
    from tl_unlearn.edges import Circuit

    t0 = time.perf_counter()
    execution = Execution.of(executor)
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to resume.")
    if execution.remote and job.threads:
        execution = replace(execution, threads=job.threads)
    folder = None if run_dir is None else RunFolder(run_dir, job.to_dict(), resume)
    units = [ShardUnit(s) for s in range(job.shards)]
    import torch

    threads = torch.get_num_threads()
    runner = UnitRunner(InProcessExecutor(None), folder, resume, on_unit)
    try:
        todo = runner.restore(units)
        if todo:
            runner.executor = open_executor(
                execution,
                lambda: AttributionWorker(job.to_dict()),
                AttributionWorker,
                job.to_dict(),
            )
        runner.executor.submit(todo)
        results = runner.collect(progress, "shards")
    finally:
        runner.executor.close()
        torch.set_num_threads(threads)
    parts = [results[u] for u in units]
    first = parts[0]
    scores = np.zeros_like(np.asarray(first["scores"], dtype=np.float64))
    for p in parts:  # in shard order: the same sums on every executor
        scores += np.asarray(p["scores"], dtype=np.float64)
    circuit = Circuit.empty(
        first["n_layers"], first["n_heads"], d_model=first["d_model"], label=first["label"]
    )
    circuit.scores = scores
    circuit.info = {
        **{k: v for k, v in first["info"].items() if k not in ("n_examples", "of_examples")},
        "n_examples": first["n_pairs"],
        **runner.info,
        "executor": execution.kind,
        "job": job.to_dict(),
    }
    circuit.seconds = time.perf_counter() - t0
    return circuit
