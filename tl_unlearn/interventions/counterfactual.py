"""Counterfactual (interchange) ablation: components read their value on the paired corrupted
prompt of the same example, position by position.

This is the ablation of activation patching, ACDC, EAP and the MIB circuit track: example
``i`` of the clean data is paired with example ``i`` of the corrupted data (IOI's ABC prompt,
greater-than's "01" year, ...), both tokenized to the same length. The intervention stores
the corrupted activations once; during a forward pass it recognises which clean example each
batch row is (from the row's token embeddings, see :class:`PairedRows`), so it works in any
loop over the clean data (``evaluate``, ``selectivity_curve``, your own ``run_with_hooks``),
in any batch order and batch size.

Rows that are not one of the clean examples raise a ``ValueError`` naming the row: the
intervention never patches a wrong partner silently.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_unlearn.core.checks import HookFn, Positions, model_device
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.hooks import Intervention, stop_at_layer_kwargs

__all__ = [
    "PairedRows",
    "as_token_dataset",
    "corrupted_activations",
    "counterfactual_ablation",
    "counterfactual_pair",
    "plain_tensors",
]

EMBED_HOOK = "hook_embed"


def as_token_dataset(data: TokenDataset | Tensor, name: str) -> TokenDataset:
    """``data`` as a :class:`TokenDataset` (a ``[batch, pos]`` token tensor: every token real)."""
    if isinstance(data, TokenDataset):
        return data
    if isinstance(data, Tensor) and data.ndim == 2:
        return TokenDataset(name, data, torch.ones_like(data, dtype=torch.bool))
    raise TypeError(
        f"{name} must be a TokenDataset or a [batch, pos] token tensor, got {type(data).__name__}."
    )


def require_hooked_transformer(model: Any, what: str) -> None:
    """Raise a TypeError unless ``model`` is a HookedTransformer (counterfactual rows and edge
    patching rely on its embedding and per-head hook points)."""
    from transformer_lens import HookedTransformer

    if not isinstance(model, HookedTransformer):
        raise TypeError(
            f"{what} needs a HookedTransformer, got {type(model).__name__} "
            "(a TransformerBridge is not supported here yet)."
        )


def check_pairs(clean: TokenDataset, corrupted: TokenDataset) -> None:
    """Raise a ``ValueError`` naming the first example whose clean and corrupted rows differ
    in length (or when the row counts differ): patching position by position needs both
    prompts to tokenize to the same number of tokens."""
    if len(clean) != len(corrupted):
        raise ValueError(
            f"Clean data has {len(clean)} examples but corrupted data has "
            f"{len(corrupted)}: counterfactual ablation pairs example i with "
            "example i."
        )
    n_clean = clean.attention_mask.sum(1)
    n_corr = corrupted.attention_mask.sum(1)
    bad = (n_clean != n_corr).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"Example {i}: the clean prompt is {int(n_clean[i])} tokens but its corrupted "
            f"prompt is {int(n_corr[i])}. Counterfactual ablation patches position by "
            "position, so each pair must tokenize to the same length (choose corruptions of "
            "the same token length, e.g. single-token names)."
        )


class PairedRows:
    """Tells, inside a forward pass, which clean example each batch row is.

    Built from the clean token rows. At ``hook_embed`` (the token embeddings, the first hook
    of a forward pass) each position's embedding is matched to the nearest embedding of the
    tokens the clean data uses (through a fixed random projection), and each row's token
    sequence is looked up among the clean examples (the longest match wins).

    Args:
        model: The HookedTransformer.
        clean: The clean token rows.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); t = m.to_tokens(["def f(x):", "import os", "x = 1"])
        >>> rows = PairedRows(m, TokenDataset("clean", t, t >= 0))
        >>> rows.rows_of(m.embed(t[[2, 0]])).tolist()
        [2, 0]
    """

    def __init__(self, model: Any, clean: TokenDataset) -> None:
        require_hooked_transformer(model, "Counterfactual ablation")
        lengths = clean.attention_mask.sum(1)
        self.keys: dict[tuple[int, ...], list[int]] = {}
        for i, (row, n) in enumerate(zip(clean.tokens.tolist(), lengths.tolist())):
            self.keys.setdefault(tuple(row[:n]), []).append(i)
        self.lengths = sorted({len(k) for k in self.keys}, reverse=True)
        used = torch.unique(clean.tokens[clean.attention_mask])
        gen = torch.Generator().manual_seed(0)
        self.projection = torch.randn(model.cfg.d_model, 8, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            emb = model.embed(used[None].to(model_device(model)))[0].double().cpu()
        self.used = used
        self.table = emb @ self.projection
        self.scale = float(self.table.abs().max()) + 1e-12

    def rows_of(self, embed: Tensor) -> Tensor:
        """The clean example index of every row of a ``[batch, pos, d_model]`` embedding."""
        proj = embed.detach().double().cpu() @ self.projection
        dist = torch.cdist(proj.reshape(-1, proj.shape[-1]), self.table)
        best, idx = dist.min(-1)
        tokens = torch.where(best <= 1e-4 * self.scale, self.used[idx], -1)
        tokens = tokens.reshape(embed.shape[0], embed.shape[1]).tolist()
        out, seen = [], {}
        for r, row in enumerate(tokens):
            for n in self.lengths:
                if n <= len(row) and (key := tuple(row[:n])) in self.keys:
                    candidates = self.keys[key]
                    k = seen.get(key, 0)
                    seen[key] = k + 1
                    out.append(candidates[k % len(candidates)])
                    break
            else:
                raise ValueError(
                    f"Batch row {r} is not one of the {sum(map(len, self.keys.values()))} clean "
                    "examples this counterfactual intervention was built for: run it on the "
                    "clean data it was given (any order or batch size)."
                )
        return torch.tensor(out, dtype=torch.long)


@torch.inference_mode()
def corrupted_activations(
    model: Any, corrupted: TokenDataset, hook_names: Sequence[str], *, batch_size: int = 8
) -> dict[str, Tensor]:
    """Activations of ``model`` on every corrupted row at ``hook_names``:
    ``{name: [n_examples, pos, ...]}`` (padding positions hold the padding's activations)."""
    device = model_device(model)
    stop = stop_at_layer_kwargs(model, hook_names)
    parts: dict[str, list[Tensor]] = {n: [] for n in hook_names}
    width = corrupted.tokens.shape[1]
    for tokens, _ in corrupted.batches(batch_size):
        _, cache = model.run_with_cache(
            tokens.to(device), names_filter=list(hook_names), return_type=None, **stop
        )
        for n in hook_names:
            act = cache[n]
            pad = width - act.shape[1]
            if pad:
                act = torch.cat([act, act.new_zeros(act.shape[0], pad, *act.shape[2:])], 1)
            parts[n].append(act.clone())
    return {n: torch.cat(v) for n, v in parts.items()}


def plain_tensors(values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Copies of tensors made under ``torch.inference_mode`` that autograd may use (a hook
    of a forward pass with gradients cannot read inference tensors)."""
    with torch.inference_mode(False):
        return {n: v.clone() for n, v in values.items()}


def counterfactual_pair(
    task: Any, tokenizer: Any, split: str = "eval", **kwargs: Any
) -> tuple[TokenDataset, TokenDataset]:
    """Clean and corrupted token rows of a prompt→answer task, example by example.

    Args:
        task: A :class:`~tl_unlearn.data.tasks.PromptAnswers` with ``corrupted`` prompts (builtin
            ``ioi`` and ``greater_than`` have them), or any object whose ``tokenize`` takes
            ``corrupted=True``.
        tokenizer: The model's tokenizer.
        split: ``"fit"`` or ``"eval"``.
        **kwargs: Passed to ``tokenize`` (``max_tokens``, ``max_examples``, ``n_ctx``...).

    Returns:
        ``(clean, corrupted)``, checked to pair row by row with equal lengths.

    Raises:
        ValueError: The task has no corrupted prompts, or a pair tokenizes to different
            lengths (naming the example).

    Examples:
        >>> from tl_unlearn.interventions import counterfactual_pair
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.data.tasks import ioi_task
        >>> m = load_tiny_model()
        >>> clean, corrupted = counterfactual_pair(ioi_task(m.tokenizer, n=20), m.tokenizer,
        ...                                        max_examples=4)
        >>> clean.tokens.shape == corrupted.tokens.shape
        True
    """
    clean = task.tokenize(tokenizer, split, **kwargs)
    corrupted = task.tokenize(tokenizer, split, corrupted=True, **kwargs)
    if len(corrupted) != len(clean) and "max_examples" not in kwargs:
        # a token budget cut the corrupted prompts elsewhere: take the same examples
        kwargs = {**kwargs, "max_examples": len(clean), "max_tokens": None}
        corrupted = task.tokenize(tokenizer, split, corrupted=True, **kwargs)
    check_pairs(clean, corrupted)
    return clean, corrupted


def counterfactual_ablation(
    model: Any,
    clean: TokenDataset | Tensor,
    corrupted: TokenDataset | Tensor,
    heads: Any = None,
    neurons: Any = None,
    hook_points: Any = None,
    *,
    positions: Positions = "all",
    batch_size: int = 8,
    name: str | None = None,
) -> Intervention:
    """Replace the selected components by their value on each example's corrupted prompt.

    Heads (``hook_z``), MLP neurons (``hook_post``) and any hook point (``hook_points=``: MLP outputs
    ``blocks.L.hook_mlp_out``, residual positions ``blocks.L.hook_resid_pre`` with
    ``positions=``, SAE feature activations on a HookedSAETransformer) are selected as in
    :func:`~tl_unlearn.interventions.ablation.zero_ablation`. Composes with every other
    intervention (``+``).

    Args:
        model: A HookedTransformer.
        clean: The clean rows the intervention will be run on (a TokenDataset, e.g. from
            :func:`counterfactual_pair`, or a ``[batch, pos]`` token tensor).
        corrupted: The corrupted partner of each clean row, the same length row by row.
        heads: Heads ``[(layer, head)]`` (at ``hook_z``, patched).
        neurons: MLP neurons ``{layer: [index]}`` (at ``hook_post``).
        hook_points: Hook names (whole activation) or ``{hook_name: [index along the last
            axis]}``.
        positions: Which positions to patch (``"all"``, ``"last"``, ints or a mask).
        batch_size: Batch size of the pass that stores the corrupted activations.
        name: Label for results.

    Returns:
        The intervention. Run on a row that is not one of ``clean``, it raises a ValueError.

    Raises:
        ValueError: Unknown hooks, out-of-range components, unpaired data or a pair of
            different lengths (naming the example), before any hook is added.

    Examples:
        >>> from tl_unlearn import counterfactual_ablation
        >>> import torch
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> clean, corrupted = m.to_tokens(["a b c d"]), m.to_tokens(["a x c d"])
        >>> iv = counterfactual_ablation(m, clean, corrupted, heads=[(0, 1)])
        >>> _, c = m.run_with_cache(corrupted, names_filter="blocks.0.attn.hook_z")
        >>> with iv.applied(m):
        ...     _, p = m.run_with_cache(clean, names_filter="blocks.0.attn.hook_z")
        >>> bool(torch.equal(p["blocks.0.attn.hook_z"][:, :, 1], c["blocks.0.attn.hook_z"][:, :, 1]))
        True
    """
    from tl_unlearn.interventions.ablation import ablation_label, replace_hook, select_sites

    clean_ds = as_token_dataset(clean, "clean")
    corrupted_ds = as_token_dataset(corrupted, "corrupted")
    check_pairs(clean_ds, corrupted_ds)
    sites = select_sites(model, heads, neurons, hook_points)
    t0 = time.perf_counter()
    matcher = PairedRows(model, clean_ds)
    stored = plain_tensors(
        corrupted_activations(model, corrupted_ds, list(sites), batch_size=batch_size)
    )
    state: dict[str, Tensor] = {}

    def find_rows(acts: Tensor, hook: Any) -> None:
        state["rows"] = matcher.rows_of(acts)

    def value_fn(values: Tensor) -> Any:
        def value(acts: Tensor) -> Tensor:
            return values[state["rows"], : acts.shape[1]].to(acts.device)

        return value

    fwd: list[tuple[str, HookFn]] = [(EMBED_HOOK, find_rows)]
    fwd += [(n, replace_hook(m, positions, value_fn(stored[n]))) for n, m in sites.items()]
    return Intervention(
        name or ablation_label("counterfactual", heads, neurons, hook_points),
        fwd,
        {
            "kind": "counterfactual",
            "n_examples": len(clean_ds),
            "fit_seconds": time.perf_counter() - t0,
            "sites": {n: int(m.sum()) for n, m in sites.items()},
        },
    )
