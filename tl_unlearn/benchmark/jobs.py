"""Sweeps outside the benchmark, as units: the component map (:class:`MapJob`) and edge
attribution over clean/corrupted pairs (:class:`AttributionJob`), rebuilt on each worker
from the benchmark's configuration.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tl_unlearn.circuits.attribution import check_ig_points
from tl_unlearn.core.checks import check_positive_ints
from tl_unlearn.execution.executors import Execution, InProcessExecutor, RayExecutor, open_executor
from tl_unlearn.execution.run_folder import RunFolder, UnitRunner
from tl_unlearn.execution.units import ShardUnit, Unit, shard_rows, shard_slices
from tl_unlearn.metrics.evaluation import merge_evaluations

__all__ = [
    "AttributionJob",
    "AttributionWorker",
    "JobSpec",
    "MapJob",
    "Worker",
    "attribution_job",
    "component_map_job",
]


_J = TypeVar("_J", bound="JobSpec")


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What every job's spec holds besides its own fields: the data's shape and order, the
    shards, and where each worker runs (JSON-serialisable).

    Attributes:
        seq_len: Tokens per sequence.
        batch_size: Sequences (or pairs) per pass.
        seed: Seed of the data order.
        shards: Pieces the data is cut into (each a unit of its own).
        threads: Torch threads per worker (0: leave as it is).
        device: Where each worker puts its model (``"cpu"``, ``"cuda"``).
    """

    seq_len: int = 64
    batch_size: int = 8
    seed: int = 0
    shards: int = 1
    threads: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_J], d: dict[str, Any]) -> _J:
        return cls(**d)


