"""Streaming forget/retain evaluation: loss, perplexity, top-k and skip-common top-k accuracy.

Batches are streamed through the model (optionally under hooks); per-position statistics are
reduced to running sums at once, so memory depends on the batch, never on the number of
evaluated tokens. Definitions follow ``shared/specs/metrics.md``:

- predicted positions: every non-padding position that has a next token;
- loss: mean token cross-entropy (nats); perplexity: ``exp(loss)`` (not the mean of
  per-token ``exp``);
- top-k accuracy: share of predicted positions whose target is among the k largest logits;
- skip variants: the same, excluding targets among the ``skip_common`` most frequent target
  tokens of that dataset (counted on the evaluated data itself).

Sequences are right-padded, so padding never influences real positions under causal attention
and no attention mask is passed to the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_unlearn.data import TokenDataset, predicted_positions
from tl_unlearn.interventions.base import check_hook_name, check_positive_int, model_device

__all__ = ["DatasetMetrics", "Evaluation", "ForgetRetainDrops", "evaluate", "evaluate_many"]

HookList = Sequence[tuple[Any, Any]]


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
    """

    name: str
    n_predictions: int
    loss: float
    accuracy: dict[int, float]
    accuracy_skip: dict[int, float] = field(default_factory=dict)
    n_predictions_skip: int = 0

    @property
    def perplexity(self) -> float:
        """``exp(mean loss)``."""
        return math.exp(self.loss)

    def as_dict(self) -> dict[str, Any]:
        """Flat dict (JSON-friendly; ``top1``, ``top5``, ``top1_skip``, ...)."""
        out: dict[str, Any] = {
            "name": self.name,
            "n_predictions": self.n_predictions,
            "loss": self.loss,
            "perplexity": self.perplexity,
        }
        out.update({f"top{k}": v for k, v in self.accuracy.items()})
        out.update({f"top{k}_skip": v for k, v in self.accuracy_skip.items()})
        out["n_predictions_skip"] = self.n_predictions_skip
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetMetrics:
        acc = {int(k[3:]): v for k, v in d.items() if k.startswith("top") and "_" not in k}
        skip = {int(k[3:-5]): v for k, v in d.items() if k.startswith("top") and k.endswith("_skip")}
        return cls(d["name"], int(d["n_predictions"]), float(d["loss"]), acc, skip,
                   int(d.get("n_predictions_skip", 0)))


