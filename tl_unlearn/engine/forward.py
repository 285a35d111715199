"""Forward passes of many interventions over one batch, reusing what they share.

The *plan* / *forward* half of :func:`~tl_unlearn.metrics.evaluation.evaluate_many` (the
metrics are its *reduce* half):

- :func:`plan_forward` decides, once per call, where each intervention's pass can start: at
  the first layer it hooks (the residual stream before it is the original model's, computed
  once per batch), or, for an intervention that only hooks ``hook_z`` / ``hook_mlp_out`` of
  one block (a head or MLP-layer ablation), from that block's cached outputs;
- :meth:`ForwardPlan.prefix` runs the shared prefix of a batch once;
- :meth:`ForwardPlan.forward` runs one intervention from there and returns a
  :class:`ForwardOutput` whose logits come a few rows at a time (:func:`row_chunks`), so a
  49k-token vocabulary never needs the whole batch's logits at once.

The block shortcut (:func:`block_output_layer`, :func:`resume_from_block`) re-implements a
few lines of TransformerLens's block arithmetic; it lives here, beside nothing else, and its
bit-exact test is ``tests/metrics/test_forward.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import Hooks

__all__ = [
    "ForwardOutput",
    "ForwardPlan",
    "block_output_layer",
    "final_residual",
    "plan_forward",
    "resume_from_block",
    "row_chunks",
    "run_from_layer",
    "unembed_residual",
]

_CHUNK_BYTES = 64 * 2**20
# token metrics from logits (an unembedding with a hook on it; a plain one is scored from the
# residual, engine/scoring.py): scoring makes a few copies of a block's logits, so a row up
# to 32 MB is scored whole (several rows up to 32 MB), a longer one (a 512-token SmolLM2 row
# is 100 MB) 8 MB of positions at a time, which keeps the peak low
_ROW_BYTES = 32 * 2**20
_BLOCK_BYTES = 8 * 2**20
_BLOCK_OUTPUTS = ("attn.hook_z", "hook_mlp_out")


def row_chunks(n_rows: int, pos: int, d_vocab: int, max_bytes: int | None = None) -> list[slice]:
    """Row slices whose logits take at most ``max_bytes`` (default 64 MB) in float32 (at
    least one row each).

    Examples:
        >>> row_chunks(8, 128, 49152)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 6, None), slice(6, 8, None)]
    """
    step = max(1, (max_bytes or _CHUNK_BYTES) // max(1, pos * d_vocab * 4))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def unembed_residual(
    model: Any, normed: Float[Tensor, "batch pos d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits from the final (normalised) residual, as ``HookedTransformer.forward`` does."""
    from tl_unlearn.engine.tl_patches import apply_softcap

    return apply_softcap(model.unembed(normed), model.cfg.output_logits_soft_cap)


def final_residual(
    model: Any, tokens: Int[Tensor, "batch pos"], hooks: Iterable[tuple[Any, Any]] = ()
) -> Float[Tensor, "batch pos d_model"]:
    """The input of the unembedding (``ln_final`` of the last residual) under ``hooks``.

    With :func:`row_chunks` and :func:`unembed_residual` this gives the logits a few rows at
    a time.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); t = m.to_tokens(["def f(x):", "import os"])
        >>> logits = torch.cat([unembed_residual(m, final_residual(m, t)[r])
        ...                     for r in row_chunks(len(t), t.shape[1], m.cfg.d_vocab)])
        >>> bool(torch.allclose(logits, m(t), atol=1e-5))
        True
    """
    with model.hooks(fwd_hooks=list(hooks)):
        final = model(tokens, stop_at_layer=model.cfg.n_layers)
        if model.cfg.normalization_type is not None:
            final = model.ln_final(final)
    return final


