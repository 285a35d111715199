"""SAE features as a benchmark method (``sae-features``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformer_lens.utilities import get_act_name

from tl_unlearn.benchmark.methods.base import (
    DEFAULT_FRACTIONS,
    FittedMethod,
    MethodContext,
    Options,
    option,
)
from tl_unlearn.interventions import (
    Intervention,
    sae_feature_intervention,
)
from tl_unlearn.interventions.sae import sae_feature_means, sae_quality, train_sae

__all__ = ["SAEOptions"]


@dataclass(frozen=True)
class SAEOptions(Options):
    """Options of ``sae-features``."""

    fraction_levels: ClassVar[bool] = True

    method: ClassVar[str] = "sae-features"
    levels: tuple[float, ...] = option(
        "{method}.levels", DEFAULT_FRACTIONS, "fractions of SAE features zero-ablated"
    )
    layer: int | None = option(
        "sae.layer", None, "layer whose resid_pre the SAE reads (default n_layers // 3)"
    )
    d_sae: int = option("sae.d_sae", 1024, "SAE width")
    training_tokens: int = option("sae.training_tokens", 100_000, "SAE training tokens")

    def check_model(self, model: Any) -> None:
        from tl_unlearn.core.checks import check_hook_name, check_layer

        if self.layer is not None:
            check_layer(model, self.layer)
            check_hook_name(model, get_act_name("resid_pre", self.layer))


def fit_sae_features(ctx: MethodContext, opts: SAEOptions) -> FittedMethod:
    t0 = time.perf_counter()
    model = ctx.model
    layer = max(1, model.cfg.n_layers // 3) if opts.layer is None else opts.layer
    hook = get_act_name("resid_pre", layer)
    train_data = list(ctx.sae_data or [ctx.forget_fit, ctx.retain_fit])
    sae = train_sae(
        model,
        train_data,
        hook,
        d_sae=opts.d_sae,
        training_tokens=opts.training_tokens,
        seed=ctx.seed,
    )
    sae.eval()
    quality = {"training_tokens_distinct": int(sum(d.n_tokens for d in train_data))} | (
        sae_quality(model, sae, hook, ctx.check_data, ctx.batch_size) if ctx.check_data else {}
    )
    f_mean = sae_feature_means(model, sae, hook, ctx.forget_fit, ctx.batch_size)
    r_mean = sae_feature_means(model, sae, hook, ctx.retain_fit, ctx.batch_size)
    score = f_mean / (r_mean + 1e-6)
    score[f_mean == 0] = -1.0  # dead on forget: never selected first
    order = torch.argsort(score, descending=True, stable=True).tolist()
    d_sae = len(order)

    def family(fraction: float) -> Intervention:
        k = max(1, round(fraction * d_sae))
        return sae_feature_intervention(
            model, sae, order[:k], "zero", name=f"sae-features@{fraction:g}"
        )

    # the control: as many features drawn at random among those alive on the fit data
    alive = torch.nonzero((f_mean + r_mean) > 0).flatten()
    alive = alive if len(alive) else torch.arange(d_sae)

    def baseline(fraction: float, seed: int) -> Intervention:
        k = min(len(alive), max(1, round(fraction * d_sae)))
        pick = alive[torch.randperm(len(alive), generator=torch.Generator().manual_seed(seed))[:k]]
        return sae_feature_intervention(
            model,
            sae,
            pick.tolist(),
            "zero",
            name=f"random SAE features@{fraction:g} (seed {seed})",
        )

    return FittedMethod(
        "sae-features",
        family,
        list(opts.levels),
        "fraction of SAE features",
        time.perf_counter() - t0,
        {
            "hook": hook,
            "d_sae": d_sae,
            "alive_on_forget": int((f_mean > 0).sum()),
            "alive_on_fit": int(len(alive)),
            **quality,
        },
        baseline,
        "random SAE features alive on the fit data",
    )
