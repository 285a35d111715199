"""Every place tl_unlearn reaches into TransformerLens internals, in one module.

Tested on TransformerLens 3.9 (the supported range is ``>=3.9,<4``). Everything else in
tl_unlearn uses TransformerLens's public API only (``HookedTransformer``, hook points,
``get_act_name``, ``run_with_hooks`` / ``run_with_cache``), so a port to TransformerLens 4's
``TransformerBridge`` starts and ends here. What this module relies on:

- :func:`use_transposed_layout`: the memory order in which ``GatedMLP``, ``Unembed``,
  ``Attention`` and ``GroupedQueryAttention`` multiply their weights (each module is checked
  on a probe input and left alone where the output changes).
- :func:`use_fused_attention`: ``AbstractAttention.calculate_qkv_matrices``,
  ``apply_rotary``, ``attn_scale``, ``hook_z`` and the scores/pattern hook points (replaced
  per instance, checked on a probe, TransformerLens's own path whenever a hook reads the
  pattern).
- :func:`set_edge_flags` / :func:`edge_flags`: the config switches
  ``use_split_qkv_input``, ``use_hook_mlp_in`` and ``ungroup_grouped_query_attention``, read
  at forward time.
- :func:`hooked_from_hf`: ``loading_from_pretrained.get_pretrained_model_config`` and
  ``get_pretrained_state_dict`` for a local Hugging Face folder (the offline default model).
- :func:`processed_weights_from_hf`: the same conversion and ``ProcessWeights.process_weights``
  without building the model (a lower peak on the first load).
- Private helpers re-exported for the engine: ``apply_softcap``, ``POST_NORM_ARCHITECTURES``,
  ``TransformerBlock``, ``HookPoint``, ``Unembed`` and the key/value cache class.

What a TransformerLens 4 port needs is listed in the docs (architecture page).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from typing import Any

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.components import TransformerBlock, Unembed
from transformer_lens.components.abstract_attention import AbstractAttention
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedTransformer import apply_softcap
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

__all__ = [
    "EDGE_FLAGS",
    "POST_NORM_ARCHITECTURES",
    "HookPoint",
    "TransformerBlock",
    "TransformerLensKeyValueCache",
    "Unembed",
    "apply_softcap",
    "edge_flags",
    "hooked_from_hf",
    "processed_weights_from_hf",
    "runs_fused",
    "set_edge_flags",
    "use_fused_attention",
    "use_transposed_layout",
]


# TransformerLens multiplies these weights after a copy into another memory order on every
# forward pass: F.linear(x, W.T.contiguous()) for gated MLPs and the unembedding, and an einops
# flattening of the attention weights (W_Q: "head_index d_model d_head -> (head_index d_head)
# d_model", W_O: "... -> d_model (head_index d_head)"). Per module type and parameter: the
# permutation under which the stored tensor is contiguous in that order (the copy is then a
# view and the operand is the same)
_LAYOUTS: dict[str, dict[str, tuple[int, ...]]] = {
    "GatedMLP": {"W_in": (1, 0), "W_gate": (1, 0), "W_out": (1, 0)},
    "Unembed": {"W_U": (1, 0)},
    "Attention": {"W_Q": (0, 2, 1), "W_K": (0, 2, 1), "W_V": (0, 2, 1), "W_O": (2, 0, 1)},
    "GroupedQueryAttention": {
        "W_Q": (0, 2, 1),
        "_W_K": (0, 2, 1),
        "_W_V": (0, 2, 1),
        "W_O": (2, 0, 1),
    },
}


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


def laid_out(shape: torch.Size, perm: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An empty tensor of ``shape`` stored contiguously in the order ``perm``."""
    return torch.empty([shape[i] for i in perm], dtype=dtype).permute(_inverse(perm))


def layout_params(module: Any) -> list[tuple[str, nn.Parameter, tuple[int, ...]]]:
    """``(name, parameter, order)`` of ``module``'s weights in :data:`_LAYOUTS`."""
    orders = _LAYOUTS.get(type(module).__name__, {})
    out = [(n, module._parameters.get(n), perm) for n, perm in orders.items()]
    if any(p is None or p.ndim != len(perm) for _, p, perm in out):
        return []  # another variant of the module: left alone
    return out