def run_from_layer(
    model: Any,
    resid: Float[Tensor, "batch pos d_model"],
    start: int,
    stop: int,
    tokens: Int[Tensor, "batch pos"],
) -> Tensor:
    """``model(resid, start_at_layer=start, stop_at_layer=stop)``, bit-equal to those layers
    of a full pass on ``tokens``.

    A shortformer model adds its positional embedding to every layer's queries and keys, and
    TransformerLens leaves it out when a pass starts at a layer unless it is given; it is
    computed here the way the full pass computes it.
    """
    extra = {}
    if model.cfg.positional_embedding_type == "shortformer":
        extra["shortformer_pos_embed"] = model.input_to_embed(tokens)[2]
    return model(resid, start_at_layer=start, stop_at_layer=stop, tokens=tokens, **extra)


def start_layer(model: Any, hooks: Hooks) -> int:
    """First layer an intervention touches (0 when it touches anything before the blocks,
    ``n_layers`` when it has no hook)."""
    from transformer_lens import HookedTransformer

    if not isinstance(model, HookedTransformer) or not hooks:
        return 0 if hooks else model.cfg.n_layers
    layers = []
    for name, _ in hooks:
        if not isinstance(name, str) or not name.startswith("blocks."):
            return 0
        layers.append(int(name.split(".")[1]))
    return min(layers)


def block_output_layer(model: Any, hooks: Hooks) -> int | None:
    """The layer ``l`` when every hook is on ``hook_z`` or ``hook_mlp_out`` of block ``l``.

    Such an intervention (a head or MLP-layer ablation) leaves everything in block ``l``
    before those hook points as in the original model, so the forward pass can resume from
    cached activations: for ``hook_z`` only the output projection, the block's MLP and the
    later layers are recomputed; for ``hook_mlp_out`` alone only the later layers. Returns
    None when that shortcut does not apply (other hooks, hooks already on the model, an SAE
    spliced in, or a block layout other than pre-norm attention then MLP).
    """
    from transformer_lens import HookedTransformer

    from tl_unlearn.engine.tl_patches import POST_NORM_ARCHITECTURES, HookPoint, TransformerBlock

    if not isinstance(model, HookedTransformer) or not hooks:
        return None
    cfg = model.cfg
    if (
        cfg.attn_only
        or cfg.parallel_attn_mlp
        or cfg.use_normalization_before_and_after
        or cfg.use_attn_result
        or cfg.load_in_4bit
        or cfg.use_hook_mlp_in
        or cfg.original_architecture in POST_NORM_ARCHITECTURES
    ):
        return None
    layers = set()
    for name, _ in hooks:
        parts = name.split(".", 2) if isinstance(name, str) else []
        if len(parts) != 3 or parts[0] != "blocks" or parts[2] not in _BLOCK_OUTPUTS:
            return None
        layers.add(int(parts[1]))
    if len(layers) != 1:
        return None
    layer = layers.pop()
    block = model.blocks[layer]
    skipped = (
        block.attn.hook_z,
        block.hook_attn_out,
        block.hook_resid_mid,
        block.hook_mlp_out,
        block.hook_resid_post,
    )
    if type(block) is not TransformerBlock or any(type(m) is not HookPoint for m in skipped):
        return None  # e.g. an SAE spliced in where the shortcut does not call the module
    if any(hp.fwd_hooks for hp in model.hook_dict.values()):
        return None  # hooks the user left on the model would be skipped
    return layer


def block_cache_names(layer: int) -> list[str]:
    """The activations of block ``layer`` that :func:`resume_from_block` reads."""
    return [
        get_act_name("resid_pre", layer),
        get_act_name("z", layer),
        get_act_name("resid_mid", layer),
        get_act_name("mlp_out", layer),
    ]


