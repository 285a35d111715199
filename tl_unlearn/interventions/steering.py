"""ActAdd steering (Turner et al.): add ``c * (h(p+) - h(p-))`` to the residual stream.

The steering matrix is built from a prompt pair: both prompts are tokenized with BOS, the
shorter is right-padded with the space token, ``resid_pre`` at layer ``l`` is cached for both,
and ``c * (h+ - h-)`` (one row per position) is added to the first positions of the user's
prompt. Forward passes with ``seq_len == 1`` (KV-cached decoding in ``model.generate``) are left
alone, so the prompt is steered once, as in the paper. Reference settings: "Love" - "Hate",
layer 6, c = 5 on GPT-2 XL.

``positions="all"`` is the mean-difference variant (Jorgensen et al. 2023's mean-centred
steering, as in contrastive activation addition): ``c * (mean_pos h(p+) - mean_pos h(p-))``
over each prompt's own positions (BOS excluded, no padding) is added at *every* position,
decoding steps included. Front-position injection barely moves small models whose later
positions attend mostly to the first token (SmolLM2-135M: ``scripts/docs_tables/generation_wedding.py``);
the mean difference at every position does.

Also: steering by a given vector (added at every position, or the first ``n`` positions) and
by an SAE decoder direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import check_hook_name, check_layer
from tl_unlearn.engine.hooks import Intervention, hook_shapes

__all__ = [
    "actadd",
    "mean_difference",
    "random_steering",
    "sae_direction_steering",
    "steering_matrix",
    "vector_steering",
]


def _space_id(tokenizer: Any) -> int:
    ids = tokenizer(" ", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError("The tokenizer has no single space token; pass pad_token_id=.")
    return ids[0]


Prompt = str | Sequence[int] | Tensor
"""A prompt: text (tokenized with BOS), or token ids taken as given (for models without a
tokenizer, such as the planted models)."""


def _prompt_ids(model: Any, prompt: Prompt, arg: str) -> Int[Tensor, " pos"]:
    if isinstance(prompt, str):
        return model.to_tokens(prompt, prepend_bos=True)[0]
    ids = torch.as_tensor(prompt)
    if ids.ndim != 1 or ids.is_floating_point() or ids.is_complex() or not len(ids):
        raise TypeError(f"{arg} must be a string or a non-empty 1-D sequence of token ids.")
    if int(ids.min()) < 0 or int(ids.max()) >= model.cfg.d_vocab:
        raise ValueError(f"{arg} holds token ids outside [0, {model.cfg.d_vocab}).")
    return ids.long().to(model.cfg.device)


def _show(prompt: Prompt) -> str:
    return repr(prompt) if isinstance(prompt, str) else f"ids{torch.as_tensor(prompt).tolist()}"


@torch.inference_mode()
def steering_matrix(
    model: Any,
    prompt_add: Prompt,
    prompt_sub: Prompt,
    layer: int,
    coeff: float = 1.0,
    *,
    pad_token_id: int | None = None,
) -> Float[Tensor, "pos d_model"]:
    """``coeff * (resid_pre(prompt_add) - resid_pre(prompt_sub))`` at ``layer``, per position.

    Prompts of token ids are taken as given; the shorter prompt is padded with
    ``pad_token_id`` (default: the tokenizer's space token; required without a tokenizer
    when the prompts differ in length)."""
    check_layer(model, layer)
    toks = [
        _prompt_ids(model, p, a)
        for p, a in ((prompt_add, "prompt_add"), (prompt_sub, "prompt_sub"))
    ]
    if pad_token_id is None and len(toks[0]) == len(toks[1]):
        pad = 0  # nothing to pad
    elif pad_token_id is None:
        if getattr(model, "tokenizer", None) is None:
            raise ValueError(
                "The prompts differ in length and the model has no tokenizer: pass pad_token_id=."
            )
        pad = _space_id(model.tokenizer)
    else:
        pad = pad_token_id
    width = max(len(t) for t in toks)
    batch = torch.stack([torch.cat([t, t.new_full((width - len(t),), pad)]) for t in toks])
    name = get_act_name("resid_pre", layer)
    _, cache = model.run_with_cache(batch, names_filter=[name], return_type=None)
    acts = cache[name]
    return (coeff * (acts[0] - acts[1])).detach().clone()


@torch.inference_mode()
def mean_difference(
    model: Any, prompt_add: Prompt, prompt_sub: Prompt, layer: int, coeff: float = 1.0
) -> Float[Tensor, " d_model"]:
    """``coeff * (mean h(prompt_add) - mean h(prompt_sub))`` of ``resid_pre`` at ``layer``.

    Each prompt is run alone (with BOS, no padding); the mean is over its non-BOS positions.
    """
    check_layer(model, layer)
    name = get_act_name("resid_pre", layer)
    means = []
    for prompt, arg in ((prompt_add, "prompt_add"), (prompt_sub, "prompt_sub")):
        toks = _prompt_ids(model, prompt, arg)[None]
        if toks.shape[1] < 2:
            raise ValueError(f"Prompt {_show(prompt)} has no token after BOS.")
        _, cache = model.run_with_cache(toks, names_filter=[name], return_type=None)
        means.append(cache[name][0, 1:].mean(0))
    return (coeff * (means[0] - means[1])).detach().clone()


def _front_add(steer: Tensor) -> Any:
    def hook(resid: Tensor, hook: Any) -> Tensor:
        if resid.shape[1] == 1:  # KV-cached decoding step: already steered at the prompt
            return resid
        n = min(steer.shape[0], resid.shape[1])
        add = torch.zeros_like(resid)
        add[:, :n] = steer[:n].to(resid.device, resid.dtype)
        return resid + add

    return hook


def actadd(
    model: Any,
    prompt_add: Prompt,
    prompt_sub: Prompt,
    layer: int,
    coeff: float = 5.0,
    *,
    pad_token_id: int | None = None,
    positions: Literal["front", "all"] = "front",
    name: str | None = None,
) -> Intervention:
    """ActAdd steering from a prompt pair.

    Args:
        model: The model.
        prompt_add: The "+" prompt (e.g. ``"Love"``), or its token ids (BOS included).
        prompt_sub: The "-" prompt (e.g. ``"Hate"``), or its token ids.
        layer: Layer whose ``hook_resid_pre`` is steered.
        coeff: Coefficient ``c``; 0 leaves the model unchanged.
        pad_token_id: Padding for the shorter prompt (default: the space token).
        positions: ``"front"`` (the paper: the per-position difference added at the prompt's
            first positions, once) or ``"all"`` (the mean difference over positions added at
            every position, generated tokens included).
        name: Label for results.

    Raises:
        ValueError: On a bad layer or ``positions``.

    Examples:
        >>> from tl_unlearn import actadd
        >>> from tl_unlearn import load_tiny_model
        >>> model = load_tiny_model()
        >>> iv = actadd(model, "def", "The", layer=1, coeff=5.0)
        >>> with iv.applied(model):
        ...     text = model.generate("x", max_new_tokens=3, do_sample=False, verbose=False)
        >>> isinstance(text, str)
        True
    """
    if positions not in ("front", "all"):
        raise ValueError(f"positions={positions!r}; choose 'front' or 'all'.")
    ids = [
        _prompt_ids(model, p, a) if not isinstance(p, str) else p
        for p, a in ((prompt_add, "prompt_add"), (prompt_sub, "prompt_sub"))
    ]
    same = (
        ids[0] == ids[1]
        if isinstance(ids[0], str) or isinstance(ids[1], str)
        else ids[0].shape == ids[1].shape and bool((ids[0] == ids[1]).all())
    )
    if same:
        raise ValueError(
            f"prompt_add and prompt_sub are the same ({_show(prompt_add)}): their "
            "difference, the steering vector, would be zero. Give two different "
            "prompts (one of them may be empty)."
        )
    hook_name = get_act_name("resid_pre", check_layer(model, layer))
    label = name or (
        f"actadd({_show(prompt_add)} - {_show(prompt_sub)}, L{layer}, c={coeff:g}"
        + (", all positions)" if positions == "all" else ")")
    )
    if positions == "all":
        vec = mean_difference(model, prompt_add, prompt_sub, layer, coeff)
        return Intervention(
            label,
            [(hook_name, _add_everywhere(vec))],
            {"kind": "actadd", "layer": layer, "coeff": coeff, "positions": "all"},
        )
    steer = steering_matrix(model, prompt_add, prompt_sub, layer, coeff, pad_token_id=pad_token_id)
    return Intervention(
        label,
        [(hook_name, _front_add(steer))],
        {
            "kind": "actadd",
            "layer": layer,
            "coeff": coeff,
            "n_positions": int(steer.shape[0]),
            "positions": "front",
        },
    )


def random_steering(
    model: Any,
    layer: int,
    like: Float[Tensor, "pos d_model"],
    *,
    seed: int = 0,
    name: str | None = None,
) -> Intervention:
    """A random steering matrix with the same per-position norms as ``like``, added at the
    prompt's first positions of ``hook_resid_pre`` at ``layer`` (as :func:`actadd` does).

    The control for a steering claim: a random direction of the same size at the same place.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> model = load_tiny_model()
        >>> steer = steering_matrix(model, "def", "The", layer=1)
        >>> iv = random_steering(model, 1, 2.0 * steer, seed=0)
        >>> iv.info["kind"], iv.info["n_positions"] == steer.shape[0]
        ('random_steering', True)
    """
    hook_name = get_act_name("resid_pre", check_layer(model, layer))
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(like.shape, generator=gen, dtype=torch.float32).to(like.device, like.dtype)
    norms = like.norm(dim=-1, keepdim=True)
    steer = noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12) * norms
    return Intervention(
        name or f"random-steering(L{layer}, seed {seed})",
        [(hook_name, _front_add(steer))],
        {
            "kind": "random_steering",
            "layer": layer,
            "seed": seed,
            "n_positions": int(steer.shape[0]),
        },
    )


def _add_everywhere(vec: Tensor) -> Any:
    def hook(acts: Tensor, hook: Any) -> Tensor:
        return acts + vec.to(acts.device, acts.dtype)

    return hook


def vector_steering(
    model: Any,
    hook_name: str,
    vector: Float[Tensor, " d"],
    coeff: float = 1.0,
    *,
    n_positions: int | None = None,
    name: str | None = None,
) -> Intervention:
    """Add ``coeff * vector`` at a hook, at every position or only the first ``n_positions``.

    Args:
        model: The model.
        hook_name: The hook point.
        vector: ``[d]``, the size of the activation's last axis.
        coeff: Its multiple.
        n_positions: Only the first ``n_positions`` positions (default: all).
        name: Label for results.

    Returns:
        The intervention.

    Raises:
        ValueError: If the vector size differs from the activation's last axis.

    Examples:
        >>> import torch
        >>> from tl_unlearn import vector_steering
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> iv = vector_steering(m, "blocks.1.hook_resid_pre", torch.ones(m.cfg.d_model), 2.0)
        >>> logits = m.run_with_hooks(m.to_tokens("x"), fwd_hooks=list(iv))
        >>> tuple(logits.shape[:2])
        (1, 2)
    """
    check_hook_name(model, hook_name)
    width = hook_shapes(model, [hook_name])[hook_name][-1]
    vec = vector.detach().float().flatten()
    if vec.shape[0] != width:
        raise ValueError(
            f"Steering vector has size {vec.shape[0]}, but {hook_name!r} has width {width}."
        )
    add = coeff * vec

    hook = _add_everywhere(add) if n_positions is None else _front_add(add.expand(n_positions, -1))
    return Intervention(
        name or f"steer({hook_name}, c={coeff:g})",
        [(hook_name, hook)],
        {"kind": "vector_steering", "coeff": coeff},
    )


def sae_direction_steering(
    model: Any,
    sae: Any,
    feature: int,
    coeff: float = 1.0,
    *,
    n_positions: int | None = None,
    name: str | None = None,
) -> Intervention:
    """Steer along an SAE feature's decoder direction ``W_dec[feature]`` at the SAE's hook.

    Args:
        model: The model.
        sae: An ``sae_lens`` SAE (its hook is read from its config).
        feature: The feature index.
        coeff: The multiple of the decoder direction added.
        n_positions: Only the first ``n_positions`` positions (default: all).
        name: Label for results.

    Returns:
        The intervention.

    Examples:
        >>> from tl_unlearn.interventions import sae_direction_steering
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> sae = StandardSAE(StandardSAEConfig(d_in=128, d_sae=64))
        >>> sae.cfg.metadata.hook_name = "blocks.1.hook_resid_pre"
        >>> sae_direction_steering(m, sae, feature=3, coeff=2.0).hook_names
        ['blocks.1.hook_resid_pre']
    """
    from tl_unlearn.core.checks import check_indices
    from tl_unlearn.interventions.sae import sae_hook_name

    check_indices([feature], int(sae.cfg.d_sae), "SAE feature")
    return vector_steering(
        model,
        sae_hook_name(sae),
        sae.W_dec[feature].detach(),
        coeff,
        n_positions=n_positions,
        name=name or f"sae-steer(f{feature}, c={coeff:g})",
    )
