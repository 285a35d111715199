"""A scorecard comparing several interventions on one forget/retain task.

Each method's row holds its curve's summary with bootstrap intervals (``*_low`` /
``*_high``): the held-out difference at the level chosen on validation sequences (the
number the ranking uses, by its lower bound), the in-sample max difference (biased upward,
shown for reference) and the area. With ``baselines``, a method is also compared with a
random intervention of the same kind and size on the same sequences (a paired difference):
``vs_baseline`` with its interval, and ``beats_baseline`` when the interval lies above 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_unlearn.core.results import Result, dataset_colour
from tl_unlearn.metrics.selectivity import RandomBaseline, SelectivityCurve

__all__ = ["Scorecard"]


#: What each field of a scorecard (and of the report's tables) says, in words with its units.
#: Drops and differences are in the units of the run's metric.
FIELD_LABELS = {
    "held_out_difference": "selectivity, held out (forget drop − retain drop)",
    "validated_level": "level chosen (first half)",
    "vs_baseline": "selectivity − random baseline's",
    "beats_baseline": "beats random?",
    "baseline": "random baseline",
    "max_difference": "best selectivity, all levels",
    "best_level": "level of the best",
    "area_between": "area between drop curves",
    "forget_drop_at_best": "forget drop at best level",
    "retain_drop_at_best": "retain drop at best level",
    "fit_seconds": "fit time (s)",
    "eval_seconds": "evaluation time (s)",
    "js_forget": "JS divergence, forget (nats)",
    "js_retain": "JS divergence, retain (nats)",
    "mia_auc_loss": "membership AUC (loss)",
    "relearn_steps": "relearning steps to win back half",
    "relearn_tokens": "relearning tokens to win back half",
    "relearn_budget": "relearning step budget",
    "relearn_lr": "relearning learning rate",
    "baseline_relearn_steps": "random baseline: relearning steps",
    "baseline_relearn_tokens": "random baseline: relearning tokens",
    "zrf": "ZRF (1 = like a random model)",
    "uds": "unlearning depth (UDS; 1 = as deep as the retrained twin)",
    "predicted_tokens": "predicted tokens",
    "fit_sequences": "fit sequences",
    "fit_documents": "fit documents",
    "loss": "loss (nats/token)",
    "top1": "top-1 accuracy",
    "top1_se": "top-1 standard error",
    "method": "method",
    "topic_frequency": "topic-word frequency (share of generated words)",
    "fluency_perplexity": "perplexity under the original model (ratio to the original's)",
    "distinct_2": "distinct word 2-grams (share)",
    "forget_likeness": "forget-likeness (log-likelihood ratio per token, nats)",
    "ain": "anamnesis index (relearning steps / the retrained twin's)",
    "completeness": "completeness (1 = outputs like the retrained twin's)",
    "mia_auc": "membership AUC",
    "tokens": "tokens",
    "sequences": "sequences",
    "documents": "documents",
}


_PREFIXES = {"baseline_": "random baseline: "}
_SUFFIXES = {"_low": "lower bound", "_high": "upper bound"}


def field_label(name: Any) -> str:
    """A scorecard field in words, with its units (the name itself if it is not a field).

    ``<field>_low`` / ``<field>_high`` are the bounds of its interval and ``baseline_<field>``
    the same measure of the random baseline.

    Examples:
        >>> field_label("held_out_difference")
        'selectivity, held out (forget drop − retain drop)'
        >>> field_label("held_out_difference_low")
        'selectivity, held out (forget drop − retain drop): lower bound'
        >>> field_label("baseline_zrf")
        'random baseline: ZRF (1 = like a random model)'
        >>> field_label("dataset")
        'dataset'
    """
    name = str(name)
    if name in FIELD_LABELS:
        return FIELD_LABELS[name]
    for suffix, words in _SUFFIXES.items():
        if name.endswith(suffix) and name[: -len(suffix)] in FIELD_LABELS:
            return f"{FIELD_LABELS[name[: -len(suffix)]]}: {words}"
    for prefix, words in _PREFIXES.items():
        if name.startswith(prefix) and field_label(name[len(prefix) :]) != name[len(prefix) :]:
            return words + field_label(name[len(prefix) :])
    return name


@dataclass
class Scorecard(Result):
    """One row of numbers per method; ranked by a chosen column (higher is better).

    Attributes:
        rows: One dict of numbers per method (``"method"`` names it).
        rank_by: The column ranked by (higher is better).
        columns: The columns shown first.
        label: Its name.
        seconds: The time the numbers took.

    Examples:
        >>> from tl_unlearn import Scorecard
        >>> sc = Scorecard([{"method": "a", "max_difference": 0.1},
        ...                 {"method": "b", "max_difference": 0.3}])
        >>> sc.ranked().index.tolist()
        ['b', 'a']
    """

    rows: list[dict[str, Any]]
    rank_by: str = "max_difference"
    columns: list[str] = field(default_factory=list)
    label: str = "scorecard"
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("ranked",)

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("A scorecard needs at least one method.")
        if any("method" not in r for r in self.rows):
            raise ValueError("Every scorecard row needs a 'method'.")

    @classmethod
    def from_curves(
        cls,
        curves: Sequence[SelectivityCurve],
        extra: Mapping[str, Mapping[str, Any]] | None = None,
        rank_by: str = "held_out_difference_low",
        baselines: Mapping[str, str | RandomBaseline] | None = None,
    ) -> Scorecard:
        """Rows from selectivity curves (summary with intervals, drops at the best level),
        paired comparisons with baselines, and extra metrics.

        Args:
            curves: One curve per method, all on the same data.
            extra: More columns per method name.
            rank_by: Column to rank by (default: the lower bound of the held-out difference).
            baselines: Method name -> its random baseline: the name of a curve among
                ``curves`` (e.g. ``"prune-random"``), or a :class:`RandomBaseline` (random
                interventions of the same kind and size at the method's validated level,
                several seeds).

        Raises:
            ValueError: If a baseline names no curve.
        """
        by_name = {c.name: c for c in curves}
        for method, base in (baselines or {}).items():
            if method not in by_name or (isinstance(base, str) and base not in by_name):
                raise ValueError(
                    f"Baseline pair {method!r} -> {base!r}: no curve named "
                    f"{method if method not in by_name else base!r}; curves are "
                    f"{sorted(by_name)}."
                )
        rows = []
        for c in curves:
            i = int(c.difference.argmax())
            row = {
                "method": c.name,
                **c.summary(),
                "forget_drop_at_best": float(c.forget_drop[i]),
                "retain_drop_at_best": float(c.retain_drop[i]),
            }
            base = (baselines or {}).get(c.name)
            if base is not None:
                vs = c.versus(by_name[base] if isinstance(base, str) else base)
                label = base if isinstance(base, str) else f"{base.label} ({len(base.seeds)} seeds)"
                row.update(
                    baseline=label,
                    vs_baseline=vs.value,
                    vs_baseline_low=vs.low,
                    vs_baseline_high=vs.high,
                    beats_baseline=bool(vs.low > 0),
                )
            row.update((extra or {}).get(c.name, {}))
            rows.append(row)
        return cls(rows, rank_by)

    def ranked(self) -> Any:
        """pandas DataFrame indexed by method, best first."""
        import pandas as pd

        df = pd.DataFrame(self.rows).set_index("method")
        if self.rank_by in df:
            df = df.sort_values(self.rank_by, ascending=False, kind="stable")
        return df

    def figure(self, kind: str = "ranked") -> go.Figure:
        """``kind="ranked"``: bars of forget and retain drop at each method's best level, the
        held-out difference with its interval, and the ranked table."""
        self._check_kind(kind)
        df = self.ranked()
        fig = make_subplots(
            rows=2,
            cols=1,
            row_heights=[0.55, 0.45],
            vertical_spacing=0.08,
            specs=[[{"type": "xy"}], [{"type": "table"}]],
        )
        for col, color in (
            ("forget_drop_at_best", dataset_colour("forget")),
            ("retain_drop_at_best", dataset_colour("retain")),
        ):
            if col in df:
                fig.add_trace(
                    go.Bar(
                        x=df.index.tolist(),
                        y=df[col].tolist(),
                        name=field_label(col),
                        marker_color=color,
                    ),
                    row=1,
                    col=1,
                )
        if "held_out_difference" in df:  # the ranked number, with its interval
            v, lo, hi = (
                df[c].astype(float)
                for c in (
                    "held_out_difference",
                    "held_out_difference_low",
                    "held_out_difference_high",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=df.index.tolist(),
                    y=v.tolist(),
                    mode="markers",
                    name="held-out difference",
                    marker={"color": "black", "symbol": "diamond"},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": (hi - v).tolist(),
                        "arrayminus": (v - lo).tolist(),
                    },
                ),
                row=1,
                col=1,
            )
        shown = [
            c for c in df.columns if df[c].dtype.kind in "fi" and not c.endswith(("_low", "_high"))
        ][:8]
        cells = [df.index.tolist()] + [[f"{v:.4g}" if v == v else "" for v in df[c]] for c in shown]
        header = [field_label(c) for c in ("method", *shown)]
        fig.add_trace(go.Table(header={"values": header}, cells={"values": cells}), row=2, col=1)
        fig.update_layout(
            title=f"Scorecard (ranked by {field_label(self.rank_by)})",
            barmode="group",
            template="plotly_white",
            height=700,
        )
        return fig
