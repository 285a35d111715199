"""Bootstrap confidence intervals over whole units (sequences, prompts, samples).

Tokens inside one unit are correlated, so intervals resample units, never tokens
(``docs/metrics.md``, "Intervals and significance"). A statistic that is a ratio of
sums (an accuracy, a mean loss, a word frequency) is kept as per-unit numerators and
denominators; each replicate resamples unit indices and recomputes the ratio. Comparisons of
two runs on the same units are *paired*: each replicate uses the same indices for both.

For data with two levels (prompts, and several sampled continuations per prompt) the
bootstrap is two-stage: prompts with replacement, then samples within each chosen prompt.

Examples:
    >>> import numpy as np
    >>> num = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 0.0]])
    >>> den = np.full((3, 2), 4.0)
    >>> ratio_of_sums(num, den)
    0.16666666666666666
    >>> lo, hi = ratio_interval(num, den, n_boot=200, seed=0)
    >>> bool(lo <= ratio_of_sums(num, den) <= hi)
    True
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tl_unlearn.core.checks import check_positive_int

__all__ = [
    "DEFAULT_INTERVAL",
    "INTERVAL_KINDS",
    "Interval",
    "IntervalKind",
    "bootstrap_indices",
    "bootstrap_interval",
    "check_interval_kind",
    "describe_interval",
    "check_interval_settings",
    "dataset_seed",
    "is_proportion",
    "error_bars",
    "percentile_interval",
    "pointwise_intervals",
    "ratio_interval",
    "ratio_of_sums",
    "paired_difference_interval",
    "welch_df",
]

IntervalKind = Literal["t", "expanded", "percentile"]
INTERVAL_KINDS: tuple[str, ...] = ("t", "expanded", "percentile")
"""How an interval is made from bootstrap replicates of a statistic of ``n`` units:

- ``"t"``: ``value +- t(df) * sqrt(n / (n - 1)) * sd(replicates)``, a t interval whose
  standard error is the bootstrap's, corrected for its ``(n - 1) / n`` variance bias (for a
  mean it is exactly the classical t interval);