@dataclass
class Evaluation:
    """Metrics of one model (or one intervention) on several datasets.

    Example:
        >>> e = Evaluation({"forget": DatasetMetrics("forget", 10, 2.0, {1: 0.5})})
        >>> Evaluation.from_dict(e.to_dict()) == e
        True
    """

    datasets: dict[str, DatasetMetrics]
    label: str = ""
    seconds: float = 0.0

    def __getitem__(self, name: str) -> DatasetMetrics:
        return self.datasets[name]

    def metric(self, name: str, metric: str = "top1") -> float:
        """One number: ``loss``, ``perplexity``, ``top{k}`` or ``top{k}_skip`` of a dataset."""
        values = self.datasets[name].as_dict()
        if metric not in values or metric in ("name",):
            choices = [k for k in values if k not in ("name", "n_predictions", "n_predictions_skip")]
            raise ValueError(f"Unknown metric {metric!r}; choose one of {choices}.")
        return float(values[metric])

    def relative_drop(self, original: Evaluation, metric: str = "top1") -> dict[str, float]:
        """``1 - metric(self) / metric(original)`` per dataset (spec: relative drop).

        For accuracies a positive drop means the intervention made the model worse; for
        ``loss``/``perplexity`` a worse model gives a negative drop.
        """
        out = {}
        for name in self.datasets:
            base = original.metric(name, metric)
            if base == 0:
                raise ValueError(
                    f"The original model's {metric} on {name!r} is 0, so a relative drop is "
                    "undefined: the model cannot do this task (choose data it can do, or "
                    "another metric).")
            out[name] = 1.0 - self.metric(name, metric) / base
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "seconds": self.seconds,
                "datasets": {k: asdict(v) for k, v in self.datasets.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation:
        ds = {}
        for k, v in d["datasets"].items():
            v = dict(v)
            v["accuracy"] = {int(a): b for a, b in v["accuracy"].items()}
            v["accuracy_skip"] = {int(a): b for a, b in v.get("accuracy_skip", {}).items()}
            ds[k] = DatasetMetrics(**v)
        return cls(ds, d.get("label", ""), float(d.get("seconds", 0.0)))

    def to_dataframe(self) -> Any:
        """One row per dataset (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([m.as_dict() for m in self.datasets.values()]).set_index("name")


class ForgetRetainDrops:
    """Mixin for results holding an ``original`` evaluation and a list of ``evaluations``.

    Subclasses set :attr:`drop_prefix` (values put before the evaluations' drops, e.g. the
    level-0 point of a curve) and get ``drop``, ``forget_drop`` and ``retain_drop``.
    """

    original: Evaluation
    evaluations: list[Evaluation]
    metric: str
    drop_prefix: tuple[float, ...] = ()

    def drop(self, dataset: str, metric: str | None = None) -> np.ndarray:
        """Relative drop of ``metric`` (default: the result's metric) on ``dataset``."""
        metric = metric or self.metric
        drops = [e.relative_drop(self.original, metric)[dataset] for e in self.evaluations]
        return np.array([*self.drop_prefix, *drops], dtype=float)

    @property
    def forget_drop(self) -> np.ndarray:
        return self.drop("forget")

    @property
    def retain_drop(self) -> np.ndarray:
        return self.drop("retain")


def _common_targets(ds: TokenDataset, n: int) -> Int[Tensor, " n"]:
    targets = ds.tokens[:, 1:][ds.attention_mask[:, 1:]]
    if n <= 0 or targets.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    counts = torch.bincount(targets)
    return torch.topk(counts, min(n, int((counts > 0).sum()))).indices


def batch_statistics(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    top_k: Sequence[int],
    skip_ids: Int[Tensor, " n"] | None = None,
) -> Float[Tensor, " stats"]:
    """Sums for one batch: ``[n, loss_sum, hits@k..., n_skip, hits_skip@k...]`` (float64).

    Computed without materialising log-probabilities for the whole vocabulary more than once
    and without Python loops over positions.
    """
    logits = logits[:, :-1].float()
    targets = tokens[:, 1:]
    valid = predicted_positions(mask)
    # fused log-softmax + NLL (one pass over the vocabulary)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).reshape(targets.shape)[valid]
    # one top-k for every k: hit@k = target among the k largest logits
    in_top = logits.topk(max(top_k), dim=-1).indices == targets.unsqueeze(-1)
    hits = [in_top[..., :k].any(-1) for k in top_k]
    out = [valid.sum().double(), nll.double().sum()]
    out += [(h & valid).sum().double() for h in hits]
    if skip_ids is not None:
        keep = valid & ~torch.isin(targets, skip_ids.to(targets.device))
        out.append(keep.sum().double())
        out += [(h & keep).sum().double() for h in hits]
    return torch.stack(out).cpu()


def _start_layer(model: Any, hooks: Sequence[tuple[Any, Any]]) -> int:
    """First layer an intervention touches (0 when it touches anything before the blocks)."""
    from transformer_lens import HookedTransformer

    if not isinstance(model, HookedTransformer) or not hooks:
        return 0 if hooks else model.cfg.n_layers
    layers = []
    for name, _ in hooks:
        if not isinstance(name, str) or not name.startswith("blocks."):
            return 0
        layers.append(int(name.split(".")[1]))
    return min(layers)


_BLOCK_OUTPUTS = ("attn.hook_z", "hook_mlp_out")


def _block_output_layer(model: Any, hooks: Sequence[tuple[Any, Any]]) -> int | None:
    """The layer ``l`` when every hook is on ``hook_z`` or ``hook_mlp_out`` of block ``l``.

    Such an intervention (a head or MLP-layer ablation) leaves everything in block ``l``
    before those hook points as in the original model, so the forward pass can resume from
    cached activations: for ``hook_z`` only the output projection, the block's MLP and the
    later layers are recomputed; for ``hook_mlp_out`` alone only the later layers. Returns
    None when that shortcut does not apply (other hooks, hooks already on the model, an SAE
    spliced in, or a block layout other than pre-norm attention then MLP).
    """
    from transformer_lens import HookedTransformer
    from transformer_lens.components import TransformerBlock
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    if not isinstance(model, HookedTransformer) or not hooks:
        return None
    cfg = model.cfg
    if (cfg.attn_only or cfg.parallel_attn_mlp or cfg.use_normalization_before_and_after
            or cfg.use_attn_result or cfg.load_in_4bit or cfg.use_hook_mlp_in
            or cfg.original_architecture in POST_NORM_ARCHITECTURES):
        return None
    layers = set()
    for name, _ in hooks:
        parts = name.split(".", 2) if isinstance(name, str) else []
        if len(parts) != 3 or parts[0] != "blocks" or parts[2] not in _BLOCK_OUTPUTS:
            return None
        layers.add(int(parts[1]))
    if len(layers) != 1:
        return None
    layer = layers.pop()
    block = model.blocks[layer]
    skipped = (block.attn.hook_z, block.hook_attn_out, block.hook_resid_mid,
               block.hook_mlp_out, block.hook_resid_post)
    if type(block) is not TransformerBlock or any(type(m) is not HookPoint for m in skipped):
        return None  # e.g. an SAE spliced in where the shortcut does not call the module
    if any(hp.fwd_hooks for hp in model.hook_dict.values()):
        return None  # hooks the user left on the model would be skipped
    return layer


def _block_cache_names(layer: int) -> list[str]:
    return [f"blocks.{layer}.{n}" for n in
            ("hook_resid_pre", "attn.hook_z", "hook_resid_mid", "hook_mlp_out")]


def _resume_from_block(
    model: Any,
    layer: int,
    cache: Mapping[str, Tensor],
    hooks: Sequence[tuple[Any, Any]],
    tokens: Int[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits with ``hooks`` applied to block ``layer``'s cached outputs (see above).

    The arithmetic after ``hook_z`` is TransformerLens's own (``F.linear`` with the same
    flattened ``W_O``, then ``ln2`` and the MLP of the same block), so the logits match a
    full pass with the hooks.
    """
    block = model.blocks[layer]
    z_name, mlp_name = (f"blocks.{layer}.{n}" for n in _BLOCK_OUTPUTS)

    def hooked(name: str, act: Tensor) -> Tensor:
        fns = [fn for hook_name, fn in hooks if hook_name == name]
        if fns:
            act = act.clone()  # hooks may edit in place; the cache serves every intervention
        for fn in fns:
            out = fn(act, hook=model.hook_dict[name])
            act = act if out is None else out
        return act

    if any(name == z_name for name, _ in hooks):
        z = hooked(z_name, cache[z_name])
        w = block.attn.W_O.reshape(-1, model.cfg.d_model).T.contiguous()
        attn_out = torch.nn.functional.linear(z.reshape(*z.shape[:2], -1).to(w.dtype), w,
                                              block.attn.b_O)
        resid_mid = cache[f"blocks.{layer}.hook_resid_pre"] + attn_out
        mlp_out = block.apply_mlp(block.ln2(resid_mid))
    else:
        resid_mid, mlp_out = cache[f"blocks.{layer}.hook_resid_mid"], cache[mlp_name]
    resid_post = resid_mid + hooked(mlp_name, mlp_out)
    return model(resid_post, start_at_layer=layer + 1, tokens=tokens, return_type="logits")


@torch.inference_mode()
def evaluate_many(
    model: Any,
    data: TokenDataset | Mapping[str, TokenDataset],
    interventions: Sequence[HookList | Iterable[tuple[Any, Any]]],
    *,
    batch_size: int = 8,
    top_k: Sequence[int] = (1, 5),
    skip_common: int = 50,
    labels: Sequence[str] | None = None,
    share_prefix: bool = True,
    progress: bool = True,
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

    Returns:
        One :class:`Evaluation` per intervention, in order.

    Example:
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> from tl_unlearn.interventions import zero_ablation
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, max_tokens=500)
        >>> base, ablated = evaluate_many(model, data, [[], zero_ablation(model, heads=[(1, 0)])],
        ...                               progress=False)
        >>> ablated.label
        'zero(L1H0)'
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
    if labels is None:
        labels = [getattr(h, "name", "") for h in interventions]
    n_layers = model.cfg.n_layers
    starts = [_start_layer(model, h) if share_prefix else 0 for h in hook_lists]
    block_layers = [_block_output_layer(model, h) if share_prefix else None for h in hook_lists]
    # the original model (no hook) also resumes from the deepest needed cached layer
    needed = sorted({s for s in starts if 0 < s < n_layers}
                    | {l for l in block_layers if l is not None})
    if any(f"blocks.{l}.hook_resid_pre" not in model.hook_dict for l in needed):
        # e.g. an SAE spliced in at resid_pre
        needed, starts, block_layers = [], [0] * len(hook_lists), [None] * len(hook_lists)
    block_names = [n for l in sorted({l for l in block_layers if l is not None})
                   for n in _block_cache_names(l)]
    device = model_device(model)
    n_stats = 2 + len(top_k) + (1 + len(top_k) if skip_common else 0)
    seconds = [0.0] * len(hook_lists)
    sums = {name: [torch.zeros(n_stats, dtype=torch.float64) for _ in hook_lists]
            for name in data}
    total = sum(-(-len(d) // batch_size) for d in data.values()) * len(hook_lists)
    bar = tqdm(total=total, desc="evaluate", disable=not progress, leave=False)
    for name, ds in data.items():
        skip_ids = _common_targets(ds, skip_common) if skip_common else None
        for tokens, mask in ds.batches(batch_size):
            tokens = tokens.to(device)
            t0 = time.perf_counter()
            resid: dict[int, Tensor] = {}
            if needed:
                names = sorted({f"blocks.{l}.hook_resid_pre" for l in needed} | set(block_names))
                _, cache = model.run_with_cache(tokens, names_filter=names,
                                                stop_at_layer=needed[-1] + 1, return_type=None)
                resid = {l: cache[f"blocks.{l}.hook_resid_pre"] for l in needed}
            shared = (time.perf_counter() - t0) / len(hook_lists)
            for i, hooks in enumerate(hook_lists):
                t1 = time.perf_counter()
                start = starts[i]
                if block_layers[i] is not None:
                    logits = _resume_from_block(model, block_layers[i], cache, hooks, tokens)
                else:
                    with model.hooks(fwd_hooks=hooks):
                        if start in resid:
                            logits = model(resid[start], start_at_layer=start, tokens=tokens,
                                           return_type="logits")
                        elif start == n_layers and needed:
                            logits = model(resid[needed[-1]], start_at_layer=needed[-1],
                                           tokens=tokens, return_type="logits")
                        else:
                            logits = model(tokens, return_type="logits")
                sums[name][i] += batch_statistics(logits, tokens, mask.to(logits.device),
                                                  top_k, skip_ids)
                seconds[i] += time.perf_counter() - t1 + shared
                bar.update(1)
    bar.close()
    out = []
    for i in range(len(hook_lists)):
        results = {}
        for name in data:
            s = sums[name][i].tolist()
            n = s[0]
            if n == 0:
                raise ValueError(f"Dataset {name!r} has no predicted position.")
            acc = {k: s[2 + j] / n for j, k in enumerate(top_k)}
            skip, n_skip = {}, 0
            if skip_common:
                n_skip = int(s[2 + len(top_k)])
                base = 3 + len(top_k)
                skip = {k: s[base + j] / max(n_skip, 1) for j, k in enumerate(top_k)}
            if not math.isfinite(s[1]):
                raise ValueError(
                    f"The logits on dataset {name!r} under {labels[i] or 'the intervention'!r} "
                    "are not finite (NaN or inf): a hook or the model produced NaN/inf "
                    "activations, so no accuracy or loss can be reported.")
            results[name] = DatasetMetrics(name, int(n), s[1] / n, acc, skip, n_skip)
        out.append(Evaluation(results, labels[i], seconds[i]))
    return out


def evaluate(
    model: Any,
    data: TokenDataset | Mapping[str, TokenDataset],
    hooks: HookList | Iterable[tuple[Any, Any]] = (),
    *,
    batch_size: int = 8,
    top_k: Sequence[int] = (1, 5),
    skip_common: int = 50,
    label: str = "",
    progress: bool = True,
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

    Returns:
        An :class:`Evaluation` with one :class:`DatasetMetrics` per dataset.

    Example:
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, max_tokens=500)
        >>> ev = evaluate(model, data, progress=False)
        >>> 0 < ev["forget"].loss < ev["retain"].loss
        True
    """
    return evaluate_many(model, data, [hooks], batch_size=batch_size, top_k=top_k,
                         skip_common=skip_common,
                         labels=[label or getattr(hooks, "name", "")], progress=progress)[0]


def check_metric_name(metric: str, top_k: Sequence[int] = (1, 5), skip_common: int = 50) -> str:
    """``metric`` if an :class:`Evaluation` with these settings has it, else a ValueError.

    Example:
        >>> check_metric_name("top3")
        Traceback (most recent call last):
        ...
        ValueError: Unknown metric 'top3'; choose one of ['loss', 'perplexity', 'top1', 'top5', 'top1_skip', 'top5_skip'].
    """
    valid = ["loss", "perplexity", *(f"top{k}" for k in top_k)]
    if skip_common:
        valid += [f"top{k}_skip" for k in top_k]
    if metric not in valid:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {valid}.")
    return metric


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
            "TokenDataset(name, tokens, attention_mask).")
    if not data:
        raise ValueError("evaluate() got no dataset.")
    for name, ds in data.items():
        if not isinstance(ds, TokenDataset):
            raise TypeError(f"Dataset {name!r} must be a TokenDataset, got {type(ds).__name__}.")
        width = int(ds.attention_mask.sum(1).max())
        if width > model.cfg.n_ctx:
            raise ValueError(f"Dataset {name!r} has sequences of {width} tokens; the model's "
                             f"context n_ctx is {model.cfg.n_ctx}.")
        top = int(ds.tokens[ds.attention_mask].max())
        if top >= model.cfg.d_vocab:
            raise ValueError(f"Dataset {name!r} has token id {top}; the model's vocabulary has "
                             f"{model.cfg.d_vocab} ids (0..{model.cfg.d_vocab - 1}).")
    return dict(data)
