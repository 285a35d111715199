"""Ground-truth checks on the planted models: the exhaustive verification table and
localisation scores (AUROC, precision, recall) against the planted circuit.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go
import torch
from transformer_lens import HookedTransformer

from tl_unlearn.core.components import component_name
from tl_unlearn.core.results import Result
from tl_unlearn.models.planted import (
    PlantedSpec,
    component_means,
    load_planted,
    planted_data,
    planted_spec,
    task_accuracy,
)

__all__ = ["PlantedVerification", "localisation", "map_localisation", "verify_planted"]


@dataclass
class PlantedVerification(Result):
    """F and R accuracy of a planted model under every subset of its components ablated.

    Attributes:
        name: The planted model.
        circuit: Its circuit's components.
        subsets: One row per ablated subset: ``ablated`` (node names), ``forget``,
            ``retain`` (top-1 on the scored positions).
        chance: Top-1 of a uniform guess among the F tokens.
        checks: Each required property with its measured number and whether it holds.
        label: Its name.
        seconds: Wall time.
    """

    name: str
    circuit: list[str]
    subsets: list[dict[str, Any]]
    chance: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    label: str = "planted verification"
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("subsets",)

    @property
    def holds(self) -> bool:
        """Whether every required check holds (the extra ones are shown only)."""
        return all(c["holds"] for c in self.checks if not c.get("extra"))

    def to_markdown(self) -> str:
        """The checks as a markdown table."""
        lines = ["| check | measured | required | holds |", "| --- | --- | --- | --- |"]
        for c in self.checks:
            lines.append(
                f"| {c['check']} | {c['measured']:.4f} | {c['required']} | "
                f"{('yes' if c['holds'] else 'no') if c.get('extra') else ('yes' if c['holds'] else 'NO')} |"
            )
        return "\n".join(lines) + "\n"

    def figure(self, kind: str = "subsets") -> go.Figure:
        """``kind="subsets"``: F against R accuracy of every ablated subset, those that
        contain C in red."""
        self._check_kind(kind)
        c = set(self.circuit)
        fig = go.Figure()
        for has, colour in ((True, "#d62728"), (False, "#1f77b4")):
            rows = [r for r in self.subsets if c.issubset(r["ablated"]) == has]
            fig.add_trace(
                go.Scatter(
                    x=[r["retain"] for r in rows],
                    y=[r["forget"] for r in rows],
                    mode="markers",
                    marker={"color": colour},
                    text=[", ".join(r["ablated"]) or "none" for r in rows],
                    name="C ablated" if has else "C kept (in part)",
                )
            )
        fig.update_layout(
            title=f"{self.name}: every subset of components mean-ablated",
            xaxis_title="retain top-1",
            yaxis_title="forget top-1",
            template="plotly_white",
        )
        return fig


def verify_planted(
    spec: PlantedSpec | str,
    model: HookedTransformer | None = None,
    *,
    n: int = 512,
    seed: int = 12345,
) -> PlantedVerification:
    """Ablate every subset of a planted model's components (mean ablation, means over both
    tasks) and check that F is carried by C only.

    The required checks: ablating C drops F to at most chance + 5 points while R falls at
    most 2 points; ablating any one component of C alone removes at least half of F's
    margin over chance (every part of C is needed); ablating everything outside C keeps F at 95% of clean or more; every
    single ablation outside C costs F under 2 points. Shown beside them (in brackets, not
    required): the worst F over every superset of C ablated, and over every subset
    disjoint from C.

    Args:
        spec: The planted model (or its name).
        model: The model (default: the committed weights).
        n: Sequences per task (fresh ones: ``seed`` differs from training's).
        seed: Seed of the sequences.
    """
    t0 = time.perf_counter()
    spec = planted_spec(spec)
    model = load_planted(spec.name) if model is None else model
    data = planted_data(spec, n, seed=seed)
    means = component_means(model, torch.cat([data["forget"].tokens, data["retain"].tokens]))
    comps = spec.components
    c = set(spec.circuit_nodes)
    rows = []
    for k in range(len(comps) + 1):
        for subset in itertools.combinations(comps, k):
            acc = task_accuracy(model, data, subset, means)
            rows.append({"ablated": list(subset), **acc})
    clean = rows[0]
    by = {tuple(r["ablated"]): r for r in rows}
    c_row = by[tuple(x for x in comps if x in c)]
    out_row = by[tuple(x for x in comps if x not in c)]
    supersets = [r for r in rows if c.issubset(r["ablated"])]
    disjoint = [r for r in rows if not c.intersection(r["ablated"])]
    singles = [r for r in rows if len(r["ablated"]) == 1 and r["ablated"][0] not in c]
    chance = spec.chance
    checks = [
        ("clean forget top-1", clean["forget"], ">= 0.95", clean["forget"] >= 0.95),
        ("clean retain top-1", clean["retain"], ">= 0.95", clean["retain"] >= 0.95),
        ("forget with C ablated", c_row["forget"], f"<= chance + 0.05 = {chance + 0.05:.4f}",
         c_row["forget"] <= chance + 0.05),
        ("retain drop with C ablated", clean["retain"] - c_row["retain"], "<= 0.02",
         clean["retain"] - c_row["retain"] <= 0.02),
        ("forget kept, everything outside C ablated", out_row["forget"] / clean["forget"],
         ">= 0.95", out_row["forget"] >= 0.95 * clean["forget"]),
        ("smallest forget drop, one component of C ablated alone",
         min(clean["forget"] - by[(x,)]["forget"] for x in comps if x in c),
         ">= 0.5 * (clean - chance)",
         min(clean["forget"] - by[(x,)]["forget"] for x in comps if x in c)
         >= 0.5 * (clean["forget"] - chance)),
        ("largest forget cost of one component outside C",
         max(clean["forget"] - r["forget"] for r in singles), "< 0.02",
         max(clean["forget"] - r["forget"] for r in singles) < 0.02),
    ]  # fmt: skip
    extra = [  # shown, not required
        ("worst forget, any superset of C ablated", max(r["forget"] for r in supersets),
         f"(<= {chance + 0.05:.4f})", max(r["forget"] for r in supersets) <= chance + 0.05),
        ("worst forget kept, any subset disjoint from C ablated",
         min(r["forget"] for r in disjoint) / clean["forget"], "(>= 0.95)",
         min(r["forget"] for r in disjoint) >= 0.95 * clean["forget"]),
    ]  # fmt: skip
    return PlantedVerification(
        spec.name,
        sorted(c),
        rows,
        chance,
        [
            {"check": a, "measured": float(b), "required": r, "holds": bool(h)}
            for a, b, r, h in checks
        ]
        + [
            {"check": a, "measured": float(b), "required": r, "holds": bool(h), "extra": True}
            for a, b, r, h in extra
        ],
        f"verification of {spec.name}",
        time.perf_counter() - t0,
    )


def reproduction_metrics(spec: PlantedSpec | str, model: HookedTransformer) -> dict[str, float]:
    """The numbers a retrain from the seed must reproduce (to 1e-4): F and R top-1 clean,
    with C mean-ablated and with everything outside C mean-ablated, on fresh sequences, and
    the mean of every parameter."""
    spec = planted_spec(spec)
    data = planted_data(spec, 512, seed=777)
    means = component_means(model, torch.cat([data["forget"].tokens, data["retain"].tokens]))
    c = list(spec.circuit_nodes)
    outside = [n for n in spec.components if n not in c]
    out = {}
    for label, ablate in (("clean", []), ("C ablated", c), ("outside ablated", outside)):
        for task, acc in task_accuracy(model, data, ablate, means).items():
            out[f"{label} {task}"] = acc
    with torch.no_grad():
        out["mean |parameter|"] = float(
            torch.cat([p.abs().flatten() for p in model.parameters()]).mean()
        )
    return out


def _localisation(truth: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    from tl_unlearn.metrics.membership import auc_score

    picked = scores > 0
    hit = float((picked & truth).sum())
    precision = hit / picked.sum() if picked.any() else 0.0
    return auc_score(truth.astype(int), scores), precision, hit / truth.sum()


def localisation(
    spec: PlantedSpec | str,
    nodes: Sequence[str],
    scores: Sequence[float],
    replicates: np.ndarray | None = None,
    n_units: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """How well node scores find a planted circuit: AUROC (C against the rest), and the
    precision and recall of the nodes scored above 0, with intervals from bootstrap
    replicates of the scores (``[n_boot, n_nodes]``, e.g. resampled sequences).

    Examples:
        >>> r = localisation("planted-induction", ["a0.h1", "a1.h2", "a0.h0"], [0.9, 0.5, -0.1])
        >>> r["auroc"].value, r["precision"].value, r["recall"].value
        (1.0, 1.0, 1.0)
    """
    from tl_unlearn.metrics.intervals import Interval, bootstrap_interval

    spec = planted_spec(spec)
    unknown = [n for n in nodes if n not in spec.components]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a component of {spec.name}.")
    truth = np.array([n in spec.circuit_nodes for n in nodes])
    if truth.all() or not truth.any():
        raise ValueError("The scored nodes must include circuit and non-circuit components.")
    values = _localisation(truth, np.asarray(scores, dtype=float))
    reps = (
        None
        if replicates is None
        else np.array([_localisation(truth, np.asarray(r, float)) for r in replicates])
    )
    out: dict[str, Any] = {}
    for j, key in enumerate(("auroc", "precision", "recall")):
        lo, hi = (
            (float("nan"), float("nan"))
            if reps is None
            else bootstrap_interval(reps[:, j], values[j], n_units, confidence, proportion=True)
        )
        out[key] = Interval(float(values[j]), lo, hi, confidence)
    return out


def map_localisation(
    spec: PlantedSpec | str, cmap: Any, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """:func:`localisation` of a component map's selectivity (forget drop - retain drop of
    each component ablated alone), with intervals over resampled sequences.

    Args:
        spec: The planted model (or its name).
        cmap: A :class:`~tl_unlearn.circuits.maps.ComponentMap` of the planted model.
        n_boot: Bootstrap replicates.
        seed: Seed of the resampling.
    """
    from tl_unlearn.metrics.evaluation import unit_indices

    nodes = [component_name(c) for c in cmap.components]
    diff = cmap.forget_drop - cmap.retain_drop
    runs = [cmap.original, *cmap.evaluations]
    f = unit_indices(runs, "forget", n_boot=n_boot, seed=seed)
    r = unit_indices(runs, "retain", n_boot=n_boot, seed=seed)
    reps = None
    n = 0
    if f is not None and r is not None:
        reps = cmap.drop_replicates("forget", f) - cmap.drop_replicates("retain", r)
        n = min(f.shape[-1], r.shape[-1])
    return localisation(spec, nodes, diff, reps, n)
