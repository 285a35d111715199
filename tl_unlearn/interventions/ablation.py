"""Zero, mean and resample ablation of heads, MLP neurons and hook points; keep-only-circuit;
directional ablation.

Components are selected by:

- ``heads``: ``[(layer, head), ...]`` or ``{layer: [head, ...]}``; ablated through
  ``blocks.{layer}.attn.hook_z`` (per-head outputs before ``W_O``), on every model type;
- ``neurons``: ``{layer: [index, ...]}`` or ``[(layer, index), ...]``; ablated at
  ``blocks.{layer}.mlp.hook_post``;
- ``hook_points``: hook names (whole activation) or ``{hook_name: [index along the last axis]}``;
- ``positions``: ``"all"`` (default), ``"last"``, ints, or a boolean mask ``[pos]`` /
  ``[batch, pos]``.

Out-of-range layers/heads/neurons and unknown hook names raise ``ValueError`` naming the bad
value and the valid range (or the closest hook names) before any hook is added.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import (
    HookFn,
    Positions,
    as_index,
    check_hook_name,
    check_indices,
    check_layer,
    model_device,
)
from tl_unlearn.core.components import component_name
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.hooks import (
    Intervention,
    hook_shapes,
    positions_mask,
    stop_at_layer_kwargs,
    stream_activations,
)

__all__ = [
    "activation_means",
    "directional_ablation",
    "keep_only_circuit",
    "mean_ablation",
    "resample_ablation",
    "select_sites",
    "zero_ablation",
]

HeadSpec = Sequence[tuple[int, int]] | Mapping[int, Sequence[int]] | None
NeuronSpec = Mapping[int, Sequence[int]] | Sequence[tuple[int, int]] | None
HookSpec = Sequence[str] | Mapping[str, Sequence[int] | None] | None


def _pairs(spec: Any) -> dict[int, list[int]]:
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {
            as_index(k, "Layer"): [as_index(i, f"Layer {k}") for i in v] for k, v in spec.items()
        }
    if isinstance(spec, (str, Tensor)) or not isinstance(spec, Iterable):
        raise TypeError(f"Expected (layer, index) pairs or {{layer: [indices]}}, got {spec!r}.")
    out: dict[int, list[int]] = {}
    for item in spec:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"Expected (layer, index) pairs, got {item!r}")
        out.setdefault(as_index(item[0], "Layer"), []).append(as_index(item[1], "Component"))
    return out


def select_sites(
    model: Any, heads: HeadSpec = None, neurons: NeuronSpec = None, hook_points: HookSpec = None
) -> dict[str, Bool[Tensor, "..."]]:
    """Resolve a component selection into ``{hook_name: mask over the activation's axes}``.

    The mask has the per-position activation shape (``[head_index, d_head]`` at ``hook_z``,
    ``[d_mlp]`` at ``hook_post``) and is True at ablated entries.

    Raises:
        ValueError: On an unknown hook name or an out-of-range layer / head / neuron.
    """
    cfg = model.cfg
    wanted: dict[str, tuple[str, list[int] | None]] = {}
    for layer, hs in _pairs(heads).items():
        check_layer(model, layer)
        idx = check_indices(hs, cfg.n_heads, f"Head (layer {layer})")
        wanted[check_hook_name(model, get_act_name("z", layer))] = ("head", idx)
    for layer, ns in _pairs(neurons).items():
        check_layer(model, layer)
        if cfg.d_mlp is None:
            raise ValueError("This model has no MLP neurons (cfg.d_mlp is None).")
        idx = check_indices(ns, cfg.d_mlp, f"Neuron (layer {layer})")
        wanted[check_hook_name(model, get_act_name("post", layer))] = ("last", idx)
    if hook_points is not None:
        items = (
            hook_points.items()
            if isinstance(hook_points, Mapping)
            else ((h, None) for h in hook_points)
        )
        for name, idx in items:
            wanted[check_hook_name(model, name)] = ("last", None if idx is None else list(idx))
    if not wanted:
        raise ValueError("Nothing selected: pass heads=, neurons= or hook_points=.")
    shapes = hook_shapes(model, list(wanted))
    sites = {}
    for name, (kind, idx) in wanted.items():
        shape = shapes[name]
        mask = torch.zeros(shape, dtype=torch.bool)
        if idx is None:
            mask[...] = True
        elif kind == "head":
            mask[idx] = True
        else:
            mask[..., check_indices(idx, shape[-1], f"Index at {name}")] = True
        sites[name] = mask
    return sites


def replace_hook(
    site: Bool[Tensor, "..."],
    positions: Positions,
    value: Callable[[Tensor], Tensor],
) -> HookFn:
    """A hook returning ``where(selected, value(acts), acts)``: a new tensor, input untouched."""
    n_comp = site.ndim

    def hook(acts: Tensor, hook: Any) -> Tensor:
        mask = site.to(acts.device)
        pos = positions_mask(positions, acts.shape[1], acts.device)
        if pos is not None:
            mask = mask & pos.reshape(*pos.shape, *([1] * n_comp))
        return torch.where(mask, value(acts).to(acts.dtype), acts)

    return hook


def ablation_label(kind: str, heads: HeadSpec, neurons: NeuronSpec, hook_points: HookSpec) -> str:
    parts = []
    if heads:
        parts.append(
            ", ".join(component_name((l, h)) for l, hs in _pairs(heads).items() for h in hs)
        )
    if neurons:
        parts.append(f"{sum(len(v) for v in _pairs(neurons).values())} neurons")
    if hook_points:
        parts.append(", ".join(hook_points))
    return f"{kind}({'; '.join(parts)})"


def zero_ablation(
    model: Any,
    heads: HeadSpec = None,
    neurons: NeuronSpec = None,
    hook_points: HookSpec = None,
    *,
    positions: Positions = "all",
    name: str | None = None,
) -> Intervention:
    """Set the selected components to zero.

    Args:
        model: The model.
        heads: Heads ``[(layer, head)]`` (at ``hook_z``).
        neurons: MLP neurons ``{layer: [index]}`` (at ``hook_post``).
        hook_points: Hook names (whole activation) or ``{hook_name: [index along the last
            axis]}``.
        positions: ``"all"`` or the positions to zero.
        name: Label for results.

    Returns:
        The intervention.

    Raises:
        ValueError: Nothing selected, an unknown hook or an index out of range (named).

    Examples:
        >>> from tl_unlearn import zero_ablation
        >>> from tl_unlearn import load_tiny_model
        >>> model = load_tiny_model()
        >>> iv = zero_ablation(model, heads=[(1, 2)])
        >>> _, cache = model.run_with_cache("x = 1", names_filter=iv.hook_names)
        >>> with iv.applied(model):
        ...     _, ablated = model.run_with_cache("x = 1", names_filter=iv.hook_names)
        >>> bool((ablated["blocks.1.attn.hook_z"][:, :, 2] == 0).all())
        True
    """
    sites = select_sites(model, heads, neurons, hook_points)
    zero = torch.zeros(())
    hooks_ = [(n, replace_hook(m, positions, lambda a, z=zero: z)) for n, m in sites.items()]
    info: dict[str, Any] = {"kind": "zero", "sites": {n: int(m.sum()) for n, m in sites.items()}}
    if positions_mask(positions, 1) is None and all(
        n.endswith(("mlp.hook_post", "attn.hook_z")) for n in sites
    ):
        # every position zeroed at neurons / heads: the same as zeroing W_out rows / W_O slices
        info.update(
            mode="zero", pruned={n: m.flatten().nonzero()[:, 0].tolist() for n, m in sites.items()}
        )
    return Intervention(name or ablation_label("zero", heads, neurons, hook_points), hooks_, info)


def _add_rows(total: Tensor | None, x: Tensor) -> Tensor:
    """``total + x``; per-position sums of batches of different widths are added row by row
    (the shorter one counts as zero-padded)."""
    if total is None:
        return x
    if x.ndim and x.shape[0] > total.shape[0]:
        total, x = x, total
    if x.ndim:
        total[: x.shape[0]] += x
        return total
    return total + x


@torch.inference_mode()
def activation_means(
    model: Any,
    data: TokenDataset | Tensor,
    hook_names: Sequence[str],
    *,
    per_position: bool = False,
    batch_size: int = 8,
) -> dict[str, Float[Tensor, "..."]]:
    """Mean activation at each hook over the real (non-padding) tokens of ``data``.

    Accumulated batch by batch in float64 (no cache of the whole dataset). With
    ``per_position`` the mean is taken per position (shape ``[pos, ...]``), else pooled over
    all positions (shape ``[...]``).

    Args:
        model: The model.
        data: Token data (or a ``[batch, pos]`` token tensor) to take means over.
        hook_names: The hook points.
        per_position: One mean per position instead of one pooled mean.
        batch_size: Sequences per forward pass.

    Returns:
        ``{hook_name: mean}``.

    Raises:
        ValueError: If ``data`` is empty or a hook name is unknown.

    Examples:
        >>> from tl_unlearn.interventions import activation_means
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> means = activation_means(m, m.to_tokens(["x = 1", "y = 2"]), ["blocks.0.hook_mlp_out"])
        >>> means["blocks.0.hook_mlp_out"].shape
        torch.Size([128])
    """
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}

    def accumulate(name: str, acts: Tensor, m: Tensor) -> None:
        w = m.reshape(*m.shape, *([1] * (acts.ndim - 2))).double()
        s = (acts.double() * w).sum(0)
        c = m.double().sum(0)
        if not per_position:
            s, c = s.sum(0), c.sum()
        sums[name] = _add_rows(sums.get(name), s)
        counts[name] = _add_rows(counts.get(name), c)

    stream_activations(model, data, hook_names, accumulate, batch_size=batch_size)
    if not sums:
        raise ValueError("activation_means() got an empty dataset.")
    out = {}
    for n in hook_names:
        c = counts[n].clamp(min=1)
        out[n] = (sums[n] / c.reshape(*c.shape, *([1] * (sums[n].ndim - c.ndim)))).float()
    return out


def mean_ablation(
    model: Any,
    reference: TokenDataset | Tensor | None,
    heads: HeadSpec = None,
    neurons: NeuronSpec = None,
    hook_points: HookSpec = None,
    *,
    per_position: bool = False,
    positions: Positions = "all",
    batch_size: int = 8,
    name: str | None = None,
    means: Mapping[str, Tensor] | None = None,
) -> Intervention:
    """Replace the selected components by their mean over a reference dataset.

    Args:
        model: The model.
        reference: Token dataset (or token tensor) the means are computed on (e.g. the
            retain or forget *fit* split).
        heads: Heads ``[(layer, head)]`` (at ``hook_z``).
        neurons: MLP neurons ``{layer: [index]}`` (at ``hook_post``).
        hook_points: Hook names (whole activation) or ``{hook_name: [index along the last
            axis]}``.
        per_position: Use the mean at each position instead of the pooled mean (inputs may
            not be longer than the reference sequences then).
        positions: Which positions to ablate.
        batch_size: Batch size for computing means.
        name: Label for results.
        means: Means already computed by :func:`activation_means` (by hook name, with the
            same ``per_position``); ``reference`` is then not read. Saves the pass over the
            reference data when building many interventions.

    Examples:
        >>> from tl_unlearn import mean_ablation
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> iv = mean_ablation(m, m.to_tokens(["x = 1", "y = 2"]), neurons={0: [3, 7]})
        >>> iv.hook_names
        ['blocks.0.mlp.hook_post']
    """
    sites = select_sites(model, heads, neurons, hook_points)
    t0 = time.perf_counter()
    if means is None:
        if reference is None:
            raise ValueError("mean_ablation() needs reference data or precomputed means=.")
        means = activation_means(
            model, reference, list(sites), per_position=per_position, batch_size=batch_size
        )
    missing = [n for n in sites if n not in means]
    if missing:
        raise ValueError(f"means= has no entry for hook(s) {missing}.")
    for n, site in sites.items():
        got = tuple(means[n].shape)
        want = tuple(site.shape)
        if got[1 if per_position else 0 :] != want or (per_position and len(got) != len(want) + 1):
            expect = f"[pos, {', '.join(map(str, want))}]" if per_position else str(list(want))
            raise ValueError(
                f"means[{n!r}] has shape {list(got)}; with per_position="
                f"{per_position} it must be {expect}."
            )

    def value_fn(mean: Tensor) -> Callable[[Tensor], Tensor]:
        def value(acts: Tensor) -> Tensor:
            if not per_position:
                return mean.to(acts.device)
            if acts.shape[1] > mean.shape[0]:
                raise ValueError(
                    f"Input has {acts.shape[1]} positions but per-position means were computed "
                    f"on {mean.shape[0]}; use longer reference data or per_position=False."
                )
            return mean[: acts.shape[1]].to(acts.device)

        return value

    hooks_ = [(n, replace_hook(m, positions, value_fn(means[n]))) for n, m in sites.items()]
    return Intervention(
        name or ablation_label("mean", heads, neurons, hook_points),
        hooks_,
        {
            "kind": "mean",
            "per_position": per_position,
            "fit_seconds": time.perf_counter() - t0,
            "sites": {n: int(m.sum()) for n, m in sites.items()},
        },
    )


@torch.inference_mode()
def _collect(model: Any, tokens: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    device = model_device(model)
    _, cache = model.run_with_cache(
        tokens.to(device),
        names_filter=list(names),
        return_type=None,
        **stop_at_layer_kwargs(model, names),
    )
    return {n: cache[n].clone() for n in names}


def resample_ablation(
    model: Any,
    reference: TokenDataset | Tensor,
    heads: HeadSpec = None,
    neurons: NeuronSpec = None,
    hook_points: HookSpec = None,
    *,
    n_reference: int = 32,
    seed: int = 0,
    positions: Positions = "all",
    name: str | None = None,
) -> Intervention:
    """Replace the selected components by their activations on other (reference) inputs.

    Activations of up to ``n_reference`` reference sequences are stored once (full-length
    sequences first). Each input row gets the activations of a reference row drawn with the
    intervention's own generator, seeded by ``seed`` when it is built and advanced on every
    forward pass: every batch draws fresh rows (all reference rows get used), and two
    interventions built with the same seed give the same replacements for the same sequence
    of calls.

    Args:
        model: The model.
        reference: Token data (or a token tensor) whose activations replace the inputs'.
        heads: Heads ``[(layer, head)]`` (at ``hook_z``).
        neurons: MLP neurons ``{layer: [index]}`` (at ``hook_post``).
        hook_points: Hook names (whole activation) or ``{hook_name: [index along the last
            axis]}``.
        n_reference: Reference sequences stored.
        seed: Seed of the draws.
        positions: ``"all"`` or the positions to replace.
        name: Label for results.

    Returns:
        The intervention.

    Raises:
        ValueError: At run time, if inputs are longer than the reference sequences.

    Examples:
        >>> from tl_unlearn import resample_ablation
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> ref = m.to_tokens(["def f(x): return x", "import os, sys, re"])
        >>> iv = resample_ablation(m, ref, heads=[(0, 1)], n_reference=2)
        >>> iv.hook_names
        ['blocks.0.attn.hook_z']
    """
    sites = select_sites(model, heads, neurons, hook_points)
    t0 = time.perf_counter()
    if isinstance(reference, TokenDataset):
        order = torch.argsort(reference.attention_mask.sum(1), descending=True, stable=True)
        tokens = reference.tokens[order[:n_reference]]
    else:
        tokens = reference[:n_reference]
    if tokens.shape[0] == 0:
        raise ValueError("resample_ablation() got an empty reference dataset.")
    stored = _collect(model, tokens, list(sites))

    def value_fn(ref: Tensor) -> Callable[[Tensor], Tensor]:
        gen = torch.Generator().manual_seed(seed)

        def value(acts: Tensor) -> Tensor:
            if acts.shape[1] > ref.shape[1]:
                raise ValueError(
                    f"Input has {acts.shape[1]} positions but the reference sequences have "
                    f"{ref.shape[1]}; use longer reference data."
                )
            idx = torch.randint(ref.shape[0], (acts.shape[0],), generator=gen)
            return ref[idx, : acts.shape[1]].to(acts.device)

        return value

    hooks_ = [(n, replace_hook(m, positions, value_fn(stored[n]))) for n, m in sites.items()]
    return Intervention(
        name or ablation_label("resample", heads, neurons, hook_points),
        hooks_,
        {
            "kind": "resample",
            "seed": seed,
            "n_reference": int(tokens.shape[0]),
            "fit_seconds": time.perf_counter() - t0,
        },
    )


def keep_only_circuit(
    model: Any,
    heads: HeadSpec = None,
    neurons: NeuronSpec = None,
    *,
    layers: Sequence[int] | None = None,
    include_mlp: bool = False,
    method: AblationMethod = "mean",
    reference: TokenDataset | Tensor | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> Intervention:
    """Ablate every head (and, with ``include_mlp``, every neuron) of ``layers`` except the circuit.

    Args:
        model: The model.
        heads: Heads of the circuit, kept intact.
        neurons: Neurons of the circuit, kept intact (only with ``include_mlp``).
        layers: Layers whose components are ablated (default: all).
        include_mlp: Also ablate the MLP neurons outside the circuit.
        method: ``"zero"``, ``"mean"`` or ``"resample"`` ablation of the complement.
        reference: Reference data for mean/resample ablation.
        **kwargs: Passed to the ablation (``per_position``, ``seed``, ...).

    Examples:
        >>> from tl_unlearn import keep_only_circuit
        >>> from tl_unlearn import load_tiny_model
        >>> model = load_tiny_model()
        >>> iv = keep_only_circuit(model, heads=[(0, 1)], layers=[0], method="zero")
        >>> iv.info["ablated_heads"]
        [(0, 0), (0, 2), (0, 3)]
    """
    cfg = model.cfg
    layers = (
        list(range(cfg.n_layers)) if layers is None else [check_layer(model, l) for l in layers]
    )
    keep_h = {(l, h) for l, hs in _pairs(heads).items() for h in hs}
    keep_n = {(l, n) for l, ns in _pairs(neurons).items() for n in ns}
    for l, h in keep_h:
        check_layer(model, l)
        check_indices([h], cfg.n_heads, f"Head (layer {l})")
    ablate_h = [(l, h) for l in layers for h in range(cfg.n_heads) if (l, h) not in keep_h]
    ablate_n = {}
    if include_mlp:
        ablate_n = {l: [n for n in range(cfg.d_mlp) if (l, n) not in keep_n] for l in layers}
        ablate_n = {l: v for l, v in ablate_n.items() if v}
    label = name or f"keep-only({len(keep_h)} heads, {len(keep_n)} neurons; {method})"
    iv = ablation(
        model, method, reference, ablate_h or None, ablate_n or None, name=label, **kwargs
    )
    iv.info.update({"ablated_heads": ablate_h, "kept_heads": sorted(keep_h)})
    return iv


AblationMethod = Literal["zero", "mean", "resample"]


def ablation(
    model: Any,
    method: AblationMethod,
    reference: TokenDataset | Tensor | None = None,
    heads: HeadSpec = None,
    neurons: NeuronSpec = None,
    hook_points: HookSpec = None,
    **kwargs: Any,
) -> Intervention:
    """Zero, mean or resample ablation by name (the one dispatcher of the package).

    Args:
        model: The model.
        method: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: Reference data (mean and resample; mean also accepts ``means=``).
        heads: Heads ``[(layer, head)]`` (at ``hook_z``).
        neurons: MLP neurons ``{layer: [index]}`` (at ``hook_post``).
        hook_points: Hook names (whole activation) or ``{hook_name: [index along the last
            axis]}``.
        **kwargs: Passed to the ablation (``name``, ``positions``, ``means``, ``seed``...).

    Raises:
        ValueError: An unknown method, or mean/resample without reference data.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> ablation(load_tiny_model(), "zero", heads=[(1, 2)]).hook_names
        ['blocks.1.attn.hook_z']
    """
    if method == "zero":
        return zero_ablation(model, heads, neurons, hook_points, **kwargs)
    if method not in ("mean", "resample"):
        raise ValueError(f"Unknown method {method!r}; choose 'zero', 'mean' or 'resample'.")
    if reference is None and not (method == "mean" and kwargs.get("means") is not None):
        raise ValueError(f"method={method!r} needs reference data.")
    fn = mean_ablation if method == "mean" else resample_ablation
    return fn(model, reference, heads, neurons, hook_points, **kwargs)


def directional_ablation(
    model: Any,
    hook_name: str,
    directions: Float[Tensor, "*n_dirs d"],
    *,
    positions: Positions = "all",
    name: str | None = None,
) -> Intervention:
    """Project a direction (or the subspace spanned by several) out of the activation at a hook.

    ``x -> x - Q Q^T x`` with ``Q`` an orthonormal basis of the directions (computed by QR),
    applied to the last axis of the activation.

    Args:
        model: The model.
        hook_name: The hook point (e.g. ``"blocks.3.hook_resid_pre"``).
        directions: One direction ``[d]`` or several ``[n, d]`` (need not be normalised).
        positions: ``"all"`` or the positions to edit.
        name: Label for results.

    Returns:
        The intervention.

    Raises:
        ValueError: If the direction size differs from the activation's last axis.

    Examples:
        >>> from tl_unlearn import directional_ablation
        >>> import torch
        >>> from tl_unlearn import load_tiny_model
        >>> model = load_tiny_model()
        >>> d = torch.randn(model.cfg.d_model)
        >>> iv = directional_ablation(model, "blocks.1.hook_resid_pre", d)
        >>> with iv.applied(model):
        ...     _, c = model.run_with_cache("x = 1", names_filter="blocks.1.hook_resid_pre")
        >>> bool(((c["blocks.1.hook_resid_pre"] @ d).abs() < 1e-3).all())
        True
    """
    check_hook_name(model, hook_name)
    width = hook_shapes(model, [hook_name])[hook_name][-1]
    dirs = directions.detach().float().reshape(-1, directions.shape[-1])
    if dirs.shape[-1] != width:
        raise ValueError(
            f"Direction size {dirs.shape[-1]} does not match the last axis of {hook_name!r} "
            f"({width})."
        )
    if not torch.isfinite(dirs).all():
        raise ValueError("directional_ablation() got a direction with NaN or inf entries.")
    norms = dirs.norm(dim=-1)
    if (norms == 0).any():
        raise ValueError(
            f"directional_ablation() got an all-zero direction (row "
            f"{int((norms == 0).nonzero()[0])}): it has nothing to project out."
        )
    q, _ = torch.linalg.qr(dirs.T)  # [d, n_dirs], orthonormal columns
    full_site = torch.ones(hook_shapes(model, [hook_name])[hook_name], dtype=torch.bool)

    def project_out(acts: Tensor) -> Tensor:
        qq = q.to(acts.device, acts.dtype)
        return acts - (acts @ qq) @ qq.T

    return Intervention(
        name or f"direction-ablation({hook_name}, {q.shape[1]} dirs)",
        [(hook_name, replace_hook(full_site, positions, project_out))],
        {"kind": "directional", "n_directions": q.shape[1]},
    )
