"""Edge ablation: run a model with only a :class:`~tl_unlearn.circuits.graph.Circuit`'s edges
clean, every other edge patched from a corrupted run, a mean or zero.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.circuits.graph import Circuit, EdgeMethod, parent_hooks
from tl_unlearn.core.checks import HookFn
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.hooks import Intervention, stream_activations
from tl_unlearn.engine.tl_patches import runs_fused, set_edge_flags
from tl_unlearn.interventions.counterfactual import (
    EMBED_HOOK,
    PairedRows,
    as_token_dataset,
    check_pairs,
    corrupted_activations,
    plain_tensors,
)

__all__ = ["EdgeValues", "edge_ablation", "prepare_edge_values"]


@dataclass
class _Group:
    """The children behind one hook point and how their correction is made:
    ``use_total * total + sum_e weights[e] * diff[parents[e]]``."""

    hook: str
    columns: np.ndarray
    parents: list[int]
    weights: Tensor  # [len(parents), len(columns)]
    use_total: Tensor  # [len(columns)]


def _plan(circuit: Circuit, ablated: np.ndarray) -> list[_Group]:
    """Per child hook point, the cheapest way to add its ablated parents' differences:
    the explicit sum over ablated parents, or the running total minus the kept parents."""
    prev = circuit.prev_index()
    hooks = circuit.child_hooks()
    groups = []
    for hook, cols in hooks:
        if not ablated[:, cols].any():
            continue
        n_prev = int(prev[cols[0]])
        sub = ablated[:n_prev, cols]
        explicit = sub.sum(0) <= (n_prev - sub.sum(0))  # fewer ablated than kept parents
        coeff = np.where(explicit[None, :], sub.astype(float), -(~sub).astype(float))
        rows = np.flatnonzero(np.abs(coeff).sum(1) > 0)
        groups.append(
            _Group(
                hook,
                cols,
                rows.tolist(),
                torch.tensor(coeff[rows], dtype=torch.float32),
                torch.tensor((~explicit).astype(np.float32)),
            )
        )
    return groups


@dataclass
class EdgeValues:
    """The ablated value of every parent (see :func:`prepare_edge_values`)."""

    method: str
    values: dict[str, Tensor]
    rows: PairedRows | None


def prepare_edge_values(
    model: Any,
    method: EdgeMethod = "counterfactual",
    *,
    clean: Any = None,
    corrupted: Any = None,
    reference: Any = None,
    batch_size: int = 8,
) -> EdgeValues:
    """The ablated value of every parent for :func:`edge_ablation`: each example's corrupted
    activations (``"counterfactual"``), means over ``reference`` (``"mean"``) or zeros."""
    values, rows = _ablated_values(model, method, clean, corrupted, reference, batch_size)
    return EdgeValues(method, plain_tensors(values), rows)


@torch.inference_mode()
def means_after_first(
    model: Any, reference: TokenDataset | Tensor, hook_names: Sequence[str], *, batch_size: int = 8
) -> dict[str, Tensor]:
    """Mean activation at each hook over the real tokens of ``reference`` after position 0.

    Position 0 (BOS) is an attention sink whose activations can be orders of magnitude larger
    than the others' (SmolLM2's are): a mean pooled with it is dominated by it, so edge
    mean-ablation takes its means after it and leaves position 0 as it is.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); t = m.to_tokens(["def f(x): return x"])
        >>> _, c = m.run_with_cache(t, names_filter="hook_embed")
        >>> mean = means_after_first(m, t, ["hook_embed"])["hook_embed"]
        >>> bool(torch.allclose(mean, c["hook_embed"][0, 1:].mean(0), atol=1e-6))
        True
    """
    sums: dict[str, Tensor] = {}
    count = torch.zeros((), dtype=torch.float64)

    def read(name: str, acts: Tensor, mask: Tensor) -> None:
        m = mask.clone()
        m[:, 0] = False
        total = (acts.double() * m.reshape(*m.shape, *([1] * (acts.ndim - 2)))).sum((0, 1))
        sums[name] = total if name not in sums else sums[name] + total
        if name == hook_names[0]:
            count.add_(m.sum())

    stream_activations(model, reference, hook_names, read, batch_size=batch_size)
    if not sums or count == 0:
        raise ValueError("The reference data has no token after position 0 to take means of.")
    return {n: (sums[n] / count).float() for n in hook_names}


def _linear_attn_out(model: Any) -> bool:
    """Whether ``hook_attn_out`` is the sum of the heads' ``z @ W_O`` plus ``b_O`` (no norm
    after attention), so the heads' total difference can be read there."""
    return not getattr(model.cfg, "use_normalization_before_and_after", False)


