"""A scorecard comparing several interventions on one forget/retain task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_unlearn.metrics.selectivity import SelectivityCurve

__all__ = ["Scorecard"]


@dataclass
class Scorecard:
    """One row of numbers per method; ranked by a chosen column (higher is better).

    Example:
        >>> sc = Scorecard([{"method": "a", "max_difference": 0.1},
        ...                 {"method": "b", "max_difference": 0.3}])
        >>> sc.ranked().index.tolist()
        ['b', 'a']
    """

    rows: list[dict[str, Any]]
    rank_by: str = "max_difference"
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("A scorecard needs at least one method.")
        if any("method" not in r for r in self.rows):
            raise ValueError("Every scorecard row needs a 'method'.")

    @classmethod
    def from_curves(
        cls, curves: Sequence[SelectivityCurve],
        extra: Mapping[str, Mapping[str, Any]] | None = None, rank_by: str = "max_difference",
    ) -> Scorecard:
        """Rows from selectivity curves (summary + drops at the best level) and extra metrics."""
        rows = []
        for c in curves:
            i = int(c.difference.argmax())
            row = {"method": c.name, **c.summary(),
                   "forget_drop_at_best": float(c.forget_drop[i]),
                   "retain_drop_at_best": float(c.retain_drop[i])}
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

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "rank_by": self.rank_by}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scorecard:
        return cls([dict(r) for r in d["rows"]], d.get("rank_by", "max_difference"))

    def figure(self) -> go.Figure:
        """Bars of forget and retain drop at each method's best level, and the ranked table."""
        df = self.ranked()
        fig = make_subplots(rows=2, cols=1, row_heights=[0.55, 0.45], vertical_spacing=0.08,
                            specs=[[{"type": "xy"}], [{"type": "table"}]])
        for col, color in (("forget_drop_at_best", "#d62728"), ("retain_drop_at_best", "#1f77b4")):
            if col in df:
                fig.add_trace(go.Bar(x=df.index.tolist(), y=df[col].tolist(), name=col,
                                     marker_color=color), row=1, col=1)
        shown = [c for c in df.columns if df[c].dtype.kind in "fi"][:8]
        cells = [df.index.tolist()] + [[f"{v:.4g}" if v == v else "" for v in df[c]] for c in shown]
        fig.add_trace(go.Table(header={"values": ["method", *shown]}, cells={"values": cells}),
                      row=2, col=1)
        fig.update_layout(title=f"Scorecard (ranked by {self.rank_by})", barmode="group",
                          template="plotly_white", height=700)
        return fig