@torch.no_grad()
def use_transposed_layout(model: HookedTransformer) -> HookedTransformer:
    """Store weight matrices in the memory order TransformerLens multiplies them in (same
    values and shapes).

    TransformerLens 3.9 computes ``F.linear(x, W.T.contiguous())`` in gated MLPs (SmolLM2,
    Llama) and the unembedding, and flattens ``W_Q``/``W_K``/``W_V``/``W_O`` with einops in
    attention: each copies its matrix on every forward pass (for SmolLM2 about 430 MB per
    pass, half of a KV-cached decoding step's time). Stored in that order, the copy is a view
    and ``F.linear`` gets the same operand. Each module is checked on a small input before and
    after: where the output is not bit-identical (another TransformerLens version, another
    kind of MLP), its layout is put back. Applied to the models tl_unlearn loads itself,
    never to a model you pass in.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()  # already applied: its unembedding and attention
        >>> m.unembed.W_U.T.is_contiguous(), m.blocks[0].attn.W_O.permute(2, 0, 1).is_contiguous()
        (True, True)
    """
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        params = layout_params(module)
        if not params:
            continue
        first = params[0][1]
        d_in = first.shape[1] if first.ndim == 3 else first.shape[0]
        x = torch.randn(2, 3, d_in, generator=gen).to(first.device, first.dtype)
        probe = (x, x, x) if isinstance(module, AbstractAttention) else (x,)
        # stored in that order already (read so by _load_processed): checked the other way
        ordered = all(
            p.permute(perm).is_contiguous() and not p.is_contiguous() for _, p, perm in params
        )
        if not ordered and not all(p.is_contiguous() for _, p, _ in params):
            continue
        before = module(*probe)
        saved = [p.data for _, p, _ in params]
        for _, p, perm in params:
            p.data = (
                p.data.contiguous()
                if ordered
                else p.data.permute(perm).contiguous().permute(_inverse(perm))
            )
        # keep the layout exactly where it gives the same output
        if torch.equal(module(*probe), before) == ordered:
            for (_, p, _), data in zip(params, saved):
                p.data = data
    return model


# what the fused path cannot do: these architectures change the scores between q.k and softmax
_UNFUSED_ARCHITECTURES = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
_SCORE_HOOKS = ("hook_attn_scores", "hook_pattern")


def _fusable(
    attn: AbstractAttention,
    past_kv_cache_entry: Any,
    additive_attention_mask: Any,
    position_bias: Any,
) -> bool:
    """Whether this call of ``attn`` may skip materialising the scores and the pattern."""
    cfg = attn.cfg
    if (
        past_kv_cache_entry is not None
        or additive_attention_mask is not None
        or position_bias is not None
    ):
        return False
    if (
        cfg.positional_embedding_type not in ("standard", "shortformer", "rotary")
        or (attn._attention_dir_override or cfg.attention_dir) != "causal"
        or getattr(attn, "attn_type", "global") != "global"
        or cfg.original_architecture in _UNFUSED_ARCHITECTURES
    ):
        return False
    if any(
        getattr(cfg, flag, False)
        for flag in ("use_attn_result", "load_in_4bit", "use_attention_sinks", "use_logn_attn")
    ):
        return False
    if getattr(cfg, "clip_qkv", None) is not None or (cfg.attn_scores_soft_cap or 0) > 0:
        return False
    for name in _SCORE_HOOKS:  # a hook (or a cache) reads them: TransformerLens's own path
        point = getattr(attn, name)
        if (
            point._forward_hooks
            or point._forward_pre_hooks
            or point._backward_hooks
            or point._backward_pre_hooks
        ):
            return False
    return True


