"""SAE feature interventions with ``sae_lens`` SAEs: zero-ablate, clamp or scale features.

The SAE error term is kept, so everything the SAE does not explain passes through unchanged:
``x -> x + decode(f') - decode(f)`` with ``f = encode(x)`` and ``f'`` the edited features.
Editing nothing (or clamping features to their current value) returns ``x`` exactly.

- On a plain ``HookedTransformer`` (or ``TransformerBridge``) the SAE is spliced in by a hook
  at the SAE's own hook point (``sae.cfg.metadata.hook_name``).
- On a ``HookedSAETransformer`` that has the SAE attached (``model.saes(...)`` /
  ``add_sae``), the hook goes on ``<hook>.hook_sae_acts_post``; attach it with
  ``use_error_term=True`` to keep the error term, as sae_lens recommends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from tl_unlearn.interventions.base import (
    Intervention,
    Positions,
    check_hook_name,
    check_indices,
    hook_shapes,
    positions_mask,
)

__all__ = ["sae_feature_intervention", "sae_hook_name"]

Mode = Literal["zero", "clamp", "scale"]


def sae_hook_name(sae: Any) -> str:
    """The hook point an ``sae_lens`` SAE reads (``sae.cfg.metadata.hook_name``)."""
    meta = getattr(sae.cfg, "metadata", None)
    name = getattr(meta, "hook_name", None) or getattr(sae.cfg, "hook_name", None)
    if not name:
        raise ValueError("The SAE config names no hook (cfg.metadata.hook_name is empty).")
    return name


def _edit(
    feats: Float[Tensor, "... d_sae"], idx: Tensor, mode: Mode, value: Tensor | float,
    pos_mask: Tensor | None,
) -> Tensor:
    new = feats.clone()
    sel = new[..., idx]
    if mode == "zero":
        sel = torch.zeros_like(sel)
    elif mode == "clamp":
        v = torch.as_tensor(value, dtype=feats.dtype, device=feats.device)
        sel = v[..., : sel.shape[1], :] if v.ndim >= 3 else v
        sel = sel.expand_as(new[..., idx])
    else:
        sel = sel * torch.as_tensor(value, dtype=feats.dtype, device=feats.device)
    if pos_mask is not None:
        m = pos_mask.reshape(*pos_mask.shape, *([1] * (sel.ndim - pos_mask.ndim)))
        sel = torch.where(m, sel, new[..., idx])
    new[..., idx] = sel
    return new


def sae_feature_intervention(
    model: Any,
    sae: Any,
    features: Sequence[int] | Tensor,
    mode: Mode = "zero",
    value: float | Sequence[float] | Tensor = 0.0,
    *,
    positions: Positions = "all",
    name: str | None = None,
) -> Intervention:
    """Zero-ablate, clamp or scale chosen SAE features at the SAE's hook.

    Args:
        model: ``HookedTransformer``, ``HookedSAETransformer`` (SAE attached or not) or
            ``TransformerBridge``.
        sae: An ``sae_lens`` SAE whose ``cfg.metadata.hook_name`` is a hook of the model.
        features: Feature (latent) indices.
        mode: ``"zero"`` sets them to 0, ``"clamp"`` to ``value``, ``"scale"`` multiplies by
            ``value``.
        value: For clamp/scale: a scalar, one value per feature, or a tensor broadcast to
            ``[batch, pos, n_features]`` (features then given sorted, without repeats).
        positions: Positions to edit (``"all"``, ``"last"``, ints, or a boolean mask).
        name: Label for results.

    Raises:
        ValueError: If the SAE's hook is unknown, its width ``d_in`` does not match the
            activation at that hook, a feature index is outside ``0..d_sae-1``, or the mode is
            unknown.

    Example:
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> from sae_lens.saes.sae import SAEMetadata
        >>> from tl_unlearn import load_tiny_model
        >>> model = load_tiny_model()
        >>> sae = StandardSAE(StandardSAEConfig(d_in=128, d_sae=256,
        ...     metadata=SAEMetadata(hook_name="blocks.1.hook_resid_pre")))
        >>> iv = sae_feature_intervention(model, sae, [3, 7], mode="zero")
        >>> iv.hook_names
        ['blocks.1.hook_resid_pre']
    """
    if mode not in ("zero", "clamp", "scale"):
        raise ValueError(f"Unknown mode {mode!r}; choose 'zero', 'clamp' or 'scale'.")
    hook = sae_hook_name(sae)
    attached = getattr(model, "acts_to_saes", {})
    if not (hook in attached and attached[hook] is sae):
        check_hook_name(model, hook)
    d_in, d_sae = int(sae.cfg.d_in), int(sae.cfg.d_sae)
    idx = torch.tensor(check_indices(features, d_sae, "SAE feature"), dtype=torch.long)
    feats_list = [int(f) for f in (features.tolist() if isinstance(features, Tensor) else features)]
    if isinstance(value, Tensor) and value.ndim >= 2:
        if len(set(feats_list)) != len(feats_list) or feats_list != sorted(feats_list):
            raise ValueError("A value tensor needs features given sorted and without repeats.")
    elif not isinstance(value, (int, float)):
        value_t = torch.as_tensor(value, dtype=torch.float32).flatten()
        if value_t.numel() != len(feats_list):
            raise ValueError(f"Got {value_t.numel()} values for {len(feats_list)} features.")
        # reorder values to the sorted, de-duplicated feature order
        order = dict(zip(feats_list, value_t.tolist()))
        value = torch.tensor([order[int(i)] for i in idx])
    label = name or f"sae-{mode}({len(idx)} features @ {hook})"
    info = {"kind": f"sae_{mode}", "features": idx.tolist(), "hook_name": hook}

    if hook in attached and attached[hook] is sae:
        def on_features(feats: Tensor, hook: Any) -> Tensor:
            pm = positions_mask(positions, feats.shape[1], feats.device)
            return _edit(feats, idx.to(feats.device), mode, _to(value, feats), pm)

        return Intervention(label, [(f"{hook}.hook_sae_acts_post", on_features)], info)

    shape = hook_shapes(model, [hook])[hook]
    if math.prod(shape) != d_in:
        raise ValueError(
            f"SAE width d_in={d_in} does not match the activation at {hook!r} "
            f"(per-position shape {shape}, size {math.prod(shape)})."
        )

    def splice(acts: Tensor, hook: Any) -> Tensor:
        x = acts.reshape(*acts.shape[:2], d_in)
        dtype = sae.W_dec.dtype
        xs = x.to(sae.W_dec.device, dtype)
        feats = sae.encode(xs)
        pm = positions_mask(positions, acts.shape[1], feats.device)
        edited = _edit(feats, idx.to(feats.device), mode, _to(value, feats), pm)
        delta = sae.decode(edited) - sae.decode(feats)
        return (x + delta.to(acts.device, acts.dtype)).reshape(acts.shape)

    return Intervention(label, [(hook, splice)], info)


def _to(value: Tensor | float, like: Tensor) -> Tensor | float:
    return value.to(like.device, like.dtype) if isinstance(value, Tensor) else value
