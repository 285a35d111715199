"""A benchmark run's result (:class:`BenchmarkResult`): the scorecard, the curves, the extra
measures and the figures of the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import plotly.graph_objects as go

from tl_unlearn.benchmark.config import BenchmarkConfig
from tl_unlearn.circuits.maps import ComponentMap
from tl_unlearn.core.results import Result
from tl_unlearn.metrics.distances import ActivationDistances
from tl_unlearn.metrics.evaluation import Evaluation
from tl_unlearn.metrics.generation import GenerationBehaviour
from tl_unlearn.metrics.logit_lens import LogitLensDiff
from tl_unlearn.metrics.names import describe_metric
from tl_unlearn.metrics.relearning import DegreeOfRemoval, relearn_figure
from tl_unlearn.metrics.scorecard import Scorecard
from tl_unlearn.metrics.selectivity import RandomBaseline, SelectivityCurve

__all__ = ["BenchmarkResult", "selectivity_scatter"]


@dataclass
class BenchmarkResult(Result):
    """Everything a run produced, typed.

    Attributes:
        config: The run's settings.
        curves: One selectivity curve per method.
        scorecard: The ranked methods.
        timings: Seconds per phase (``total`` included).
        environment: Package versions and machine.
        method_info: Per-method details (levels, fitted state summaries).
        generation: Generation behaviour per method (when ``generation_prompts``).
        original: The original model's evaluation on the eval data.
        random_baselines: Each method's random baseline (see :class:`RandomBaseline`).
        logit_lens: Logit lens of the top-ranked method (when ``extras``).
        activation_distances: Activation distances of the top-ranked method (when ``extras``).
        degree_of_removal: Relearning attack, ZRF (and AIN/completeness with a retrained
            twin) per method and its random baseline (when ``relearn_steps``).
        data: Sequences, tokens and documents of each fit and eval dataset.
        label: ``"benchmark"``.
        seconds: Wall time of the run.

    Examples:
        >>> from tl_unlearn import BenchmarkResult
        >>> from tl_unlearn import BenchmarkConfig, load_tiny_model, run_benchmark
        >>> cfg = BenchmarkConfig(model="tiny", methods=["prune-abs"], eval_tokens=300,
        ...                       fit_tokens=300, seq_len=32, relearn_steps=0, extras=False,
        ...                       baseline_seeds=1)
        >>> result = run_benchmark(cfg, model=load_tiny_model(), output_dir=None, progress=False)
        >>> BenchmarkResult.from_dict(result.to_dict()).scorecard.rows == result.scorecard.rows
        True
    """

    config: BenchmarkConfig
    curves: list[SelectivityCurve]
    scorecard: Scorecard
    timings: dict[str, float]
    environment: dict[str, str]
    method_info: dict[str, dict[str, Any]]
    generation: dict[str, GenerationBehaviour] = field(default_factory=dict)
    original: Evaluation | None = None
    random_baselines: dict[str, RandomBaseline] = field(default_factory=dict)
    logit_lens: LogitLensDiff | None = None
    activation_distances: ActivationDistances | None = None
    degree_of_removal: dict[str, DegreeOfRemoval] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    component_map: ComponentMap | None = None
    label: str = "benchmark"
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("scorecard", "scatter", "relearn")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "config": asdict(self.config)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchmarkResult:
        d = dict(d)
        d.update(d.pop("extras", None) or {})  # results.json written before typed fields
        d["degree_of_removal"] = {  # ... and before DegreeOfRemoval
            name: e
            if "label" in e
            else {
                "label": name,
                "level": e["level"],
                "max_steps": e.get("row", {}).get("relearn_budget", 0),
                **{
                    role: {**e[role], "runs": e[role]["all"]}
                    for role in ("method", "baseline")
                    if role in e
                },
            }
            for name, e in (d.get("degree_of_removal") or {}).items()
        }
        out = super().from_dict(d)  # the config comes back as a dict: rebuilt and checked
        out.config = BenchmarkConfig.from_dict(d["config"])
        return out

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkResult:
        """Load ``results.json`` (or the folder that holds it)."""
        path = Path(path)
        return super().load(path / "results.json" if path.is_dir() else path)

    def figure(self, kind: str = "scorecard") -> go.Figure:
        """``"scorecard"``: the ranked scorecard; ``"scatter"``: forget vs retain drop of
        every point of every method; ``"relearn"``: the relearning attacks (needs
        ``relearn_steps``)."""
        self._check_kind(kind)
        if kind == "scatter":
            return selectivity_scatter(self)
        if kind == "relearn":
            if not self.degree_of_removal:
                raise ValueError("This run has no relearning attack (relearn_steps=0).")
            return relearn_figure(list(self.degree_of_removal.values()))
        return self.scorecard.figure()

    def curve(self, name: str) -> SelectivityCurve:
        for c in self.curves:
            if c.name == name:
                return c
        raise KeyError(f"No curve {name!r}; have {[c.name for c in self.curves]}.")


def selectivity_scatter(result: BenchmarkResult) -> go.Figure:
    """Forget drop vs retain drop of every point of every method (level-free comparison).

    Points above the diagonal hurt the forget set more than the retain set.
    """
    fig = go.Figure()
    top = 0.0
    for c in result.curves:
        f, r = c.forget_drop, c.retain_drop
        top = max(top, float(max(f.max(), r.max())))
        fig.add_trace(
            go.Scatter(
                x=r.tolist(),
                y=f.tolist(),
                mode="lines+markers",
                name=c.name,
                text=[f"{c.level_name}={x:g}" for x in c.x],
                hovertemplate="%{text}<br>retain drop %{x:.3f}<br>forget drop %{y:.3f}",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, top],
            y=[0, top],
            mode="lines",
            name="not selective",
            line={"dash": "dot", "color": "#999"},
        )
    )
    fig.update_layout(
        title=f"Forget vs retain drop ({describe_metric(result.config.metric)})",
        xaxis_title="retain drop",
        yaxis_title="forget drop",
        template="plotly_white",
    )
    return fig
