"""Streaming forget/retain evaluation: loss, perplexity, top-k and skip-common top-k accuracy.

Batches are streamed through the model (optionally under hooks); per-position statistics are
reduced at once to a few sums per sequence (kept for bootstrap intervals over sequences), so
memory depends on the batch, never on the number of evaluated tokens. Definitions: the metric definitions page of the docs (``docs/metrics.md``):

- predicted positions: every non-padding position that has a next token;
- loss: mean token cross-entropy (nats); perplexity: ``exp(loss)`` (not the mean of
  per-token ``exp``);
- top-k accuracy: share of predicted positions whose target is among the k largest logits
  (ties go to the smaller token id, as ``argmax`` takes the first of tied maxima);
- skip variants: the same, excluding targets among the ``skip_common`` most frequent target
  tokens of that dataset (counted on the evaluated data itself).

Prompt→answer data (:class:`~tl_unlearn.data.tasks.PromptAnswers`) and token data with a
scored-positions mask are scored on their scored positions only (for answers: teacher
forcing over the answer tokens), and answer data also gets the answer metrics of the spec:
``answer_accuracy`` (every answer token is the argmax), ``first_token_accuracy``,
``answer_logprob`` (summed over the answer's tokens, mean over examples),
``answer_logprob_per_token``, ``answer_prob`` (mean of ``exp(answer_logprob)``),
``answer_rank`` (1 + entries with a larger logit than the first answer token, mean over
examples) and ``logit_diff`` (first answer token minus first counterfactual token, at the
last prompt position). Only the scored positions go through the full-vocabulary softmax.
Token metrics of a TransformerLens unembedding with no hook on it are scored from the final
residual, the vocabulary a slice at a time (:mod:`~tl_unlearn.engine.scoring`): a batch's
logits are never made whole.

User metrics follow the TransformerLens patching convention ``metric(logits, batch)`` and
return a scalar (the batch mean) or one value per example; ``batch`` is a
:class:`~tl_unlearn.data.datasets.TokenDataset` view of the batch (``batch.answer_logits(logits)``,
``batch.answers``, ``batch.counterfactual`` help with padded prompts). They are averaged
over examples and reported beside the builtin metrics under their own names.

Sequences are right-padded, so padding never influences real positions under causal attention
and no attention mask is passed to the model.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_unlearn.core.checks import Hooks, check_hook_name, check_positive_int, model_device
from tl_unlearn.core.results import Result, dataset_colour
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.forward import ForwardOutput, plan_forward
from tl_unlearn.engine.scoring import (
    answer_logit_diff,
    batch_statistics,
    plain_unembed,
    residual_statistics,
    scored_targets,
)
from tl_unlearn.metrics.intervals import (
    Interval,
    bootstrap_indices,
    bootstrap_interval,
    dataset_seed,
    error_bars,
    is_proportion,
    pointwise_intervals,
)
from tl_unlearn.metrics.names import (
    ANSWER_METRICS,
    SKIP_COMMON,
    MetricFn,
    MetricSpec,
    OnDatasets,
    check_user_metrics,
    describe_metric,
    metric_of,
)

__all__ = [
    "DatasetMetrics",
    "Evaluation",
    "ForgetRetainDrops",
    "evaluate",
    "evaluate_many",
    "merge_evaluations",
    "unit_indices",
]


@dataclass
class DatasetMetrics:
    """Metrics of one model on one dataset.

    Attributes:
        name: Dataset name (``"forget"``, ``"retain"``, ...).
        n_predictions: Number of predicted positions.
        loss: Mean next-token cross-entropy (nats).
        accuracy: Top-k accuracy by k.
        accuracy_skip: Top-k accuracy by k, excluding the most common target tokens.
        n_predictions_skip: Positions counted in ``accuracy_skip``.
        answer: Answer metrics (prompt→answer data only; see the module docstring).
        custom: User metrics by name, averaged over examples.
        n_examples: Examples (sequences) evaluated.
        units: Per-sequence sufficient statistics, one list per column, for intervals that
            resample sequences: ``n`` (scored positions), ``loss`` (summed), ``top{k}``
            (hits), ``n_skip``, ``top{k}_skip``, and one value per example for each answer
            metric and each user metric that returns one value per example.

    Examples:
        >>> from tl_unlearn import DatasetMetrics
        >>> m = DatasetMetrics("forget", 4, 2.0, {1: 0.5}, units={"n": [2, 2], "loss": [4, 4],
        ...                                                         "top1": [2, 0]})
        >>> round(m.perplexity, 3), m.n_units
        (7.389, 2)
    """

    name: str
    n_predictions: int
    loss: float
    accuracy: dict[int, float]
    accuracy_skip: dict[int, float] = field(default_factory=dict)
    n_predictions_skip: int = 0
    answer: dict[str, float] = field(default_factory=dict)
    custom: dict[str, float] = field(default_factory=dict)
    n_examples: int = 0
    units: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def perplexity(self) -> float:
        """``exp(mean loss)``."""
        return math.exp(self.loss)

    @property
    def n_units(self) -> int:
        """Sequences with per-sequence statistics (0 for results saved without them)."""
        return len(self.units.get("n", ()))

    def estimate(self, metric: str, idx: np.ndarray | None = None) -> np.ndarray | float:
        """``metric`` recomputed from the per-sequence statistics of the sequences ``idx``.

        ``idx`` is an integer array ``[..., n]`` (e.g. bootstrap replicates ``[n_boot, n]``);
        the metric is a ratio of sums over its last axis (an accuracy is hits / positions,
        an answer metric a mean over examples), so the result has shape ``idx.shape[:-1]``.
        Without ``idx``, all sequences (equal to the reported value). NaN where the metric
        has no per-sequence statistics.

        Examples:
            >>> m = DatasetMetrics("forget", 4, 1.0, {1: 0.5},
            ...                    units={"n": [1, 3], "loss": [1, 3], "top1": [1, 1]})
            >>> m.estimate("top1"), m.estimate("top1", np.array([[0, 0], [1, 1]])).tolist()
            (0.5, [1.0, 0.3333333333333333])
        """
        base = "loss" if metric == "perplexity" else metric
        if base not in self.units:
            return float("nan") if idx is None else np.full(np.shape(idx)[:-1], np.nan)
        num = np.asarray(self.units[base], dtype=float)
        if base == "loss" or re.fullmatch(r"top\d+", base):
            den = np.asarray(self.units["n"], dtype=float)
        elif re.fullmatch(r"top\d+_skip", base):
            den = np.asarray(self.units["n_skip"], dtype=float)
        else:
            den = np.ones_like(num)
        if idx is None:
            idx = np.arange(len(num))
        with np.errstate(divide="ignore", invalid="ignore"):
            value = num[idx].sum(-1) / den[idx].sum(-1)
        if metric == "perplexity":
            value = np.exp(value)
        return float(value) if np.ndim(value) == 0 else value

    def rows(self, idx: Sequence[int] | np.ndarray) -> DatasetMetrics:
        """The metrics of the sequences ``idx`` only, recomputed from the per-sequence
        statistics (metrics without them become NaN).

        Examples:
            >>> m = DatasetMetrics("forget", 4, 1.0, {1: 0.5},
            ...                    units={"n": [1, 3], "loss": [1, 3], "top1": [1, 1]})
            >>> part = m.rows([1])
            >>> part.accuracy[1], part.n_predictions, part.n_units
            (0.3333333333333333, 3, 1)
        """
        idx = np.asarray(idx, dtype=int)
        if self.n_units == 0:
            raise ValueError(
                f"Dataset {self.name!r} has no per-sequence statistics (saved without them), "
                "so its metrics cannot be recomputed on a subset."
            )
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self.n_units)):
            raise ValueError(
                f"Sequence indices must be a list within [0, {self.n_units}) for dataset "
                f"{self.name!r}."
            )

        def value(metric: str) -> float:
            return float(self.estimate(metric, idx))

        n_skip = self.units.get("n_skip")
        return DatasetMetrics(
            self.name,
            int(np.sum(np.asarray(self.units["n"])[idx])),
            value("loss"),
            {k: value(f"top{k}") for k in self.accuracy},
            {k: value(f"top{k}_skip") for k in self.accuracy_skip},
            0 if n_skip is None else int(np.sum(np.asarray(n_skip)[idx])),
            {k: value(k) for k in self.answer},
            {k: value(k) for k in self.custom},
            len(idx),
            {k: [v[i] for i in idx] for k, v in self.units.items()},
        )

    def flat_metrics(self) -> dict[str, Any]:
        """Every metric by its :meth:`Evaluation.metric` name (``top1``, ``top5``,
        ``top1_skip``, answer and user metrics...), for tables; not a saved shape."""
        out: dict[str, Any] = {
            "name": self.name,
            "n_predictions": self.n_predictions,
            "loss": self.loss,
            "perplexity": self.perplexity,
        }
        out.update({f"top{k}": v for k, v in self.accuracy.items()})
        out.update({f"top{k}_skip": v for k, v in self.accuracy_skip.items()})
        out["n_predictions_skip"] = self.n_predictions_skip
        out["n_examples"] = self.n_examples
        out.update(self.answer)
        out.update(self.custom)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The one saved shape: every field, nested."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetMetrics:
        """From :meth:`to_dict`'s output."""
        d = dict(d)
        d["accuracy"] = {int(a): b for a, b in d["accuracy"].items()}
        d["accuracy_skip"] = {int(a): b for a, b in d.get("accuracy_skip", {}).items()}
        d["units"] = {k: list(v) for k, v in d.get("units", {}).items()}
        return cls(**d)


