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

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tl_unlearn.core.checks import Positions, check_hook_name, check_indices, model_device
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.hooks import Intervention, hook_shapes, positions_mask, stream_activations

__all__ = [
    "sae_feature_intervention",
    "sae_feature_means",
    "sae_hook_name",
    "sae_quality",
    "train_sae",
]

Mode = Literal["zero", "clamp", "scale"]


def sae_hook_name(sae: Any) -> str:
    """The hook point an ``sae_lens`` SAE reads (``sae.cfg.metadata.hook_name``)."""
    meta = getattr(sae.cfg, "metadata", None)
    name = getattr(meta, "hook_name", None) or getattr(sae.cfg, "hook_name", None)
    if not name:
        raise ValueError("The SAE config names no hook (cfg.metadata.hook_name is empty).")
    return name


def _edit(
    feats: Float[Tensor, "... d_sae"],
    idx: Tensor,
    mode: Mode,
    value: Tensor | float,
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

    Examples:
        >>> from tl_unlearn import sae_feature_intervention
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


def train_sae(
    model: Any,
    data: Sequence[TokenDataset],
    hook_name: str,
    *,
    d_sae: int = 1024,
    training_tokens: int = 100_000,
    l1_coefficient: float = 5.0,
    lr: float = 3e-3,
    batch_size_tokens: int = 1024,
    seed: int = 0,
) -> Any:
    """Train a small standard SAE with ``sae_lens``'s training runner, offline, on token data.

    The token datasets (fit splits) are passed to sae_lens as a pre-tokenized
    ``datasets.Dataset``; wandb logging and checkpoints are off. Ctrl-C stops training with
    ``KeyboardInterrupt`` and writes nothing.

    Args:
        model: The model whose activations the SAE reconstructs.
        data: Token datasets to train on (e.g. the forget and retain fit splits).
        hook_name: The hook point (e.g. ``"blocks.3.hook_resid_pre"``).
        d_sae: Number of features.
        training_tokens: Tokens to train on (distinct tokens are better than epochs).
        l1_coefficient: The sparsity penalty of the sae_lens training.
        lr: Its learning rate.
        batch_size_tokens: Tokens per training step.
        seed: Seed of the initialisation and the data order.

    Returns:
        A trained ``sae_lens`` SAE (``encode``/``decode``).

    Examples:
        >>> from tl_unlearn import train_sae
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "fit", seq_len=64, max_tokens=2000)
        >>> sae = train_sae(m, [d["forget"], d["retain"]], "blocks.1.hook_resid_pre",
        ...                 d_sae=64, training_tokens=2048)
        >>> sae.cfg.d_sae
        64
    """
    import datasets as hf_datasets
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        StandardTrainingSAEConfig,
    )

    check_hook_name(model, hook_name)
    d_in = hook_shapes(model, [hook_name])[hook_name][-1]
    tokens = torch.cat([d.tokens for d in data])
    context = tokens.shape[1]
    ds = hf_datasets.Dataset.from_dict({"input_ids": tokens.tolist()})
    device = str(model_device(model))
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=l1_coefficient),
        model_name=getattr(model.cfg, "model_name", "model"),
        hook_name=hook_name,
        dataset_path="",
        is_dataset_tokenized=True,
        context_size=context,
        training_tokens=training_tokens,
        train_batch_size_tokens=batch_size_tokens,
        store_batch_size_prompts=8,
        n_batches_in_buffer=max(4, -(-2 * batch_size_tokens // context)),
        device=device,
        act_store_device=device,
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        save_final_checkpoint=False,
        output_path=None,
        verbose=False,
        lr=lr,
        prepend_bos=False,
        seed=seed,
        checkpoint_path=None,
    )
    # sae_lens installs its own SIGINT/SIGTERM handlers (and, with a checkpoint path, saves a
    # checkpoint into the current directory on Ctrl-C): keep ours, and re-raise Ctrl-C as
    # KeyboardInterrupt with nothing written
    import signal

    from sae_lens.training._interruption import InterruptedException

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # sae_lens stores its seed but draws the initialisation and the data order from the
        # global generators: seed them here (and put them back after), so the same seed
        # trains the same SAE in any process (a Ray worker's fit must equal the driver's)
        with _seeded(seed):
            runner = LanguageModelSAETrainingRunner(cfg, override_dataset=ds, override_model=model)
            return runner.run()
    except InterruptedException as exc:
        raise KeyboardInterrupt from exc
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators for a block; restore them after."""
    import random

    state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


@torch.inference_mode()
def sae_feature_means(
    model: Any, sae: Any, hook: str, data: TokenDataset, batch_size: int = 8
) -> Float[Tensor, " d_sae"]:
    """Mean activation of every SAE feature at ``hook`` over the real tokens of ``data``.

    Args:
        model: The model.
        sae: An ``sae_lens`` SAE reading ``hook``.
        hook: The hook point the SAE encodes.
        data: Token data.
        batch_size: Sequences per forward pass.

    Returns:
        ``[d_sae]`` mean activations.

    Examples:
        >>> from tl_unlearn.interventions import sae_feature_means
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> m = load_tiny_model()
        >>> sae = StandardSAE(StandardSAEConfig(d_in=128, d_sae=256))
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> sae_feature_means(m, sae, "blocks.1.hook_resid_pre", d["forget"]).shape
        torch.Size([256])
    """
    total = torch.zeros(int(sae.cfg.d_sae), dtype=torch.float64)
    count = 0

    def read(name: str, acts: Tensor, mask: Tensor) -> None:
        nonlocal total, count
        total += sae.encode(acts[mask]).double().sum(0).cpu()
        count += int(mask.sum())

    stream_activations(model, data, [hook], read, batch_size=batch_size)
    return total / max(count, 1)


@torch.inference_mode()
def sae_quality(
    model: Any, sae: Any, hook: str, data: Mapping[str, TokenDataset], batch_size: int = 8
) -> dict[str, float]:
    """Reconstruction quality of an SAE at ``hook`` on each dataset: the fraction of the
    activations' variance explained (``1 - sum |x - x_hat|^2 / sum |x - mean x|^2``) and
    L0 (mean number of active features per token).

    Args:
        model: The model.
        sae: An ``sae_lens`` SAE reading ``hook``.
        hook: The hook point the SAE encodes.
        data: Token data by name.
        batch_size: Sequences per forward pass.

    Returns:
        ``{"sae_explained_variance_<name>": ..., "sae_l0_<name>": ...}``.

    Examples:
        >>> from tl_unlearn.interventions import sae_quality
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> m = load_tiny_model()
        >>> sae = StandardSAE(StandardSAEConfig(d_in=128, d_sae=256))
        >>> sae.cfg.metadata.hook_name = "blocks.1.hook_resid_pre"
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> sorted(sae_quality(m, sae, "blocks.1.hook_resid_pre", d))[:2]
        ['sae_explained_variance_forget', 'sae_explained_variance_retain']
    """

    def measure(ds: TokenDataset) -> tuple[Tensor, float, float]:
        """Activations (float64), summed squared reconstruction error, summed L0."""
        xs, err, l0 = [], 0.0, 0.0

        def read(_: str, acts: Tensor, mask: Tensor) -> None:
            nonlocal err, l0
            x = acts[mask]
            f = sae.encode(x)
            err += float((sae.decode(f) - x).double().pow(2).sum())
            l0 += float((f > 0).sum())
            xs.append(x.double().cpu())

        stream_activations(model, ds, [hook], read, batch_size=batch_size)
        return torch.cat(xs), err, l0

    out = {}
    for name, ds in data.items():
        x, err, l0 = measure(ds)
        total = float((x - x.mean(0)).pow(2).sum())
        out[f"sae_explained_variance_{name}"] = 1.0 - err / total if total > 0 else float("nan")
        out[f"sae_l0_{name}"] = l0 / max(len(x), 1)
    return out
