"""Faithfulness curves of edge circuits, as the MIB circuit track defines them, with
bootstrap intervals and a random-circuit band.

For a circuit ``C`` kept while every other edge is ablated (:func:`~tl_unlearn.circuits.edge_ablation.edge_ablation`,
counterfactual by default), the faithfulness is

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty)),

with ``m`` the mean metric over the examples (default: the answer logit difference),
``full`` the unablated model and ``empty`` the circuit without edges. Each method's scores
give one circuit per edge fraction (its top ``round(fraction * n_edges)`` edges by ``|score|``,
at least one edge). Two areas summarise a curve, trapezoids over the edge fractions:

- CPR (circuit performance ratio): the area under ``f``; higher is better;
- CMD (circuit-model difference): the area under ``|1 - f|``; lower is better.

Intervals are percentile bootstraps over examples, the same resamples for every method (so
differences between methods are paired). Random circuits of each size (``n_random`` seeds)
give the band a method must beat.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from tl_unlearn.circuits.attribution import PatchMetric, paired_datasets, per_example_metric
from tl_unlearn.circuits.edge_ablation import edge_ablation, prepare_edge_values
from tl_unlearn.circuits.graph import Circuit, EdgeMethod
from tl_unlearn.core.checks import model_device
from tl_unlearn.core.results import OTHER_COLOURS, Result
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.scoring import answer_logit_diff
from tl_unlearn.metrics.intervals import (
    bootstrap_indices,
    bootstrap_interval,
    pointwise_intervals,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "FaithfulnessCurves",
    "circuit_selectivity",
    "faithfulness_curves",
    "random_scores",
]

#: The MIB circuit track's edge fractions (0.1% ... 100%).
DEFAULT_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def random_scores(template: Circuit, seed: int) -> Circuit:
    """Uniform random edge scores on ``template``'s graph (a random circuit of any size by
    ``.top(n)``)."""
    rng = np.random.default_rng(seed)
    return template.copy(
        scores=np.where(template.real_edges(), rng.random(template.in_graph.shape), 0.0),
        label=f"random (seed {seed})",
        in_graph=np.zeros_like(template.in_graph),
    )


def _faithfulness(values: np.ndarray, full: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """``f`` from per-example metrics (last axis examples)."""
    lo, hi = empty.mean(-1), full.mean(-1)
    return (values.mean(-1) - lo[..., None]) / (hi - lo)[..., None]


def _areas(f: np.ndarray, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CPR and CMD: trapezoid areas of ``f`` and ``|1 - f|`` over the fractions."""
    return np.trapezoid(f, fractions, axis=-1), np.trapezoid(np.abs(1 - f), fractions, axis=-1)


