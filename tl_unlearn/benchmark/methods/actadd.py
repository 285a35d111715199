"""Activation addition (steering) as a benchmark method (``actadd``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tl_unlearn.benchmark.methods.base import FittedMethod, MethodContext, Options, option
from tl_unlearn.interventions import (
    Intervention,
    actadd,
)
from tl_unlearn.interventions.steering import random_steering, steering_matrix

__all__ = ["ActAddOptions"]


@dataclass(frozen=True)
class ActAddOptions(Options):
    """Options of ``actadd``."""

    method: ClassVar[str] = "actadd"
    levels: tuple[float, ...] = option(
        "{method}.levels", (1.0, 2.0, 4.0, 8.0), "ActAdd coefficients"
    )
    layer: int | None = option("actadd.layer", None, "layer steered (default min(6, n_layers - 1))")
    prompt_add: str = option("actadd.prompt_add", "The history of the city", "the + prompt")
    prompt_sub: str = option("actadd.prompt_sub", "import os\nimport sys", "the - prompt")

    def check_model(self, model: Any) -> None:
        from tl_unlearn.core.checks import check_layer

        if self.layer is not None:
            check_layer(model, self.layer)


def fit_actadd(ctx: MethodContext, opts: ActAddOptions) -> FittedMethod:
    layer = min(6, ctx.model.cfg.n_layers - 1) if opts.layer is None else opts.layer
    return actadd_method(ctx.model, opts.prompt_add, opts.prompt_sub, layer, opts.levels)


def actadd_method(
    model: Any, plus: Any, minus: Any, layer: int, levels: Sequence[float]
) -> FittedMethod:
    """The ``actadd`` method for a prompt pair (text, or token ids for a model without a
    tokenizer), swept over ``levels`` (coefficients), with its random-steering control."""
    t0 = time.perf_counter()
    pad = None if getattr(model, "tokenizer", None) is not None else 0
    unit = actadd(
        model, plus, minus, layer, 1.0, pad_token_id=pad
    )  # validates the layer now, before sweeping

    def family(coeff: float) -> Intervention:
        return actadd(model, plus, minus, layer, coeff, pad_token_id=pad, name=f"actadd@{coeff:g}")

    steer = steering_matrix(model, plus, minus, layer, 1.0, pad_token_id=pad)

    def baseline(coeff: float, seed: int) -> Intervention:
        return random_steering(
            model, layer, coeff * steer, seed=seed, name=f"random steering@{coeff:g} (seed {seed})"
        )

    return FittedMethod(
        "actadd",
        family,
        list(levels),
        "ActAdd coefficient",
        time.perf_counter() - t0,
        {
            "layer": layer,
            "prompt_add": plus if isinstance(plus, str) else torch.as_tensor(plus).tolist(),
            "prompt_sub": minus if isinstance(minus, str) else torch.as_tensor(minus).tolist(),
            "n_positions": unit.info["n_positions"],
        },
        baseline,
        "random steering matrix, same norms",
    )
