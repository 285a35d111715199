"""Edge circuits as benchmark methods (``eap``, ``eap-ig``, ``patching``): discovered on
clean/corrupted pairs, removed by edge ablation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from tl_unlearn.benchmark.methods.base import FittedMethod, MethodContext, Options, option
from tl_unlearn.circuits.attribution import check_ig_points
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.interventions import (
    Intervention,
)

__all__ = ["EDGE_METHODS", "EdgeOptions"]


@dataclass(frozen=True)
class EdgeOptions(Options):
    """Options of the circuit-discovery methods ``eap``, ``eap-ig`` and ``patching``."""

    fraction_levels: ClassVar[bool] = True

    levels: tuple[float, ...] = option(
        "{method}.levels",
        (0.001, 0.002, 0.005, 0.01),
        "fractions of the graph's edges removed (mean-ablated)",
    )
    attribution_examples: int = option(
        "{method}.attribution_examples", 16, "clean/corrupted fit pairs the scores are computed on"
    )
    steps: int = option("eap-ig.steps", 5, "integrated-gradient steps of eap-ig")
    ig_points: str = option(
        "eap-ig.ig_points",
        "left",
        "eap-ig's interpolation points: left (k = 0..steps-1, EAP-IG's code and MIB) or right "
        "(k = 1..steps)",
    )

    def __post_init__(self) -> None:
        check_ig_points(self.ig_points, "Option eap-ig.ig_points")


#: Methods that find an edge circuit by counterfactual patching (they need paired data).
EDGE_METHODS = ("eap", "eap-ig", "patching")


def edge_method(kind: str) -> Callable[[MethodContext, EdgeOptions], FittedMethod]:
    """``eap`` / ``eap-ig`` / ``patching``: score every edge on clean/corrupted fit pairs,
    then remove the top edges (their retain-fit means replace what the child reads)."""

    def fit(ctx: MethodContext, opts: EdgeOptions) -> FittedMethod:
        from tl_unlearn.circuits.attribution import activation_patching, edge_attribution
        from tl_unlearn.circuits.edge_ablation import edge_ablation, prepare_edge_values
        from tl_unlearn.circuits.faithfulness import random_scores
        from tl_unlearn.circuits.graph import Circuit

        if ctx.forget_fit_corrupted is None:
            raise ValueError(
                f"Method {kind!r} needs a forget task with corrupted prompts "
                "(ioi, greater_than, induction, or PromptAnswers with corrupted=)."
            )
        t0 = time.perf_counter()
        model, n = ctx.model, opts.attribution_examples
        clean, corrupted = ctx.forget_fit.head(n), ctx.forget_fit_corrupted.head(n)
        metric = patch_metric(clean)
        if kind == "patching":
            scores = activation_patching(
                model, clean, corrupted, metric, batch_size=ctx.batch_size
            ).edge_scores(model.cfg.d_model)
        else:
            scores = edge_attribution(
                model,
                clean,
                corrupted,
                metric,
                method=kind,
                steps=opts.steps,
                batch_size=ctx.batch_size,
                ig_points=opts.ig_points,  # type: ignore[arg-type]
            )
        prepared = prepare_edge_values(
            model, "mean", reference=ctx.retain_fit, batch_size=ctx.batch_size
        )
        total = Circuit.of_model(model).n_real_edges

        def remove(circuit: Any, label: str) -> Intervention:
            iv = edge_ablation(
                model, circuit, "mean", ablate="inside", prepared=prepared, name=label
            )
            iv.info["edges"] = circuit.edges[:20]
            return iv

        def count(fraction: float) -> int:
            return max(1, round(fraction * total))

        def family(fraction: float) -> Intervention:
            return remove(scores.top(count(fraction)), f"{kind}@{fraction:g}")

        def baseline(fraction: float, seed: int) -> Intervention:
            return remove(
                random_scores(scores, seed).top(count(fraction)),
                f"random edges@{fraction:g} (seed {seed})",
            )

        top = scores.top(10)
        return FittedMethod(
            kind,
            family,
            list(opts.levels),
            "fraction of edges removed",
            time.perf_counter() - t0,
            {"top_edges": top.edges, "n_real_edges": total, "attribution_examples": len(clean)},
            baseline,
            "random edges, mean-ablated",
            node_scores=edge_node_scores(scores),
            edge_scores=scores,
            nodes_at=lambda f: [
                n for n in scores.top(count(f)).nodes if n not in ("input", "logits")
            ],
            edges_at=lambda f: scores.top(count(f)).edges,
        )

    return fit


def edge_node_scores(circuit: Any) -> dict[str, float]:
    """Each node's score from a scored circuit: the largest ``|score|`` of an edge into or
    out of it (``input`` and ``logits`` left out).

    Examples:
        >>> import numpy as np
        >>> from tl_unlearn import Circuit
        >>> c = Circuit.empty(1, 2)
        >>> c.scores = np.zeros(c.in_graph.shape); c.scores[1, -1] = -3.0  # a0.h0->logits
        >>> edge_node_scores(c)["a0.h0"], edge_node_scores(c)["a0.h1"]
        (3.0, 0.0)
    """
    real = circuit.real_edges()
    values = np.where(real, np.abs(circuit.scores), 0.0)
    out = dict(zip(circuit.parent_names, values.max(1)))
    for j, child in enumerate(circuit.child_names):
        node = child.split("<")[0]
        if node != "logits":
            out[node] = max(out.get(node, 0.0), float(values[:, j].max()))
    out.pop("input", None)
    return {k: float(v) for k, v in out.items()}


def patch_metric(data: TokenDataset) -> Callable[[Tensor, TokenDataset], Tensor]:
    """The patching metric of a forget set: the answer logit difference where there are
    counterfactual answers, else the scored tokens' mean log-probability."""
    from tl_unlearn.engine.scoring import answer_logit_diff, scored_logprob

    return answer_logit_diff if data.counterfactual is not None else scored_logprob
