"""Do the intervals keep their promise? Coverage by simulation on a finite population.

A large evaluation (many sequences per dataset, from many documents) is taken as the
population. Many samples of ``n_units`` sequences per dataset are drawn from it without
replacement, as many runs of the default benchmark would see; on each sample every interval
the scorecard reports is made, and its coverage is the share of samples whose interval holds
the population's value. A 95% interval should cover about 95% of the time.

The intervals checked, for the curve of a method (and a second curve as its baseline):

- ``metric``: the forget and retain metric of the original model;
- ``drop``: the paired relative drop at each level, forget and retain;
- ``held_out_difference``: the difference of drops at the level chosen on the sample's
  validation halves, on its held-out halves (the value the scorecard ranks by); its
  population value is the population's difference at that same level;
- ``area_between``: the area between the drop curves;
- ``vs_baseline``: the held-out difference minus the baseline curve's at the same level;
- ``max_difference``: the in-sample maximum over levels (biased upward by the choice; shown
  so its coverage can be read, not used for ranking).

Examples:
    >>> from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation
    >>> from tl_unlearn.metrics.selectivity import SelectivityCurve
    >>> rng = np.random.default_rng(0)
    >>> def ev(p):
    ...     units = lambda q: {"n": [20] * 64, "loss": [20.0] * 64,
    ...                        "top1": rng.binomial(20, q, 64).tolist()}
    ...     return Evaluation({d: DatasetMetrics(d, 1280, 1.0, {1: 0.5}, units=units(q))
    ...                        for d, q in (("forget", p), ("retain", 0.5))})
    >>> curve = SelectivityCurve("m", [0.5], ev(0.5), [ev(0.3)])
    >>> cov = interval_coverage(curve, n_units=16, n_sims=20, n_boot=200)
    >>> sorted(cov.to_dataframe().index.unique())[:2]
    ['area_between', 'drop forget']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go
from tqdm.auto import tqdm

from tl_unlearn.core.results import Result
from tl_unlearn.metrics.intervals import INTERVAL_KINDS, check_interval_kind
from tl_unlearn.metrics.names import metric_of
from tl_unlearn.metrics.selectivity import SelectivityCurve

__all__ = ["IntervalCoverage", "interval_coverage"]


@dataclass
class IntervalCoverage(Result):
    """Measured coverage and mean width of each interval, per interval kind.

    Attributes:
        rows: One dict per (interval, kind): ``interval``, ``kind``, ``coverage``, its
            binomial standard error ``coverage_se``, ``mean_width`` and ``n`` (samples with a
            finite interval).
        n_units: Sequences per dataset in each simulated sample.
        n_sims: Simulated samples.
        population: Sequences per dataset in the population.
        confidence: Nominal coverage.
        label: What was simulated.
        seconds: Wall time.

    Examples:
        >>> c = IntervalCoverage([{"interval": "metric forget", "kind": "t", "coverage": 0.95,
        ...                        "coverage_se": 0.01, "mean_width": 0.1, "n": 500}],
        ...                      16, 500, {"forget": 800})
        >>> c.coverage("metric forget", "t")
        0.95
    """

    rows: list[dict[str, Any]]
    n_units: int
    n_sims: int
    population: dict[str, int] = field(default_factory=dict)
    confidence: float = 0.95
    label: str = "interval coverage"
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("coverage",)

    def coverage(self, interval: str, kind: str) -> float:
        """The measured coverage of one interval and kind."""
        for r in self.rows:
            if r["interval"] == interval and r["kind"] == kind:
                return float(r["coverage"])
        raise KeyError(f"No row for interval {interval!r} and kind {kind!r}.")

    def to_dataframe(self) -> Any:
        """One row per (interval, kind), indexed by interval (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("interval")

    def to_markdown(self) -> str:
        """The table as markdown: coverage and mean width per interval (rows) and kind."""
        kinds = list(dict.fromkeys(r["kind"] for r in self.rows))
        names = list(dict.fromkeys(r["interval"] for r in self.rows))
        head = "| interval | " + " | ".join(f"{k}: coverage (width)" for k in kinds) + " |"
        lines = [head, "| --- |" + " --- |" * len(kinds)]
        for name in names:
            cells = []
            for k in kinds:
                r = next(x for x in self.rows if x["interval"] == name and x["kind"] == k)
                cells.append(f"{r['coverage']:.3f} ({r['mean_width']:.3g})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def figure(self, kind: str = "coverage") -> go.Figure:
        """``kind="coverage"``: measured coverage per interval, one bar group per kind, with
        two binomial standard errors and the nominal level as a line."""
        self._check_kind(kind)
        fig = go.Figure()
        for k in dict.fromkeys(r["kind"] for r in self.rows):
            rows = [r for r in self.rows if r["kind"] == k]
            fig.add_trace(
                go.Bar(
                    x=[r["interval"] for r in rows],
                    y=[r["coverage"] for r in rows],
                    error_y={"type": "data", "array": [2 * r["coverage_se"] for r in rows]},
                    name=k,
                )
            )
        fig.add_hline(y=self.confidence, line_dash="dash")
        fig.update_layout(
            title=f"Coverage of nominal {self.confidence:.0%} intervals, "
            f"{self.n_units} sequences per dataset, {self.n_sims} samples",
            yaxis={"title": "coverage", "range": [0.5, 1.0]},
            barmode="group",
            template="plotly_white",
        )
        return fig


def _truths(curve: SelectivityCurve, baseline: SelectivityCurve | None) -> dict[str, Any]:
    metric = curve.metric
    return {
        "metric": {d: curve.original.metric(d, metric_of(metric, d)) for d in ("forget", "retain")},
        "drop": {d: curve.drop(d) for d in ("forget", "retain")},
        "difference": curve.difference,
        "area_between": curve.area_between,
        "max_difference": curve.max_difference,
        "baseline_difference": None if baseline is None else baseline.difference,
    }


def interval_coverage(
    population: SelectivityCurve,
    baseline: SelectivityCurve | None = None,
    *,
    n_units: int = 16,
    n_sims: int = 1000,
    kinds: tuple[str, ...] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> IntervalCoverage:
    """Coverage of the scorecard's intervals, by drawing samples from a population curve.

    Args:
        population: A selectivity curve evaluated on many sequences per dataset (the
            population: its values are the truth each interval should hold).
        baseline: Another curve on the same sequences and levels (e.g. the random
            counterpart), for ``vs_baseline``.
        n_units: Sequences per dataset in each sample (the default benchmark's 16).
        n_sims: Samples drawn (coverage has a standard error of about
            ``sqrt(0.05 * 0.95 / n_sims)``).
        kinds: Interval kinds to measure (default: all of
            :data:`~tl_unlearn.metrics.intervals.INTERVAL_KINDS`).
        n_boot: Bootstrap replicates per interval.
        seed: Seed of the sampling (and of each sample's bootstrap).
        progress: Progress bar.

    Returns:
        The :class:`IntervalCoverage` table.

    Raises:
        ValueError: A population with fewer than ``2 * n_units`` sequences in a dataset, a
            baseline on other data or levels, or an unknown kind.
    """
    t0 = time.perf_counter()
    kinds = tuple(check_interval_kind(k) for k in (kinds or INTERVAL_KINDS))
    sizes = {d: population.original[d].n_units for d in ("forget", "retain")}
    for d, n in sizes.items():
        if n < 2 * n_units:
            raise ValueError(
                f"The population has {n} sequences of {d!r}; simulating samples of "
                f"{n_units} needs at least {2 * n_units}."
            )
    if baseline is not None and (
        list(baseline.x) != list(population.x)
        or any(baseline.original[d].n_units != sizes[d] for d in sizes)
    ):
        raise ValueError("The baseline curve must have the population's levels and sequences.")
    truth = _truths(population, baseline)
    rng = np.random.default_rng(seed)
    hits: dict[tuple[str, str], list[float]] = {}
    widths: dict[tuple[str, str], list[float]] = {}

    def add(name: str, kind: str, low: float, high: float, true: float) -> None:
        if not (np.isfinite(low) and np.isfinite(high)):
            return
        hits.setdefault((name, kind), []).append(float(low <= true <= high))
        widths.setdefault((name, kind), []).append(high - low)

    def sub(curve: SelectivityCurve, idx: dict[str, np.ndarray], kind: str, s: int):
        return replace(
            curve,
            original=curve.original.rows(idx),
            evaluations=[e.rows(idx) for e in curve.evaluations],
            n_boot=n_boot,
            seed=s,
            interval=kind,
        )

    for s in tqdm(range(n_sims), desc="coverage", disable=not progress, leave=False):
        idx = {d: rng.choice(n, n_units, replace=False) for d, n in sizes.items()}
        for kind in kinds:
            c = sub(population, idx, kind, s)
            for d in ("forget", "retain"):
                iv = c.original.metric_interval(
                    d, metric_of(c.metric, d), n_boot=n_boot, seed=s, kind=kind
                )
                add(f"metric {d}", kind, iv.low, iv.high, truth["metric"][d])
                lo, hi = c.drop_interval(d, n_boot=n_boot, seed=s, kind=kind)
                start = len(c.drop_prefix)
                for j in range(start, len(c.x)):
                    add(f"drop {d}", kind, lo[j], hi[j], truth["drop"][d][j])
            held = c.held_out()
            j = int(np.flatnonzero(np.isclose(c.x, held["level"]))[0])
            diff = held["difference"]
            add("held_out_difference", kind, diff.low, diff.high, truth["difference"][j])
            ivs = c.intervals()
            a, m = ivs["area_between"], ivs["max_difference"]
            add("area_between", kind, a.low, a.high, truth["area_between"])
            add("max_difference", kind, m.low, m.high, truth["max_difference"])
            if baseline is not None and not (c.include_zero and j == 0):
                vs = c.versus(sub(baseline, idx, kind, s))
                true = truth["difference"][j] - truth["baseline_difference"][j]
                add("vs_baseline", kind, vs.low, vs.high, true)
    rows = []
    for (name, kind), h in hits.items():
        cov = float(np.mean(h))
        rows.append(
            {
                "interval": name,
                "kind": kind,
                "coverage": cov,
                "coverage_se": float(np.sqrt(cov * (1 - cov) / len(h))),
                "mean_width": float(np.mean(widths[(name, kind)])),
                "n": len(h),
            }
        )
    rows.sort(key=lambda r: (r["interval"], kinds.index(r["kind"])))
    return IntervalCoverage(
        rows,
        n_units,
        n_sims,
        sizes,
        population.confidence,
        f"coverage of {population.name}'s intervals",
        time.perf_counter() - t0,
    )
