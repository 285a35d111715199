"""Sweeps and selectivity curves: forget vs retain drop as more components are removed.

A *family* of interventions is a function ``level -> Intervention`` (a fraction of units, a
steering coefficient, a number of heads...). :func:`selectivity_curve` evaluates the original
model once and each level once, streaming, and returns a :class:`SelectivityCurve`:

- points ``(level, drop on forget, drop on retain)`` with ``drop = 1 - metric(Mu)/metric(M0)``;
- ``max_difference``: max over points of ``drop_F - drop_R``;
- ``area_between``: trapezoid integral of ``drop_F - drop_R`` over the level axis;
- ``perplexity_ratio``: ``ppl(Mu)/ppl(M0)`` per dataset and level.

The level-0 point (the original model, drop 0) is included when ``include_zero`` is set.

Uncertainty (``docs/metrics.md``, "Intervals and significance"): every drop, the
max difference and the area get a paired percentile bootstrap interval over sequences
(``n_boot`` replicates, seeded; one resample per replicate for the whole curve, the same
sequences for the original and every level). Because the max difference is a maximum over
levels chosen on the data it is reported on, it is biased upward; :meth:`SelectivityCurve.held_out`
chooses the level on the first half of each dataset's sequences (validation) and reports the
difference at that level on the second half (held out), with its interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go

from tl_unlearn.core.results import Result, dataset_colour
from tl_unlearn.data.datasets import TokenDataset, require_forget_retain
from tl_unlearn.engine.hooks import Intervention
from tl_unlearn.metrics.evaluation import Evaluation, ForgetRetainDrops, evaluate_many, unit_indices
from tl_unlearn.metrics.intervals import (
    DEFAULT_INTERVAL,
    Interval,
    bootstrap_interval,
    check_interval_kind,
    check_interval_settings,
    welch_df,
)
from tl_unlearn.metrics.names import (
    MetricFn,
    MetricSpec,
    check_metric_name,
    describe_metric,
    metric_of,
    resolve_metric,
)

__all__ = ["RandomBaseline", "SelectivityCurve", "held_out_half", "selectivity_curve"]


@dataclass
class RandomBaseline(Result):
    """Random interventions of the same kind and size as a method's, at one level.

    Made by the benchmark for each method: at the level the method's curve chose on
    validation sequences, one random intervention per seed (random neurons, heads, SAE
    features, or a random steering matrix of the same norms), evaluated on the held-out
    halves (:meth:`SelectivityCurve.held_out_data`). :meth:`SelectivityCurve.versus`
    compares the method with the mean over seeds, paired over sequences.

    Attributes:
        label: What is random (e.g. ``"random heads"``).
        level: The level (same meaning as the method's levels).
        seeds: Seed of each random intervention.
        evaluations: One evaluation per seed.
        seconds: Wall time of the evaluations.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import evaluate_many
        >>> from tl_unlearn.metrics.selectivity import RandomBaseline
        >>> evs = evaluate_many(m, d, [zero_ablation(m, heads=[(1, 1)])], progress=False)
        >>> rb = RandomBaseline("random heads", 1.0, [0], evs)
        >>> RandomBaseline.from_dict(rb.to_dict()).seeds
        [0]
    """

    label: str
    level: float
    seeds: list[int]
    evaluations: list[Evaluation]
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("metric",)

    def figure(self, kind: str = "metric", metric: MetricSpec = "top1") -> go.Figure:
        """``kind="metric"``: the metric of each seed's evaluation, one bar group per dataset."""
        self._check_kind(kind)
        fig = go.Figure()
        names = list(self.evaluations[0].datasets) if self.evaluations else []
        for seed, ev in zip(self.seeds, self.evaluations, strict=True):
            fig.add_trace(
                go.Bar(x=names, y=[ev.metric(n, metric) for n in names], name=f"seed {seed}")
            )
        fig.update_layout(
            title=f"{self.label} at level {self.level:g}",
            yaxis_title=describe_metric(metric),
            template="plotly_white",
        )
        return fig


@dataclass
class SelectivityCurve(ForgetRetainDrops, Result):
    """Evaluations of a family of interventions at several levels, against the original.

    Attributes:
        label: Name of the method (e.g. ``"prune-abs"``; also readable as ``name``).
        levels: Level of each evaluated point (e.g. fraction of units removed).
        original: Evaluation of the unmodified model.
        evaluations: One evaluation per level.
        metric: Metric the drops use (``"top1"``, ``"top5_skip"``, ``"loss"``...).
        level_name: Axis label for the levels.
        include_zero: Whether the curve starts with the original model at level 0.
        fit_seconds: Time spent fitting the family (statistics, means, ...).
        info: Free-form details of the method (JSON-friendly).
        n_boot: Bootstrap replicates of the intervals.
        seed: Seed of the bootstrap.
        confidence: Nominal coverage of the intervals.
        seconds: Wall time of the whole curve (fitting included).
        interval: How intervals are made from the bootstrap replicates (one of
            :data:`~tl_unlearn.metrics.intervals.INTERVAL_KINDS`; differences of forget and
            retain drops use Welch's degrees of freedom).

    Examples:
        >>> from tl_unlearn import Evaluation
        >>> from tl_unlearn import SelectivityCurve
        >>> from tl_unlearn.metrics.evaluation import DatasetMetrics
        >>> def ev(f, r):
        ...     return Evaluation({"forget": DatasetMetrics("forget", 10, 1.0, {1: f}),
        ...                        "retain": DatasetMetrics("retain", 10, 1.0, {1: r})})
        >>> c = SelectivityCurve("m", [0.5, 1.0], ev(0.8, 0.6), [ev(0.4, 0.6), ev(0.2, 0.3)])
        >>> c.forget_drop.tolist(), c.retain_drop.tolist()
        ([0.0, 0.5, 0.75], [0.0, 0.0, 0.5])
        >>> round(c.max_difference, 3), round(c.area_between, 4)
        (0.5, 0.3125)
    """

    label: str
    levels: list[float]
    original: Evaluation
    evaluations: list[Evaluation]
    metric: MetricSpec = "top1"
    level_name: str = "fraction removed"
    include_zero: bool = True
    fit_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    n_boot: int = 1000
    seed: int = 0
    confidence: float = 0.95
    seconds: float = 0.0
    interval: str = DEFAULT_INTERVAL
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("drops", "perplexity")

    @property
    def name(self) -> str:
        """The method's name (the same as :attr:`label`)."""
        return self.label

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.evaluations):
            raise ValueError(f"{len(self.levels)} levels but {len(self.evaluations)} evaluations")
        if not self.levels:
            raise ValueError("A selectivity curve needs at least one level.")
        check_interval_kind(self.interval)
        require_forget_retain(self.original.datasets, "SelectivityCurve's evaluations")

    # ----------------------------------------------------------------- statistics
    @property
    def x(self) -> np.ndarray:
        """Levels, with 0 first when ``include_zero``."""
        return np.array(([0.0] if self.include_zero else []) + list(self.levels), dtype=float)

    @property
    def drop_prefix(self) -> tuple[float, ...]:
        """The level-0 point's drop (0) when ``include_zero``, so drops align with :attr:`x`."""
        return (0.0,) if self.include_zero else ()

    @property
    def difference(self) -> np.ndarray:
        return self.forget_drop - self.retain_drop

    @property
    def max_difference(self) -> float:
        """Maximal difference: max over points of ``drop_F - drop_R``."""
        return float(self.difference.max())

    @property
    def best_level(self) -> float:
        """Level at which the maximal difference is reached."""
        return float(self.x[int(self.difference.argmax())])

    @property
    def area_between(self) -> float:
        """Trapezoid area of ``drop_F - drop_R`` over the level axis."""
        x, y = self.x, self.difference
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))

    # ----------------------------------------------------------------- intervals
    def _indices(self, dataset: str, subset: np.ndarray | None = None) -> np.ndarray | None:
        return unit_indices(
            [self.original, *self.evaluations],
            dataset,
            n_boot=self.n_boot,
            seed=self.seed,
            subset=subset,
        )

    def difference_replicates(self) -> np.ndarray | None:
        """Bootstrap replicates of the difference curve, ``[n_boot, n_points]`` (forget and
        retain resampled independently, each paired across levels); None without
        per-sequence statistics."""
        parts = self._side_replicates()
        return None if parts is None else parts[0] - parts[1]

    def _side_replicates(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The forget and retain drop replicates ``[n_boot, n_points]`` of the curve."""
        f, r = self._indices("forget"), self._indices("retain")
        if f is None or r is None:
            return None
        return self.drop_replicates("forget", f), self.drop_replicates("retain", r)

    def _interval(
        self, value: float, reps: np.ndarray | None, sides: tuple[int, int] | None = None
    ) -> Interval:
        """The interval of a forget-minus-retain quantity from replicates ``[n_boot, 2]``
        of its forget part and its (negated) retain part, resampled independently from
        ``sides`` = (forget, retain) sequences: Welch's degrees of freedom; or from
        replicates ``[n_boot]`` of the whole."""
        nan = float("nan")
        if reps is None:
            return Interval(value, nan, nan, self.confidence)
        if reps.ndim == 2 and sides is not None:
            n_f, n_r = sides
            ok = np.isfinite(reps).all(1)
            var_f, var_r = (
                float(np.var(reps[ok, i], ddof=1)) if ok.sum() > 1 else 0.0 for i in (0, 1)
            )
            df = welch_df(var_f, n_f, var_r, n_r)
            n = min(n_f, n_r)
            lo, hi = bootstrap_interval(
                reps.sum(1), value, n, self.confidence, kind=self.interval, df=df
            )
        else:
            n = min(self.original["forget"].n_units, self.original["retain"].n_units)
            lo, hi = bootstrap_interval(reps, value, n, self.confidence, kind=self.interval)
        return Interval(value, lo, hi, self.confidence)

    def intervals(self) -> dict[str, Interval]:
        """``max_difference`` and ``area_between`` with their bootstrap intervals."""
        parts = self._side_replicates()
        x = self.x

        def area(y: np.ndarray) -> np.ndarray:
            return np.sum((x[1:] - x[:-1]) * (y[:, 1:] + y[:, :-1]) / 2.0, axis=1)

        sides = (self.original["forget"].n_units, self.original["retain"].n_units)
        return {
            "max_difference": self._interval(
                self.max_difference, None if parts is None else (parts[0] - parts[1]).max(1)
            ),
            "area_between": self._interval(
                self.area_between,
                None if parts is None else np.stack([area(parts[0]), -area(parts[1])], 1),
                sides,
            ),
        }

    def difference_interval(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of the difference at every point."""
        parts = self._side_replicates()
        if parts is None:
            return np.full(len(self.x), np.nan), np.full(len(self.x), np.nan)
        sides = (self.original["forget"].n_units, self.original["retain"].n_units)
        bounds = [
            self._interval(float(v), np.stack([parts[0][:, j], -parts[1][:, j]], 1), sides)
            for j, v in enumerate(self.difference)
        ]
        return np.array([b.low for b in bounds]), np.array([b.high for b in bounds])

    def held_out(self) -> dict[str, Any]:
        """The level chosen on validation sequences, and the difference there on held-out ones.

        Each dataset's sequences are split in two halves (they come in a seeded random
        document order): the level with the largest difference on the first halves is
        chosen, and the difference at that level is reported on the second halves, with a
        bootstrap interval over them. Unbiased by the choice, unlike :attr:`max_difference`.

        Returns:
            ``{"level": float, "difference": Interval, "validation_difference": float}``;
            the difference is NaN when a dataset has fewer than 2 sequences or no
            per-sequence statistics.
        """
        nan = float("nan")
        halves = self._halves()
        if halves is None:
            return {
                "level": nan,
                "validation_difference": nan,
                "difference": Interval(nan, nan, nan, self.confidence),
            }
        val = self.drop_replicates("forget", halves["forget"][0]) - self.drop_replicates(
            "retain", halves["retain"][0]
        )
        j = int(np.nanargmax(val)) if np.isfinite(val).any() else 0
        value, reps = self.held_out_at(j)
        return {
            "level": float(self.x[j]),
            "validation_difference": float(val[j]),
            "difference": self._interval(value, reps, self._held_out_sides()),
        }

    def _held_out_sides(self) -> tuple[int, int] | None:
        halves = self._halves()
        return None if halves is None else (len(halves["forget"][1]), len(halves["retain"][1]))

    def _halves(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        halves = {}
        for ds in ("forget", "retain"):
            n = self.original[ds].n_units
            if n < 2:
                return None
            halves[ds] = (np.arange(n // 2), np.arange(n // 2, n))
        return halves

    def held_out_at(self, point: int) -> tuple[float, np.ndarray | None]:
        """The difference at point ``point`` of :attr:`x` on the held-out halves, and its
        bootstrap replicates ``[n_boot, 2]``: the forget drop and the negated retain drop,
        whose sum is the difference (the same resampled sequences in every curve on the
        same data, so replicates of two curves can be subtracted: a paired comparison)."""
        halves = self._halves()
        if halves is None:
            return float("nan"), None
        held = self.drop_replicates("forget", halves["forget"][1]) - self.drop_replicates(
            "retain", halves["retain"][1]
        )
        f, r = (self._indices(ds, halves[ds][1]) for ds in ("forget", "retain"))
        if f is None or r is None:
            return float(held[point]), None
        reps = np.stack(
            [
                self.drop_replicates("forget", f)[:, point],
                -self.drop_replicates("retain", r)[:, point],
            ],
            1,
        )
        return float(held[point]), reps

    def held_out_data(self, data: Mapping[str, TokenDataset]) -> dict[str, TokenDataset]:
        """The held-out halves of the forget and retain data this curve was evaluated on
        (where :meth:`held_out` reports), e.g. to evaluate a :class:`RandomBaseline` there
        only."""
        halves = self._halves()
        if halves is None:
            raise ValueError(
                "held_out_data() needs per-sequence statistics and at least 2 "
                "sequences per dataset."
            )
        for ds in ("forget", "retain"):
            if len(data[ds]) != self.original[ds].n_units:
                raise ValueError(
                    f"Dataset {ds!r} has {len(data[ds])} sequences; the curve "
                    f"was evaluated on {self.original[ds].n_units}."
                )
        return held_out_half(data)

    def versus(self, baseline: SelectivityCurve | RandomBaseline) -> Interval:
        """Held-out difference of this curve minus ``baseline``'s at the same level (the
        level chosen on validation data for this curve), paired over sequences.

        ``baseline`` is a random intervention of the same kind and size: another curve
        evaluated at that level on the same data (e.g. random neurons for pruning), or a
        :class:`RandomBaseline` (several seeds at that level, on all sequences or on the
        held-out halves only; its difference is the mean over seeds). NaN when the
        baseline has no such level.
        """
        level = self.held_out()["level"]
        nan = float("nan")
        point = np.flatnonzero(np.isclose(self.x, level))
        if not np.isfinite(level) or len(point) == 0:
            return Interval(nan, nan, nan, self.confidence)
        if self.include_zero and point[0] == 0:  # nothing removed: the baseline is the same
            return self._interval(0.0, np.zeros((self.n_boot, 2)), self._held_out_sides())
        mine, reps = self.held_out_at(int(point[0]))
        if isinstance(baseline, RandomBaseline):
            if not np.isclose(baseline.level, level):
                return Interval(nan, nan, nan, self.confidence)
            theirs, base_reps = self._baseline_held_out(baseline)
        else:
            match = np.flatnonzero(np.isclose(baseline.x, level))
            if len(match) == 0:
                return Interval(nan, nan, nan, self.confidence)
            theirs, base_reps = baseline.held_out_at(int(match[0]))
        diff = None if reps is None or base_reps is None else reps - base_reps
        return self._interval(mine - theirs, diff, self._held_out_sides())

    def _baseline_held_out(self, baseline: RandomBaseline) -> tuple[float, np.ndarray | None]:
        """A random baseline's held-out difference (mean over seeds) and its replicates
        ``[n_boot, 2]`` (forget part, negated retain part), on the same resampled sequences
        as :meth:`held_out_at`."""
        halves = self._halves()
        if halves is None or not baseline.evaluations:
            return float("nan"), None
        value = 0.0
        reps: np.ndarray | None = np.zeros((self.n_boot, 2))
        for side, (ds, sign) in enumerate((("forget", 1.0), ("retain", -1.0))):
            held = halves[ds][1]
            name = metric_of(self.metric, ds)
            idx = self._indices(ds, held)
            n_full = self.original[ds].n_units
            base0 = self.original[ds].estimate(name, held[None])[0]
            base = None if idx is None else self.original[ds].estimate(name, idx)
            for ev in baseline.evaluations:
                n = ev[ds].n_units
                if n not in (n_full, len(held)):
                    raise ValueError(
                        f"The random baseline {baseline.label!r} has {n} "
                        f"sequences of {ds!r}; expected {n_full} (all) or "
                        f"{len(held)} (the held-out half)."
                    )
                # its units are either all sequences or only the held-out half
                full = n == n_full
                with np.errstate(divide="ignore", invalid="ignore"):
                    value += sign * (
                        1.0
                        - ev[ds].estimate(name, (held if full else np.arange(len(held)))[None])[0]
                        / base0
                    )
                    if reps is not None and idx is not None:
                        local = idx if full else idx - held[0]
                        reps[:, side] += sign * (1.0 - ev[ds].estimate(name, local) / base)
                    else:
                        reps = None
        k = len(baseline.evaluations)
        return value / k, None if reps is None else reps / k

    def perplexity_ratio(self, dataset: str) -> np.ndarray:
        """``ppl(Mu) / ppl(M0)`` at each point of :attr:`x`."""
        base = self.original[dataset].perplexity
        ratios = [e[dataset].perplexity / base for e in self.evaluations]
        return np.array(([1.0] if self.include_zero else []) + ratios, dtype=float)

    def summary(self) -> dict[str, float]:
        """Summary numbers with their intervals (``*_low``/``*_high``) and the held-out
        difference at the level chosen on validation sequences."""
        iv = self.intervals()
        held = self.held_out()
        out = {
            "held_out_difference": held["difference"].value,
            "held_out_difference_low": held["difference"].low,
            "held_out_difference_high": held["difference"].high,
            "validated_level": held["level"],
            "max_difference": self.max_difference,
            "max_difference_low": iv["max_difference"].low,
            "max_difference_high": iv["max_difference"].high,
            "best_level": self.best_level,
            "area_between": self.area_between,
            "area_between_low": iv["area_between"].low,
            "area_between_high": iv["area_between"].high,
        }
        out.update(
            fit_seconds=self.fit_seconds,
            eval_seconds=sum(e.seconds for e in self.evaluations) + self.original.seconds,
        )
        return out

    def to_dataframe(self) -> Any:
        """One row per point: level, drops, difference, perplexity ratios."""
        import pandas as pd

        low, high = self.difference_interval()
        data = {
            self.level_name: self.x,
            "forget_drop": self.forget_drop,
            "retain_drop": self.retain_drop,
            "difference": self.difference,
            "difference_low": low,
            "difference_high": high,
        }
        for name in self.original.datasets:
            data[f"ppl_ratio_{name}"] = self.perplexity_ratio(name)
        return pd.DataFrame(data)

    # ----------------------------------------------------------------- figures
    def figure(self, kind: str = "drops", metric: MetricSpec | None = None) -> go.Figure:
        """The curve's pictures.

        Args:
            kind: ``"drops"``: forget and retain drop vs level (the selectivity curve), with
                bootstrap bands; ``"perplexity"``: perplexity ratio ``ppl(Mu)/ppl(M0)`` per
                dataset vs level (log y axis).
            metric: The drops' metric (default: the curve's).
        """
        self._check_kind(kind)
        if kind == "perplexity":
            return self._perplexity_figure()
        metric = metric or self.metric
        fig = go.Figure()
        for ds, fill in (("forget", "rgba(214,39,40,0.15)"), ("retain", "rgba(31,119,180,0.15)")):
            color = dataset_colour(ds)
            low, high = self.drop_interval(
                ds,
                metric,
                n_boot=self.n_boot,
                seed=self.seed,
                confidence=self.confidence,
                kind=self.interval,
            )
            if np.isfinite(low).any():
                fig.add_trace(
                    go.Scatter(
                        x=[*self.x, *self.x[::-1]],
                        y=[*high, *low[::-1]],
                        fill="toself",
                        fillcolor=fill,
                        line={"width": 0},
                        hoverinfo="skip",
                        name=f"{ds} {self.confidence:.0%} interval",
                        showlegend=True,
                    )
                )
            fig.add_trace(
                go.Scatter(
                    x=self.x,
                    y=self.drop(ds, metric),
                    mode="lines+markers",
                    name=f"{ds} drop",
                    line={"color": color},
                )
            )
        fig.update_layout(
            title=f"Selectivity: {self.name} (max difference {self.max_difference:.3f})",
            xaxis_title=self.level_name,
            yaxis_title=f"relative drop in {describe_metric(metric)}",
            template="plotly_white",
        )
        return fig

    def _perplexity_figure(self) -> go.Figure:
        fig = go.Figure()
        for ds in self.original.datasets:
            fig.add_trace(
                go.Scatter(
                    x=self.x,
                    y=self.perplexity_ratio(ds),
                    mode="lines+markers",
                    name=ds,
                    line={"color": dataset_colour(ds)},
                )
            )
        fig.update_layout(
            title=f"Perplexity ratio: {self.name}",
            xaxis_title=self.level_name,
            yaxis_title="ppl(intervened) / ppl(original)",
            yaxis_type="log",
            template="plotly_white",
        )
        return fig

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "levels": list(self.levels),
            "metric": self.metric,
            "level_name": self.level_name,
            "include_zero": self.include_zero,
            "fit_seconds": self.fit_seconds,
            "info": self.info,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "confidence": self.confidence,
            "interval": self.interval,
            "original": self.original.to_dict(),
            "evaluations": [e.to_dict() for e in self.evaluations],
            "seconds": self.seconds,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SelectivityCurve:
        return cls(
            d["label"] if "label" in d else d["name"],
            list(d["levels"]),
            Evaluation.from_dict(d["original"]),
            [Evaluation.from_dict(e) for e in d["evaluations"]],
            d.get("metric", "top1"),
            d.get("level_name", "fraction removed"),
            d.get("include_zero", True),
            d.get("fit_seconds", 0.0),
            dict(d.get("info", {})),
            int(d.get("n_boot", 1000)),
            int(d.get("seed", 0)),
            float(d.get("confidence", 0.95)),
            float(d.get("seconds", 0.0)),
            d.get("interval", "percentile"),  # saved before the kinds existed: percentile
        )


def held_out_half(data: Mapping[str, TokenDataset]) -> dict[str, TokenDataset]:
    """The second half of the forget and retain sequences: where a curve's held-out
    difference (:meth:`SelectivityCurve.held_out`) is measured.

    Examples:
        >>> import torch
        >>> from tl_unlearn.data.datasets import TokenDataset
        >>> from tl_unlearn.metrics.selectivity import held_out_half
        >>> d = TokenDataset("forget", torch.zeros(5, 4, dtype=torch.long), torch.ones(5, 4, dtype=torch.bool))
        >>> len(held_out_half({"forget": d, "retain": d})["forget"])
        3
    """
    return {ds: data[ds].rows(slice(len(data[ds]) // 2, None)) for ds in ("forget", "retain")}


def selectivity_curve(
    model: Any,
    data: Mapping[str, TokenDataset],
    family: Callable[[float], Intervention],
    levels: Sequence[float],
    *,
    name: str = "",
    metric: MetricSpec | MetricFn | Mapping[str, str | MetricFn] = "top1",
    level_name: str = "fraction removed",
    include_zero: bool = True,
    original: Evaluation | None = None,
    fit_seconds: float = 0.0,
    progress: bool = True,
    n_boot: int = 1000,
    confidence: float = 0.95,
    interval: str | None = None,
    evaluations: Sequence[Evaluation] | None = None,
    **evaluate_kwargs: Any,
) -> SelectivityCurve:
    """Evaluate ``family(level)`` at each level on forget and retain data.

    All levels (and the original model, unless given) are evaluated in one streaming pass
    with :func:`~tl_unlearn.metrics.evaluation.evaluate_many`, reusing the shared prefix of
    the forward pass when every level only touches later layers.

    Args:
        model: The model.
        data: Token datasets with at least ``"forget"`` and ``"retain"``.
        family: Builds the intervention for a level (e.g.
            ``lambda f: scores.intervention(f)`` for pruning).
        levels: Levels to evaluate, in increasing order.
        name: Method name (default: taken from the first intervention).
        metric: Metric of the drops: any :meth:`Evaluation.metric` name, a user metric
            ``metric(logits, batch)``, or a mapping dataset -> either (e.g.
            ``{"forget": logit_diff, "retain": "top1"}``).
        original: Reuse an evaluation of the original model (saves one pass).
        fit_seconds: Time spent fitting the family, reported with the result.
        progress: Progress bar.
        n_boot: Bootstrap replicates of the curve's intervals (over sequences, paired).
        confidence: Nominal coverage of the intervals.
        interval: How intervals are made from the replicates (one of
            :data:`~tl_unlearn.metrics.intervals.INTERVAL_KINDS`; default
            :data:`~tl_unlearn.metrics.intervals.DEFAULT_INTERVAL`).
        evaluations: Evaluations of ``family`` at each level already made (e.g. merged from
            units run elsewhere; needs ``original``): nothing is evaluated again.
        **evaluate_kwargs: ``batch_size``, ``top_k``, ``skip_common``, ``metrics`` (more
            user metrics) for :func:`evaluate`.

    Examples:
        >>> from tl_unlearn import selectivity_curve
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> from tl_unlearn.interventions import pruning_scores
        >>> model = load_tiny_model()
        >>> task = make_task()
        >>> fit = task.tokenize(model.tokenizer, "fit", seq_len=64, max_tokens=2000)
        >>> ev = task.tokenize(model.tokenizer, "eval", seq_len=64, max_tokens=1000)
        >>> ps = pruning_scores(model, fit["forget"], fit["retain"])
        >>> curve = selectivity_curve(model, ev, ps.intervention, [0.01, 0.05], progress=False)
        >>> len(curve.x)
        3
    """
    require_forget_retain(data, "selectivity_curve()")
    check_interval_settings(n_boot, confidence)
    interval = check_interval_kind(interval)
    metric, evaluate_kwargs["metrics"] = resolve_metric(metric, evaluate_kwargs.get("metrics"))
    check_metric_name(
        metric,
        evaluate_kwargs.get("top_k", (1, 5)),
        evaluate_kwargs.get("skip_common", 50),
        evaluate_kwargs["metrics"],
    )
    levels = [float(level) for level in levels]
    if not levels:
        raise ValueError("selectivity_curve() needs at least one level.")
    t0 = time.perf_counter()
    if evaluations is not None:
        if original is None or len(evaluations) != len(levels):
            raise ValueError("evaluations= needs original= and one evaluation per level.")
        name = name or evaluations[0].label
    else:
        interventions = [family(level) for level in levels]
        name = name or interventions[0].name
        runs: list[Any] = ([] if original is not None else [[]]) + interventions
        results = evaluate_many(
            model,
            data,
            runs,
            labels=None
            if original is not None
            else ["original", *(iv.name for iv in interventions)],
            progress=progress,
            **evaluate_kwargs,
        )
        if original is None:
            original, evaluations = results[0], results[1:]
        else:
            evaluations = results
    return SelectivityCurve(
        name,
        levels,
        original,
        list(evaluations),
        metric,
        level_name,
        include_zero,
        fit_seconds,
        n_boot=n_boot,
        confidence=confidence,
        seconds=fit_seconds + time.perf_counter() - t0,
        interval=interval,
    )