def _value_hooks(model: Any) -> list[str]:
    """The hooks whose ablated values an edge ablation reads: the parents' and, where it is
    linear, each layer's ``hook_attn_out`` (the heads' summed difference without a product
    with ``W_O``)."""
    names = parent_hooks(model)
    if _linear_attn_out(model):
        names += [get_act_name("attn_out", layer) for layer in range(model.cfg.n_layers)]
    return names


def _ablated_values(
    model: Any, method: str, clean: Any, corrupted: Any, reference: Any, batch_size: int
) -> tuple[dict[str, Tensor], PairedRows | None]:
    names = _value_hooks(model)
    if method == "counterfactual":
        if clean is None or corrupted is None:
            raise ValueError("method='counterfactual' needs clean= and corrupted= data.")
        clean_ds = as_token_dataset(clean, "clean")
        corrupted_ds = as_token_dataset(corrupted, "corrupted")
        check_pairs(clean_ds, corrupted_ds)
        rows = PairedRows(model, clean_ds)
        return corrupted_activations(model, corrupted_ds, names, batch_size=batch_size), rows
    if method == "mean":
        if reference is None:
            raise ValueError("method='mean' needs reference= data for the means.")
        return means_after_first(model, reference, names, batch_size=batch_size), None
    if method == "zero":
        return {}, None
    raise ValueError(f"Unknown method {method!r}; choose 'counterfactual', 'mean' or 'zero'.")


