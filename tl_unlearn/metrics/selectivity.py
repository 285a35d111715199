"""Sweeps and selectivity curves: forget vs retain drop as more components are removed.

A *family* of interventions is a function ``level -> Intervention`` (a fraction of units, a
steering coefficient, a number of heads...). :func:`selectivity_curve` evaluates the original
model once and each level once, streaming, and returns a :class:`SelectivityCurve`:

- points ``(level, drop on forget, drop on retain)`` with ``drop = 1 - metric(Mu)/metric(M0)``;
- ``max_difference``: max over points of ``drop_F - drop_R``;
- ``area_between``: trapezoid integral of ``drop_F - drop_R`` over the level axis;
- ``perplexity_ratio``: ``ppl(Mu)/ppl(M0)`` per dataset and level.

The level-0 point (the original model, drop 0) is included when ``include_zero`` is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from tl_unlearn.data import TokenDataset, require_forget_retain
from tl_unlearn.files import atomic_write_text
from tl_unlearn.interventions.base import Intervention
from tl_unlearn.metrics.evaluation import (
    Evaluation,
    ForgetRetainDrops,
    MetricFn,
    MetricSpec,
    check_metric_name,
    describe_metric,
    evaluate_many,
    resolve_metric,
)

__all__ = ["SelectivityCurve", "selectivity_curve"]


@dataclass
class SelectivityCurve(ForgetRetainDrops):
    """Evaluations of a family of interventions at several levels, against the original.

    Attributes:
        name: Name of the method (e.g. ``"prune-abs"``).
        levels: Level of each evaluated point (e.g. fraction of units removed).
        original: Evaluation of the unmodified model.
        evaluations: One evaluation per level.
        metric: Metric the drops use (``"top1"``, ``"top5_skip"``, ``"loss"``...).
        level_name: Axis label for the levels.
        include_zero: Whether the curve starts with the original model at level 0.
        fit_seconds: Time spent fitting the family (statistics, means, ...).

    Example:
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

    name: str
    levels: list[float]
    original: Evaluation
    evaluations: list[Evaluation]
    metric: MetricSpec = "top1"
    level_name: str = "fraction removed"
    include_zero: bool = True
    fit_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.evaluations):
            raise ValueError(
                f"{len(self.levels)} levels but {len(self.evaluations)} evaluations"
            )
        if not self.levels:
            raise ValueError("A selectivity curve needs at least one level.")
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

    def perplexity_ratio(self, dataset: str) -> np.ndarray:
        """``ppl(Mu) / ppl(M0)`` at each point of :attr:`x`."""
        base = self.original[dataset].perplexity
        ratios = [e[dataset].perplexity / base for e in self.evaluations]
        return np.array(([1.0] if self.include_zero else []) + ratios, dtype=float)

    def summary(self) -> dict[str, float]:
        return {"max_difference": self.max_difference, "best_level": self.best_level,
                "area_between": self.area_between, "fit_seconds": self.fit_seconds,
                "eval_seconds": sum(e.seconds for e in self.evaluations) + self.original.seconds}

    def to_dataframe(self) -> Any:
        """One row per point: level, drops, difference, perplexity ratios."""
        import pandas as pd

        data = {self.level_name: self.x, "forget_drop": self.forget_drop,
                "retain_drop": self.retain_drop, "difference": self.difference}
        for name in self.original.datasets:
            data[f"ppl_ratio_{name}"] = self.perplexity_ratio(name)
        return pd.DataFrame(data)

    # ----------------------------------------------------------------- figures
    def figure(self, metric: MetricSpec | None = None) -> go.Figure:
        """Forget and retain drop vs level (the selectivity curve)."""
        metric = metric or self.metric
        fig = go.Figure()
        for ds, color in (("forget", "#d62728"), ("retain", "#1f77b4")):
            fig.add_trace(go.Scatter(x=self.x, y=self.drop(ds, metric), mode="lines+markers",
                                     name=f"{ds} drop", line={"color": color}))
        fig.update_layout(
            title=f"Selectivity: {self.name} (max difference {self.max_difference:.3f})",
            xaxis_title=self.level_name, yaxis_title=f"relative drop in {describe_metric(metric)}",
            template="plotly_white",
        )
        return fig

    def perplexity_figure(self) -> go.Figure:
        """Perplexity ratio ``ppl(Mu)/ppl(M0)`` per dataset vs level (log y axis)."""
        fig = go.Figure()
        for ds in self.original.datasets:
            fig.add_trace(go.Scatter(x=self.x, y=self.perplexity_ratio(ds), mode="lines+markers",
                                     name=ds))
        fig.update_layout(title=f"Perplexity ratio: {self.name}", xaxis_title=self.level_name,
                          yaxis_title="ppl(intervened) / ppl(original)", yaxis_type="log",
                          template="plotly_white")
        return fig

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "levels": list(self.levels), "metric": self.metric,
                "level_name": self.level_name, "include_zero": self.include_zero,
                "fit_seconds": self.fit_seconds, "info": self.info,
                "original": self.original.to_dict(),
                "evaluations": [e.to_dict() for e in self.evaluations],
                "summary": self.summary()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SelectivityCurve:
        return cls(d["name"], list(d["levels"]), Evaluation.from_dict(d["original"]),
                   [Evaluation.from_dict(e) for e in d["evaluations"]], d.get("metric", "top1"),
                   d.get("level_name", "fraction removed"), d.get("include_zero", True),
                   d.get("fit_seconds", 0.0), dict(d.get("info", {})))

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically: a temporary file renamed into place)."""
        atomic_write_text(path, json.dumps(self.to_dict(), default=str))

    @classmethod
    def load(cls, path: str | Path) -> SelectivityCurve:
        return cls.from_dict(json.loads(Path(path).read_text()))


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
        **evaluate_kwargs: ``batch_size``, ``top_k``, ``skip_common``, ``metrics`` (more
            user metrics) for :func:`evaluate`.

    Example:
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
    metric, evaluate_kwargs["metrics"] = resolve_metric(metric, evaluate_kwargs.get("metrics"))
    check_metric_name(metric, evaluate_kwargs.get("top_k", (1, 5)),
                      evaluate_kwargs.get("skip_common", 50), evaluate_kwargs["metrics"])
    levels = [float(level) for level in levels]
    if not levels:
        raise ValueError("selectivity_curve() needs at least one level.")
    interventions = [family(level) for level in levels]
    name = name or interventions[0].name
    runs: list[Any] = ([] if original is not None else [[]]) + interventions
    results = evaluate_many(model, data, runs, labels=None if original is not None else
                            ["original", *(iv.name for iv in interventions)],
                            progress=progress, **evaluate_kwargs)
    if original is None:
        original, evaluations = results[0], results[1:]
    else:
        evaluations = results
    return SelectivityCurve(name, levels, original, evaluations, metric, level_name,
                            include_zero, fit_seconds)
