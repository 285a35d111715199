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

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Interval",
    "bootstrap_indices",
    "check_interval_settings",
    "dataset_seed",
    "error_bars",
    "percentile_interval",
    "pointwise_intervals",
    "ratio_interval",
    "ratio_of_sums",
    "paired_difference_interval",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval.

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
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}.")
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


def pointwise_intervals(
    replicates: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the percentile interval of each column of ``[n_boot, n_points]``
    replicates (e.g. every point of a curve)."""
    bounds = np.array(
        [percentile_interval(replicates[:, j], confidence) for j in range(replicates.shape[1])]
    ).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def ratio_interval(
    num: np.ndarray,
    den: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``sum(num) / sum(den)`` resampling units (and samples).

    Args:
        num: Per-unit numerators, ``[unit]`` or ``[unit, sample]``.
        den: Per-unit denominators, same shape.
        n_boot: Bootstrap replicates.
        seed: Seed of the resampling.
        confidence: Nominal coverage.
    """
    check_interval_settings(n_boot, confidence)
    s_num, s_den = _replicates([num, den], n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return percentile_interval(s_num / s_den, confidence)


def paired_difference_interval(
    num_a: np.ndarray,
    den_a: np.ndarray,
    num_b: np.ndarray,
    den_b: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Interval of ``ratio(a) - ratio(b)`` with the same resampled units for both (paired)."""
    check_interval_settings(n_boot, confidence)
    na, da, nb, db = _replicates([num_a, den_a, num_b, den_b], n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return percentile_interval(na / da - nb / db, confidence)
