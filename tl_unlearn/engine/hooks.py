"""The :class:`Intervention` container and helpers shared by every intervention.

An intervention is a named list of ``(hook_name, hook_fn)`` pairs, as TransformerLens expects
them. It can be passed wherever TL takes forward hooks::

    model.run_with_hooks(tokens, fwd_hooks=intervention.fwd_hooks)
    with model.hooks(fwd_hooks=intervention.fwd_hooks): ...
    with intervention.applied(model): ...          # its own context manager
    model.run_with_hooks(tokens, fwd_hooks=list(intervention))

Interventions compose with ``a + b`` (hooks run in order) and never touch model weights.
Hook functions return a new tensor rather than writing into the activation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tl_unlearn.core.checks import HookFn, Positions, check_hook_name, model_device

__all__ = [
    "Intervention",
    "compose",
    "hook_shapes",
    "iter_batches",
    "positions_mask",
    "stop_at_layer_kwargs",
    "stream_activations",
]


def iter_batches(data: Any, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(tokens, attention_mask)`` batches of a :class:`~tl_unlearn.data.datasets.TokenDataset` or of
    a ``[batch, pos]`` token tensor (every token real)."""
    if hasattr(data, "batches"):
        yield from data.batches(batch_size)
    else:
        for s in range(0, len(data), batch_size):
            t = data[s : s + batch_size]
            yield t, torch.ones_like(t, dtype=torch.bool)


def stop_at_layer_kwargs(model: Any, names: Sequence[str]) -> dict[str, Any]:
    """``stop_at_layer`` kwargs that skip layers after the last needed hook (HookedTransformer)."""
    from transformer_lens import HookedTransformer

    if not isinstance(model, HookedTransformer) or not all(n.startswith("blocks.") for n in names):
        return {}
    return {"stop_at_layer": max(int(n.split(".")[1]) for n in names) + 1}


@torch.inference_mode()
def stream_activations(
    model: Any,
    data: Any,
    hook_names: Sequence[str],
    read: Callable[[str, Tensor, Tensor], None],
    *,
    batch_size: int = 8,
    fwd_hooks: Sequence[tuple[str, HookFn]] = (),
) -> int:
    """Run ``model`` over ``data`` batch by batch and hand every activation at ``hook_names``
    to ``read(hook_name, acts, mask)``: the one streaming loop behind every statistic the
    package fits (activation means, pruning statistics, SAE feature means and quality).

    ``mask`` is the batch's ``[batch, pos]`` attention mask on the activations' device (True
    on real tokens). Nothing but what ``read`` keeps is held: no cache of the dataset. The
    forward pass stops after the last layer a hook needs. ``fwd_hooks`` (e.g. an intervention
    already applied) run before the activations are read.

    Args:
        model: A HookedTransformer (or TransformerBridge).
        data: A :class:`~tl_unlearn.data.datasets.TokenDataset` or a ``[batch, pos]`` token tensor.
        hook_names: Hook points to read (checked first).
        read: Called once per hook and batch.
        batch_size: Sequences per forward pass.
        fwd_hooks: Hooks applied during the passes.

    Returns:
        The number of batches run.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); tokens = m.to_tokens(["def f(x):", "import os"])
        >>> seen = []
        >>> stream_activations(m, tokens, ["blocks.0.hook_resid_post"],
        ...                    lambda name, acts, mask: seen.append(acts[mask].shape))
        1
        >>> seen
        [torch.Size([12, 128])]
    """
    for name in hook_names:
        check_hook_name(model, name)
    current: dict[str, Tensor] = {}

    def reader(name: str) -> HookFn:
        def hook(acts: Tensor, hook: Any) -> None:
            read(name, acts, current["mask"].to(acts.device))

        return hook

    device = model_device(model)
    stop = stop_at_layer_kwargs(model, hook_names)
    n_batches = 0
    with model.hooks(fwd_hooks=[*fwd_hooks, *((n, reader(n)) for n in hook_names)]):
        for tokens, mask in iter_batches(data, batch_size):
            current["mask"] = mask
            model(tokens.to(device), return_type=None, **stop)
            n_batches += 1
    return n_batches


