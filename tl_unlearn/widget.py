"""A live ablation widget for Jupyter: toggle heads / MLPs, see forget and retain change.

:class:`AblationWidget` holds the state (the selected components) and re-evaluates forget and
retain top-1 and loss on a small cached batch after every change. It works headless: drive it
from code with :meth:`toggle` / :meth:`select` and read :attr:`current`. In a notebook,
displaying it (or calling :meth:`widget`) builds an ipywidgets grid of layer x head toggles
(plus an MLP column), a plotly ``FigureWidget`` bar chart of the numbers, the selectivity point
(retain drop, forget drop), and buttons that export the selection as an intervention object
(:attr:`exported`) and as Python code to paste.

Needs ``ipywidgets`` and ``anywidget`` only for the visual part (``pip install
tl_unlearn[widget]``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from tl_unlearn.circuits.maps import Method, component_intervention, component_means
from tl_unlearn.core.checks import check_indices, check_layer
from tl_unlearn.core.components import Component, component_name
from tl_unlearn.data.datasets import TokenDataset, require_forget_retain
from tl_unlearn.interventions import Intervention
from tl_unlearn.metrics.evaluation import Evaluation, evaluate
from tl_unlearn.metrics.names import MetricFn, MetricSpec, check_metric_name, resolve_metric

__all__ = ["AblationWidget"]

BARS_WIDTH, POINT_WIDTH = 520, 420  # px; side by side in a 1,000 px notebook cell


def point_range(value: float) -> list[float]:
    """An axis range for a relative drop: [-0.1, 1.05], widened to hold ``value`` (drops can
    be negative, or above 1 for losses) with a margin.

    Examples:
        >>> point_range(0.3), point_range(-0.7)
        ([-0.1, 1.05], [-0.8, 1.05])
    """
    if value != value:  # NaN: keep the default range
        return [-0.1, 1.05]
    return [round(min(-0.1, value - 0.1), 6), round(max(1.05, value + 0.1), 6)]


class AblationWidget:
    """Interactive component ablation on a small cached forget/retain batch.

    Args:
        model: The model.
        data: ``{"forget": ..., "retain": ...}`` token data (kept small: it is evaluated on
            every click).
        method: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: Reference data for mean or resample ablation.
        include_mlp: A toggle per MLP beside the heads.
        batch_size: Sequences per forward pass.
        metric: The metric of the drops (a name, ``metric(logits, batch)``, or one per dataset).
        metrics: User metrics by name.

    Examples:
        >>> from tl_unlearn import AblationWidget
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, seq_len=32, max_tokens=200)
        >>> w = AblationWidget(model, data)
        >>> ev = w.toggle(1, 2)            # ablate L1H2
        >>> w.selection
        [(1, 2)]
        >>> print(w.code())
        from tl_unlearn.circuits.maps import component_intervention
        intervention = component_intervention(model, [(1, 2)], method='zero')
    """

    def __init__(
        self,
        model: Any,
        data: Mapping[str, TokenDataset],
        *,
        method: Method = "zero",
        reference: TokenDataset | None = None,
        include_mlp: bool = True,
        batch_size: int = 8,
        metric: MetricSpec | MetricFn | Mapping[str, str | MetricFn] = "top1",
        metrics: Mapping[str, MetricFn] | None = None,
    ) -> None:
        require_forget_retain(data, "AblationWidget")
        metric, metrics = resolve_metric(metric, metrics)
        check_metric_name(metric, custom=metrics)
        self.metrics = metrics
        if method != "zero" and reference is None:
            raise ValueError(f"method={method!r} needs reference data.")
        self.model = model
        self.data = dict(data)
        self.method = method
        self.reference = reference
        self.include_mlp = include_mlp
        self.batch_size = batch_size
        self.metric = metric
        self.original = evaluate(
            model,
            self.data,
            batch_size=batch_size,
            progress=False,
            label="original",
            metrics=metrics,
        )
        self.current: Evaluation = self.original
        self.last_seconds = 0.0
        self.exported: Intervention | None = None
        self._means = component_means(model, reference, batch_size) if method == "mean" else None
        self._selected: set[Component] = set()
        self._ui: dict[str, Any] | None = None

    # ------------------------------------------------------------------ state
    @property
    def selection(self) -> list[Component]:
        """Selected components, sorted (MLP after the heads of its layer)."""
        return sorted(self._selected, key=lambda c: (c[0], c[1] is None, c[1] or 0))

    def _check(self, layer: int, head: int | None) -> Component:
        check_layer(self.model, layer)
        if head is not None:
            check_indices([head], self.model.cfg.n_heads, f"Head (layer {layer})")
        elif not self.include_mlp:
            raise ValueError("This widget was built with include_mlp=False.")
        return (layer, head)

    def toggle(self, layer: int, head: int | None = None) -> Evaluation:
        """Flip one component (``head=None``: the layer's MLP) and re-evaluate."""
        comp = self._check(layer, head)
        self._selected ^= {comp}
        return self._refresh()

    def select(self, components: Iterable[Component]) -> Evaluation:
        """Replace the selection and re-evaluate."""
        comps = {self._check(int(l), None if h is None else int(h)) for l, h in components}
        self._selected = comps
        return self._refresh()

    def clear(self) -> Evaluation:
        return self.select([])

    def intervention(self) -> Intervention:
        """The current selection as an intervention."""
        return component_intervention(
            self.model, self.selection, self.method, self.reference, means=self._means
        )

    def code(self) -> str:
        """Python code that rebuilds the current selection as an intervention."""
        ref = ", reference=reference" if self.method != "zero" else ""
        return (
            "from tl_unlearn.circuits.maps import component_intervention\n"
            f"intervention = component_intervention(model, {self.selection!r}, "
            f"method={self.method!r}{ref})"
        )

    def export(self) -> Intervention:
        """Store the current selection as an intervention in :attr:`exported` and return it."""
        self.exported = self.intervention()
        return self.exported

    @property
    def numbers(self) -> dict[str, dict[str, float]]:
        """Shown numbers per dataset: top-1, loss and the drop metric (``metric``), original
        and current, and the relative drop of the metric."""
        drop = self.current.relative_drop(self.original, self.metric)
        return {
            name: {
                "top1": self.current[name].accuracy[1],
                "loss": self.current[name].loss,
                "metric": self.current.metric(name, self.metric),
                "original_metric": self.original.metric(name, self.metric),
                "original_top1": self.original[name].accuracy[1],
                "original_loss": self.original[name].loss,
                "drop": drop[name],
            }
            for name in ("forget", "retain")
        }

    def _refresh(self) -> Evaluation:
        t0 = time.perf_counter()
        if self._selected:
            self.current = evaluate(
                self.model,
                self.data,
                self.intervention(),
                batch_size=self.batch_size,
                progress=False,
                metrics=self.metrics,
            )
        else:
            self.current = self.original
        self.last_seconds = time.perf_counter() - t0
        if self._ui is not None:
            self._update_ui()
        return self.current

    # ------------------------------------------------------------------ UI
    def widget(self) -> Any:
        """Build (once) and return the ipywidgets UI."""
        if self._ui is None:
            self._ui = self._build_ui()
            self._update_ui()
        return self._ui["root"]

    def _ipython_display_(self) -> None:  # pragma: no cover - needs a notebook front end
        from IPython.display import display

        display(self.widget())

    def _build_ui(self) -> dict[str, Any]:
        import ipywidgets as w
        import plotly.graph_objects as go

        cfg = self.model.cfg
        buttons: dict[Component, Any] = {}
        rows = []
        for l in range(cfg.n_layers):
            row = [w.HTML(f"<b>L{l}</b>", layout=w.Layout(width="40px"))]
            comps: list[Component] = [(l, h) for h in range(cfg.n_heads)]
            if self.include_mlp:
                comps.append((l, None))
            for comp in comps:
                b = w.ToggleButton(
                    value=comp in self._selected,
                    description=component_name(comp),
                    layout=w.Layout(width="72px"),
                )
                b.observe(self._on_toggle(comp), names="value")
                buttons[comp] = b
                row.append(b)
            rows.append(w.HBox(row))
        # fixed widths that fit a notebook cell side by side (~1,000 px), wrapping below that
        # top-1 (a fraction, left axis) and loss (nats per token, right axis) on their own
        # axes: on one axis a loss of 3 leaves top-1 bars of 0.3 unreadable
        bars = go.FigureWidget(
            layout={
                "title": "top-1 and loss",
                "barmode": "group",
                "height": 320,
                "width": BARS_WIDTH,
                "autosize": False,
                "margin": {"l": 50, "r": 50, "t": 50, "b": 50},
                "yaxis": {"title": "top-1", "range": [0, 1]},
                "yaxis2": {
                    "title": "loss (nats)",
                    "overlaying": "y",
                    "side": "right",
                    "rangemode": "tozero",
                    "showgrid": False,
                },
                "legend": {"orientation": "h", "y": -0.2},
                "template": "plotly_white",
            }
        )
        colours = {"original": "#636efa", "current": "#ef553b"}
        for axis, x in (
            ("y", ["forget top-1", "retain top-1"]),
            ("y2", ["forget loss", "retain loss"]),
        ):
            for kind in ("original", "current"):
                bars.add_bar(
                    name=kind,
                    x=x,
                    y=[0, 0],
                    yaxis=axis,
                    offsetgroup=kind,
                    marker_color=colours[kind],
                    showlegend=axis == "y",
                    legendgroup=kind,
                )
        point = go.FigureWidget(
            layout={
                "title": "selectivity point",
                "height": 320,
                "width": POINT_WIDTH,
                "autosize": False,
                "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
                "xaxis_title": "retain drop",
                "yaxis_title": "forget drop",
                "showlegend": False,
                "template": "plotly_white",
            }
        )
        # the diagonal: points above it hurt the forget set more than the retain set
        point.add_scatter(
            x=[-1, 2],
            y=[-1, 2],
            mode="lines",
            name="not selective",
            line={"dash": "dot", "color": "#999"},
            hoverinfo="skip",
        )
        point.add_scatter(x=[0], y=[0], mode="markers", marker={"size": 14}, name="selection")
        status = w.HTML()
        code = w.Textarea(layout=w.Layout(width="100%", height="60px"))
        export = w.Button(description="export intervention")
        show_code = w.Button(description="show code")
        export.on_click(lambda _: self.export())
        show_code.on_click(lambda _: setattr(code, "value", self.code()))
        figures = w.HBox([bars, point], layout=w.Layout(flex_flow="row wrap", width="100%"))
        root = w.VBox([w.VBox(rows), figures, status, w.HBox([export, show_code]), code])
        return {
            "root": root,
            "buttons": buttons,
            "bars": bars,
            "point": point,
            "status": status,
            "code": code,
        }

    def _on_toggle(self, comp: Component) -> Any:
        def handler(change: dict[str, Any]) -> None:
            if change["new"] != (comp in self._selected):
                self.toggle(*comp)

        return handler

    def _update_ui(self) -> None:
        ui = self._ui
        assert ui is not None
        n = self.numbers
        with ui["bars"].batch_update():  # traces: top-1 original, current; loss the same
            ui["bars"].data[0].y = [n["forget"]["original_top1"], n["retain"]["original_top1"]]
            ui["bars"].data[1].y = [n["forget"]["top1"], n["retain"]["top1"]]
            ui["bars"].data[2].y = [n["forget"]["original_loss"], n["retain"]["original_loss"]]
            ui["bars"].data[3].y = [n["forget"]["loss"], n["retain"]["loss"]]
        x, y = n["retain"]["drop"], n["forget"]["drop"]
        with ui["point"].batch_update():
            ui["point"].data[1].x = [x]
            ui["point"].data[1].y = [y]
            # explicit ranges that always hold the point (autorange kept stale ranges)
            ui["point"].layout.xaxis.range = point_range(x)
            ui["point"].layout.yaxis.range = point_range(y)
        for comp, b in ui["buttons"].items():
            if b.value != (comp in self._selected):
                b.value = comp in self._selected
        labels = ", ".join(component_name(c) for c in self.selection) or "nothing"
        ui["status"].value = (
            f"ablated ({self.method}): {labels} · forget drop "
            f"{n['forget']['drop']:.3f}, retain drop {n['retain']['drop']:.3f}"
            f" · {self.last_seconds * 1000:.0f} ms"
        )
