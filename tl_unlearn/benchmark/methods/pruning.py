"""Selective pruning as benchmark methods (``prune-abs``, ``prune-freq``, ``prune-sd``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tl_unlearn.benchmark.methods.base import (
    DEFAULT_FRACTIONS,
    FittedMethod,
    MethodContext,
    Options,
    option,
)
from tl_unlearn.core.components import component_name
from tl_unlearn.interventions import (
    Intervention,
    PruningScores,
)

__all__ = ["PruningOptions"]


@dataclass(frozen=True)
class PruningOptions(Options):
    """Options of ``prune-abs``, ``prune-freq`` and ``prune-random``."""

    fraction_levels: ClassVar[bool] = True

    levels: tuple[float, ...] = option(
        "{method}.levels", DEFAULT_FRACTIONS, "fractions of MLP neurons pruned"
    )


def pruning_method(score: str) -> Callable[[MethodContext, PruningOptions], FittedMethod]:
    def fit(ctx: MethodContext, opts: PruningOptions) -> FittedMethod:
        t0 = time.perf_counter()
        # the shared statistics pass is charged to the first pruning method that needs it
        ps = ctx.pruning_stats().rescored(score, seed=ctx.seed)
        seconds = time.perf_counter() - t0
        name = f"prune-{score}"

        def baseline(fraction: float, seed: int) -> Intervention:
            return (
                ctx.pruning_stats()
                .rescored("random", seed=seed)
                .intervention(fraction, name=f"random neurons@{fraction:g} (seed {seed})")
            )

        return FittedMethod(
            name,
            lambda f: ps.intervention(f, name=f"{name}@{f:g}"),
            list(opts.levels),
            "fraction of MLP neurons",
            seconds,
            {"n_units": ps.n_units},
            None if score == "random" else baseline,
            "random MLP neurons",
            node_scores=_unit_node_scores(ps),
            nodes_at=lambda f: _unit_nodes(ps, ps.select(f)),
        )

    return fit


def _by_component(ps: PruningScores, per_hook: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-unit values of each hook grouped by the component holding the units: ``m{L}``
    for an MLP's neurons, ``a{L}.h{H}`` for a head's."""
    out: dict[str, Tensor] = {}
    for hook, values in per_hook.items():
        layer = int(hook.split(".")[1])
        units = values.reshape(ps.shapes[hook])
        if units.ndim == 1:
            out[component_name((layer, None))] = units
        else:
            out.update({component_name((layer, h)): row for h, row in enumerate(units)})
    return out


def _unit_nodes(ps: PruningScores, selected: Mapping[str, Tensor]) -> list[str]:
    """The components holding at least one selected unit."""
    return [node for node, mask in _by_component(ps, selected).items() if bool(mask.any())]


def _unit_node_scores(ps: PruningScores) -> dict[str, float]:
    """Each component's score: the best score among its units (the one selective pruning
    would remove first)."""
    return {
        node: float(units.float().nan_to_num(nan=-torch.inf).max())
        for node, units in _by_component(ps, ps.scores).items()
    }