def resume_from_block(
    model: Any,
    layer: int,
    cache: Mapping[str, Tensor],
    hooks: Hooks,
    tokens: Int[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos d_model"]:
    """The residual after the last block (before ``ln_final``) with ``hooks`` applied to block
    ``layer``'s cached outputs (see :func:`block_output_layer`).

    The arithmetic after ``hook_z`` is TransformerLens's own (``F.linear`` with the same
    flattened ``W_O``, then ``ln2`` and the MLP of the same block), so the result is bit-equal
    to a full pass with the hooks.
    """
    block = model.blocks[layer]
    z_name, mlp_name = get_act_name("z", layer), get_act_name("mlp_out", layer)

    def hooked(name: str, act: Tensor) -> Tensor:
        fns = [fn for hook_name, fn in hooks if hook_name == name]
        if fns:
            act = act.clone()  # hooks may edit in place; the cache serves every intervention
        for fn in fns:
            out = fn(act, hook=model.hook_dict[name])
            act = act if out is None else out
        return act

    if any(name == z_name for name, _ in hooks):
        z = hooked(z_name, cache[z_name])
        w = block.attn.W_O.reshape(-1, model.cfg.d_model).T.contiguous()
        attn_out = torch.nn.functional.linear(
            z.reshape(*z.shape[:2], -1).to(w.dtype), w, block.attn.b_O
        )
        resid_mid = cache[get_act_name("resid_pre", layer)] + attn_out
        mlp_out = block.apply_mlp(block.ln2(resid_mid))
    else:
        resid_mid, mlp_out = cache[get_act_name("resid_mid", layer)], cache[mlp_name]
    resid_post = resid_mid + hooked(mlp_name, mlp_out)
    return run_from_layer(model, resid_post, layer + 1, model.cfg.n_layers, tokens)


@dataclass
class ForwardOutput:
    """What one intervention's pass over a batch produced: the normalised final residual
    (HookedTransformer) or the full logits (other models, or when asked for)."""

    model: Any
    final: Float[Tensor, "batch pos d_model"] | None
    logits: Float[Tensor, "batch pos d_vocab"] | None

    def logit_chunks(self) -> Iterator[tuple[slice, Float[Tensor, "rows pos d_vocab"]]]:
        """``(rows, logits of those rows)``, at most 64 MB of logits at a time."""
        if self.logits is not None:
            yield slice(0, len(self.logits)), self.logits
            return
        n, pos = self.final.shape[:2]
        for rows in row_chunks(n, pos, self.model.cfg.d_vocab):
            yield rows, unembed_residual(self.model, self.final[rows])

    def logit_blocks(self) -> Iterator[tuple[slice, slice, Float[Tensor, "rows block d_vocab"]]]:
        """``(rows, positions, logits)``: whole rows, up to 32 MB of logits at a time; a row
        whose logits exceed 32 MB comes 8 MB of positions at a time. Consecutive blocks of a
        row overlap by one position (a block's last position predicts the next block's first
        token), so the next-token statistics of the blocks add up to the row's. Evaluation
        uses them where the unembedding has a hook on it (otherwise
        :func:`~tl_unlearn.engine.scoring.residual_statistics` needs no logits)."""
        if self.logits is not None:
            yield slice(0, len(self.logits)), slice(0, self.logits.shape[1]), self.logits
            return
        n, pos = self.final.shape[:2]
        position_bytes = self.model.cfg.d_vocab * 4
        if pos * position_bytes <= _ROW_BYTES:
            for rows in row_chunks(n, pos, self.model.cfg.d_vocab, _ROW_BYTES):
                yield rows, slice(0, pos), unembed_residual(self.model, self.final[rows])
            return
        width = max(2, _BLOCK_BYTES // position_bytes)
        for r in range(n):
            for start in range(0, pos - 1, width - 1):
                cols = slice(start, min(start + width, pos))
                yield (
                    slice(r, r + 1),
                    cols,
                    unembed_residual(self.model, self.final[r : r + 1, cols]),
                )


@dataclass
class ForwardPlan:
    """Where each intervention's pass starts (see :func:`plan_forward`).

    Attributes:
        starts: Per intervention, the layer its pass starts at (0: from the tokens;
            ``n_layers``: no hook, the original model).
        block_layers: Per intervention, the block it resumes from (or None).
        needed: Layers whose ``resid_pre`` the shared prefix caches.
        cache_names: Every activation the shared prefix caches.
    """

    starts: list[int]
    block_layers: list[int | None]
    needed: list[int]
    cache_names: list[str]

    def prefix(self, model: Any, tokens: Int[Tensor, "batch pos"]) -> dict[str, Tensor]:
        """The original model's activations every intervention resumes from (one pass up to
        the deepest needed layer; empty when nothing is shared)."""
        if not self.needed:
            return {}
        _, cache = model.run_with_cache(
            tokens,
            names_filter=self.cache_names,
            stop_at_layer=self.needed[-1] + 1,
            return_type=None,
        )
        return dict(cache.items())

    def forward(
        self,
        model: Any,
        i: int,
        hooks: Hooks,
        tokens: Int[Tensor, "batch pos"],
        cache: Mapping[str, Tensor],
        *,
        full_logits: bool = False,
    ) -> ForwardOutput:
        """Intervention ``i`` (``hooks``) on the batch, resumed from :meth:`prefix`'s
        ``cache`` where the plan allows; ``full_logits`` makes the whole batch's logits at
        once (a user metric needs them)."""
        from transformer_lens import HookedTransformer

        block = self.block_layers[i]
        # the block shortcut applies its hooks by hand to the cached outputs; were they
        # registered too, apply_mlp would run hook_mlp_out's a second time
        scope = (
            contextlib.nullcontext() if block is not None else model.hooks(fwd_hooks=list(hooks))
        )
        with scope:
            if not isinstance(model, HookedTransformer):
                return ForwardOutput(model, None, model(tokens, return_type="logits"))
            n_layers, start = model.cfg.n_layers, self.starts[i]
            resid_name = get_act_name("resid_pre", start)
            if block is not None:
                final = resume_from_block(model, block, cache, hooks, tokens)
            elif start < n_layers and resid_name in cache:
                final = run_from_layer(model, cache[resid_name], start, n_layers, tokens)
            elif start == n_layers and self.needed:  # the original model
                last = self.needed[-1]
                final = run_from_layer(
                    model, cache[get_act_name("resid_pre", last)], last, n_layers, tokens
                )
            else:
                final = model(tokens, stop_at_layer=n_layers)
            if model.cfg.normalization_type is not None:
                final = model.ln_final(final)
            if full_logits:
                return ForwardOutput(model, None, unembed_residual(model, final))
            return ForwardOutput(model, final, None)


def plan_forward(
    model: Any, hook_lists: Sequence[Hooks], *, share_prefix: bool = True
) -> ForwardPlan:
    """Plan the passes of ``hook_lists`` over a batch (see the module docstring).

    Without ``share_prefix`` every pass runs from the tokens.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.interventions import zero_ablation
        >>> m = load_tiny_model()
        >>> plan = plan_forward(m, [[], zero_ablation(m, heads=[(1, 0)]),
        ...                         zero_ablation(m, neurons={1: [3]})])
        >>> plan.starts, plan.block_layers, plan.needed
        ([2, 1, 1], [None, 1, None], [1])
    """
    n = len(hook_lists)
    if not share_prefix:
        return ForwardPlan([0] * n, [None] * n, [], [])
    starts = [start_layer(model, h) for h in hook_lists]
    block_layers = [block_output_layer(model, h) for h in hook_lists]
    # the original model (no hook) also resumes from the deepest needed cached layer
    needed = sorted(
        {s for s in starts if 0 < s < model.cfg.n_layers}
        | {l for l in block_layers if l is not None}
    )
    if any(get_act_name("resid_pre", l) not in model.hook_dict for l in needed):
        return ForwardPlan([0] * n, [None] * n, [], [])  # e.g. an SAE spliced in at resid_pre
    names = {get_act_name("resid_pre", l) for l in needed}
    names |= {name for l in block_layers if l is not None for name in block_cache_names(l)}
    return ForwardPlan(starts, block_layers, needed, sorted(names))
