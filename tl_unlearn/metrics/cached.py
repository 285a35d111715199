"""Metrics from what a notebook already holds: logits and ``ActivationCache`` objects, with no
model re-run.

- :func:`evaluate_logits`: the forget/retain metrics of :func:`~tl_unlearn.evaluate`
  (loss, top-k, skip-common, answer metrics, user metrics, per-sequence statistics for
  intervals) from logits you computed, e.g. ``model(data["forget"].tokens)``.
- :func:`logit_lens_from_caches`: the logit-lens diff of
  :func:`~tl_unlearn.metrics.logit_lens.logit_lens_diff` from a clean and an intervened
  ``run_with_cache`` (their ``blocks.{l}.hook_resid_pre`` and final ``hook_resid_post``).
- :func:`activation_distances_from_caches`: per-hook distances between two caches, as
  :func:`~tl_unlearn.metrics.distances.activation_distances` computes them.

The same numbers as the model-running functions (to float precision): they share the
scoring code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.data.datasets import TokenDataset, predicted_positions
from tl_unlearn.engine.forward import ForwardOutput, row_chunks, unembed_residual
from tl_unlearn.metrics.distances import ActivationDistances
from tl_unlearn.metrics.evaluation import Evaluation, MetricAccumulator, common_targets
from tl_unlearn.metrics.logit_lens import LogitLensDiff
from tl_unlearn.metrics.names import MetricFn, check_user_metrics

__all__ = ["activation_distances_from_caches", "evaluate_logits", "logit_lens_from_caches"]


@torch.inference_mode()
def evaluate_logits(
    logits: Tensor | Mapping[str, Tensor],
    data: TokenDataset | Mapping[str, TokenDataset],
    *,
    top_k: Sequence[int] = (1, 5),
    skip_common: int = 50,
    label: str = "",
    metrics: Mapping[str, MetricFn] | None = None,
    batch_size: int = 8,
) -> Evaluation:
    """:func:`~tl_unlearn.evaluate`'s metrics from logits already computed.

    Args:
        logits: ``[batch, pos, d_vocab]`` logits of ``data``'s rows (the same rows and at
            least as many positions as its widest row), or ``{dataset: logits}``.
        data: The token dataset(s) the logits are of.
        top_k: As in :func:`~tl_unlearn.evaluate`.
        skip_common: As in :func:`~tl_unlearn.evaluate`.
        label: As in :func:`~tl_unlearn.evaluate`.
        metrics: As in :func:`~tl_unlearn.evaluate`.
        batch_size: Rows per batch handed to user metrics.

    Returns:
        An :class:`~tl_unlearn.metrics.evaluation.Evaluation`, equal to ``evaluate`` of the
        model that made the logits.

    Raises:
        ValueError: Logits of another number of rows, too few positions, or names that do
            not match the datasets.

    Examples:
        >>> from tl_unlearn import evaluate_logits
        >>> from tl_unlearn import evaluate, load_tiny_model, make_task
        >>> m = load_tiny_model()
        >>> data = make_task().tokenize(m.tokenizer, max_tokens=400)
        >>> logits = {k: m(d.tokens) for k, d in data.items()}
        >>> cached = evaluate_logits(logits, data)
        >>> abs(cached["forget"].loss - evaluate(m, data, progress=False)["forget"].loss) < 1e-5
        True
    """
    if isinstance(data, TokenDataset):
        data = {data.name: data}
    if isinstance(logits, Tensor):
        if len(data) != 1:
            raise ValueError("Give {dataset: logits} for several datasets.")
        logits = {next(iter(data)): logits}
    if set(logits) != set(data):
        raise ValueError(f"logits are for {sorted(logits)} but the datasets are {sorted(data)}.")
    metrics = check_user_metrics(metrics)
    top_k = tuple(sorted(set(top_k)))
    t0 = time.perf_counter()
    out = {}
    for name, ds in data.items():
        lg = logits[name]
        width = int(ds.attention_mask.sum(1).max())
        if lg.ndim != 3 or lg.shape[0] != len(ds) or lg.shape[1] < width:
            raise ValueError(
                f"logits[{name!r}] has shape {tuple(lg.shape)}; dataset "
                f"{name!r} needs [{len(ds)}, >= {width}, d_vocab]."
            )
        skip = common_targets(ds, skip_common) if skip_common and ds.target_mask is None else None
        acc = MetricAccumulator(name, label, top_k, skip, ds.has_answers, dict(metrics))
        start = 0
        for view in ds.views(batch_size):
            part = lg[start : start + len(view), : view.tokens.shape[1]]
            acc.add(ForwardOutput(None, None, part), view, view.tokens.to(part.device))
            start += len(view)
        out[name] = acc.reduce(ds, dict(acc.per_example))
    return Evaluation(out, label, time.perf_counter() - t0)


def _resid_names(cache: Any, n_layers: int) -> list[str]:
    return [
        get_act_name("resid_pre", l)
        for l in range(n_layers)
        if get_act_name("resid_pre", l) in cache
    ] + [get_act_name("resid_post", n_layers - 1)]


@torch.inference_mode()
def logit_lens_from_caches(
    model: Any,
    clean_cache: Any,
    intervened_cache: Any,
    data: TokenDataset,
    *,
    label: str = "",
) -> LogitLensDiff:
    """The logit-lens diff from two caches of ``data``'s rows (no model re-run; the model
    only lends its final layer norm and unembedding).

    Args:
        model: The model whose ``ln_final`` and ``W_U`` lens the residuals.
        clean_cache: ``ActivationCache`` (or dicts) holding
            ``blocks.{l}.hook_resid_pre`` for the lensed layers and the last block's
            ``hook_resid_post``, e.g. ``model.run_with_cache(data.tokens)``.
        intervened_cache: As ``clean_cache``.
        data: The rows the caches are of (for targets and padding).
        label: Name of the intervention.

    Returns:
        A :class:`~tl_unlearn.metrics.logit_lens.LogitLensDiff` with one dataset,
        ``data.name``; its layers are the ``resid_pre`` points both caches hold.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.metrics.distances import random_tokens
        >>> m = load_tiny_model(); d = random_tokens(m, n=2, seq_len=8)
        >>> _, c = m.run_with_cache(d.tokens)
        >>> logit_lens_from_caches(m, c, c, d).diff(d.name).tolist()
        [0.0, 0.0, 0.0]
    """
    t0 = time.perf_counter()
    n_layers = model.cfg.n_layers
    names = [n for n in _resid_names(clean_cache, n_layers) if n in intervened_cache]
    final = get_act_name("resid_post", n_layers - 1)
    for cache, which in ((clean_cache, "clean_cache"), (intervened_cache, "intervened_cache")):
        if final not in cache:
            raise ValueError(f"{which} has no {final!r}: cache the last block's resid_post.")
    valid = predicted_positions(data.attention_mask)
    logprob, rank = {}, {}
    for run, cache in (("original", clean_cache), ("intervened", intervened_cache)):
        sums = torch.zeros(len(names), 2, dtype=torch.float64)
        for i, n in enumerate(names):
            act = cache[n]
            width = min(act.shape[1], data.tokens.shape[1])
            v = valid[:, : width - 1].to(act.device)
            targets = data.tokens[:, 1:width].to(act.device)[v]
            resid = act[:, : width - 1][v]
            for rows in row_chunks(len(resid), 1, model.cfg.d_vocab):
                logits = unembed_residual(model, model.ln_final(resid[rows][:, None]))[:, 0].float()
                target = logits.gather(-1, targets[rows, None])
                sums[i, 0] += (target.squeeze(-1) - logits.logsumexp(-1)).double().sum().cpu()
                sums[i, 1] += (logits > target).sum().double().cpu()
        count = int(valid.sum())
        logprob[run] = (sums[:, 0] / count).tolist()
        rank[run] = (sums[:, 1] / count).tolist()
    layers = [f"L{n.split('.')[1]}" for n in names[:-1]] + ["final"]
    return LogitLensDiff(
        label or "intervention",
        layers,
        {data.name: logprob},
        {data.name: rank},
        time.perf_counter() - t0,
    )


def activation_distances_from_caches(
    clean_cache: Any,
    intervened_cache: Any,
    mask: Tensor | None = None,
    *,
    hook_names: Sequence[str] | None = None,
    dataset: str = "data",
    label: str = "",
) -> ActivationDistances:
    """:func:`~tl_unlearn.metrics.distances.activation_distances` from two caches: per hook,
    the mean L2 distance and cosine similarity of the activations at each real position, and
    the mean norm of the clean one (for scale).

    Args:
        clean_cache: Caches (or dicts) of the same rows.
        intervened_cache: As ``clean_cache``.
        mask: ``[batch, pos]`` True at real tokens (default: every position).
        hook_names: Hooks to compare (default: every hook both caches hold).
        dataset: Name of the data in the result.
        label: What is compared.

    Returns:
        An :class:`~tl_unlearn.metrics.distances.ActivationDistances` with one dataset.

    Examples:
        >>> a = {"h": torch.ones(1, 2, 3)}; b = {"h": torch.zeros(1, 2, 3)}
        >>> d = activation_distances_from_caches(a, b)
        >>> round(d.l2["data"]["h"], 3), round(d.norm["data"]["h"], 3)
        (1.732, 1.732)
    """
    t0 = time.perf_counter()
    names = (
        list(hook_names)
        if hook_names is not None
        else [n for n in clean_cache.keys() if n in intervened_cache]
    )
    l2, cos, norm = {}, {}, {}
    for n in names:
        a, b = clean_cache[n].double(), intervened_cache[n].double()
        if a.shape != b.shape:
            raise ValueError(
                f"The caches hold {n!r} with shapes {tuple(a.shape)} and "
                f"{tuple(b.shape)}: they are not of the same rows."
            )
        m = (
            torch.ones(a.shape[:2], dtype=torch.bool)
            if mask is None
            else mask[:, : a.shape[1]].bool()
        ).to(a.device)
        a, b = a[m].flatten(1), b[m].flatten(1)
        l2[n] = float((a - b).norm(dim=-1).mean())
        cos[n] = float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())
        norm[n] = float(a.norm(dim=-1).mean())
    return ActivationDistances(
        label or "clean vs intervened",
        {dataset: l2},
        {dataset: cos},
        {dataset: norm},
        time.perf_counter() - t0,
    )