@dataclass(frozen=True)
class MapJob(JobSpec):
    """Everything a worker needs to rebuild a component map's state (JSON-serialisable).

    Attributes:
        model: ``"tiny"``, ``"smollm2"``, a planted model name or a TransformerLens name.
        forget: Forget corpus or task (the benchmark's names).
        retain: Retain corpus or task.
        components: ``"heads"``, ``"mlp"`` or ``"both"``.
        method: ``"zero"`` or ``"mean"`` (means over the retain fit split).
        tokens: Evaluation tokens per side.

    The rest (``seq_len``, ``batch_size``, ``seed``, ``shards``, ``threads``, ``device``)
    are :class:`JobSpec`'s.
    """

    model: str = "tiny"
    forget: str = "python_code"
    retain: str = "wikipedia"
    components: str = "heads"
    method: str = "zero"
    tokens: int = 2000

    def __post_init__(self) -> None:
        if self.components not in ("heads", "mlp", "both"):
            raise ValueError(
                f"components must be 'heads', 'mlp' or 'both', got {self.components!r}."
            )
        if self.method not in ("zero", "mean"):
            raise ValueError(f"method must be 'zero' or 'mean', got {self.method!r}.")
        check_positive_ints(self, "tokens", "seq_len", "batch_size", "shards")

    def component_list(self, n_layers: int, n_heads: int, attn_only: bool = False) -> list:
        """The components the map ablates, in order."""
        from tl_unlearn.circuits.maps import component_list

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

        from tl_unlearn.circuits.maps import component_means
        from tl_unlearn.data.tasks import make_task
        from tl_unlearn.models.loading import load_model

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
            for part in shard_slices({n: len(d) for n, d in ev.items()}, self.job.shards)
        ]
        self.means = None
        if self.job.method == "mean":
            fit = task.tokenize(self.model.tokenizer, "fit", **kw)
            self.means = component_means(self.model, fit["retain"], self.job.batch_size)

    def run(self, unit: dict[str, Any]) -> dict[str, Any]:
        """Evaluate one unit; its :class:`Evaluation` as a dict."""
        from tl_unlearn.circuits.maps import component_intervention
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
        The :class:`~tl_unlearn.circuits.maps.ComponentMap`; ``info`` says how many units were
        computed now, read back, and retried.

    Raises:
        ValueError: An unknown executor, ``resume`` without ``run_dir``, or a ``run_dir``
            that holds another job, before any work.
    """
    from tl_unlearn.circuits.maps import ComponentMap
    from tl_unlearn.core.files import atomic_write_text
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
class AttributionJob(JobSpec):
    """An attribution sweep (EAP or EAP-IG edge scores over clean/corrupted forget pairs),
    cut into shards of the pairs; what every worker rebuilds its state from (JSON).

    The pairs are the benchmark's: the forget task's fit split, its first ``examples``
    pairs, as the ``eap`` / ``eap-ig`` methods fit them (the same data, the same metric).

    Attributes:
        model: A model name (:func:`~tl_unlearn.models.loading.load_model`).
        forget: A forget task with corrupted prompts (``ioi``, ``greater_than``,
            ``induction``, or a task file).
        method: ``"eap"`` or ``"eap-ig"``.
        examples: Clean/corrupted pairs attributed.
        steps: Integration steps of EAP-IG.
        fit_tokens: Token budget of the fit split the pairs come from.
        ig_points: EAP-IG's interpolation points, ``"left"`` (EAP-IG's code, MIB) or
            ``"right"`` (see :func:`~tl_unlearn.circuits.attribution.edge_attribution`).

    The rest (``seq_len``, default 128 here; ``batch_size``: pairs per pass; ``seed``,
    ``shards``, ``threads``, ``device``) are :class:`JobSpec`'s.
    """

    model: str = "tiny"
    forget: str = "ioi"
    method: str = "eap-ig"
    examples: int = 16
    steps: int = 5
    fit_tokens: int = 4000
    ig_points: str = "left"
    seq_len: int = field(default=128, kw_only=True)

    def __post_init__(self) -> None:
        if self.method not in ("eap", "eap-ig"):
            raise ValueError(f"method must be 'eap' or 'eap-ig', got {self.method!r}.")
        check_ig_points(self.ig_points)
        check_positive_ints(
            self, "examples", "steps", "fit_tokens", "seq_len", "batch_size", "shards"
        )

    def config(self) -> Any:
        """The benchmark configuration whose edge method fits on these pairs."""
        from tl_unlearn.benchmark.config import BenchmarkConfig

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
                "eap-ig.ig_points": self.ig_points,
            },
        )


class AttributionWorker:
    """Rebuilds an :class:`AttributionJob`'s model and pairs once and attributes shards."""

    def __init__(self, job: dict[str, Any]) -> None:
        import torch

        from tl_unlearn.benchmark.methods.edges import patch_metric
        from tl_unlearn.benchmark.units import prepare_data
        from tl_unlearn.data.tasks import make_task
        from tl_unlearn.models.loading import load_model

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
        self.metric = patch_metric(self.clean)

    def run(self, unit: dict[str, Any]) -> dict[str, Any]:
        """EAP(-IG) scores of one shard of the pairs (weighted as part of all of them)."""
        from tl_unlearn.circuits.attribution import edge_attribution

        rows = shard_rows(len(self.clean), self.job.shards, int(unit["shard"]))
        c = edge_attribution(
            self.model,
            self.clean,
            self.corrupted,
            self.metric,
            method=self.job.method,  # type: ignore[arg-type]
            steps=self.job.steps,
            ig_points=self.job.ig_points,  # type: ignore[arg-type]
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
    (:func:`~tl_unlearn.circuits.attribution.edge_attribution`).

    Args:
        job: What to attribute.
        executor: ``"inprocess"``, ``"ray"``, or an :class:`Execution`.
        run_dir: Folder where each finished shard is written (atomically) with the job.
        resume: Read the shards already in ``run_dir`` back and compute only the others.
        progress: Progress bar over shards.
        on_unit: Called after each shard computed now, with their count and the executor.

    Returns:
        The scored :class:`~tl_unlearn.circuits.graph.Circuit` (``.top(n)``: the best ``n`` edges);
        ``info`` says how many shards were computed now, read back and retried.

    Examples:
        >>> from tl_unlearn.benchmark.jobs import AttributionJob, attribution_job
        >>> job = AttributionJob(model="tiny", forget="ioi", method="eap", examples=4,
        ...                      seq_len=32, fit_tokens=400, shards=2)
        >>> scores = attribution_job(job, progress=False)
        >>> scores.top(5).n_edges, scores.info["computed"]
        (5, 2)
    """
    from tl_unlearn.circuits.graph import Circuit

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