def _fused_attention_forward(
    attn: AbstractAttention,
    query_input: Float[Tensor, "batch pos d_model"],
    key_input: Float[Tensor, "batch kv_pos d_model"],
    value_input: Float[Tensor, "batch kv_pos d_model"],
    past_kv_cache_entry: Any = None,
    additive_attention_mask: Float[Tensor, "batch 1 1 kv_pos"] | None = None,
    attention_mask: Int[Tensor, "batch offset_pos"] | None = None,
    position_bias: Float[Tensor, "1 head_index pos kv_pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """``AbstractAttention.forward`` with ``scaled_dot_product_attention`` in place of the
    scores, mask, softmax and pattern: the same hooks on q, k, v, the rotations and z."""
    # TransformerLens computes scores = q k^T / scale, masks them, applies softmax to get the
    # pattern (hook_attn_scores, hook_pattern), then z = pattern v. PyTorch's fused kernel does
    # all of that at once, without the [batch, head, pos, pos] tensors, so it is only used when
    # no hook reads the scores or the pattern and nothing else changes them (no key/value cache,
    # no additive mask, no position bias: _fusable). Everything a hook can see before and after
    # (q, k, v, their rotations, z) is computed as TransformerLens computes it.
    if not _fusable(attn, past_kv_cache_entry, additive_attention_mask, position_bias):
        return type(attn).forward(
            attn,
            query_input,
            key_input,
            value_input,
            past_kv_cache_entry=past_kv_cache_entry,
            additive_attention_mask=additive_attention_mask,
            attention_mask=attention_mask,
            position_bias=position_bias,
        )
    q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)
    if attn.cfg.positional_embedding_type == "rotary":
        q = attn.hook_rot_q(attn.apply_rotary(q, 0, attention_mask))
        k = attn.hook_rot_k(attn.apply_rotary(k, 0, attention_mask))
    # grouped-query attention: TL's repeat_interleave of k and v (each by its own head count:
    # a hook may have given one of them per query head already)
    if k.shape[2] != q.shape[2]:
        k = torch.repeat_interleave(k, q.shape[2] // k.shape[2], dim=2)
    if v.shape[2] != q.shape[2]:
        v = torch.repeat_interleave(v, q.shape[2] // v.shape[2], dim=2)
    q_, k_, v_ = (x.transpose(1, 2) for x in (q, k.to(q.dtype), v.to(q.dtype)))
    scale = 1.0 / float(attn.attn_scale)
    if attention_mask is None:
        z = F.scaled_dot_product_attention(q_, k_, v_, is_causal=True, scale=scale)
    else:
        n_q, n_k = q.shape[1], k.shape[1]
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        mask = mask & attention_mask.to(q.device).bool()[:, None, None, :]
        z = F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask, scale=scale)
        # a query with no key to attend to: TL's pattern row is NaN, set to 0, so z is 0
        z = torch.where(mask.any(-1, keepdim=True), z, torch.zeros((), dtype=z.dtype))
    z = attn.hook_z(z.transpose(1, 2))  # [batch, pos, head_index, d_head]
    # the output projection sum_h z_h @ W_O[h] + b_O as one matrix product
    w = einops.rearrange(attn.W_O, "head_index d_head d_model -> d_model (head_index d_head)")
    w = w.contiguous().to(z.device)
    z = z.to(w.dtype).reshape(z.shape[0], z.shape[1], -1)
    return F.linear(z, w, attn.b_O.to(z.device))


@torch.no_grad()
def use_fused_attention(model: Any, enabled: bool = True) -> Any:
    """Compute attention with PyTorch's fused kernel when nothing reads the scores or pattern.

    TransformerLens materialises every head's ``[query_pos, key_pos]`` scores and pattern and
    masks them with ``torch.where``: on a CPU that is half of SmolLM2's forward pass at 512
    tokens. With this, each attention layer of ``model`` calls
    ``torch.nn.functional.scaled_dot_product_attention`` instead, and runs the same hooks on
    ``hook_q``/``hook_k``/``hook_v``, ``hook_rot_q``/``hook_rot_k`` and ``hook_z``. A call
    takes TransformerLens's own path whenever it must: a hook (or ``run_with_cache``) on
    ``hook_attn_scores`` or ``hook_pattern``, a KV cache, ``use_attn_result``, and any
    attention this does not implement (ALiBi, local or bidirectional attention, softcaps,
    sinks). The results differ from TransformerLens's by float rounding only (SmolLM2's
    logits by up to 1e-4); each layer is checked on a probe input before it is switched, and
    left alone where the check fails. ``enabled=False`` restores TransformerLens's path.

    Applied to the models tl_unlearn loads itself (:func:`load_model`); a model you pass in is
    never changed unless you call this on it.

    Args:
        model: A ``HookedTransformer`` (or subclass). Other models are returned unchanged.
        enabled: Switch the fused path on (default) or off.

    Returns:
        The same model.

    Examples:
        >>> from tl_unlearn import use_fused_attention
        >>> import torch
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()  # already applied
        >>> t = m.to_tokens("def f(x): return x")
        >>> fused = m(t)
        >>> exact = use_fused_attention(m, enabled=False)(t)
        >>> bool(torch.allclose(fused, exact, atol=1e-4)), bool(torch.equal(fused, exact))
        (True, False)
        >>> _ = use_fused_attention(m)
    """
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if not isinstance(module, AbstractAttention):
            continue
        vars(module).pop("forward", None)  # the class's forward again
        if (
            not enabled
            or not _fusable(module, None, None, None)
            or module.cfg.use_split_qkv_input
            or module.cfg.use_attn_in
        ):
            continue
        p = module.W_O
        x = torch.randn(2, 7, module.cfg.d_model, generator=gen).to(p.device, p.dtype)
        exact = module(x, x, x)
        fused = _fused_attention_forward(module, x, x, x)
        tol = float(torch.finfo(p.dtype).eps) ** 0.5 * max(1.0, float(exact.abs().max()))
        if fused.shape == exact.shape and bool(torch.allclose(fused, exact, rtol=0, atol=tol)):
            module.forward = functools.partial(_fused_attention_forward, module)
    return model


#: The TransformerLens config switches edge-level patching needs: every head reads its own
#: query / key / value input (``hook_q_input``...), grouped key/value heads are expanded per
#: query head, and the MLP input has a hook. (Per-head outputs are taken from ``hook_z``
#: times ``W_O``: TransformerLens's ``use_attn_result`` materialises a
#: ``[batch, pos, head, d_head, d_model]`` product and made a SmolLM2 pass 11x slower.)
#: Tested on TransformerLens 3.9; all three are read at forward time, not at construction.
EDGE_FLAGS = ("use_split_qkv_input", "use_hook_mlp_in", "ungroup_grouped_query_attention")


def set_edge_flags(
    model: Any,
    enabled: bool,
    saved: dict[str, Any] | None = None,
    *,
    flags: tuple[str, ...] = EDGE_FLAGS,
) -> dict[str, Any]:
    """Switch the per-edge hook points of ``model`` on (``enabled``) or back to ``saved``.

    Returns the values the flags had before (give them back as ``saved`` to restore).
    ``flags`` picks some of :data:`EDGE_FLAGS`.
    Nothing but these config switches changes; no weight is touched.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> before = set_edge_flags(m, True); m.cfg.use_split_qkv_input
        True
        >>> _ = set_edge_flags(m, False, before); m.cfg.use_split_qkv_input
        False
    """
    cfg = model.cfg
    old = {flag: getattr(cfg, flag, False) for flag in flags}
    for flag in flags:
        value = True if enabled else (saved or {}).get(flag, False)
        if flag == "ungroup_grouped_query_attention" and not getattr(
            cfg, "n_key_value_heads", None
        ):
            value = old[flag]  # no grouped heads: leave it as it was
        setattr(cfg, flag, value)
    return old


@contextlib.contextmanager
def edge_flags(model: Any) -> Iterator[Any]:
    """Context manager: the per-edge hook points on inside, the config as it was after."""
    saved = set_edge_flags(model, True)
    try:
        yield model
    finally:
        set_edge_flags(model, False, saved)


def hooked_from_hf(
    path: Any, hf_model: Any, tokenizer: Any, *, dtype: torch.dtype, model_name: str, **kwargs: Any
) -> HookedTransformer:
    """A ``HookedTransformer`` from a loaded Hugging Face model in the local folder ``path``,
    converted by TransformerLens's own loaders (no hub access).

    Args:
        path: The Hugging Face folder (its config names the architecture).
        hf_model: The loaded ``transformers`` model (freed by the caller afterwards).
        tokenizer: The tokenizer to attach.
        dtype: The dtype of the converted weights.
        model_name: The name written into the config.
        **kwargs: ``load_and_process_state_dict`` options (``fold_ln``,
            ``center_writing_weights``...).

    Returns:
        The model, on the CPU.
    """
    from transformer_lens import loading_from_pretrained as loading

    cfg = loading.get_pretrained_model_config(
        str(path),
        hf_cfg=hf_model.config.to_dict(),
        device="cpu",
        dtype=dtype,
        fold_ln=kwargs.get("fold_ln", True),
    )
    cfg.model_name = model_name
    state_dict = loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **kwargs)
    return model


@torch.no_grad()
def processed_weights_from_hf(
    path: Any, *, dtype: torch.dtype, model_name: str, **kwargs: Any
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The processed (folded, centred) ``HookedTransformer`` parameters of a local Hugging
    Face folder and the final config, without building a ``HookedTransformer``.

    The same steps as ``HookedTransformer.load_and_process_state_dict`` (TransformerLens's
    converter, ``fill_missing_keys``, the norm switch to ``RMSPre`` / ``LNPre``,
    ``ProcessWeights.process_weights``), but the modules exist only on the meta device and the
    Hugging Face model is let go as soon as its weights are converted: the peak is about
    twice the weights instead of five times. A test checks the result is bit-identical to
    :func:`hooked_from_hf`'s.

    Args:
        path: The Hugging Face folder.
        dtype: The dtype of the converted weights.
        model_name: The name written into the config.
        **kwargs: ``load_and_process_state_dict`` options (``fold_ln``,
            ``center_writing_weights``, ``center_unembed``, ``fold_value_biases``,
            ``refactor_factored_attn_matrices``).

    Returns:
        ``(parameters by name, config dict)``, as a loaded model's ``named_parameters()`` and
        ``cfg.to_dict()`` would give them.
    """
    import gc

    from transformer_lens import loading_from_pretrained as loading
    from transformer_lens.weight_processing import ProcessWeights
    from transformers import AutoModelForCausalLM

    from tl_unlearn.core.files import release_free_memory

    options = {
        "fold_ln": True,
        "center_writing_weights": True,
        "center_unembed": True,
        "fold_value_biases": True,
        "refactor_factored_attn_matrices": False,
        **kwargs,
    }
    hf_model = _hf_model_in_memory(path) or AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32
    )
    cfg = loading.get_pretrained_model_config(
        str(path),
        hf_cfg=hf_model.config.to_dict(),
        device="cpu",
        dtype=dtype,
        fold_ln=options["fold_ln"],
    )
    cfg.model_name = model_name
    state_dict = loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    # the converted tensors view the Hugging Face weights: each block's go with the block
    del hf_model
    gc.collect()
    with torch.device("meta"):
        template = HookedTransformer(cfg, move_to_device=False)
    params = dict(template.named_parameters())
    for key, p in params.items():  # what fill_missing_keys adds: the initial values
        if key not in state_dict:
            leaf = key.rsplit(".", 1)[-1]
            if leaf.startswith("W_") or leaf.startswith("_W_"):
                raise ValueError(f"The converted weights lack {key}.")
            fill = torch.ones if leaf == "w" else torch.zeros
            state_dict[key] = fill(p.shape, dtype=p.dtype)
    # (with fold_ln the config already says LNPre / RMSPre: the norm weights in the converted
    # weights are what process_weights folds)
    fold_ln = options["fold_ln"] and any(
        k.endswith((".ln1.w", ".ln2.w", "ln_final.w")) for k in state_dict
    )
    if fold_ln and cfg.normalization_type in ("LN", "RMS"):
        cfg.normalization_type = {"LN": "LNPre", "RMS": "RMSPre"}[cfg.normalization_type]
    steps = {
        "fold_ln": fold_ln,
        "center_writing_weights": options["center_writing_weights"],
        "center_unembed": options["center_unembed"],
        "fold_value_biases": options["fold_value_biases"],
        "refactor_factored_attn_matrices": options["refactor_factored_attn_matrices"],
    }
    # every step but the embedding's and unembedding's is local to a block: process one block
    # at a time (as a one-layer model), so that the transient copies are one block's
    one_layer, no_layer = copy.copy(cfg), copy.copy(cfg)
    one_layer.n_layers, no_layer.n_layers = 1, 0
    processed: dict[str, Tensor] = {}
    for layer in range(cfg.n_layers):
        prefix = f"blocks.{layer}."
        block = {
            "blocks.0." + k[len(prefix) :]: state_dict.pop(k)
            for k in [k for k in state_dict if k.startswith(prefix)]
        }
        block = ProcessWeights.process_weights(
            block, one_layer, **{**steps, "center_unembed": False}
        )
        processed.update({prefix + k[len("blocks.0.") :]: v for k, v in block.items()})
        del block
        release_free_memory()  # the block's transient copies, back to the system
    if not _process_embeddings(state_dict, cfg, steps):
        state_dict = ProcessWeights.process_weights(state_dict, no_layer, **steps)
    processed.update(state_dict)
    state_dict = processed
    with torch.device("meta"):
        final = HookedTransformer(cfg, move_to_device=False)
    out = {}
    for key, p in final.named_parameters():
        if key not in state_dict:
            raise ValueError(f"Processing left no value for {key}.")
        out[key] = state_dict.pop(key).to(p.dtype)  # made contiguous as it is written
    return out, dict(final.cfg.to_dict())


