"""Which components carry the forget task? Component selectivity maps and a greedy circuit.

:func:`component_selectivity_map` ablates each component on its own (every attention head
through ``hook_z``, or every MLP layer through ``hook_mlp_out``; zero, mean or resample) and
measures the relative drop on forget and retain. All single-component interventions are
evaluated in one streaming pass with
:func:`~tl_unlearn.metrics.evaluation.evaluate_many`: per batch the original model runs
once with its activations cached; a head ablation resumes from its layer's cached ``hook_z``
(recomputing only the output projection, that layer's MLP and the later layers) and an
MLP-layer ablation from the cached ``hook_mlp_out`` (only the later layers).

:func:`greedy_circuit` grows a set of components, most selective first, until a target forget
drop is reached or the retain drop would exceed a limit, and returns the set as an
intervention with its selectivity curve.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import plotly.graph_objects as go
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import check_positive_int
from tl_unlearn.core.components import Component, component_name
from tl_unlearn.core.results import Result
from tl_unlearn.data.datasets import TokenDataset, require_forget_retain
from tl_unlearn.interventions import Intervention
from tl_unlearn.interventions.ablation import AblationMethod, ablation, activation_means
from tl_unlearn.metrics.evaluation import Evaluation, ForgetRetainDrops, evaluate, evaluate_many
from tl_unlearn.metrics.names import (
    MetricFn,
    MetricSpec,
    check_metric_name,
    describe_metric,
    resolve_metric,
)
from tl_unlearn.metrics.selectivity import SelectivityCurve

__all__ = [
    "ComponentMap",
    "component_intervention",
    "component_list",
    "component_selectivity_map",
    "greedy_circuit",
]

Method = AblationMethod


def component_means(
    model: Any, reference: TokenDataset, batch_size: int = 8, *, per_position: bool = False
) -> dict[str, Any]:
    """Means of every ``hook_z`` and ``hook_mlp_out`` on ``reference`` (one pass), pooled
    or per position."""
    kinds = ("z",) if model.cfg.attn_only else ("z", "mlp_out")  # attention-only: no MLPs
    names = [get_act_name(n, l) for l in range(model.cfg.n_layers) for n in kinds]
    return activation_means(
        model, reference, names, batch_size=batch_size, per_position=per_position
    )


def component_intervention(
    model: Any,
    components: Sequence[Component],
    method: Method = "zero",
    reference: TokenDataset | None = None,
    *,
    name: str | None = None,
    means: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Intervention:
    """One intervention ablating heads ``(layer, head)`` and MLP layers ``(layer, None)``.

    For ``method="mean"``, pass ``means`` from :func:`component_means` to skip recomputing
    them (useful when building many interventions on the same reference data).
    """
    heads = [(l, h) for l, h in components if h is not None]
    mlps = [get_act_name("mlp_out", l) for l, h in components if h is None]
    label = name or f"{method}({', '.join(component_name(c) for c in components)})"
    if not components:
        return Intervention(label)
    if method == "zero":  # reference-data options (per_position, seed...) do not apply
        return ablation(model, "zero", heads=heads or None, hook_points=mlps or None, name=label)
    if method == "mean":
        kwargs["means"] = means
    return ablation(
        model, method, reference, heads or None, hook_points=mlps or None, name=label, **kwargs
    )


@dataclass
class ComponentMap(ForgetRetainDrops, Result):
    """Forget and retain drop of ablating each component alone.

    Attributes:
        components: ``(layer, head)`` or ``(layer, None)`` (MLP), in evaluation order.
        original: Evaluation of the unmodified model.
        evaluations: One evaluation per component.
        metric: Metric of the drops (one name, or one per dataset).
        method: Ablation method used.
        n_layers, n_heads: Model shape, for the heatmaps.
        info: Free-form details (JSON-friendly).
        label: What the map is of (default ``"{method} ablation map"``).
        seconds: Wall time of the map (means included).
        metrics: The user metric functions the map was computed with (not saved; give them
            again to :func:`greedy_circuit` after loading a map that uses one).

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn import component_selectivity_map
        >>> cmap = component_selectivity_map(m, d, [(1, 0), (1, None)], progress=False)
        >>> len(cmap.components), cmap.forget_drop.shape
        (2, (2,))
    """

    components: list[Component]
    original: Evaluation
    evaluations: list[Evaluation]
    metric: MetricSpec = "top1"
    method: str = "zero"
    n_layers: int = 0
    n_heads: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    seconds: float = 0.0
    metrics: dict[str, MetricFn] = field(default_factory=dict, repr=False, compare=False)
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("difference", "forget", "retain", "scatter")

    def __post_init__(self) -> None:
        self.label = self.label or f"{self.method} ablation map"
        if len(self.components) != len(self.evaluations):
            raise ValueError("one evaluation per component is needed")
        self.original.relative_drop(self.original, self.metric)  # raises if a baseline is 0

    @property
    def labels(self) -> list[str]:
        return [component_name(c) for c in self.components]

    @property
    def selectivity(self) -> np.ndarray:
        """``forget_drop - retain_drop`` per component."""
        return self.forget_drop - self.retain_drop

    def ranked(
        self, by: Literal["forget", "retain", "selectivity"] = "selectivity"
    ) -> list[Component]:
        """Components, best first, by forget drop, retain drop or selectivity."""
        values = {
            "forget": self.forget_drop,
            "retain": self.retain_drop,
            "selectivity": self.selectivity,
        }[by]
        order = np.argsort(-values, kind="stable")
        return [self.components[i] for i in order]

    def head_grid(self, values: np.ndarray) -> np.ndarray:
        """Values of head components as a ``[layer, head]`` grid (NaN where not measured)."""
        grid = np.full((self.n_layers, self.n_heads), np.nan)
        for (l, h), v in zip(self.components, values):
            if h is not None:
                grid[l, h] = v
        return grid

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            {
                "component": self.labels,
                "forget_drop": self.forget_drop,
                "retain_drop": self.retain_drop,
                "selectivity": self.selectivity,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "components": [list(c) for c in self.components],
            "original": self.original.to_dict(),
            "evaluations": [e.to_dict() for e in self.evaluations],
            "metric": self.metric,
            "method": self.method,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "info": self.info,
            "label": self.label,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentMap:
        return cls(
            [(c[0], c[1]) for c in d["components"]],
            Evaluation.from_dict(d["original"]),
            [Evaluation.from_dict(e) for e in d["evaluations"]],
            d["metric"],
            d["method"],
            d["n_layers"],
            d["n_heads"],
            dict(d.get("info", {})),
            d.get("label", ""),
            float(d.get("seconds", 0.0)),
        )

    def figure(
        self, kind: Literal["difference", "forget", "retain", "scatter"] = "difference"
    ) -> go.Figure:
        """Layer x head heatmap of the forget drop, the retain drop or their difference
        (``kind="forget"``, ``"retain"``, ``"difference"``), or ``kind="scatter"``: forget
        drop vs retain drop per component, hover labels ``L{l}H{h}``."""
        self._check_kind(kind)
        if kind == "scatter":
            return self._scatter()
        values = {
            "forget": self.forget_drop,
            "retain": self.retain_drop,
            "difference": self.selectivity,
        }[kind]
        grid = self.head_grid(values)
        text = [[component_name((l, h)) for h in range(self.n_heads)] for l in range(self.n_layers)]
        fig = go.Figure(
            go.Heatmap(
                z=grid,
                text=text,
                colorscale="RdBu",
                zmid=0,
                hovertemplate="%{text}: %{z:.4f}<extra></extra>",
                colorbar={"title": "drop"},
            )
        )
        title = {
            "forget": "forget drop",
            "retain": "retain drop",
            "difference": "forget drop - retain drop",
        }[kind]
        fig.update_layout(
            title=f"Ablating each head ({self.method}): {title} ({describe_metric(self.metric)})",
            xaxis_title="head",
            yaxis_title="layer",
            template="plotly_white",
        )
        return fig

    def _scatter(self) -> go.Figure:
        fig = go.Figure(
            go.Scatter(
                x=self.retain_drop.tolist(),
                y=self.forget_drop.tolist(),
                mode="markers",
                text=self.labels,
                hovertemplate="%{text}<br>retain %{x:.4f}<br>forget %{y:.4f}",
                marker={"color": self.selectivity.tolist(), "colorscale": "RdBu", "cmid": 0},
            )
        )
        fig.update_layout(
            title=f"Per-component forget vs retain drop ({describe_metric(self.metric)})",
            xaxis_title="retain drop",
            yaxis_title="forget drop",
            template="plotly_white",
        )
        return fig


def component_list(
    n_layers: int, n_heads: int, which: str, *, attn_only: bool = False
) -> list[Component]:
    """Every ``(layer, head)`` (``which="heads"``), every ``(layer, None)`` MLP (``"mlp"``)
    or both, layer by layer (an attention-only model has no MLP).

    Examples:
        >>> component_list(2, 2, "both")
        [(0, 0), (0, 1), (0, None), (1, 0), (1, 1), (1, None)]
    """
    if which not in ("heads", "mlp", "both"):
        raise ValueError(f"components must be 'heads', 'mlp', 'both' or a list, got {which!r}")
    comps: list[Component] = []
    for layer in range(n_layers):
        if which in ("heads", "both"):
            comps += [(layer, h) for h in range(n_heads)]
        if which in ("mlp", "both") and not attn_only:
            comps.append((layer, None))
    return comps


def component_selectivity_map(
    model: Any,
    data: Mapping[str, TokenDataset],
    components: Literal["heads", "mlp", "both"] | Sequence[Component] = "heads",
    method: Method = "zero",
    reference: TokenDataset | None = None,
    *,
    metric: MetricSpec | MetricFn | Mapping[str, str | MetricFn] = "top1",
    metrics: Mapping[str, MetricFn] | None = None,
    batch_size: int = 8,
    share_prefix: bool = True,
    progress: bool = True,
    **kwargs: Any,
) -> ComponentMap:
    """Ablate each component alone and measure the forget and retain drop.

    Args:
        model: The model.
        data: Token datasets with ``"forget"`` and ``"retain"`` (small cached batches work).
        components: ``"heads"`` (every head), ``"mlp"`` (every MLP layer), ``"both"``, or an
            explicit list of ``(layer, head)`` / ``(layer, None)``.
        method: ``"zero"``, ``"mean"`` or ``"resample"`` (the latter two need ``reference``).
        reference: Reference data for mean / resample ablation.
        metric: Metric of the drops: a name, a user metric ``metric(logits, batch)``, or a
            mapping dataset -> either (``{"forget": logit_diff, "retain": "top1"}``).
        metrics: More user metrics to compute (reported, not used for the drops).
        batch_size: Sequences per forward pass.
        share_prefix: Reuse the original forward pass up to each ablated component
            (HookedTransformer); False runs a full forward pass per component.
        progress: Progress bar.
        **kwargs: Passed to the ablation (``per_position``, ``seed``).

    Examples:
        >>> from tl_unlearn import component_selectivity_map
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, seq_len=32, max_tokens=300)
        >>> cmap = component_selectivity_map(model, data, progress=False)
        >>> len(cmap.components), cmap.figure().data[0].z.shape
        (8, (2, 4))
    """
    require_forget_retain(data, "component_selectivity_map()")
    metric, metrics = resolve_metric(metric, metrics)
    check_metric_name(metric, custom=metrics)
    cfg = model.cfg
    if isinstance(components, str):
        comps = component_list(cfg.n_layers, cfg.n_heads, components)
    else:
        comps = [(int(l), None if h is None else int(h)) for l, h in components]
    if method not in ("zero", "mean", "resample"):
        raise ValueError(f"Unknown method {method!r}; choose 'zero', 'mean' or 'resample'.")
    if method != "zero" and reference is None:
        raise ValueError(f"method={method!r} needs reference data.")
    t0 = time.perf_counter()
    means = (
        component_means(
            model, reference, batch_size, per_position=kwargs.get("per_position", False)
        )
        if method == "mean"
        else None
    )
    ivs = [
        component_intervention(model, [c], method, reference, means=means, **kwargs) for c in comps
    ]
    results = evaluate_many(
        model,
        data,
        [[], *ivs],
        batch_size=batch_size,
        share_prefix=share_prefix,
        progress=progress,
        labels=["original", *(iv.name for iv in ivs)],
        metrics=metrics,
    )
    return ComponentMap(
        comps,
        results[0],
        results[1:],
        metric,
        method,
        cfg.n_layers,
        cfg.n_heads,
        seconds=time.perf_counter() - t0,
        metrics=metrics,
    )


def greedy_circuit(
    model: Any,
    data: Mapping[str, TokenDataset],
    cmap: ComponentMap,
    *,
    target_forget_drop: float = 0.5,
    max_retain_drop: float = 0.1,
    max_components: int = 32,
    reference: TokenDataset | None = None,
    batch_size: int = 8,
    progress: bool = False,
    metrics: Mapping[str, MetricFn] | None = None,
    **kwargs: Any,
) -> tuple[Intervention, SelectivityCurve]:
    """Grow a circuit from the map's most selective components.

    Components are added in order of selectivity (forget drop minus retain drop on their own).
    After each addition the whole set is evaluated; growth stops when the forget drop reaches
    ``target_forget_drop``, before a component that would push the retain drop above
    ``max_retain_drop``, or at ``max_components``.

    The drops use the map's metric; user metrics come from the map (``cmap.metrics``) or
    ``metrics`` (needed after loading a saved map that uses one).

    Args:
        model: The model.
        data: ``{"forget": ..., "retain": ...}`` token data (the map's data or like it).
        cmap: The component map whose ranking the circuit grows from.
        target_forget_drop: Stop once the forget drop reaches this.
        max_retain_drop: Never add a component that pushes the retain drop above this.
        max_components: At most this many components.
        reference: Reference data for mean or resample ablation (default: the map's method
            needs none for ``"zero"``).
        batch_size: Sequences per forward pass.
        progress: Show a progress bar.
        metrics: User metrics by name, for a map that uses one.
        **kwargs: Passed to the ablation (e.g. ``positions``).

    Returns:
        The circuit as one intervention (``info["components"]``), and its selectivity curve
        (level = number of components).

    Examples:
        >>> from tl_unlearn import greedy_circuit
        >>> from tl_unlearn import component_selectivity_map, load_tiny_model, make_task
        >>> from tl_unlearn.circuits.induction import repeated_random_tokens
        >>> m = load_tiny_model()
        >>> prose = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=100)["retain"]
        >>> data = {"forget": repeated_random_tokens(m, n=2, half_len=10), "retain": prose}
        >>> cmap = component_selectivity_map(m, data, "heads", progress=False)
        >>> iv, curve = greedy_circuit(m, data, cmap, max_components=2)
        >>> 1 <= len(iv.info["components"]) <= 2
        True
    """
    check_positive_int(max_components, "max_components")
    require_forget_retain(data, "greedy_circuit()")
    metrics = {**cmap.metrics, **(metrics or {})}
    check_metric_name(cmap.metric, custom=metrics)
    cmap.original.relative_drop(cmap.original, cmap.metric)  # raises if a baseline is 0
    t0 = time.perf_counter()
    chosen: list[Component] = []
    levels: list[float] = []
    evaluations: list[Evaluation] = []
    for comp in cmap.ranked("selectivity")[:max_components]:
        trial = [*chosen, comp]
        iv = component_intervention(model, trial, cmap.method, reference, **kwargs)
        ev = evaluate(model, data, iv, batch_size=batch_size, progress=progress, metrics=metrics)
        drop = ev.relative_drop(cmap.original, cmap.metric)
        if drop["retain"] > max_retain_drop:
            break  # the next component would cost too much retain performance
        chosen, levels = trial, [*levels, float(len(trial))]
        evaluations.append(ev)
        if drop["forget"] >= target_forget_drop:
            break
    if not chosen:
        raise ValueError("No component could be added without exceeding max_retain_drop.")
    iv = component_intervention(
        model, chosen, cmap.method, reference, name=f"circuit({len(chosen)} components)", **kwargs
    )
    iv.info["components"] = [component_name(c) for c in chosen]
    curve = SelectivityCurve(
        "greedy circuit",
        levels,
        cmap.original,
        evaluations,
        cmap.metric,
        "components in circuit",
        seconds=time.perf_counter() - t0,
    )
    return iv, curve
