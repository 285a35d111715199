"""Head mean ablation as a benchmark method (``head-mean``), heads ranked by attribution."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.benchmark.methods.base import FittedMethod, MethodContext, Options, option
from tl_unlearn.circuits.maps import component_intervention
from tl_unlearn.core.checks import model_device
from tl_unlearn.core.components import component_name
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.forward import row_chunks, run_from_layer, unembed_residual
from tl_unlearn.interventions import (
    Intervention,
)
from tl_unlearn.interventions.ablation import activation_means

__all__ = ["HeadMeanOptions", "head_attribution"]


@dataclass(frozen=True)
class HeadMeanOptions(Options):
    """Options of ``head-mean``."""

    fraction_levels: ClassVar[bool] = True

    method: ClassVar[str] = "head-mean"
    levels: tuple[float, ...] = option(
        "{method}.levels", (0.01, 0.02, 0.05, 0.1), "fractions of heads mean-ablated"
    )
    attribution_seqs: int = option(
        "head-mean.attribution_seqs",
        16,
        "sequences per side the head attribution runs on "
        "(gradients cost about three forward passes)",
    )


def head_attribution(
    model: Any,
    forget: TokenDataset,
    retain: TokenDataset,
    *,
    batch_size: int = 8,
    reference: dict[str, Tensor] | None = None,
) -> Float[Tensor, "layer head_index"]:
    """Attribution-patching score per head: forget minus retain first-order loss increase.

    ``score[l, h] = A_F[l, h] - A_R[l, h]`` with
    ``A_D[l, h] = mean over D's tokens of (mean_z[l, h] - z[l, h]) . dL/dz[l, h]``, where
    ``mean_z`` is the pooled mean of ``hook_z`` on the retain data (or ``reference``). The
    loss is taken at each dataset's scored positions (every next-token prediction of a text,
    the answers of a prompt→answer task).

    The backward pass runs one block at a time (from residuals cached without a graph), so
    memory holds the autograd graph of a single block, never of the whole model: a whole
    graph also keeps TransformerLens's per-forward contiguous weight copies of every layer
    (about the size of the model). The price is a second forward pass through each block.
    """
    names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    means = reference or activation_means(model, retain, names, batch_size=batch_size)
    device = model_device(model)
    n_layers = model.cfg.n_layers
    resid_names = [get_act_name("resid_pre", l) for l in range(n_layers)]
    final_name = get_act_name("resid_post", n_layers - 1)
    # Gradients with respect to the activations only: the parameters are frozen for the
    # duration (restored after), so autograd keeps no weight gradient.
    frozen = [p for p in model.parameters() if p.requires_grad]

    def loss_grad(final: Tensor, tokens: Tensor, valid: Tensor) -> Tensor:
        """d(summed next-token loss at ``valid``)/d(final residual), a few rows at a time."""
        grad = torch.empty_like(final)
        for rows in row_chunks(len(final), final.shape[1], model.cfg.d_vocab):
            x = final[rows].detach().requires_grad_()
            with torch.enable_grad():
                normed = model.ln_final(x) if model.cfg.normalization_type is not None else x
                logits = unembed_residual(model, normed)[:, :-1]
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(),
                    tokens[rows, 1:].reshape(-1),
                    reduction="none",
                )
                (grad[rows],) = torch.autograd.grad(nll[valid[rows].reshape(-1)].sum(), x)
        return grad

    def attribution(data: TokenDataset) -> Tensor:
        total = torch.zeros(n_layers, model.cfg.n_heads, dtype=torch.float64)
        count = 0
        store: dict[str, Tensor] = {}

        def keep(acts: Tensor, hook: Any) -> None:
            store[hook.name] = acts

        for start in range(0, len(data), batch_size):
            batch = data.rows(slice(start, start + batch_size))
            tokens, mask = batch.tokens.to(device), batch.attention_mask.to(device)
            valid = batch.scored_positions().to(device)  # a task's answers only, if it has some
            with torch.no_grad():
                _, cache = model.run_with_cache(
                    tokens, names_filter=[*resid_names, final_name], return_type=None
                )
            grad = loss_grad(cache[final_name], tokens, valid)
            pos_mask = mask.unsqueeze(-1).unsqueeze(-1)
            for l in reversed(range(n_layers)):
                x = cache[resid_names[l]].detach().requires_grad_()
                with model.hooks(fwd_hooks=[(names[l], keep)]), torch.enable_grad():
                    out = run_from_layer(model, x, l, l + 1, tokens)
                    g_z, grad = torch.autograd.grad(out, [store[names[l]], x], grad)
                z = store.pop(names[l]).detach()
                delta = ((means[names[l]].to(z.device) - z) * g_z * pos_mask).sum((0, 1, 3))
                total[l] += delta.double().cpu()
                del out, x
            count += int(valid.sum())
            del cache, grad
        return total / max(count, 1)

    try:
        for p in frozen:
            p.requires_grad_(False)
        return attribution(forget) - attribution(retain)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def fit_head_mean(ctx: MethodContext, opts: HeadMeanOptions) -> FittedMethod:
    t0 = time.perf_counter()
    model = ctx.model
    names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    means = activation_means(model, ctx.retain_fit, names, batch_size=ctx.batch_size)
    # gradients cost ~3 forward passes: attribute on a few sequences per side
    n = opts.attribution_seqs
    scores = head_attribution(
        model,
        ctx.forget_fit.head(n),
        ctx.retain_fit.head(n),
        batch_size=ctx.batch_size,
        reference=means,
    )
    order = torch.argsort(scores.flatten(), descending=True, stable=True)
    n_heads = model.cfg.n_heads
    ranked = [(int(i) // n_heads, int(i) % n_heads) for i in order]
    total = len(ranked)

    def family(fraction: float) -> Intervention:
        k = max(1, round(fraction * total))
        iv = component_intervention(
            model, ranked[:k], "mean", means=means, name=f"head-mean@{fraction:g}"
        )
        iv.info["heads"] = [component_name((l, h)) for l, h in ranked[:k]]
        return iv

    def baseline(fraction: float, seed: int) -> Intervention:
        k = max(1, round(fraction * total))
        pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]
        heads = [(int(i) // n_heads, int(i) % n_heads) for i in pick]
        return component_intervention(
            model, heads, "mean", means=means, name=f"random heads@{fraction:g} (seed {seed})"
        )

    return FittedMethod(
        "head-mean",
        family,
        list(opts.levels),
        "fraction of heads",
        time.perf_counter() - t0,
        {
            "top_heads": [component_name((l, h)) for l, h in ranked[:10]],
            "top_scores": scores.flatten()[order[:10]].tolist(),
        },
        baseline,
        "random heads, mean-ablated",
        node_scores={
            component_name((l, h)): float(scores[l, h])
            for l in range(model.cfg.n_layers)
            for h in range(n_heads)
        },
        nodes_at=lambda f: [component_name((l, h)) for l, h in ranked[: max(1, round(f * total))]],
    )