def _process_embeddings(state_dict: dict[str, Tensor], cfg: Any, steps: dict[str, bool]) -> bool:
    """``ProcessWeights.process_weights`` on the embedding, final norm and unembedding, done
    with one new tensor per matrix (TransformerLens's own makes several transient copies of
    the vocabulary-sized matrices), for the plain case only: rotary positions, an RMS final
    norm without offset or bias. The same operations in the same order, so the same bits (a
    test compares). Returns False, changing nothing, for any other case.
    """
    keys = {"embed.W_E", "unembed.W_U", "unembed.b_U", "ln_final.w"}
    if (
        set(state_dict) - keys
        or "ln_final.w" not in state_dict
        or cfg.positional_embedding_type != "rotary"
        or getattr(cfg, "rmsnorm_uses_offset", False)
        or cfg.normalization_type != "RMSPre"
        or not steps["fold_ln"]
        or steps["refactor_factored_attn_matrices"]
    ):
        return False
    w_u = state_dict["unembed.W_U"]  # [d_model, d_vocab]
    w = state_dict.pop("ln_final.w")
    if w_u.ndim != 2 or w_u.shape[0] != w.shape[0] or w_u.shape[1] == w.shape[0]:
        state_dict["ln_final.w"] = w
        return False
    w_u = w_u * w[:, None]  # fold the final norm's weight (TransformerLens's layout)
    # (centring the writing weights needs LayerNorm: TransformerLens leaves W_E as it is
    # under RMS norms)
    if steps["center_unembed"]:
        w_u.sub_(w_u.mean(-1, keepdim=True))  # in place: no second matrix
        if "unembed.b_U" in state_dict:
            b_u = state_dict["unembed.b_U"]
            state_dict["unembed.b_U"] = b_u - b_u.mean()
    state_dict["unembed.W_U"] = w_u
    return True