def edge_ablation(
    model: Any,
    circuit: Circuit,
    method: EdgeMethod = "counterfactual",
    *,
    clean: TokenDataset | Tensor | None = None,
    corrupted: TokenDataset | Tensor | None = None,
    reference: TokenDataset | Tensor | None = None,
    ablate: Literal["outside", "inside"] = "outside",
    batch_size: int = 8,
    name: str | None = None,
    prepared: EdgeValues | None = None,
) -> Intervention:
    """Ablate edges: the complement of ``circuit`` (``ablate="outside"``, the faithfulness
    test) or the circuit's own edges (``"inside"``, the removal test).

    An ablated edge ``p -> c`` makes child ``c`` read ``p``'s ablated output instead of its
    current one; everything else runs as usual. Heads get their corrected inputs through
    ``hook_q``/``hook_k``/``hook_v`` (heads with equal corrections share one layer norm and
    projection); during the pass ``use_hook_mlp_in`` (and, for grouped key/value heads whose
    query heads need different inputs, ``ungroup_grouped_query_attention``) is switched on,
    and switched back at the last block.

    Args:
        model: A HookedTransformer (sequential attention then MLP blocks).
        circuit: The circuit (its shape must match the model).
        method: ``"counterfactual"`` (each example's corrupted run: give ``clean`` and
            ``corrupted``), ``"mean"`` (means over ``reference`` after position 0; position 0,
            the BOS attention sink, keeps its own value) or ``"zero"``.
        clean: Paired data for ``"counterfactual"``; the intervention then runs
            on the rows of ``clean`` only.
        corrupted: As ``clean``.
        reference: Data for the means of ``"mean"``.
        ablate: ``"outside"`` or ``"inside"`` the circuit.
        batch_size: Batch size of the passes that store corrupted activations or means.
        name: Label for results.
        prepared: The ablated values from :func:`prepare_edge_values` (same method and
            data), to build many circuits' ablations without recomputing them.

    Returns:
        The intervention (no hook when no edge is ablated).

    Raises:
        ValueError: A circuit of another shape, an unknown method or missing data.

    Examples:
        >>> from tl_unlearn import Circuit
        >>> from tl_unlearn import edge_ablation
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); t = m.to_tokens(["def f(x): return x"])
        >>> empty = Circuit.of_model(m)
        >>> iv = edge_ablation(m, empty, "zero")
        >>> logits = m.run_with_hooks(t, fwd_hooks=list(iv))
        >>> m.cfg.use_split_qkv_input  # switched back after the pass
        False
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit must be a Circuit, got {type(circuit).__name__}.")
    circuit.check_model(model)
    Circuit.of_model(model)  # refuses unsupported block layouts
    if ablate not in ("outside", "inside"):
        raise ValueError(f"ablate must be 'outside' or 'inside', got {ablate!r}.")
    t0 = time.perf_counter()
    real = circuit.real_edges()
    ablated = real & (~circuit.in_graph if ablate == "outside" else circuit.in_graph)
    label = name or f"{method} edge ablation {ablate} {circuit.label} ({circuit.n_edges} edges)"
    info = {
        "kind": "edges",
        "method": method,
        "ablate": ablate,
        "n_ablated_edges": int(ablated.sum()),
        "n_edges": circuit.n_edges,
    }
    if not ablated.any():
        return Intervention(label, [], info)
    if prepared is None:
        prepared = prepare_edge_values(
            model,
            method,
            clean=clean,
            corrupted=corrupted,
            reference=reference,
            batch_size=batch_size,
        )
    elif prepared.method != method:
        raise ValueError(f"prepared= holds {prepared.method!r} values, not {method!r}.")
    values, rows = prepared.values, prepared.rows
    groups = _plan(circuit, ablated)
    stored = sorted({p for g in groups for p in g.parents})
    hooks = _edge_hooks(model, groups, stored, values, rows, keep_first=method == "mean")
    info["fit_seconds"] = time.perf_counter() - t0
    return Intervention(label, hooks, info)


def weighted_sum(buf: Tensor, terms: Sequence[tuple[int, float]], *base: Tensor | None) -> Tensor:
    """``sum(base) + sum_i coeff_i * buf[slot_i]`` for ``terms`` of ``(slot, coeff)``, read
    from views of ``buf`` (no gathered copy); ``None`` bases are skipped. A new tensor."""
    out = None
    for b in base:
        if b is not None:
            out = b.clone() if out is None else out.add_(b)
    for i, c in terms:
        if out is None:
            out = buf[i] * c
        else:
            out.add_(buf[i], alpha=c)
    if out is None:
        raise ValueError("weighted_sum needs at least one term or base.")
    return out


def _edge_hooks(
    model: Any,
    groups: list[_Group],
    stored: list[int],
    values: dict[str, Tensor],
    rows: PairedRows | None,
    keep_first: bool = False,
) -> list[tuple[str, HookFn]]:
    """The forward hooks of an edge ablation (see :func:`edge_ablation`).

    The differences ``ablated_p - current_p`` of the parents some child reads explicitly are
    written into one buffer ``[slot, batch, pos, d_model]`` (slots in parent order), and each
    child group's correction is one matrix product over a prefix of it (or over the rows it
    needs, when those are few); every other parent only enters the running total."""
    # How it works. The residual stream is a sum of parent outputs (the embedding, each head,
    # each MLP). Ablating the edge p -> c means c reads ablated_p instead of current_p, that is
    # c's input plus d_p = ablated_p - current_p. So one forward pass suffices:
    #   1. each parent's hook computes its difference d_p as it runs (record / on_z);
    #   2. "total" keeps the sum of every d_p so far: a child whose edges from *all* earlier
    #      parents are ablated adds "total" (use_total);
    #   3. a child reading only some parents' differences reads them from "buf", one slot per
    #      parent that any child needs on its own (``stored``), weighted by its group's
    #      weights (1 for an ablated edge; -1 for a kept edge under use_total);
    #   4. the children are the inputs of heads (q / k / v, in _head_input_hooks), of MLPs
    #      (hook_mlp_in) and of the logits (the last resid_post), corrected in their hooks.
    # Parents' own outputs are never changed: only what children read.
    cfg = model.cfg
    n_heads, n_layers = cfg.n_heads, cfg.n_layers
    slot = {p: i for i, p in enumerate(stored)}
    state: dict[str, Any] = {}
    # per child group: which stored rows its correction reads, and with what weights
    plans = {}
    for g in groups:
        slots = [slot[p] for p in g.parents]
        prefix = (max(slots) + 1) if slots else 0
        if slots and len(slots) < prefix / 2:  # few rows: gather them
            plans[g.hook] = (torch.tensor(slots), g.weights)
        else:  # most rows of the prefix: one product over the prefix, zero weights elsewhere
            w = torch.zeros(prefix, len(g.columns))
            if slots:
                w[torch.tensor(slots)] = g.weights
            plans[g.hook] = (prefix, w)

    def ablated(name: str, acts: Tensor) -> Tensor:
        if name not in values:
            return torch.zeros((), dtype=acts.dtype, device=acts.device)
        v = values[name]
        if rows is not None:
            v = v[state["rows"], : acts.shape[1]]
        return v.to(acts.device, acts.dtype)

    def difference(abl: Tensor, acts: Tensor) -> Tensor:
        diff = abl - acts
        diff = diff if diff.shape == acts.shape else diff.expand_as(acts).clone()
        if keep_first:  # mean ablation leaves position 0 (BOS) as it is
            diff[:, 0] = 0
        return diff

    def record(index: int, diff: Tensor, first: bool = True) -> None:
        state["total"] = diff if state.get("total") is None else state["total"] + diff
        if index in slot:  # every stored parent is written before a child reads it
            if first:
                state["buf"][slot[index]] = diff
            else:
                state["buf"][slot[index]] += diff

    def on_embed(acts: Tensor, hook: Any) -> None:
        # the first hook of a pass: switch the model's edge flags on, start the running total
        # and the buffer, and record the embedding's own difference (parent 0)
        if state.get("flags") is None:
            state["flags"] = set_edge_flags(model, True, flags=flags)
        state["total"] = None
        state["buf"] = acts.new_empty(len(stored), *acts.shape)
        if rows is not None:
            r = rows.rows_of(acts)
            start = int(r[0])
            consecutive = bool((r == torch.arange(start, start + len(r))).all())
            state["rows"] = slice(start, start + len(r)) if consecutive else r  # view, no copy
        record(0, difference(ablated(EMBED_HOOK, acts), acts))

    def on_pos(acts: Tensor, hook: Any) -> None:
        if cfg.positional_embedding_type == "shortformer":  # added to queries and keys only
            state["pos"] = acts
        else:
            record(0, difference(ablated("hook_pos_embed", acts), acts), first=False)

    def on_z(layer: int) -> HookFn:
        w_o = model.blocks[layer].attn.W_O  # [head_index d_head d_model]
        first = 1 + layer * (n_heads + 1)
        kept = [(h, slot[first + h]) for h in range(n_heads) if first + h in slot]
        name = get_act_name("z", layer)

        def hook(acts: Tensor, hook: Any) -> None:
            # a head's output is z @ W_O[head]: its difference is (z_ablated - z) @ W_O[head];
            # their sum is one product with W_O, like the attention's own output projection,
            # unless hook_attn_out gives it as a difference of two sums (see on_attn_out)
            if not kept and by_attn_out:
                return
            dz = difference(ablated(name, acts), acts)
            w = w_o.to(acts.dtype)
            if not by_attn_out:
                state["total"] = state["total"] + dz.flatten(2) @ w.flatten(0, 1)
            for h, i in kept:
                state["buf"][i] = dz[:, :, h] @ w[h]

        return hook

    def on_attn_out(layer: int) -> HookFn:
        name = get_act_name("attn_out", layer)
        b_o = model.blocks[layer].attn.b_O

        def hook(acts: Tensor, hook: Any) -> None:
            # sum_h (z_ablated_h - z_h) @ W_O[h] = attn_out(ablated) - attn_out; zeroed heads
            # leave only the bias
            abl = ablated(name, acts) if name in values else b_o.to(acts.dtype)
            state["total"] = state["total"] + difference(abl, acts)

        return hook

    def on_mlp_out(layer: int) -> HookFn:
        def hook(acts: Tensor, hook: Any) -> None:
            record(
                1 + layer * (n_heads + 1) + n_heads,
                difference(ablated(get_act_name("mlp_out", layer), acts), acts),
            )

        return hook

    def acts_is_3d(hook_name: str) -> bool:
        return hook_name.endswith(("hook_mlp_in", "hook_resid_post"))

    def on_child(group: _Group, last: bool) -> HookFn:
        use_total = group.use_total
        rows_or_prefix, weights = plans[group.hook]

        single = len(group.columns) == 1 and acts_is_3d(group.hook)
        total_only = single and bool(use_total[0]) and not group.parents
        terms = None
        if single and isinstance(rows_or_prefix, Tensor):
            terms = [(int(r), float(w)) for r, w in zip(rows_or_prefix, weights[:, 0]) if w]

        def hook(acts: Tensor, hook: Any) -> Tensor:
            # the child's input plus its correction: use_total * total (per column, i.e. per
            # head or the MLP) plus the weighted stored differences it reads
            total = state["total"]
            if total_only:  # one child reading every parent's ablated output: one addition
                out = acts + total  # (not in place: a cache hook may hold ``acts``)
                if last:
                    _restore()
                return out
            if terms is not None:  # one child reading a few stored parents: views, no gather
                out = weighted_sum(state["buf"], terms, total if use_total[0] else None, acts)
                if last:
                    _restore()
                return out
            corr = use_total.to(acts.device, acts.dtype)[:, None] * total[:, :, None, :]
            buf = state["buf"]
            if isinstance(rows_or_prefix, Tensor):
                part = buf.index_select(0, rows_or_prefix.to(buf.device))
            else:
                part = buf[:rows_or_prefix]
            if len(part):
                w = weights.to(acts.device, acts.dtype)
                extra = (w.T @ part.reshape(len(part), -1)).reshape(-1, *buf.shape[1:])
                corr = corr + extra.permute(1, 2, 0, 3)
            out = acts + (corr if acts.ndim == 4 else corr[:, :, 0])
            if last:
                _restore()
            return out

        return hook

    def _restore() -> None:
        # after the last child (or at the last hook): the model's flags as they were
        if state.get("flags") is not None:
            set_edge_flags(model, False, state["flags"], flags=flags)
        state["flags"] = None
        state["buf"] = None

    def on_last(acts: Tensor, hook: Any) -> None:
        _restore()

    # hook_attn_out gives the sum of the heads' differences at once when the attention output
    # is linear in z (no per-head norm): then a layer's heads need no product with W_O each
    by_attn_out = _linear_attn_out(model) and (
        not values or all(get_act_name("attn_out", layer) in values for layer in range(n_layers))
    )
    heads_hooks = _head_input_hooks(model, groups, slot, state)
    flags = ("use_hook_mlp_in", "ungroup_grouped_query_attention")
    fwd: list[tuple[str, HookFn]] = [(EMBED_HOOK, on_embed)]
    if cfg.positional_embedding_type in ("standard", "shortformer"):
        fwd.append(("hook_pos_embed", on_pos))
    by_hook = {g.hook: g for g in groups}
    last_hook = get_act_name("resid_post", n_layers - 1)
    for layer in range(n_layers):
        fwd += heads_hooks.get(layer, [])
        fwd.append((get_act_name("z", layer), on_z(layer)))
        if by_attn_out:
            fwd.append((get_act_name("attn_out", layer), on_attn_out(layer)))
        g = by_hook.get(f"blocks.{layer}.hook_mlp_in")
        if g is not None:
            fwd.append((g.hook, on_child(g, False)))
        fwd.append((get_act_name("mlp_out", layer), on_mlp_out(layer)))
    fwd.append((last_hook, on_child(by_hook[last_hook], True) if last_hook in by_hook else on_last))
    return fwd


def _head_input_hooks(
    model: Any, groups: list[_Group], slot: dict[int, int], state: dict[str, Any]
) -> dict[int, list[tuple[str, HookFn]]]:
    """Hooks giving heads their corrected query / key / value inputs.

    Rather than TransformerLens's split inputs (a layer norm and a projection per head and
    input, always), heads whose corrections are equal share one: for each distinct correction
    ``c`` of a layer's q (k, v) inputs, ``ln1(resid_pre + c)`` is projected with those heads'
    weights and written over their ``hook_q`` (``hook_k``, ``hook_v``) slices. With grouped
    key/value heads, a key/value group whose query heads need different inputs makes its layer
    ungroup them (``ungroup_grouped_query_attention``, set at each layer's ``hook_resid_pre``).
    Returns the hooks per layer.

    How it works, per layer and letter (q, k, v):

    1. Each head's correction is a *signature*: whether it adds the running total, and which
       stored parent differences it adds with which weights. Heads with the same signature
       read the same input.
    2. The most common signature (the "majority") is applied once, inside ``ln1`` itself, by
       replacing ``ln1.hook_normalized`` with the normalised corrected residual: every head
       of the letter then reads it through TransformerLens's own projection.
    3. Every other signature (a "class" of heads) gets its own ``ln1(resid_pre + c)``,
       projected with just those heads' weights in one matrix product, and written over the
       heads' slices of ``hook_q`` / ``hook_k`` / ``hook_v``.
    """
    from tl_unlearn.engine.tl_patches import POST_NORM_ARCHITECTURES

    cfg = model.cfg
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        raise ValueError(
            f"Edge ablation needs pre-norm blocks; {cfg.original_architecture} "
            "normalises after attention."
        )
    n_heads = cfg.n_heads
    n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
    repeat = n_heads // n_kv
    shortformer = cfg.positional_embedding_type == "shortformer"
    by_hook = {g.hook: g for g in groups}
    classes: dict[tuple[int, str], list[tuple[tuple, list[int]]]] = {}
    majority: dict[tuple[int, str], tuple] = {}
    ungroup: set[int] = set()
    for layer in range(cfg.n_layers):
        for letter in "qkv":
            g = by_hook.get(f"blocks.{layer}.hook_{letter}_input")
            if g is None:
                continue
            sigs = []
            for c in range(len(g.columns)):
                w = g.weights[:, c]
                terms = tuple((slot[p], float(w[e])) for e, p in enumerate(g.parents) if w[e])
                use_total = bool(g.use_total[c])
                sigs.append((use_total, terms) if use_total or terms else None)
            by_sig: dict[tuple, list[int]] = {}
            for h, sig in enumerate(sigs):  # None: no correction
                by_sig.setdefault((False, ()) if sig is None else sig, []).append(h)
            # the most common input is given to every head at ln1 (TransformerLens calls it
            # once for q, once for k, once for v); the others are projected per head
            major = max(by_sig, key=lambda k: len(by_sig[k]))
            if major != (False, ()):
                majority[(layer, letter)] = major
            else:
                del by_sig[major]
            classes[(layer, letter)] = [(k, v) for k, v in by_sig.items() if k != major]
            if letter != "q" and repeat > 1:
                for kv in range(n_kv):
                    if len({sigs[h] for h in range(kv * repeat, (kv + 1) * repeat)}) > 1:
                        ungroup.add(layer)

    def correction(sig: tuple, like: Tensor) -> Tensor:
        use_total, terms = sig
        if not terms:
            return state["total"] if use_total else torch.zeros_like(like)
        return weighted_sum(state["buf"], terms, state["total"] if use_total else None)

    def on_resid_pre(layer: int) -> HookFn:
        def hook(acts: Tensor, hook: Any) -> None:
            state["resid_pre"] = acts
            state["inputs"], state["normalized"] = {}, {}
            state["ln_calls"] = 0
            if repeat > 1:  # ungroup key/value heads only in the layers that need it
                # (with the fused attention path our own k/v hooks ungroup them, cheaply)
                state["own_ungroup"] = layer in ungroup and runs_fused(model.blocks[layer].attn)
                cfg.ungroup_grouped_query_attention = (
                    layer in ungroup and not state["own_ungroup"]
                ) or bool(state["flags"].get("ungroup_grouped_query_attention"))

        return hook

    def corrected_input(layer: int, sig: tuple) -> Tensor:
        """``ln1(resid_pre + correction)``, once per layer and correction (q, k and v heads
        with the same correction share it)."""
        key = (layer, sig)
        if key not in state["inputs"]:
            state["in_ln"] = True  # our own ln1 call: the hook below only records its value
            try:
                state["inputs"][key] = model.blocks[layer].ln1(
                    state["resid_pre"] + correction(sig, state["resid_pre"])
                )
                state["normalized"][key] = state.pop("seen", None)
            finally:
                state["in_ln"] = False
        return state["inputs"][key]

    def on_normalized(layer: int) -> HookFn:
        def hook(acts: Tensor, hook: Any) -> Tensor | None:
            if state.get("in_ln"):  # normalised, before the norm's own weight and bias
                state["seen"] = acts
                return None
            letter = "qkv"[min(state["ln_calls"], 2)]
            state["ln_calls"] += 1
            sig = majority.get((layer, letter))
            if sig is None:
                return None
            corrected_input(layer, sig)
            return state["normalized"][(layer, sig)].to(acts.dtype)

        return hook

    def on_input(layer: int, letter: str, layer_classes: list) -> HookFn:
        block = model.blocks[layer]
        attn = block.attn

        def hook(acts: Tensor, hook: Any) -> Tensor:
            if letter != "q" and acts.shape[2] != n_heads and state.get("own_ungroup"):
                # one key / value per query head, from the group's (the fused attention path
                # takes them as they are)
                out = torch.repeat_interleave(acts, repeat, dim=2)
            else:
                out = acts.clone()
            grouped = letter != "q" and out.shape[2] != n_heads
            if letter == "q":
                w_all, b_all = attn.W_Q, attn.b_Q
            elif repeat > 1:  # the stored [n_kv, ...] weights; head h reads group h // repeat
                w_all = attn._W_K if letter == "k" else attn._W_V
                b_all = attn._b_K if letter == "k" else attn._b_V
            else:
                w_all = attn.W_K if letter == "k" else attn.W_V
                b_all = attn.b_K if letter == "k" else attn.b_V
            for c, (sig, heads) in enumerate(layer_classes):
                x = corrected_input(layer, sig)
                if shortformer and letter != "v":
                    x = x + state["pos"]
                idx = sorted({h // repeat for h in heads}) if grouped else heads
                src = (
                    idx
                    if (grouped or letter == "q" or repeat == 1)
                    else [h // repeat for h in heads]
                )
                idx_t, w, b = weights(c, grouped, idx, src, w_all, b_all, acts)
                proj = x.to(acts.dtype) @ w  # one product for the class's heads
                out[:, :, idx_t] = proj.unflatten(-1, (len(src), -1)) + b
            return out

        cache: dict[tuple, tuple[tuple, tuple[Tensor, Tensor, Tensor]]] = {}

        def weights(
            c: int,
            grouped: bool,
            idx: list[int],
            src: list[int],
            w_all: Tensor,
            b_all: Tensor,
            like: Tensor,
        ) -> tuple[Tensor, Tensor, Tensor]:
            """The class's heads' weights as one ``[d_model, heads * d_head]`` matrix, kept
            while the model's weights are unchanged (their version counters say so)."""
            grad = torch.is_grad_enabled() and (w_all.requires_grad or b_all.requires_grad)
            version = (
                like.dtype,
                like.device,
                w_all._version,
                b_all._version,
                w_all.data_ptr(),
                b_all.data_ptr(),
            )
            hit = cache.get((c, grouped))
            if grad or hit is None or hit[0] != version:  # fine-tuning: no cache, keep grads
                src_t = torch.tensor(src, device=like.device)
                w = w_all.index_select(0, src_t).to(like.dtype)
                hit = (
                    version,
                    (
                        torch.tensor(idx, device=like.device),
                        w.permute(1, 0, 2).flatten(1).contiguous(),
                        b_all.index_select(0, src_t).to(like.dtype),
                    ),
                )
                if not grad:
                    cache[(c, grouped)] = hit
            return hit[1]

        return hook

    hooks: dict[int, list[tuple[str, HookFn]]] = {}
    for layer in range(cfg.n_layers):
        if repeat > 1:  # the hook that sets the layer's grouping
            hooks[layer] = [(get_act_name("resid_pre", layer), on_resid_pre(layer))]
        if any((layer, letter) in majority for letter in "qkv"):
            hooks.setdefault(layer, [(get_act_name("resid_pre", layer), on_resid_pre(layer))])
            hooks[layer].append((f"blocks.{layer}.ln1.hook_normalized", on_normalized(layer)))
    for (layer, letter), layer_classes in classes.items():
        if not layer_classes:
            continue
        lst = hooks.setdefault(layer, [(get_act_name("resid_pre", layer), on_resid_pre(layer))])
        lst.append((get_act_name(letter, layer), on_input(layer, letter, layer_classes)))
    return hooks