@dataclass
class Evaluation(Result):
    """Metrics of one model (or one intervention) on several datasets.

    Attributes:
        datasets: The metrics of each dataset, by name (``evaluation["forget"]``).
        label: The intervention's name.
        seconds: Evaluation time.

    Examples:
        >>> from tl_unlearn import DatasetMetrics
        >>> from tl_unlearn import Evaluation
        >>> e = Evaluation({"forget": DatasetMetrics("forget", 10, 2.0, {1: 0.5})})
        >>> Evaluation.from_dict(e.to_dict()) == e
        True
    """

    datasets: dict[str, DatasetMetrics]
    label: str = ""
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("metric",)

    def __getitem__(self, name: str) -> DatasetMetrics:
        return self.datasets[name]

    def rows(self, indices: Mapping[str, Sequence[int] | np.ndarray]) -> Evaluation:
        """The evaluation of some sequences of each dataset only (``{dataset: indices}``;
        datasets not named are dropped), recomputed from the per-sequence statistics, e.g.
        to simulate smaller samples.

        Examples:
            >>> m = DatasetMetrics("forget", 4, 1.0, {1: 0.5},
            ...                    units={"n": [2, 2], "loss": [2, 2], "top1": [2, 0]})
            >>> Evaluation({"forget": m}).rows({"forget": [0]}).metric("forget")
            1.0
        """
        unknown = sorted(set(indices) - set(self.datasets))
        if unknown:
            raise ValueError(
                f"No dataset {unknown[0]!r}; this evaluation has {sorted(self.datasets)}."
            )
        return Evaluation(
            {k: self.datasets[k].rows(v) for k, v in indices.items()}, self.label, self.seconds
        )

    def metric(self, name: str, metric: MetricSpec = "top1") -> float:
        """One number of a dataset: ``loss``, ``perplexity``, ``top{k}``, ``top{k}_skip``, an
        answer metric (prompt→answer data) or a user metric's name."""
        metric = metric_of(metric, name)
        values = self.datasets[name].flat_metrics()
        if metric not in values or metric in (
            "name",
            "n_predictions",
            "n_examples",
            "n_predictions_skip",
        ):
            if metric in ANSWER_METRICS:
                raise ValueError(
                    f"Dataset {name!r} has no {metric!r}: answer metrics need "
                    "prompt→answer data (and logit_diff counterfactuals); use a "
                    "per-dataset metric such as {'forget': 'logit_diff', "
                    "'retain': 'top1'}."
                )
            choices = [
                k
                for k in values
                if k not in ("name", "n_predictions", "n_predictions_skip", "n_examples")
            ]
            raise ValueError(f"Unknown metric {metric!r}; choose one of {choices}.")
        return float(values[metric])

    def metric_interval(
        self,
        name: str,
        metric: MetricSpec = "top1",
        *,
        n_boot: int = 1000,
        seed: int = 0,
        confidence: float = 0.95,
        kind: str | None = None,
    ) -> Interval:
        """:meth:`metric` with a bootstrap interval over sequences (examples), of the
        ``kind`` of :func:`~tl_unlearn.metrics.intervals.bootstrap_interval`.

        Examples:
            >>> m = DatasetMetrics("forget", 24, 1.0, {1: 0.5}, units={
            ...     "n": [4] * 6, "loss": [4] * 6, "top1": [1, 2, 3, 2, 1, 3]})
            >>> iv = Evaluation({"forget": m}).metric_interval("forget", "top1", n_boot=200)
            >>> iv.value, round(iv.low, 2), round(iv.high, 2)  # a t interval on the logit scale
            (0.5, 0.27, 0.73)
        """
        value = self.metric(name, metric)
        idx = unit_indices([self], name, n_boot=n_boot, seed=seed)
        if idx is None:
            return Interval(value, float("nan"), float("nan"), confidence)
        key = metric_of(metric, name)
        reps = self.datasets[name].estimate(key, idx)
        bounds = bootstrap_interval(
            reps, value, idx.shape[-1], confidence, kind=kind, proportion=is_proportion(key)
        )
        return Interval(value, *bounds, confidence)

    def relative_drop(self, original: Evaluation, metric: MetricSpec = "top1") -> dict[str, float]:
        """``1 - metric(self) / metric(original)`` per dataset (spec: relative drop).

        For accuracies, probabilities and logit differences a positive drop means the
        intervention made the model worse; for ``loss``/``perplexity``/``answer_rank`` a
        worse model gives a negative drop. ``metric`` may name one metric per dataset.
        """
        out = {}
        for name in self.datasets:
            self._check_same_data(original, name)
            base = original.metric(name, metric)
            if base == 0:
                raise ValueError(
                    f"The original model's {metric} on {name!r} is 0, so a relative drop is "
                    "undefined: the model cannot do this task (choose data it can do, or "
                    "another metric)."
                )
            out[name] = 1.0 - self.metric(name, metric) / base
        return out

    def _check_same_data(self, original: Evaluation, name: str) -> None:
        """Refuse a comparison of two evaluations of different data (a drop between them
        would mean nothing): the dataset must exist in both with the same scored positions."""
        if name not in original.datasets:
            raise ValueError(
                f"The original evaluation has no dataset {name!r} (it has "
                f"{sorted(original.datasets)}): compare evaluations of the same "
                "data."
            )
        mine, theirs = self.datasets[name], original.datasets[name]
        n_mine, n_theirs = mine.units.get("n"), theirs.units.get("n")
        if (
            mine.n_predictions != theirs.n_predictions
            or mine.n_examples != theirs.n_examples
            or (n_mine is not None and n_theirs is not None and list(n_mine) != list(n_theirs))
        ):
            raise ValueError(
                f"Dataset {name!r} was evaluated on other data than the original: "
                f"{mine.n_examples} examples / {mine.n_predictions} scored positions here, "
                f"{theirs.n_examples} / {theirs.n_predictions} in the original. Evaluate the "
                "original model on the same data (re-run evaluate(model, data)) before taking "
                "a drop."
            )

    def drop_intervals(
        self,
        original: Evaluation,
        metric: MetricSpec = "top1",
        *,
        n_boot: int = 1000,
        seed: int = 0,
        confidence: float = 0.95,
        kind: str | None = None,
    ) -> dict[str, Interval]:
        """:meth:`relative_drop` per dataset with a paired bootstrap interval: each replicate
        resamples the same sequences (examples) for both evaluations.

        Args:
            original: The evaluation of the original model on the same data.
            metric: The metric (or one per dataset, as a mapping).
            n_boot: Bootstrap replicates.
            seed: Seed of the resampling.
            confidence: Nominal coverage.
            kind: How the interval is made from the replicates (see
                :data:`~tl_unlearn.metrics.intervals.INTERVAL_KINDS`).

        Returns:
            ``{dataset: Interval}`` (bounds NaN for results saved without per-sequence sums).

        Raises:
            ValueError: ``original`` was evaluated on other data, or its metric is 0.

        Examples:
            >>> a = DatasetMetrics("forget", 4, 1.0, {1: 0.5}, n_examples=2,
            ...                    units={"n": [2, 2], "loss": [2, 2], "top1": [2, 0]})
            >>> b = DatasetMetrics("forget", 4, 1.0, {1: 0.25}, n_examples=2,
            ...                    units={"n": [2, 2], "loss": [2, 2], "top1": [1, 0]})
            >>> iv = Evaluation({"forget": b}).drop_intervals(Evaluation({"forget": a}))
            >>> iv["forget"].value
            0.5
        """
        values = self.relative_drop(original, metric)
        out = {}
        for name, value in values.items():
            idx = unit_indices([original, self], name, n_boot=n_boot, seed=seed)
            if idx is None:
                out[name] = Interval(value, float("nan"), float("nan"), confidence)
                continue
            key = metric_of(metric, name)
            base = original.datasets[name].estimate(key, idx)
            with np.errstate(divide="ignore", invalid="ignore"):
                reps = 1.0 - self.datasets[name].estimate(key, idx) / base
            bounds = bootstrap_interval(reps, value, idx.shape[-1], confidence, kind=kind)
            out[name] = Interval(value, *bounds, confidence)
        return out

    def normalised_logit_diff(self, clean: Evaluation, baseline: Evaluation) -> dict[str, float]:
        """``(LD(self) - LD(baseline)) / (LD(clean) - LD(baseline))`` per answer dataset.

        1 = as the clean model, 0 = as the baseline (e.g. the clean model on the corrupted
        prompts: ``evaluate(model, task.forget.tokenize(tok, corrupted=True))``).
        """
        out = {}
        for name in self.datasets:
            if name not in baseline.datasets or "logit_diff" not in self[name].answer:
                continue
            base = baseline.metric(name, "logit_diff")
            span = clean.metric(name, "logit_diff") - base
            if span == 0:
                raise ValueError(
                    f"Clean and baseline logit differences on {name!r} are equal; "
                    "the normalised logit difference is undefined."
                )
            out[name] = (self.metric(name, "logit_diff") - base) / span
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seconds": self.seconds,
            "datasets": {k: v.to_dict() for k, v in self.datasets.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation:
        ds = {k: DatasetMetrics.from_dict(v) for k, v in d["datasets"].items()}
        return cls(ds, d.get("label", ""), float(d.get("seconds", 0.0)))

    def to_dataframe(self) -> Any:
        """One row per dataset (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([m.flat_metrics() for m in self.datasets.values()]).set_index("name")

    def figure(
        self, kind: str = "metric", metric: MetricSpec = "top1", *, n_boot: int = 1000
    ) -> Any:
        """``kind="metric"``: one bar per dataset with its bootstrap interval.

        Examples:
            >>> m = DatasetMetrics("forget", 4, 1.0, {1: 0.5},
            ...                    units={"n": [2, 2], "loss": [2, 2], "top1": [2, 0]})
            >>> Evaluation({"forget": m}).figure(n_boot=50).data[0].y
            (0.5,)
        """
        import plotly.graph_objects as go

        self._check_kind(kind)
        names = list(self.datasets)
        ivs = [self.metric_interval(n, metric, n_boot=n_boot) for n in names]
        fig = go.Figure(
            go.Bar(
                x=names,
                y=[i.value for i in ivs],
                error_y=error_bars(ivs),
                marker_color=[dataset_colour(n) for n in names],
            )
        )
        fig.update_layout(
            title=f"{describe_metric(metric)}: {self.label or 'evaluation'}",
            yaxis_title=describe_metric(metric),
            template="plotly_white",
        )
        return fig


class ForgetRetainDrops:
    """Mixin for results holding an ``original`` evaluation and a list of ``evaluations``.

    Subclasses set :attr:`drop_prefix` (values put before the evaluations' drops, e.g. the
    level-0 point of a curve) and get ``drop``, ``forget_drop`` and ``retain_drop``.
    """

    original: Evaluation
    evaluations: list[Evaluation]
    metric: MetricSpec
    drop_prefix: tuple[float, ...] = ()

    def drop(self, dataset: str, metric: MetricSpec | None = None) -> np.ndarray:
        """Relative drop of ``metric`` (default: the result's metric) on ``dataset``."""
        metric = metric or self.metric
        drops = [e.relative_drop(self.original, metric)[dataset] for e in self.evaluations]
        return np.array([*self.drop_prefix, *drops], dtype=float)

    def drop_replicates(
        self, dataset: str, idx: np.ndarray, metric: MetricSpec | None = None
    ) -> np.ndarray:
        """Relative drops recomputed on the sequences ``idx`` (``[..., n]``), for every point:
        shape ``idx.shape[:-1] + (n_points,)``. The original and each evaluation use the
        same sequences (paired)."""
        name = metric_of(metric or self.metric, dataset)
        base = np.asarray(self.original[dataset].estimate(name, idx), dtype=float)
        if base.ndim == 0 and base == 0:  # one set of sequences (e.g. a held-out half)
            raise ValueError(
                f"The original model's {name} on {dataset!r} is 0 on these {np.shape(idx)[-1]} "
                "sequences (e.g. a held-out half), so a relative drop is undefined there: the "
                "model cannot do this task on them (use more data, data it can do, or another "
                "metric)."
            )
        with np.errstate(divide="ignore", invalid="ignore"):  # replicates may hold a 0
            drops = [
                1.0 - np.asarray(e[dataset].estimate(name, idx), dtype=float) / base
                for e in self.evaluations
            ]
        prefix = [np.zeros(np.shape(base)) + p for p in self.drop_prefix]
        return np.stack([*prefix, *drops], -1)

    def drop_interval(
        self,
        dataset: str,
        metric: MetricSpec | None = None,
        *,
        n_boot: int = 1000,
        seed: int = 0,
        confidence: float = 0.95,
        kind: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paired bootstrap interval ``(low, high)`` of :meth:`drop` at every point (NaN for
        results without per-sequence statistics), of the ``kind`` of
        :func:`~tl_unlearn.metrics.intervals.bootstrap_interval`."""
        idx = unit_indices([self.original, *self.evaluations], dataset, n_boot=n_boot, seed=seed)
        n_points = len(self.drop_prefix) + len(self.evaluations)
        if idx is None:
            return np.full(n_points, np.nan), np.full(n_points, np.nan)
        return pointwise_intervals(
            self.drop_replicates(dataset, idx, metric),
            confidence,
            values=self.drop(dataset, metric),
            n_units=idx.shape[-1],
            kind=kind,
        )

    @property
    def forget_drop(self) -> np.ndarray:
        return self.drop("forget")

    @property
    def retain_drop(self) -> np.ndarray:
        return self.drop("retain")


def unit_indices(
    evaluations: Sequence[Evaluation],
    dataset: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    subset: np.ndarray | None = None,
) -> np.ndarray | None:
    """Bootstrap indices ``[n_boot, n]`` of ``dataset``'s sequences, shared by evaluations
    of the same data (paired); None when a result has no per-sequence statistics.

    ``subset`` resamples only those sequences (e.g. a held-out part). The indices depend on
    ``seed``, the dataset's name and its size only, so every result on the same data is
    resampled the same way.

    Raises:
        ValueError: If the evaluations saw different numbers of sequences (not paired).
    """
    sizes = {e[dataset].n_units for e in evaluations}
    if 0 in sizes:
        return None
    if len(sizes) > 1:
        raise ValueError(
            f"The results have per-sequence statistics for different numbers of "
            f"sequences of {dataset!r} ({sorted(sizes)}): they were not evaluated "
            "on the same data, so they cannot be compared pairwise."
        )
    units = np.arange(sizes.pop()) if subset is None else np.asarray(subset)
    if len(units) == 0:
        return None
    picks = bootstrap_indices(len(units), n_boot=n_boot, seed=dataset_seed(seed, dataset))[0]
    return units[picks]


#: Default N of the skip-common accuracies (the N most frequent targets left out).


def common_targets(ds: TokenDataset, n: int) -> Int[Tensor, " n"]:
    """The ``n`` most frequent targets of a dataset's scored positions (what the
    skip-common accuracies leave out)."""
    targets = ds.tokens[:, 1:][ds.scored_positions()]
    if n <= 0 or targets.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    counts = torch.bincount(targets)
    return torch.topk(counts, min(n, int((counts > 0).sum()))).indices


def answer_statistics(
    logits: Float[Tensor, "batch pos d_vocab"], batch: TokenDataset
) -> Float[Tensor, "batch stats"]:
    """Per-example answer metrics, in the order of ``ANSWER_METRICS`` (float64).

    Per example (teacher forcing): the answer's summed log-probability, its per-token mean and ``exp``, exact match (every answer token is the
    argmax), first-token hit, rank of the first answer token, and the logit difference
    answer − counterfactual at the last prompt position (0 when there is no counterfactual).
    """
    valid = batch.scored_positions().to(logits.device)
    _, nll, hits = scored_targets(logits, batch.tokens.to(logits.device), valid, (1,))
    rows = valid.nonzero()[:, 0]
    n = len(batch)
    logprob = torch.zeros(n, dtype=torch.float64, device=logits.device).index_add_(
        0, rows, -nll.double()
    )
    n_tokens = torch.bincount(rows, minlength=n).double()
    misses = torch.bincount(rows, weights=(~hits[0]).double(), minlength=n)
    final = batch.answer_logits(logits).float()
    answer = batch.answers.to(logits.device)
    answer_logit = final.gather(1, answer[:, None])
    rank = 1 + (final > answer_logit).sum(-1).double()
    ld = torch.zeros(n, dtype=torch.float64, device=logits.device)
    if batch.counterfactual is not None:  # the one logit difference, in float32 as above
        ld = answer_logit_diff(logits.float(), batch).double()
    out = [
        logprob,
        logprob / n_tokens,
        logprob.exp(),
        (misses == 0).double(),
        (rank == 1).double(),
        rank,
        ld,
    ]
    return torch.stack(out, 1).cpu()


def _user_metric_values(
    fn: MetricFn, name: str, logits: Tensor, batch: TokenDataset, dataset: str, label: str
) -> tuple[Float[Tensor, " batch"], bool]:
    """A user metric's value per example of the batch, checked, and whether the metric gave
    one value per example (True) or only the batch mean (False, repeated per example)."""
    value = torch.as_tensor(fn(logits, batch)).detach().double().cpu()
    n = len(batch)
    if value.numel() == 1:
        values, per_example = value.reshape(()).expand(n).clone(), False
    elif tuple(value.shape) == (n,):
        values, per_example = value, True
    else:
        raise ValueError(
            f"Metric {name!r} returned shape {tuple(value.shape)} on a batch of "
            f"{n} examples of {dataset!r}; return a scalar (the batch mean) or "
            f"one value per example, shape ({n},)."
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"Metric {name!r} returned NaN or inf on dataset {dataset!r} under "
            f"{label or 'the original model'!r}."
        )
    return values, per_example


@dataclass
class MetricAccumulator:
    """The *reduce* half of :func:`evaluate_many` for one dataset under one intervention:
    per-sequence sufficient statistics (a few floats per sequence, never logits), kept so
    that every number can be given a bootstrap interval over sequences."""

    name: str
    label: str
    top_k: tuple[int, ...]
    skip_ids: Tensor | None
    answers: bool
    metrics: dict[str, MetricFn]
    rows: list[Tensor] = field(default_factory=list)
    answer_rows: list[Tensor] = field(default_factory=list)
    user_rows: dict[str, list[Tensor]] = field(default_factory=dict)
    per_example: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_rows = {k: [] for k in self.metrics}
        self.per_example = dict.fromkeys(self.metrics, True)

    def add(self, out: ForwardOutput, view: TokenDataset, tokens: Tensor) -> None:
        """Add one batch's statistics (``out``: its forward pass under the intervention)."""
        mask = view.attention_mask
        scored = view.scored_positions() if view.target_mask is not None else None
        whole = out.logits is not None
        if not self.answers:
            self._add_blocks(out, mask, scored, tokens)
        else:  # answer metrics read whole rows
            for rows, part in out.logit_chunks():
                self.rows.append(
                    batch_statistics(
                        part,
                        tokens[rows],
                        mask[rows].to(part.device),
                        self.top_k,
                        self.skip_ids,
                        None if scored is None else scored[rows].to(part.device),
                    )
                )
                self.answer_rows.append(answer_statistics(part, view if whole else view.rows(rows)))
                del part
        for metric_name, values in self.user_rows.items():
            v, per_example = _user_metric_values(
                self.metrics[metric_name], metric_name, out.logits, view, self.name, self.label
            )
            values.append(v)
            self.per_example[metric_name] &= per_example

    def _add_blocks(
        self, out: ForwardOutput, mask: Tensor, scored: Tensor | None, tokens: Tensor
    ) -> None:
        """Token statistics of one batch: from the final residual, the vocabulary a slice at
        a time, where the unembedding allows it (:func:`residual_statistics`); otherwise a
        block of logits at a time (:meth:`ForwardOutput.logit_blocks`), summed per sequence
        over the blocks of a row."""
        if out.logits is None and plain_unembed(out.model):
            self.rows.append(
                residual_statistics(
                    out.model, out.final, tokens, mask, self.top_k, self.skip_ids, scored
                )
            )
            return
        row_sums: list[Tensor] = []
        for rows, cols, part in out.logit_blocks():
            part_scored = None if scored is None else scored[rows, cols.start : cols.stop - 1]
            stats = batch_statistics(
                part,
                tokens[rows, cols],
                mask[rows, cols].to(part.device),
                self.top_k,
                self.skip_ids,
                None if part_scored is None else part_scored.to(part.device),
            )
            del part
            if cols.start > 0:  # another block of the same row
                row_sums[-1] += stats
            else:
                row_sums.append(stats)
        self.rows.extend(row_sums)

    def reduce(self, ds: TokenDataset, per_example: Mapping[str, bool]) -> DatasetMetrics:
        """The dataset's metrics; ``per_example``: user metrics that gave one value per
        example on every batch (their per-example values are kept for intervals)."""
        name, top_k = self.name, self.top_k
        per_seq = torch.cat(self.rows).numpy()
        s = per_seq.sum(0).tolist()
        n = s[0]
        if n == 0:
            raise ValueError(f"Dataset {name!r} has no predicted position.")
        if not math.isfinite(s[1]):
            raise ValueError(
                f"The logits on dataset {name!r} under {self.label or 'the intervention'!r} "
                "are not finite (NaN or inf): a hook or the model produced NaN/inf "
                "activations, so no accuracy or loss can be reported."
            )
        acc = {k: s[2 + j] / n for j, k in enumerate(top_k)}
        units = {
            "n": per_seq[:, 0],
            "loss": per_seq[:, 1],
            **{f"top{k}": per_seq[:, 2 + j] for j, k in enumerate(top_k)},
        }
        skip, n_skip = {}, 0
        if per_seq.shape[1] > 2 + len(top_k):  # skip-common was counted (text data)
            n_skip = int(s[2 + len(top_k)])
            base = 3 + len(top_k)
            skip = {k: s[base + j] / max(n_skip, 1) for j, k in enumerate(top_k)}
            units["n_skip"] = per_seq[:, 2 + len(top_k)]
            units.update({f"top{k}_skip": per_seq[:, base + j] for j, k in enumerate(top_k)})
        answer = {}
        if self.answers:
            a_rows = torch.cat(self.answer_rows).numpy()
            cols = {
                k: a_rows[:, j]
                for j, k in enumerate(ANSWER_METRICS)
                if k != "logit_diff" or ds.counterfactual is not None
            }
            answer = {k: float(v.mean()) for k, v in cols.items()}
            units.update(cols)
        custom = {}
        for k, values in self.user_rows.items():
            v = torch.cat(values).numpy()
            custom[k] = float(v.sum()) / len(ds)
            if per_example[k]:
                units[k] = v
        return DatasetMetrics(
            name,
            int(n),
            s[1] / n,
            acc,
            skip,
            n_skip,
            answer,
            custom,
            len(ds),
            {k: [float(x) for x in v] for k, v in units.items()},
        )


@torch.inference_mode()
def evaluate_many(
    model: Any,
    data: TokenDataset | Mapping[str, TokenDataset],
    interventions: Sequence[Hooks | Iterable[tuple[Any, Any]]],
    *,
    batch_size: int = 8,
    top_k: Sequence[int] = (1, 5),
    skip_common: int = SKIP_COMMON,
    labels: Sequence[str] | None = None,
    share_prefix: bool = True,
    progress: bool = True,
    metrics: Mapping[str, MetricFn] | None = None,
    batch_hooks: Callable[[str, int, TokenDataset], Hooks] | None = None,
    common: Mapping[str, Tensor] | None = None,
) -> list[Evaluation]:
    """Evaluate several interventions in one streaming pass over the data.

    Batches are the outer loop, interventions the inner one, so each batch is tokenized and
    moved once. With ``share_prefix`` (HookedTransformer only) the residual stream is
    computed once per batch up to the first layer any intervention touches, and each
    intervention only recomputes the layers from its own first hooked layer onward
    (``start_at_layer``): a sweep of K interventions at layer L costs one full pass plus K
    passes over ``n_layers - L`` layers. An intervention that only hooks ``hook_z`` /
    ``hook_mlp_out`` of one layer (a head or MLP ablation) resumes from that block's cached
    activations, skipping its attention pattern (and, for the MLP alone, the whole block)
    too. An intervention with no hook is the original model.

    ``metrics`` are user metrics ``metric(logits, batch)`` (see the module docstring),
    computed on every batch under every intervention, with the same shortcuts.

    ``batch_hooks(name, first_row, batch)``, if given, returns hooks that run with every
    intervention on that batch of dataset ``name`` (whose first row is row ``first_row`` of
    the dataset), e.g. to read activations in the same pass (``selective_pruning`` reads its
    statistics so); every pass then runs from the tokens.

    Args:
        model: The model.
        data: One token dataset or several by name.
        interventions: The interventions (hook lists); ``()`` is the original model.
        batch_size: Sequences per forward pass.
        top_k: The k of top-k accuracy.
        skip_common: Leave out the most common targets in the skip-common accuracies.
        labels: A label per intervention (default: their names).
        share_prefix: Run the layers before the first hooked one once for all interventions.
        progress: Show a progress bar.
        metrics: User metrics ``metric(logits, batch)`` by name.
        batch_hooks: ``(dataset, batch_start, batch) -> hooks`` added per batch (for
            interventions that read the batch itself).
        common: The common targets the skip-common accuracies leave out, by dataset
            (default: each dataset's own :func:`common_targets`); a shard of a dataset takes
            the whole dataset's.

    Returns:
        One :class:`Evaluation` per intervention, in order.

    Examples:
        >>> from tl_unlearn.metrics import evaluate_many
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> from tl_unlearn.interventions import zero_ablation
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, max_tokens=500)
        >>> base, ablated = evaluate_many(model, data, [[], zero_ablation(model, heads=[(1, 0)])],
        ...                               progress=False)
        >>> ablated.label
        'zero(a1.h0)'
    """
    data = check_data(model, data, batch_size)
    top_k = tuple(sorted(set(top_k)))
    if not top_k or top_k[0] < 1 or top_k[-1] > model.cfg.d_vocab:
        raise ValueError(f"top_k must be integers in 1..d_vocab, got {top_k}")
    hook_lists = [list(h) for h in interventions]
    if not hook_lists:
        raise ValueError("evaluate_many() got no intervention.")
    for hooks in hook_lists:
        for hook_name, fn in hooks:
            if isinstance(hook_name, str):
                check_hook_name(model, hook_name)
            if not callable(fn):
                raise TypeError(f"The hook on {hook_name!r} is not callable: {fn!r}.")
    metrics = check_user_metrics(metrics)
    if labels is None:
        labels = [getattr(h, "name", "") for h in interventions]
    plan = plan_forward(model, hook_lists, share_prefix=share_prefix and batch_hooks is None)
    device = model_device(model)
    seconds = [0.0] * len(hook_lists)
    # a user metric given for some datasets only (OnDatasets) is computed only there
    acc = {
        name: [
            MetricAccumulator(
                name,
                labels[i],
                top_k,
                # skip-common is for text: on scored answers it would drop the answers themselves
                (
                    common[name]
                    if common is not None and name in common
                    else common_targets(ds, skip_common)
                )
                if skip_common and ds.target_mask is None
                else None,
                ds.has_answers,
                {
                    k: fn
                    for k, fn in metrics.items()
                    if not isinstance(fn, OnDatasets) or name in fn.datasets
                },
            )
            for i in range(len(hook_lists))
        ]
        for name, ds in data.items()
    }
    total = sum(-(-len(d) // batch_size) for d in data.values()) * len(hook_lists)
    bar = tqdm(total=total, desc="evaluate", disable=not progress, leave=False)
    for name, ds in data.items():
        for b, view in enumerate(ds.views(batch_size)):
            tokens = view.tokens.to(device)
            t0 = time.perf_counter()
            cache = plan.prefix(model, tokens)
            extra = list(batch_hooks(name, b * batch_size, view)) if batch_hooks else []
            shared = (time.perf_counter() - t0) / len(hook_lists)
            for i, hooks in enumerate(hook_lists):
                t1 = time.perf_counter()
                out = plan.forward(
                    model,
                    i,
                    [*hooks, *extra] if extra else hooks,
                    tokens,
                    cache,
                    full_logits=bool(acc[name][i].metrics),
                )
                acc[name][i].add(out, view, tokens)
                del out
                seconds[i] += time.perf_counter() - t1 + shared
                bar.update(1)
            del cache
    bar.close()
    per_example = {
        k: all(a.per_example.get(k, True) for accs in acc.values() for a in accs) for k in metrics
    }
    out = [
        Evaluation(
            {name: acc[name][i].reduce(ds, per_example) for name, ds in data.items()},
            labels[i],
            seconds[i],
        )
        for i in range(len(hook_lists))
    ]
    return out


def evaluate(
    model: Any,
    data: TokenDataset | Mapping[str, TokenDataset],
    hooks: Hooks | Iterable[tuple[Any, Any]] = (),
    *,
    batch_size: int = 8,
    top_k: Sequence[int] = (1, 5),
    skip_common: int = SKIP_COMMON,
    label: str = "",
    progress: bool = True,
    metrics: Mapping[str, MetricFn] | None = None,
) -> Evaluation:
    """Evaluate a model, optionally under forward hooks, on one or more token datasets.

    Args:
        model: A ``HookedTransformer`` (or any TL model with ``hooks()``).
        data: One :class:`TokenDataset` or a mapping name -> dataset (e.g. forget, retain).
        hooks: ``(hook_name, hook_fn)`` pairs applied during evaluation (an intervention).
        batch_size: Sequences per forward pass.
        top_k: Which top-k accuracies to report (1 is always useful).
        skip_common: N for the skip-common-token variants (0 disables them).
        label: Name stored on the result (default: the intervention's name).
        progress: Show a tqdm progress bar.
        metrics: User metrics by name, ``metric(logits, batch)`` -> scalar or one value per
            example (TransformerLens patching convention; ``batch`` is a
            :class:`~tl_unlearn.data.datasets.TokenDataset`).

    Returns:
        An :class:`Evaluation` with one :class:`DatasetMetrics` per dataset.

    Examples:
        >>> from tl_unlearn import evaluate
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, max_tokens=500)
        >>> ev = evaluate(model, data, progress=False)
        >>> 0 < ev["forget"].loss < ev["retain"].loss
        True
    """
    return evaluate_many(
        model,
        data,
        [hooks],
        batch_size=batch_size,
        top_k=top_k,
        skip_common=skip_common,
        labels=[label or getattr(hooks, "name", "")],
        progress=progress,
        metrics=metrics,
    )[0]


def check_data(model: Any, data: Any, batch_size: int) -> dict[str, TokenDataset]:
    """Validate evaluation data against a model before any forward pass.

    Returns the data as ``{name: TokenDataset}``; raises a TypeError / ValueError naming the
    bad dataset, value or setting.
    """
    check_positive_int(batch_size, "batch_size")
    if isinstance(data, TokenDataset):
        data = {data.name: data}
    if not isinstance(data, Mapping):
        raise TypeError(
            "data must be a TokenDataset or a mapping name -> TokenDataset (e.g. from "
            f"task.tokenize(...)), got {type(data).__name__}. Token tensors: wrap them as "
            "TokenDataset(name, tokens, attention_mask)."
        )
    if not data:
        raise ValueError("evaluate() got no dataset.")
    for name, ds in data.items():
        if not isinstance(ds, TokenDataset):
            raise TypeError(f"Dataset {name!r} must be a TokenDataset, got {type(ds).__name__}.")
        width = int(ds.attention_mask.sum(1).max())
        if width > model.cfg.n_ctx:
            raise ValueError(
                f"Dataset {name!r} has sequences of {width} tokens; the model's "
                f"context n_ctx is {model.cfg.n_ctx}."
            )
        top = int(ds.tokens[ds.attention_mask].max())
        if top >= model.cfg.d_vocab:
            raise ValueError(
                f"Dataset {name!r} has token id {top}; the model's vocabulary has "
                f"{model.cfg.d_vocab} ids (0..{model.cfg.d_vocab - 1})."
            )
    return dict(data)


def merge_evaluations(parts: Sequence[Evaluation], label: str = "") -> Evaluation:
    """One evaluation from evaluations of consecutive pieces of the same datasets: the
    per-sequence statistics concatenated in order and every metric recomputed from them.

    Examples:
        >>> from tl_unlearn import DatasetMetrics, Evaluation
        >>> from tl_unlearn.metrics.evaluation import merge_evaluations
        >>> a = Evaluation({"f": DatasetMetrics("f", 2, 1.0, {1: 1.0}, units={"n": [2], "loss": [2], "top1": [2]})})
        >>> b = Evaluation({"f": DatasetMetrics("f", 2, 3.0, {1: 0.0}, units={"n": [2], "loss": [6], "top1": [0]})})
        >>> merge_evaluations([a, b])["f"].accuracy[1], merge_evaluations([a, b])["f"].loss
        (0.5, 2.0)
    """
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
