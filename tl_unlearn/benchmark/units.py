"""The benchmark's work as units that travel: sweeps, random baselines and relearning attacks.

A benchmark run is cut into :class:`SweepUnit` specs (JSON): the original model on a shard of
the evaluation data, every level of one method on a shard, a method's random baselines (all
seeds) at its validated level on a shard, one method's relearning attack. A
:class:`BenchmarkState` holds what a worker needs (the model, the task's data, the methods
fitted on first use) and runs units; the same code runs in this process (the default) and in
each Ray actor (:class:`BenchmarkWorker`, rebuilt from the run's configuration).

Units return per-sequence statistics; shards are merged in a fixed order
(:func:`~tl_unlearn.metrics.evaluation.merge_evaluations`), so any executor and any number of shards gives
the metrics and the bootstrap intervals of one process. Skip-common accuracies use the
common tokens of each whole dataset, never of a shard.

A Ray actor fits the methods itself (a fitted method holds closures over the model, which
do not travel). Its fit is checked against the driver's on a probe sequence: the
log-probabilities of every level must agree to :data:`PROBE_TOLERANCE`, else the run stops
with an error, never with silently different numbers.

Examples:
    >>> from tl_unlearn.benchmark.units import SweepUnit
    >>> SweepUnit("curve", "prune-abs", shard=1).key
    'curve-prune-abs-s1'
    >>> SweepUnit.from_dict(SweepUnit("baseline", "head-mean", 0, 0.05, True).to_dict()).level
    0.05
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tl_unlearn.core.files import release_free_memory
from tl_unlearn.execution.units import shard_rows

__all__ = [
    "PROBE_TOLERANCE",
    "BenchmarkState",
    "BenchmarkWorker",
    "SweepUnit",
    "prepare_data",
]

#: Largest difference of a probe log-probability between a worker's fit and the driver's.
PROBE_TOLERANCE = 1e-3

_KINDS = ("original", "curve", "baseline", "relearn", "map")


@dataclass(frozen=True)
class SweepUnit:
    """One unit of a benchmark run.

    Attributes:
        kind: ``"original"`` (the model as it is), ``"curve"`` (every level of ``method``),
            ``"baseline"`` (``method``'s random baselines, every seed, at ``level``) or
            ``"relearn"`` (``method``'s relearning attack at ``level``) or ``"map"`` (each
            component of ``layer`` zero-ablated alone: the run's component map).
        method: The method's name (None for ``"original"`` and ``"map"``).
        shard: Which piece of the evaluation data (``"relearn"``: always 0).
        level: The validated level (baselines, relearning).
        held_out: Evaluate on the held-out halves only (baselines).
        layer: The layer whose components a ``"map"`` unit ablates.
    """

    kind: str
    method: str | None = None
    shard: int = 0
    level: float | None = None
    held_out: bool = False
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Unknown unit kind {self.kind!r}; choose one of {_KINDS}.")

    @property
    def key(self) -> str:
        """A file name for the unit's result."""
        parts = [self.kind, *([self.method] if self.method else [])]
        parts += [f"L{self.layer}"] if self.layer is not None else []
        return "-".join([*parts, f"s{self.shard}"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepUnit:
        return cls(**d)


def prepare_data(config: Any, task: Any, model: Any) -> tuple[dict, dict, Any]:
    """The fit and eval token data of the task, and what the methods are fitted from (the
    SAE's training data, the corrupted fit prompts of the edge methods)."""
    from tl_unlearn.benchmark.methods.base import MethodContext
    from tl_unlearn.benchmark.methods.edges import EDGE_METHODS
    from tl_unlearn.benchmark.methods.registry import METHODS

    tok = model.tokenizer
    kw = dict(seq_len=config.seq_len, seed=config.seed, n_ctx=model.cfg.n_ctx)
    fit = task.tokenize(tok, "fit", max_tokens=config.fit_tokens, **kw)
    ev = task.tokenize(tok, "eval", max_tokens=config.eval_tokens, **kw)

    sae_data = check = None
    if "sae-features" in config.methods:
        # the SAE sees each of its training tokens once: as many distinct fit tokens as it
        # trains on (half per side); its reconstruction is measured on eval sequences
        half = max(1, METHODS["sae-features"].read_options(config.options).training_tokens // 2)
        sae_fit = task.tokenize(tok, "fit", max_tokens=half, **kw)
        sae_data = [sae_fit["forget"], sae_fit["retain"]]
        check = {k: ev[k].head(config.batch_size) for k in ("forget", "retain")}
    corrupted = None
    if any(m in EDGE_METHODS for m in config.methods):
        from tl_unlearn.interventions.counterfactual import check_pairs

        corrupted = task.forget.tokenize(
            tok, "fit", corrupted=True, max_tokens=None, max_examples=len(fit["forget"]), **kw
        )
        check_pairs(fit["forget"], corrupted)
    ctx = MethodContext(
        model,
        fit["forget"],
        fit["retain"],
        batch_size=config.batch_size,
        seed=config.seed,
        options=dict(config.options),
        sae_data=sae_data,
        check_data=check,
        forget_fit_corrupted=corrupted,
    )
    return fit, ev, ctx


class BenchmarkState:
    """What a worker holds to run a benchmark's units: the model, the data, fitted methods.

    Args:
        config: The run's :class:`~tl_unlearn.benchmark.config.BenchmarkConfig`.
        model: The model.
        ev: The evaluation data (``forget`` and ``retain``).
        fit: The fit data (relearning attacks train on its forget side).
        ctx: What methods are fitted from (None: only ``fitted`` methods are known).
        fitted: Methods already fitted, by name.
        shards: Pieces the evaluation data is cut into (at most the size of a held-out half).
        metrics: User metrics (in-process only: functions do not travel).
        probe: Return a probe of each fit with its curve units (a Ray worker's, checked
            against the driver's).
    """

    def __init__(
        self,
        config: Any,
        model: Any,
        ev: dict[str, Any],
        *,
        fit: dict[str, Any] | None = None,
        ctx: Any = None,
        fitted: dict[str, Any] | None = None,
        shards: int = 1,
        metrics: dict[str, Any] | None = None,
        probe: bool = False,
    ) -> None:
        self.config = config
        self.model = model
        self.ev = {k: ev[k] for k in ("forget", "retain")}
        self.fit = fit
        self.ctx = ctx
        self.metrics = metrics
        self.probe = probe
        self._fitted: dict[str, Any] = dict(fitted or {})
        smallest = min(len(d) - len(d) // 2 for d in self.ev.values())
        self.shards = max(1, min(int(shards), smallest))
        self._common: dict[bool, dict[str, Any] | None] = {}
        self._probes: dict[str, list[float]] = {}
        self._retrained: Any = None

    @classmethod
    def build(cls, payload: dict[str, Any]) -> BenchmarkState:
        """A worker's state rebuilt from a run's payload (see :meth:`payload`)."""
        from tl_unlearn.benchmark.config import BenchmarkConfig
        from tl_unlearn.data.tasks import make_task
        from tl_unlearn.models.loading import load_model

        if payload.get("threads"):
            torch.set_num_threads(int(payload["threads"]))
        config = BenchmarkConfig.from_dict(payload["config"])
        model = load_model(config.model, device=config.device)
        fit, ev, ctx = prepare_data(config, make_task(config.forget, config.retain), model)
        return cls(config, model, ev, fit=fit, ctx=ctx, shards=payload["shards"], probe=True)

    def payload(self, threads: int) -> dict[str, Any]:
        """What a remote worker is built from (JSON)."""
        return {"config": asdict(self.config), "shards": self.shards, "threads": threads}

    def fitted(self, name: str) -> Any:
        """Method ``name`` fitted on the fit data (once; kept)."""
        from tl_unlearn.benchmark.methods.registry import fit_method

        if name not in self._fitted:
            if self.ctx is None:
                raise ValueError(f"Method {name!r} was not fitted and this state cannot fit.")
            self._fitted[name] = fit_method(name, self.ctx)
            release_free_memory()
        return self._fitted[name]

    # ---- data -------------------------------------------------------------------------

    def _base(self, held_out: bool) -> dict[str, Any]:
        from tl_unlearn.metrics.selectivity import held_out_half

        return held_out_half(self.ev) if held_out else self.ev

    def data(self, shard: int, held_out: bool = False) -> dict[str, Any]:
        """Shard ``shard`` of the evaluation data (of its held-out halves)."""
        base = self._base(held_out)
        if self.shards == 1:
            return base
        return {
            k: d.rows(torch.as_tensor(shard_rows(len(d), self.shards, shard)))
            for k, d in base.items()
        }

    def common(self, held_out: bool = False) -> dict[str, Any] | None:
        """Each whole dataset's common tokens (the skip-common accuracies of every shard)."""
        from tl_unlearn.metrics.evaluation import common_targets
        from tl_unlearn.metrics.names import SKIP_COMMON

        if self.shards == 1:
            return None
        if held_out not in self._common:
            self._common[held_out] = {
                k: common_targets(d, SKIP_COMMON) for k, d in self._base(held_out).items()
            }
        return self._common[held_out]

    def retrained(self) -> Any:
        """The tiny model's twin trained without Python code, where it applies (else None)."""
        if self._retrained is None:
            self._retrained = False
            if self.config.model == "tiny" and self.config.forget == "python_code":
                from tl_unlearn.models.loading import TINY_TWIN_DIR, load_tiny_model

                if (TINY_TWIN_DIR / "model.safetensors").exists():
                    self._retrained = load_tiny_model(twin=True)
        return self._retrained or None

    # ---- units ------------------------------------------------------------------------

    def curve_units(self) -> list[SweepUnit]:
        """The original model and every method's levels, shard by shard."""
        return [SweepUnit("original", shard=s) for s in range(self.shards)] + [
            SweepUnit("curve", m, s) for m in self.config.methods for s in range(self.shards)
        ]

    def map_components(self) -> list[Any]:
        """The components the run's component map ablates, in order (none without one)."""
        from tl_unlearn.circuits.maps import component_list

        if not self.config.component_map:
            return []
        cfg = self.model.cfg
        return component_list(
            cfg.n_layers, cfg.n_heads, self.config.component_map, attn_only=bool(cfg.attn_only)
        )

    def map_units(self) -> list[SweepUnit]:
        """The component map: every component of a layer, ablated alone, per shard (one
        unit per layer shares the forward pass up to that layer)."""
        layers = sorted({c[0] for c in self.map_components()})
        return [
            SweepUnit("map", shard=s, layer=layer) for layer in layers for s in range(self.shards)
        ]

    def second_units(self, curves: list[Any]) -> list[SweepUnit]:
        """Relearning attacks and random baselines at each curve's validated level."""
        from tl_unlearn.metrics.names import metric_of

        units = []
        if self.config.relearn_steps:
            for c in curves:
                level = c.held_out()["level"]
                if math.isfinite(level) and level != 0:
                    units.append(SweepUnit("relearn", c.name, 0, level))
        if self.config.baseline_seeds:
            for c in curves:
                level = c.held_out()["level"]
                if self.fitted(c.name).baseline is None or not math.isfinite(level) or level == 0:
                    continue
                # skip-common metrics count common tokens per dataset: evaluate on all of it
                skip = any("_skip" in metric_of(c.metric, ds) for ds in ("forget", "retain"))
                units += [
                    SweepUnit("baseline", c.name, s, level, not skip) for s in range(self.shards)
                ]
        return units

    def _evaluate(self, interventions: list[Any], unit: SweepUnit) -> list[dict[str, Any]]:
        from tl_unlearn.metrics.evaluation import evaluate_many

        data = self.data(unit.shard, unit.held_out)
        return [
            e.to_dict()
            for e in evaluate_many(
                self.model,
                data,
                interventions,
                labels=["original"] if unit.kind == "original" else None,
                batch_size=self.config.batch_size,
                progress=False,
                metrics=self.metrics,
                common=self.common(unit.held_out),
            )
        ]

    def run(self, unit: dict[str, Any]) -> dict[str, Any]:
        """Run one unit (a :class:`SweepUnit` as a dict); its result as a dict."""
        from tl_unlearn.benchmark.config import RunOptions
        from tl_unlearn.metrics.relearning import degree_of_removal

        u = SweepUnit.from_dict(unit)
        fm = None if u.method is None else self.fitted(u.method)  # fitting is not timed here
        t0 = time.perf_counter()
        out: dict[str, Any] = {}
        if u.kind == "original":
            out["evaluations"] = self._evaluate([[]], u)
        elif u.kind == "map":
            from tl_unlearn.circuits.maps import component_intervention

            comps = [c for c in self.map_components() if c[0] == u.layer]
            out["evaluations"] = self._evaluate(
                [component_intervention(self.model, [c], "zero") for c in comps], u
            )
        elif u.kind == "curve":
            out["evaluations"] = self._evaluate([fm.family(x) for x in fm.levels], u)
            if self.probe:
                out["probe"] = self.probe_of(u.method)
        elif u.kind == "baseline":
            seeds = [self.config.seed + 1 + i for i in range(self.config.baseline_seeds)]
            out["evaluations"] = self._evaluate([fm.baseline(u.level, s) for s in seeds], u)
        else:
            cfg = self.config
            opts = RunOptions.read(cfg.options)
            # measured on the held-out half of the forget eval data (one batch)
            check = self._base(True)["forget"].head(cfg.batch_size)
            base = fm.baseline(u.level, cfg.seed + 1) if fm.baseline is not None else None
            out["removal"] = degree_of_removal(
                self.model,
                self.fit["forget"],
                check,
                fm.family(u.level),
                baseline=base,
                level=u.level,
                lrs=opts.lrs,
                max_steps=cfg.relearn_steps,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                adapter_rank=opts.relearn_rank,
                micro_batch_size=opts.relearn_micro_batch,
                recompute=True,  # every method here calls its hooks deterministically
                retrained_model=self.retrained(),
                label=u.method,
            ).to_dict()
            release_free_memory()
        out["seconds"] = time.perf_counter() - t0
        return out

    def probe_of(self, name: str) -> list[float]:
        """The next-token log-probabilities of one forget sequence under each level of a
        fitted method: what two fits of it must agree on."""
        if name in self._probes:  # once per fit, however many units ask
            return self._probes[name]
        fm = self.fitted(name)
        tokens = self.ev["forget"].head(1).tokens.to(self.model.cfg.device)
        out: list[float] = []
        with torch.no_grad():
            for level in fm.levels:
                with fm.family(level).applied(self.model):
                    logits = self.model(tokens).float()
                logp = torch.log_softmax(logits[0, :-1], -1)
                out += logp.gather(-1, tokens[0, 1:, None]).squeeze(-1).tolist()
        self._probes[name] = out
        return out

    def check_probe(self, name: str, probe: list[float]) -> None:
        """Raise a RuntimeError when a worker's fit of ``name`` differs from this one's."""
        mine = np.array(self.probe_of(name))
        diff = float(np.max(np.abs(mine - np.array(probe)))) if len(mine) else 0.0
        if len(mine) != len(probe) or not diff <= PROBE_TOLERANCE:
            raise RuntimeError(
                f"A worker's fit of {name!r} differs from the driver's (log-probabilities on "
                f"a probe sequence differ by up to {diff:.3g} > {PROBE_TOLERANCE}). Its numbers "
                "would not be this run's: give every worker the same hardware and threads "
                "(Execution.threads), or run in-process."
            )

    # ---- results ----------------------------------------------------------------------

    def merged(
        self,
        results: dict[SweepUnit, dict],
        kind: str,
        method: str | None = None,
        layer: int | None = None,
    ) -> list[Any]:
        """The evaluations of a kind of unit of ``method`` (of ``layer``), shards merged
        in order."""
        from tl_unlearn.metrics.evaluation import Evaluation, merge_evaluations

        parts = [
            results[u]["evaluations"]
            for u in sorted(
                (u for u in results if (u.kind, u.method, u.layer) == (kind, method, layer)),
                key=lambda u: u.shard,
            )
        ]
        if len(parts) == 1:
            return [Evaluation.from_dict(e) for e in parts[0]]
        return [
            merge_evaluations([Evaluation.from_dict(p[j]) for p in parts])
            for j in range(len(parts[0]))
        ]

    def component_map(self, results: dict[SweepUnit, dict], original: Any) -> Any:
        """The run's :class:`~tl_unlearn.circuits.maps.ComponentMap` from its units (None
        without one)."""
        from tl_unlearn.circuits.maps import ComponentMap

        comps = self.map_components()
        if not comps:
            return None
        layers = sorted({c[0] for c in comps})
        evaluations = [e for layer in layers for e in self.merged(results, "map", layer=layer)]
        cfg = self.model.cfg
        return ComponentMap(
            comps,
            original,
            evaluations,
            self.config.metric,
            "zero",
            cfg.n_layers,
            cfg.n_heads,
            label=f"zero ablation map ({self.config.component_map})",
            seconds=self.seconds(results, "map"),
        )

    def seconds(self, results: dict[SweepUnit, dict], kind: str, method: Any = "any") -> float:
        """Compute time of the units of a kind (of one method, unless ``"any"``), summed."""
        return sum(
            r["seconds"]
            for u, r in results.items()
            if u.kind == kind and method in ("any", u.method)
        )


class BenchmarkWorker:
    """A Ray actor's worker: builds its :class:`BenchmarkState` from the run's payload once
    (model, data) and runs units."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.state = BenchmarkState.build(payload)

    def run(self, unit: dict[str, Any]) -> dict[str, Any]:
        return self.state.run(unit)

    def pid(self) -> int:
        import os

        return os.getpid()