@dataclass
class Intervention:
    """A named set of forward hooks that changes a model's computation.

    Attributes:
        name: Short label, used in results and plots.
        fwd_hooks: ``(hook_name, hook_fn)`` pairs for TransformerLens.
        info: Free-form description (selected components, settings, fit time in seconds).

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.interventions import zero_ablation
        >>> model = load_tiny_model()
        >>> iv = zero_ablation(model, heads=[(0, 1)]) + zero_ablation(model, neurons={1: [3, 4]})
        >>> [name for name, _ in iv]
        ['blocks.0.attn.hook_z', 'blocks.1.mlp.hook_post']
        >>> with iv.applied(model):
        ...     logits = model("def f(x):")
        >>> len(model.hook_dict["blocks.0.attn.hook_z"].fwd_hooks)
        0
    """

    name: str
    fwd_hooks: list[tuple[str, HookFn]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, HookFn]]:
        return iter(self.fwd_hooks)

    def __len__(self) -> int:
        return len(self.fwd_hooks)

    def __add__(self, other: Intervention | Sequence[tuple[str, HookFn]]) -> Intervention:
        if isinstance(other, Intervention):
            return Intervention(
                f"{self.name} + {other.name}",
                [*self.fwd_hooks, *other.fwd_hooks],
                {"parts": [self.info, other.info]},
            )
        return Intervention(self.name, [*self.fwd_hooks, *other], dict(self.info))

    def __radd__(self, other: Any) -> Intervention:
        if other == 0 or other == []:  # sum([...]) and [] + iv
            return self
        if isinstance(other, Sequence):
            return Intervention(self.name, [*other, *self.fwd_hooks], dict(self.info))
        return NotImplemented

    @contextmanager
    def applied(self, model: Any) -> Iterator[Any]:
        """Apply the hooks for the duration of a ``with`` block (removed even on errors)."""
        with model.hooks(fwd_hooks=self.fwd_hooks):
            yield model

    @property
    def hook_names(self) -> list[str]:
        return list(dict.fromkeys(n for n, _ in self.fwd_hooks))


def compose(*interventions: Intervention | Sequence[tuple[str, HookFn]]) -> Intervention:
    """Combine interventions (or plain hook lists) into one; hooks run in the given order.

    Examples:
        >>> from tl_unlearn import Intervention
        >>> from tl_unlearn import compose
        >>> compose(Intervention("a"), [("hook_embed", lambda x, hook: x)]).hook_names
        ['hook_embed']
    """
    if not interventions:
        return Intervention("none")
    first, *rest = interventions
    out = first if isinstance(first, Intervention) else Intervention("hooks", list(first))
    for iv in rest:
        out = out + iv
    return out


_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def hook_shapes(model: Any, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Per-position activation shape (without batch and pos) at each hook, by a 2-token probe.

    The probe runs once per model and hook (cached), only up to the needed hooks' outputs.
    """
    cache = _SHAPES.setdefault(model, {})
    missing = [n for n in names if n not in cache]
    if missing:
        for n in missing:
            check_hook_name(model, n)
        seen: dict[str, tuple[int, ...]] = {}

        def recorder(name: str) -> HookFn:
            def record(act: Tensor, hook: Any) -> None:
                seen[name] = tuple(act.shape[2:])

            return record

        bos = model.tokenizer.bos_token_id if model.tokenizer is not None else 0
        bos = 0 if bos is None else bos
        device = model_device(model)
        tokens = torch.full((1, 2), bos, dtype=torch.long, device=device)
        with model.hooks(fwd_hooks=[(n, recorder(n)) for n in missing]):
            model(tokens, return_type=None)
        cache.update(seen)
    return {n: cache[n] for n in names}


def positions_mask(positions: Positions, seq_len: int, device: Any = None) -> Tensor | None:
    """Boolean mask over positions (``[pos]`` or ``[batch, pos]``), or None for all positions.

    Args:
        positions: ``None``/``"all"``; ``"last"``; an int or list of ints (negative counts from
            the end); or a boolean tensor ``[pos]`` / ``[batch, pos]`` (sliced to ``seq_len``).
    """
    if positions is None or (isinstance(positions, str) and positions == "all"):
        return None
    if isinstance(positions, str):
        if positions != "last":
            raise ValueError(f"positions must be 'all', 'last', ints or a mask, got {positions!r}")
        positions = [-1]
    if isinstance(positions, Tensor) and positions.dtype == torch.bool:
        return positions[..., :seq_len].to(device)
    if isinstance(positions, int):
        positions = [positions]
    mask = torch.zeros(seq_len, dtype=torch.bool, device=device)
    idx = [p if p >= 0 else seq_len + p for p in (int(p) for p in positions)]
    idx = [p for p in idx if 0 <= p < seq_len]
    mask[idx] = True
    return mask