- ``"expanded"``: the percentile interval at the widened level whose normal quantile is
  ``sqrt(n / (n - 1)) * t(df)`` (Hesterberg's expanded percentile interval);
- ``"percentile"``: the plain percentile interval, which undercovers with few units (about
  90% for a nominal 95% at 16 sequences).
"""
DEFAULT_INTERVAL: IntervalKind = "t"
"""The kind every result uses unless told otherwise; chosen by the coverage simulation of
``scripts/docs_tables/interval_coverage.py`` on data other than the data the docs report on."""


_INTERVAL_WORDS = {
    "t": (
        "t interval on the bootstrap's standard error (corrected for its (n − 1)/n variance "
        "bias; Welch degrees of freedom for a forget-minus-retain difference; on the logit "
        "scale for an accuracy)"
    ),
    "expanded": "expanded percentile bootstrap interval (Hesterberg's widened level)",
    "percentile": "percentile bootstrap interval",
}


def describe_interval(kind: str | None = None, confidence: float = 0.95) -> str:
    """What an interval of ``kind`` (default :data:`DEFAULT_INTERVAL`) is, in words: the text
    reports print under their brackets, so that it cannot drift from the code.

    Examples:
        >>> describe_interval("percentile")
        '95% percentile bootstrap interval'
        >>> describe_interval().startswith("95% t interval")
        True
    """
    kind = check_interval_kind(kind)
    return f"{confidence:.0%} {_INTERVAL_WORDS[kind]}"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap interval (see :data:`INTERVAL_KINDS`).

    Attributes:
        value: The estimate on all the data.
        low: Lower bound.
        high: Upper bound.
        confidence: Nominal coverage (e.g. 0.95).

    Examples:
        >>> from tl_unlearn.metrics import Interval
        >>> iv = Interval(0.5, 0.4, 0.6)
        >>> Interval.from_dict(iv.to_dict()) == iv
        True
    """

    value: float
    low: float
    high: float
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Interval:
        return cls(
            float(d["value"]), float(d["low"]), float(d["high"]), float(d.get("confidence", 0.95))
        )

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def error_bars(intervals: Sequence[Interval]) -> dict[str, Any]:
    """A Plotly ``error_x``/``error_y`` spec drawing each interval around its value.

    Examples:
        >>> bars = error_bars([Interval(0.5, 0.25, 1.0)])
        >>> bars["array"], bars["arrayminus"]
        ([0.5], [0.25])
    """
    return {
        "type": "data",
        "symmetric": False,
        "array": [i.high - i.value for i in intervals],
        "arrayminus": [i.value - i.low for i in intervals],
    }


def check_interval_settings(n_boot: int, confidence: float) -> None:
    """Raise ValueError unless ``n_boot`` is a positive int and ``confidence`` in (0, 1)."""
    check_positive_int(n_boot, "n_boot")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")


def bootstrap_indices(
    n_units: int, n_samples: int = 1, *, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two-stage resampling indices: ``(units [n_boot, n_units], samples [n_boot, n_units, n_samples])``.

    Row ``b`` picks ``n_units`` units with replacement and, for each, ``n_samples`` of its
    samples with replacement. With ``n_samples=1`` the second stage is trivial.
    """
    if n_units < 1 or n_samples < 1:
        raise ValueError(f"Need at least one unit and one sample, got {n_units} x {n_samples}.")
    rng = np.random.default_rng(seed)
    units = rng.integers(0, n_units, size=(n_boot, n_units))
    samples = rng.integers(0, n_samples, size=(n_boot, n_units, n_samples))
    return units, samples


def ratio_of_sums(num: np.ndarray, den: np.ndarray) -> float:
    """``sum(num) / sum(den)`` (NaN when the denominator is 0)."""
    d = float(np.sum(den))
    return float(np.sum(num)) / d if d > 0 else float("nan")


def _replicates(arrays: list[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Per-replicate sums of each ``[unit, sample]`` array, with shared indices."""
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    n_units, n_samples = arrays[0].shape
    units, samples = bootstrap_indices(n_units, n_samples, n_boot=n_boot, seed=seed)
    return [a[units[..., None], samples].sum(axis=(1, 2)) for a in arrays]


def dataset_seed(seed: int, dataset: str) -> int:
    """A resampling seed per dataset: the same dataset gets the same unit indices in every
    result (so two results on it are paired), different datasets independent ones."""
    return (int(seed) * 1_000_003 + zlib.crc32(dataset.encode())) % 2**32


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (non-finite replicates ignored)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def check_interval_kind(kind: str | None) -> IntervalKind:
    """``kind`` (or :data:`DEFAULT_INTERVAL` for None), refused by name unless it is one of
    :data:`INTERVAL_KINDS`."""
    kind = DEFAULT_INTERVAL if kind is None else kind
    if kind not in INTERVAL_KINDS:
        raise ValueError(f"Unknown interval kind {kind!r}; choose one of {list(INTERVAL_KINDS)}.")
    return kind  # type: ignore[return-value]


PROPORTION_METRICS = re.compile(r"top\d+(_skip)?|answer_accuracy|first_token_accuracy|answer_prob")
"""Metric names whose values lie in [0, 1] (accuracies and probabilities)."""


def is_proportion(metric: str) -> bool:
    """Whether ``metric`` (a :meth:`~tl_unlearn.metrics.evaluation.Evaluation.metric`
    name) lies in [0, 1].

    Examples:
        >>> is_proportion("top1"), is_proportion("top5_skip"), is_proportion("loss")
        (True, True, False)
    """
    return PROPORTION_METRICS.fullmatch(metric) is not None


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two independent
    estimates with variances ``var_a``, ``var_b`` from ``n_a``, ``n_b`` units.

    Examples:
        >>> welch_df(1.0, 8, 1.0, 8)
        14.0
    """
    if n_a < 2 or n_b < 2:
        return float(max(min(n_a, n_b) - 1, 0))
    den = var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1)
    if not np.isfinite(den) or den <= 0:
        return float(min(n_a, n_b) - 1)
    return float((var_a + var_b) ** 2 / den)


def bootstrap_interval(
    replicates: np.ndarray,
    value: float,
    n_units: int,
    confidence: float = 0.95,
    *,
    kind: str | None = None,
    df: float | None = None,
    proportion: bool = False,
) -> tuple[float, float]:
    """An interval from bootstrap replicates of a statistic of ``n_units`` units.

    Args:
        replicates: The statistic on each bootstrap resample (non-finite ones ignored).
        value: The statistic on all the units (the centre of a ``"t"`` interval).
        n_units: Units resampled (per side for a difference of two samples).
        confidence: Nominal coverage.
        kind: One of :data:`INTERVAL_KINDS` (default :data:`DEFAULT_INTERVAL`).
        df: Degrees of freedom of the t quantile (default ``n_units - 1``; see
            :func:`welch_df` for a difference of two independent samples).
        proportion: The statistic lies in [0, 1] (an accuracy): a ``"t"`` interval is then
            made on the logit scale and mapped back, so it stays inside [0, 1] and widens
            towards the side the skewed replicates point to.

    Returns:
        ``(low, high)``; NaN when there are no finite replicates. With one unit the
        percentile interval is returned whatever the kind (there is no t quantile).

    Examples:
        >>> import numpy as np
        >>> from scipy import stats
        >>> x = np.random.default_rng(0).normal(size=16)
        >>> reps = x[np.random.default_rng(1).integers(0, 16, (4000, 16))].mean(1)
        >>> lo, hi = bootstrap_interval(reps, x.mean(), 16)
        >>> t_lo, t_hi = stats.t.interval(0.95, 15, x.mean(), stats.sem(x))
        >>> bool(abs(lo - t_lo) < 0.02 and abs(hi - t_hi) < 0.02)
        True
    """
    from scipy import stats

    kind = check_interval_kind(kind)
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    df = float(n_units - 1) if df is None else float(df)
    if kind == "percentile" or n_units < 2 or not df > 0:
        return percentile_interval(reps, confidence)
    inflate = math.sqrt(n_units / (n_units - 1))
    q = float(stats.t.ppf(0.5 + confidence / 2.0, df))
    if kind == "t" and proportion and 0.0 < value < 1.0:
        logit = np.log(np.clip(reps, 1e-9, 1 - 1e-9) / (1 - np.clip(reps, 1e-9, 1 - 1e-9)))
        centre = math.log(value / (1.0 - value))
        se = inflate * float(np.std(logit, ddof=1)) if reps.size > 1 else 0.0
        lo, hi = centre - q * se, centre + q * se
        return float(1.0 / (1.0 + math.exp(-lo))), float(1.0 / (1.0 + math.exp(-hi)))
    if kind == "t":
        se = inflate * float(np.std(reps, ddof=1)) if reps.size > 1 else 0.0
        lo, hi = float(value - q * se), float(value + q * se)
        return (max(lo, 0.0), min(hi, 1.0)) if proportion else (lo, hi)
    widened = 1.0 - 2.0 * float(stats.norm.sf(inflate * q))  # expanded percentile
    return percentile_interval(reps, widened)


def pointwise_intervals(
    replicates: np.ndarray,
    confidence: float = 0.95,
    *,
    values: np.ndarray | None = None,
    n_units: int | None = None,
    kind: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the interval of each column of ``[n_boot, n_points]`` replicates
    (e.g. every point of a curve), of the kind :func:`bootstrap_interval` makes from the
    point ``values`` and ``n_units``; the plain percentile interval without them."""
    plain = values is None or n_units is None
    bounds = np.array(
        [
            percentile_interval(replicates[:, j], confidence)
            if plain
            else bootstrap_interval(
                replicates[:, j], float(values[j]), n_units, confidence, kind=kind
            )
            for j in range(replicates.shape[1])
        ]
    ).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def ratio_interval(
    num: np.ndarray,
    den: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    kind: str | None = None,
) -> tuple[float, float]:
    """Interval of ``sum(num) / sum(den)`` resampling units (and samples).

    Args:
        num: Per-unit numerators, ``[unit]`` or ``[unit, sample]``.
        den: Per-unit denominators, same shape.
        n_boot: Bootstrap replicates.
        seed: Seed of the resampling.
        confidence: Nominal coverage.
        kind: One of :data:`INTERVAL_KINDS` (default :data:`DEFAULT_INTERVAL`).
    """
    check_interval_settings(n_boot, confidence)
    s_num, s_den = _replicates([num, den], n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = s_num / s_den
    value = ratio_of_sums(num, den)
    return bootstrap_interval(reps, value, len(num), confidence, kind=kind)


def paired_difference_interval(
    num_a: np.ndarray,
    den_a: np.ndarray,
    num_b: np.ndarray,
    den_b: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    kind: str | None = None,
) -> tuple[float, float]:
    """Interval of ``ratio(a) - ratio(b)`` with the same resampled units for both (paired)."""
    check_interval_settings(n_boot, confidence)
    na, da, nb, db = _replicates([num_a, den_a, num_b, den_b], n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = na / da - nb / db
    value = ratio_of_sums(num_a, den_a) - ratio_of_sums(num_b, den_b)
    return bootstrap_interval(reps, value, len(num_a), confidence, kind=kind)
