"""Metric names: what a run can measure and rank by (the builtin names, the answer metrics of
prompt→answer data, a user's own metric functions), each checked and described in words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tl_unlearn.data.datasets import TokenDataset

__all__ = [
    "ANSWER_METRICS",
    "SKIP_COMMON",
    "MetricFn",
    "MetricSpec",
    "OnDatasets",
    "check_metric_name",
    "check_user_metrics",
    "describe_metric",
    "metric_of",
    "resolve_metric",
]


#: The ``_skip`` accuracies (``top1_skip``) leave out targets among the dataset's this many
#: most common tokens.
SKIP_COMMON = 50

MetricFn = Callable[[Tensor, TokenDataset], Any]
"""A user metric: ``metric(logits, batch)`` -> scalar or one value per example."""


MetricSpec = str | Mapping[str, str]
"""A metric name for every dataset, or one name per dataset (``{"forget": "logit_diff",
"retain": "top1"}``)."""


@dataclass(frozen=True)
class OnDatasets:
    """A user metric computed only on some datasets (e.g. a logit difference on the
    prompt→answer forget set, not on plain-text retain data).

    Examples:
        >>> def ld(logits, batch): ...
        >>> OnDatasets(ld, ("forget",)).datasets
        ('forget',)
    """

    fn: MetricFn
    datasets: tuple[str, ...]

    def __call__(self, logits: Tensor, batch: TokenDataset) -> Any:
        return self.fn(logits, batch)


#: The answer metrics of prompt→answer data, in the order of :func:`answer_statistics`'s
#: columns (the logit difference needs counterfactual answers).
ANSWER_METRICS = (
    "answer_logprob",
    "answer_logprob_per_token",
    "answer_prob",
    "answer_accuracy",
    "first_token_accuracy",
    "answer_rank",
    "logit_diff",
)


def metric_of(metric: MetricSpec, dataset: str) -> str:
    """The metric name ``metric`` gives ``dataset`` (a mapping may give one per dataset)."""
    if isinstance(metric, Mapping):
        if dataset not in metric:
            raise ValueError(
                f"The per-dataset metric {dict(metric)} names no metric for dataset {dataset!r}."
            )
        return metric[dataset]
    return metric


def describe_metric(metric: MetricSpec) -> str:
    """A short label: ``"top1"``, or ``"logit_diff (forget), top1 (retain)"``."""
    if isinstance(metric, Mapping):
        return ", ".join(f"{m} ({d})" for d, m in metric.items())
    return metric


def resolve_metric(
    metric: MetricSpec | MetricFn | Mapping[str, str | MetricFn],
    metrics: Mapping[str, MetricFn] | None = None,
) -> tuple[MetricSpec, dict[str, MetricFn]]:
    """Split a metric argument into names and the user functions they need.

    ``metric`` may be a name, a callable ``metric(logits, batch)`` (named by its
    ``__name__``), or a mapping dataset -> either; a callable given for some datasets only is
    computed only on those (:class:`OnDatasets`).

    Examples:
        >>> def logit_diff(logits, batch): ...
        >>> spec, fns = resolve_metric({"forget": logit_diff, "retain": "top1"})
        >>> spec, fns["logit_diff"].datasets
        ({'forget': 'logit_diff', 'retain': 'top1'}, ('forget',))
    """
    fns = dict(metrics or {})

    def name_of(m: Any, dataset: str | None = None) -> str:
        if callable(m):
            name = getattr(m, "__name__", "") or "metric"
            name = "metric" if name == "<lambda>" else name
            if dataset is None:
                fns[name] = m
            else:  # computed only on the datasets that ask for it
                old = fns.get(name)
                names = old.datasets if isinstance(old, OnDatasets) else ()
                fns[name] = OnDatasets(m, (*names, dataset))
            return name
        if not isinstance(m, str):
            raise TypeError(
                f"A metric must be a name or a callable metric(logits, batch), got "
                f"{type(m).__name__}."
            )
        return m

    spec: MetricSpec = (
        {k: name_of(v, k) for k, v in metric.items()}
        if isinstance(metric, Mapping)
        else name_of(metric)
    )
    return spec, check_user_metrics(fns)


def check_user_metrics(metrics: Mapping[str, MetricFn] | None) -> dict[str, MetricFn]:
    """User metrics as a dict, checked: callables whose names do not shadow ``loss``,
    ``perplexity``, ``top{k}`` or bookkeeping fields. A user metric may share an answer
    metric's name (a notebook's own ``logit_diff``): it is kept under ``custom`` and takes
    precedence in :meth:`Evaluation.metric`."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "metrics must be a mapping name -> metric(logits, batch), got "
            f"{type(metrics).__name__}."
        )
    for name, fn in metrics.items():
        if not callable(fn):
            raise TypeError(f"Metric {name!r} is not callable: {fn!r}.")
        if name in (
            "loss",
            "perplexity",
            "name",
            "n_predictions",
            "n_examples",
            "n_predictions_skip",
        ) or name.startswith("top"):
            raise ValueError(f"User metric name {name!r} shadows a builtin metric; rename it.")
    return dict(metrics)


def check_metric_name(
    metric: MetricSpec,
    top_k: Sequence[int] = (1, 5),
    skip_common: int = SKIP_COMMON,
    custom: Iterable[str] = (),
) -> MetricSpec:
    """``metric`` if an :class:`Evaluation` with these settings can have it, else a ValueError.

    Answer metrics are accepted here; a dataset without answers raises when it is asked for
    one. ``custom`` are the names of user metrics.

    Examples:
        >>> check_metric_name("top3")
        Traceback (most recent call last):
        ...
        ValueError: Unknown metric 'top3'; choose one of ['loss', 'perplexity', 'top1', 'top5', 'top1_skip', 'top5_skip', 'answer_logprob', 'answer_logprob_per_token', 'answer_prob', 'answer_accuracy', 'first_token_accuracy', 'answer_rank', 'logit_diff'].
    """
    valid = ["loss", "perplexity", *(f"top{k}" for k in top_k)]
    if skip_common:
        valid += [f"top{k}_skip" for k in top_k]
    valid += [*ANSWER_METRICS, *custom]
    names = list(metric.values()) if isinstance(metric, Mapping) else [metric]
    for name in names:
        if not isinstance(name, str) or name not in valid:
            raise ValueError(f"Unknown metric {name!r}; choose one of {valid}.")
    return metric