@dataclass
class FaithfulnessCurves(Result):
    """Per method, the metric of every example with each circuit size kept.

    Attributes:
        fractions: Edge fractions.
        n_edges: Edges kept at each fraction.
        values: ``{method: [n_fractions, n_examples]}`` metric with the circuit kept.
        random: ``[n_random, n_fractions, n_examples]`` the same for random circuits.
        full: Metric of the unablated model per example.
        empty: Metric with every edge ablated, per example.
        method: Edge ablation used (``"counterfactual"``, ``"mean"``, ``"zero"``).
        n_boot, confidence, seed: Bootstrap settings.
        label, seconds, info: As every result.

    Examples:
        >>> from tl_unlearn import FaithfulnessCurves
        >>> import numpy as np
        >>> v = np.array([[0.0, 1.0], [1.0, 2.0]])
        >>> fc = FaithfulnessCurves([0.5, 1.0], [1, 2], {"m": v}, np.stack([v]),
        ...                         np.array([1.0, 2.0]), np.array([0.0, 1.0]), n_boot=50)
        >>> fc.faithfulness("m").tolist()
        [0.0, 1.0]
        >>> round(fc.areas()["m"]["cpr"], 3)
        0.25
    """

    fractions: list[float]
    n_edges: list[int]
    values: dict[str, np.ndarray]
    random: np.ndarray
    full: np.ndarray
    empty: np.ndarray
    method: str = "counterfactual"
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    label: str = "faithfulness"
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("faithfulness",)

    def __post_init__(self) -> None:
        self.values = {k: np.asarray(v, dtype=np.float64) for k, v in self.values.items()}
        self.random = np.asarray(self.random, dtype=np.float64)
        self.full = np.asarray(self.full, dtype=np.float64)
        self.empty = np.asarray(self.empty, dtype=np.float64)
        shape = (len(self.fractions), len(self.full))
        for k, v in self.values.items():
            if v.shape != shape:
                raise ValueError(f"values[{k!r}] has shape {v.shape}; expected {shape}.")
        if self.full.mean() == self.empty.mean():
            raise ValueError(
                "The full and the empty circuit have the same mean metric: "
                "faithfulness is undefined (is the corruption changing anything?)."
            )

    def faithfulness(self, method: str) -> np.ndarray:
        """``f`` at every fraction (``method="random"``: the mean over random circuits)."""
        if method == "random":
            return _faithfulness(self.random, self.full, self.empty).mean(0)
        return _faithfulness(self.values[method], self.full, self.empty)

    def _replicates(self) -> dict[str, np.ndarray]:
        """Bootstrap replicates of ``f``: ``{method: [n_boot, n_fractions]}``, paired."""
        idx = bootstrap_indices(len(self.full), n_boot=self.n_boot, seed=self.seed)[0]
        full, empty = self.full[idx], self.empty[idx]  # [n_boot, n]
        out = {}
        for name, v in {**self.values, "random": None}.items():
            if v is None:
                r = self.random[:, :, idx]  # [n_random, n_fractions, n_boot, n]
                f = (r.mean(-1) - empty.mean(-1)) / (full.mean(-1) - empty.mean(-1))
                out[name] = f.mean(0).T
            else:
                vv = v[:, idx]  # [n_fractions, n_boot, n]
                out[name] = ((vv.mean(-1) - empty.mean(-1)) / (full.mean(-1) - empty.mean(-1))).T
        return out

    def areas(self) -> dict[str, dict[str, float]]:
        """Per method (and ``"random"``): CPR and CMD with intervals, and the paired
        difference to random (``cpr_vs_random``: CPR - random's CPR; ``beats_random`` when
        its interval lies above 0)."""
        x = np.asarray(self.fractions, dtype=np.float64)
        reps = self._replicates()
        rand_cpr, _ = _areas(reps["random"], x)
        out = {}
        for name in [*self.values, "random"]:
            cpr, cmd = _areas(self.faithfulness(name), x)
            b_cpr, b_cmd = _areas(reps[name], x)
            row = {"cpr": float(cpr), "cpr_low": 0.0, "cpr_high": 0.0, "cmd": float(cmd)}
            n = len(self.full)
            row["cpr_low"], row["cpr_high"] = bootstrap_interval(b_cpr, cpr, n, self.confidence)
            row["cmd_low"], row["cmd_high"] = bootstrap_interval(b_cmd, cmd, n, self.confidence)
            if name != "random":
                diff = b_cpr - rand_cpr
                row["cpr_vs_random"] = float(cpr - _areas(self.faithfulness("random"), x)[0])
                row["cpr_vs_random_low"], row["cpr_vs_random_high"] = bootstrap_interval(
                    diff, row["cpr_vs_random"], n, self.confidence
                )
                row["beats_random"] = bool(row["cpr_vs_random_low"] > 0)
            out[name] = {k: (float(v) if not isinstance(v, bool) else v) for k, v in row.items()}
        return out

    def intervals(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap interval ``(low, high)`` of ``f`` at every fraction."""
        reps = self._replicates()[method]
        return pointwise_intervals(
            reps,
            self.confidence,
            values=self.faithfulness(method),
            n_units=len(self.full),
        )

    def to_dataframe(self) -> Any:
        """One row per method: CPR and CMD with intervals, and the comparison with random."""
        import pandas as pd

        return pd.DataFrame([{"method": k, **v} for k, v in self.areas().items()])

    def to_dict(self) -> dict[str, Any]:
        return {
            "fractions": list(self.fractions),
            "n_edges": list(self.n_edges),
            "values": {k: v.tolist() for k, v in self.values.items()},
            "random": self.random.tolist(),
            "full": self.full.tolist(),
            "empty": self.empty.tolist(),
            "method": self.method,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
            "seed": self.seed,
            "label": self.label,
            "seconds": self.seconds,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FaithfulnessCurves:
        return cls(
            list(d["fractions"]),
            list(d["n_edges"]),
            {k: np.array(v) for k, v in d["values"].items()},
            np.array(d["random"]),
            np.array(d["full"]),
            np.array(d["empty"]),
            d.get("method", "counterfactual"),
            int(d.get("n_boot", 1000)),
            float(d.get("confidence", 0.95)),
            int(d.get("seed", 0)),
            d.get("label", "faithfulness"),
            float(d.get("seconds", 0.0)),
            dict(d.get("info", {})),
        )

    def figure(self, kind: Literal["faithfulness"] = "faithfulness") -> go.Figure:
        """Faithfulness against the fraction of edges kept (log x), one line per method
        with its bootstrap band, random circuits as a grey band (min to max over seeds)."""
        self._check_kind(kind)
        x = list(self.fractions)
        fig = go.Figure()
        per_seed = _faithfulness(self.random, self.full, self.empty)  # [n_random, n_fractions]
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=list(per_seed.max(0)) + list(per_seed.min(0))[::-1],
                fill="toself",
                fillcolor="rgba(128,128,128,0.25)",
                line={"width": 0},
                name="random circuits",
                hoverinfo="skip",
            )
        )
        areas = self.areas()
        for i, name in enumerate(self.values):
            colour = OTHER_COLOURS[i % len(OTHER_COLOURS)]
            f = self.faithfulness(name)
            lo, hi = self.intervals(name)
            a = areas[name]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=f.tolist(),
                    mode="lines+markers",
                    line={"color": colour},
                    name=f"{name} (CPR {a['cpr']:.3f} [{a['cpr_low']:.3f}, {a['cpr_high']:.3f}])",
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": (hi - f).tolist(),
                        "arrayminus": (f - lo).tolist(),
                        "color": colour,
                    },
                )
            )
        fig.add_hline(y=1.0, line_dash="dot", line_color="black")
        fig.update_layout(
            title=f"{self.label}: f(C) = (m(C) - m(empty)) / (m(full) - m(empty))"
            f" ({self.method} ablation)",
            xaxis_type="log",
            xaxis_title="fraction of edges kept",
            yaxis_title="faithfulness",
            template="plotly_white",
        )
        return fig


@torch.no_grad()
def _metric_values(
    model: Any, clean: TokenDataset, hooks: list, metric: PatchMetric, batch_size: int
) -> np.ndarray:
    """Per-example metric of ``model`` on ``clean`` under ``hooks``."""
    device = model_device(model)
    out = []
    with model.hooks(fwd_hooks=hooks):
        for view in clean.views(batch_size):
            out.append(
                per_example_metric(metric, model(view.tokens.to(device)), view).double().cpu()
            )
    return torch.cat(out).numpy()


def faithfulness_curves(
    model: Any,
    clean: TokenDataset,
    corrupted: TokenDataset,
    scores: Mapping[str, Circuit],
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    metric: PatchMetric = answer_logit_diff,
    method: EdgeMethod = "counterfactual",
    reference: TokenDataset | None = None,
    n_random: int = 3,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 8,
    progress: bool = False,
) -> FaithfulnessCurves:
    """Faithfulness of each method's top-edge circuits at every edge fraction.

    Args:
        model: A HookedTransformer.
        clean: Paired evaluation data (rows pair up, equal lengths).
        corrupted: As ``clean``.
        scores: ``{name: Circuit with scores}`` (from :func:`~tl_unlearn.circuits.attribution.edge_attribution`,
            ``NodeScores.edge_scores()``, or a loaded EAP-IG file).
        fractions: Edge fractions in increasing order, in (0, 1].
        metric: ``metric(logits, batch)``, one value per example.
        method: Ablation of the edges outside the circuit.
        reference: Data for the means of ``method="mean"``.
        n_random: Random circuits per size (the band).
        seed: Seed of the random circuits and the bootstrap.
        n_boot: Bootstrap resamples.
        batch_size: Examples per pass.
        progress: Show a progress bar.

    Returns:
        :class:`FaithfulnessCurves` (``areas()``, ``to_dataframe()``, ``figure()``).

    Raises:
        ValueError: Bad fractions, a circuit without scores or of another shape, unpaired
            data; before any model pass.

    Examples:
        >>> from tl_unlearn import faithfulness_curves
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.circuits.attribution import edge_attribution
        >>> from tl_unlearn.interventions.counterfactual import counterfactual_pair
        >>> from tl_unlearn.data.tasks import ioi_task
        >>> m = load_tiny_model()
        >>> clean, corrupted = counterfactual_pair(ioi_task(m.tokenizer, n=40), m.tokenizer,
        ...                                        max_examples=6)
        >>> eap = edge_attribution(m, clean, corrupted)
        >>> fc = faithfulness_curves(m, clean, corrupted, {"EAP": eap}, fractions=[0.1, 1.0],
        ...                          n_random=1, n_boot=50)
        >>> round(float(fc.faithfulness("EAP")[-1]), 4)
        1.0
    """
    t0 = time.perf_counter()
    fr = [float(f) for f in fractions]
    if not fr or any(not 0 < f <= 1 for f in fr) or sorted(fr) != fr:
        raise ValueError(f"fractions must be increasing numbers in (0, 1], got {list(fractions)}.")
    if not scores:
        raise ValueError("scores is empty: give {name: Circuit with edge scores}.")
    clean, corrupted = paired_datasets(clean, corrupted)
    template = Circuit.of_model(model)
    for name, c in scores.items():
        if not isinstance(c, Circuit) or c.scores is None:
            raise ValueError(f"scores[{name!r}] must be a Circuit with edge scores.")
        c.check_model(model)
    n_real = template.n_real_edges
    n_edges = [max(1, round(f * n_real)) for f in fr]
    prepared = prepare_edge_values(
        model, method, clean=clean, corrupted=corrupted, reference=reference, batch_size=batch_size
    )
    rankings = {
        **dict(scores),
        **{f"random{s}": random_scores(template, seed + s) for s in range(n_random)},
    }
    bar = tqdm(total=len(rankings) * len(fr) + 2, desc="faithfulness", disable=not progress)

    def run(circuit: Circuit) -> np.ndarray:
        iv = edge_ablation(model, circuit, method, prepared=prepared)
        bar.update()
        return _metric_values(model, clean, list(iv), metric, batch_size)

    full = run(template.copy(in_graph=template.real_edges()))
    empty = run(template)
    values = {name: np.stack([run(c.top(n)) for n in n_edges]) for name, c in rankings.items()}
    bar.close()
    random = (
        np.stack([values.pop(f"random{s}") for s in range(n_random)])
        if n_random
        else np.zeros((0, len(fr), len(full)))
    )
    return FaithfulnessCurves(
        fr,
        n_edges,
        values,
        random,
        full,
        empty,
        method,
        n_boot,
        seed=seed,
        seconds=time.perf_counter() - t0,
        info={
            "n_examples": len(clean),
            "n_real_edges": n_real,
            "metric": getattr(metric, "__name__", "metric"),
        },
    )


def circuit_selectivity(
    model: Any,
    data: Mapping[str, TokenDataset],
    scores: Circuit,
    n_edges: Sequence[int],
    *,
    reference: TokenDataset,
    metric: Any = "top1",
    **kwargs: Any,
) -> Any:
    """Forget/retain selectivity of removing a method's top circuits: for each size, the
    circuit's own edges are mean-ablated (``ablate="inside"``) and the forget and retain
    drops are measured with intervals (a :class:`~tl_unlearn.metrics.selectivity.SelectivityCurve`
    over edge counts).

    Args:
        model: A HookedTransformer.
        data: ``{"forget": ..., "retain": ...}`` token datasets.
        scores: A Circuit with edge scores.
        n_edges: Circuit sizes, increasing.
        reference: Data for the means (e.g. the forget fit split).
        metric: The drop metric, as in :func:`~tl_unlearn.selectivity_curve`
            (e.g. ``{"forget": "logit_diff", "retain": "top1"}``).
        **kwargs: Passed to :func:`~tl_unlearn.selectivity_curve`.
    """
    from tl_unlearn.metrics.selectivity import selectivity_curve

    prepared = prepare_edge_values(model, "mean", reference=reference)
    return selectivity_curve(
        model,
        data,
        lambda k: edge_ablation(
            model,
            scores.top(int(k)),
            "mean",
            ablate="inside",
            prepared=prepared,
            name=f"{scores.label} top {int(k)}",
        ),
        list(n_edges),
        name=scores.label,
        metric=metric,
        level_name="edges removed",
        **kwargs,
    )