def _hf_model_in_memory(path: Any) -> Any:
    """The Hugging Face model of a local folder with its weights read into ordinary memory,
    tensor by tensor (not memory-mapped: a mapped file stays resident as a whole until its
    last tensor goes, while these go one by one), or None when the folder is not plain
    safetensors files.
    """
    from pathlib import Path

    from transformers import AutoConfig, AutoModelForCausalLM

    from tl_unlearn.core.files import read_safetensors

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        return None
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    weights: dict[str, Tensor] = {}
    for file in files:
        weights.update(read_safetensors(file))
    weights = {k: v.to(torch.float32) for k, v in weights.items()}
    _, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    del weights
    model.tie_weights()
    if unexpected or any(p.is_meta for p in model.parameters()):
        return None
    return model.eval()


def runs_fused(attn: Any) -> bool:
    """Whether ``attn``'s next call takes the fused path of :func:`use_fused_attention`
    (which accepts keys and values given per query head by a hook of ``hook_k`` /
    ``hook_v``), as far as can be known before the call: it is installed, and nothing hooks
    the scores or the pattern.

    Args:
        attn: An attention module.

    Returns:
        True when the fused forward is installed and nothing forces TransformerLens's path.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> runs_fused(load_tiny_model().blocks[0].attn)
        True
    """
    return "forward" in vars(attn) and _fusable(attn, None, None, None)
