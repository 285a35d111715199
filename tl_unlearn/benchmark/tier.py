"""The ground-truth tier of the benchmark: every method localises on the planted models.

On a planted model (:mod:`tl_unlearn.models.planted`) the circuit C that carries the forget task
is known, so two things can be checked that no real model allows:

1. **Localisation.** How well each method's ranking of components finds C: node AUROC (C
   against every other head and MLP), and the precision and recall of the components the
   method removes at the level its scorecard row validated; for edge methods the same on
   edges, where C's edges are every edge among C, the input and the logits.
2. **Verdict agreement.** Whether the scorecard's verdicts agree with that truth: the rank
   correlation (Spearman) between the scorecard's held-out selectivity and node AUROC over
   every (model, method) pair, and for each method whether "beats its random baseline" (the
   scorecard) matches "finds C better than chance" (node AUROC above 0.5). The threshold is
   fixed before any run: the scorecard **agrees** with the truth when Spearman's rho is at
   least :data:`AGREEMENT_RHO` (0.5).

Intervals: each method is fitted on ``fits`` independent fit samples; localisation figures
are their mean with a t interval over fits. Scorecard figures carry their own bootstrap
intervals over evaluation sequences. Where a twin exists (both planted models), each
method's Unlearning Depth (:func:`~tl_unlearn.metrics.depth.unlearning_depth`) at its
validated level is a column of the scorecard.

Examples:
    >>> tier = run_ground_truth_tier(models=["planted-lookup"], methods=["head-mean"],
    ...                              fits=2, n_fit=32, n_eval=64, progress=False)  # doctest: +SKIP
    >>> tier.to_dataframe()[["node_auroc", "held_out_difference"]]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from tl_unlearn.core.results import Result
from tl_unlearn.metrics.intervals import Interval, error_bars

__all__ = [
    "AGREEMENT_RHO",
    "TIER_METHODS",
    "GroundTruthTier",
    "run_ground_truth_tier",
]

#: Every method the tier runs (``prune-*`` need MLPs, edge methods a model with MLPs).
TIER_METHODS = (
    "head-mean",
    "prune-abs",
    "prune-freq",
    "prune-random",
    "sae-features",
    "actadd",
    "eap",
    "eap-ig",
    "patching",
)

#: The scorecard agrees with the truth when Spearman's rho between held-out selectivity and
#: node AUROC is at least this (fixed before the first run).
AGREEMENT_RHO = 0.5

#: Levels swept on the planted models (8-10 components, ~100-200 edges: the default
#: fractions, sized for SmolLM2, would remove less than one head).
TIER_OPTIONS: dict[str, Any] = {
    "head-mean.levels": [0.125, 0.25, 0.375, 0.5],
    "prune-abs.levels": [0.01, 0.02, 0.05, 0.1, 0.2],
    "prune-freq.levels": [0.01, 0.02, 0.05, 0.1, 0.2],
    "prune-random.levels": [0.01, 0.02, 0.05, 0.1, 0.2],
    "sae-features.levels": [0.01, 0.02, 0.05, 0.1, 0.2],
    "sae.d_sae": 256,
    "sae.layer": 1,
    "eap.levels": [0.02, 0.05, 0.1, 0.2],
    "eap-ig.levels": [0.02, 0.05, 0.1, 0.2],
    "patching.levels": [0.02, 0.05, 0.1, 0.2],
    "eap.attribution_examples": 64,
    "eap-ig.attribution_examples": 64,
    "patching.attribution_examples": 64,
    "actadd.levels": [1.0, 2.0, 4.0, 8.0],
}

_FIT_SEED = 1_000_000  # training used data seeds below 10,000
_EVAL_SEED = 2_000_000


@dataclass
class GroundTruthTier(Result):
    """Localisation and scorecard of every method on the planted models.

    Attributes:
        label: Name of the run.
        rows: One row per (model, method): ``model``, ``method``, ``level`` (validated),
            ``node_auroc``/``_low``/``_high``, ``node_precision``..., ``node_recall``...,
            ``edge_auroc``... (edge methods), the scorecard's ``held_out_difference`` and
            ``vs_baseline`` with their intervals, ``uds`` with its interval,
            ``scorecard_beats_random`` and ``truth_beats_random``.
        agreement: ``rho``/``rho_low``/``rho_high`` (Spearman over rows with both figures,
            Fisher-z interval), ``n``, ``threshold``, ``agrees``, ``verdicts_agree`` /
            ``verdicts`` (beats-random verdicts that match the truth, of those with both),
            ``wrongly_ranked``: pairs of methods of one model the scorecard orders one way
            and node AUROC the other, both by more than their intervals.
        settings: Sizes, seeds and options of the run.
        seconds: Wall time.

    Examples:
        >>> t = GroundTruthTier("tier", [{"model": "m", "method": "x", "node_auroc": 1.0}], {})
        >>> GroundTruthTier.from_dict(t.to_dict()) == t
        True
    """

    label: str
    rows: list[dict[str, Any]]
    agreement: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("agreement",)

    def to_dataframe(self) -> Any:
        """pandas DataFrame indexed by (model, method)."""
        import pandas as pd

        return pd.DataFrame(self.rows).set_index(["model", "method"])

    def to_markdown(self) -> str:
        """The per-method table and the agreement figures, as markdown."""

        def iv(row: dict[str, Any], key: str, fmt: str = ".2f") -> str:
            v = row.get(key)
            if v is None or not math.isfinite(v):
                return "n/a"
            lo, hi = row.get(f"{key}_low"), row.get(f"{key}_high")
            if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
                return f"{v:{fmt}}"
            return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"

        head = (
            "| model | method | node AUROC | node precision | node recall | edge AUROC "
            "| edge precision | edge recall | held-out selectivity | vs random | UDS "
            "| beats random: scorecard / truth |\n|" + " --- |" * 12
        )
        lines = [head]
        for r in self.rows:
            verdict = "/".join(
                {True: "yes", False: "no"}.get(r.get(k), "n/a")
                for k in ("scorecard_beats_random", "truth_beats_random")
            )
            lines.append(
                f"| {r['model']} | {r['method']} | {iv(r, 'node_auroc')} "
                f"| {iv(r, 'node_precision')} | {iv(r, 'node_recall')} | {iv(r, 'edge_auroc')} "
                f"| {iv(r, 'edge_precision')} | {iv(r, 'edge_recall')} "
                f"| {iv(r, 'held_out_difference', '+.3f')} | {iv(r, 'vs_baseline', '+.3f')} "
                f"| {iv(r, 'uds')} | {verdict} |"
            )
        a = self.agreement
        if a:
            rho = iv(a, "rho")
            lines += [
                "",
                f"Rank agreement (Spearman, held-out selectivity vs node AUROC, {a['n']} "
                f"model-method pairs): rho = {rho}; threshold fixed before the run: "
                f"{a['threshold']}; **{'agrees' if a['agrees'] else 'does not agree'}**. "
                f"Beats-random verdicts matching the truth: {a['verdicts_agree']} of "
                f"{a['verdicts']}.",
            ]
            wrong = a.get("wrongly_ranked") or []
            lines.append(
                "Ranked wrongly by the scorecard (beyond both intervals): "
                + ("; ".join(wrong) if wrong else "none")
                + "."
            )
        return "\n".join(lines)

    def write(self, folder: str | Path) -> Path:
        """Write ``results.json``, ``report.md`` and a self-contained ``report.html`` (the
        agreement figures, the table, the figure) into ``folder``; every file atomically."""
        import html

        from tl_unlearn.core.files import atomic_write_text

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.save(out / "results.json")
        markdown = self.to_markdown()
        atomic_write_text(out / "report.md", markdown + "\n")
        summary = markdown.split("\n\n", 1)[-1]
        atomic_write_text(
            out / "report.html",
            "<html><head><meta charset='utf-8'><title>tl_unlearn ground-truth tier</title>"
            "</head><body><h1>Ground-truth tier</h1>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in summary.splitlines())
            + self.to_dataframe().to_html(float_format=lambda x: f"{x:.3f}")
            + self.figure().to_html(include_plotlyjs=True, full_html=False)
            + "</body></html>",
        )
        return out

    def figure(self, kind: str = "agreement") -> go.Figure:
        """``kind="agreement"``: held-out selectivity against node AUROC, one point per
        (model, method), with both intervals."""
        self._check_kind(kind)
        fig = go.Figure()
        for model in dict.fromkeys(r["model"] for r in self.rows):
            rows = [
                r
                for r in self.rows
                if r["model"] == model and math.isfinite(r.get("node_auroc", float("nan")))
            ]

            def err(key: str, rows: list = rows) -> dict[str, Any]:
                return error_bars(
                    [Interval(r[key], r[f"{key}_low"], r[f"{key}_high"]) for r in rows]
                )

            fig.add_trace(
                go.Scatter(
                    x=[r["node_auroc"] for r in rows],
                    y=[r["held_out_difference"] for r in rows],
                    error_x=err("node_auroc"),
                    error_y=err("held_out_difference"),
                    text=[r["method"] for r in rows],
                    mode="markers+text",
                    textposition="top center",
                    name=model,
                )
            )
        a = self.agreement
        fig.update_layout(
            title=f"Scorecard vs truth: Spearman rho {a.get('rho', float('nan')):.2f}"
            f" (agrees at >= {a.get('threshold', AGREEMENT_RHO)})",
            xaxis_title="node AUROC against the planted circuit",
            yaxis_title="held-out selectivity (forget drop - retain drop)",
            template="plotly_white",
        )
        return fig


def _mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, ...]:
    """Mean of independent values with a t interval (clipped to [0, 1])."""
    from scipy import stats

    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if not len(v):
        return (float("nan"),) * 3
    mean = float(v.mean())
    if len(v) < 2 or v.std() == 0:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _set_scores(truth: set[str], picked: Sequence[str]) -> tuple[float, float]:
    hit = len(truth & set(picked))
    return (hit / len(set(picked)) if picked else 0.0), hit / len(truth)


def _node_auroc(spec: Any, scores: dict[str, float]) -> float:
    from tl_unlearn.metrics.membership import auc_score

    values = np.array([scores.get(n, -np.inf) for n in spec.components], dtype=float)
    finite = values[np.isfinite(values)]
    floor = (finite.min() - 1.0) if len(finite) else 0.0
    values = np.where(np.isfinite(values), values, floor)  # unscored: ranked last
    truth = [int(n in spec.circuit_nodes) for n in spec.components]
    return float(auc_score(truth, values))


def _edge_auroc(scores: Any, truth: Any) -> float:
    from tl_unlearn.metrics.membership import auc_score

    real = scores.real_edges()
    return float(auc_score(truth.in_graph[real].astype(int), np.abs(scores.scores[real])))


def _spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Spearman's rho with a Fisher-z interval (Bonett & Wright's variance 1.06/(n-3))."""
    from scipy import stats

    n = len(x)
    if n < 4:
        return (float("nan"),) * 3
    rho = float(stats.spearmanr(x, y).statistic)
    if not math.isfinite(rho):
        return (float("nan"),) * 3
    z = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = 1.959964 * math.sqrt(1.06 / (n - 3))
    return rho, math.tanh(z - half), math.tanh(z + half)


def _fit_all(
    spec: Any, model: Any, methods: Sequence[str], fit: dict[str, Any], corrupted: Any,
    options: dict[str, Any], batch_size: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    from tl_unlearn.benchmark.methods.actadd import ActAddOptions, actadd_method
    from tl_unlearn.benchmark.methods.base import MethodContext
    from tl_unlearn.benchmark.methods.registry import fit_method

    ctx = MethodContext(
        model,
        fit["forget"],
        fit["retain"],
        batch_size=batch_size,
        forget_fit_corrupted=corrupted,
        seed=seed,
        options=options,
    )
    out = {}
    for name in methods:
        if name == "actadd":  # no tokenizer: steer from a retain sequence to a forget one
            opts = ActAddOptions.read(options)
            layer = model.cfg.n_layers - 1 if opts.layer is None else opts.layer
            out[name] = actadd_method(
                model, fit["retain"].tokens[0], fit["forget"].tokens[0], layer, opts.levels
            )
        else:
            out[name] = fit_method(name, ctx)
    return out


def _applicable(spec: Any, methods: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    from tl_unlearn.benchmark.methods.edges import EDGE_METHODS

    keep, skipped = [], {}
    attn_only = bool(spec.cfg.get("attn_only"))
    for m in methods:
        if attn_only and m.startswith("prune-"):
            skipped[m] = "no MLP neurons (attention-only model)"
        elif attn_only and m in EDGE_METHODS:
            skipped[m] = "edge circuits need a model with MLPs"
        else:
            keep.append(m)
    return keep, skipped


def run_ground_truth_tier(
    models: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    *,
    fits: int = 8,
    n_fit: int = 128,
    n_eval: int = 256,
    baseline_seeds: int = 3,
    batch_size: int = 64,
    seed: int = 0,
    n_boot: int = 1000,
    options: dict[str, Any] | None = None,
    progress: bool = True,
) -> GroundTruthTier:
    """Run every method on the planted models and score it against their circuits.

    Args:
        models: Planted model names (default: all of :data:`~tl_unlearn.models.planted.PLANTED`).
        methods: Method names (default: :data:`TIER_METHODS`; a method that cannot run on a
            model, such as neuron pruning on an attention-only one, is skipped there and
            listed in ``settings["skipped"]``).
        fits: Independent fit samples each method is fitted on (localisation intervals are
            over them; the scorecard uses the first).
        n_fit: Sequences per task in each fit sample.
        n_eval: Sequences per task the scorecard evaluates on.
        baseline_seeds: Random baselines per method.
        batch_size: Sequences per forward pass.
        seed: Seed of the data samples and random baselines.
        n_boot: Bootstrap replicates of the UDS interval.
        options: Method options overriding :data:`TIER_OPTIONS`.
        progress: Show progress bars.

    Returns:
        The :class:`GroundTruthTier`.

    Raises:
        ValueError: An unknown model or method, or ``fits`` < 2, before any work.
    """
    from tl_unlearn.benchmark.config import BenchmarkConfig
    from tl_unlearn.benchmark.methods.registry import METHODS, check_options
    from tl_unlearn.benchmark.runner import sweep_fitted
    from tl_unlearn.circuits.graph import Circuit
    from tl_unlearn.metrics.depth import unlearning_depth
    from tl_unlearn.metrics.scorecard import Scorecard
    from tl_unlearn.models.planted import PLANTED, corrupt_forget, load_planted, planted_data

    t_start = time.perf_counter()
    models = list(PLANTED) if models is None else list(models)
    methods = list(TIER_METHODS) if methods is None else list(methods)
    bad = [m for m in models if m not in PLANTED]
    if bad:
        raise ValueError(f"Unknown planted model(s) {bad}; choose from {sorted(PLANTED)}.")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"Unknown method(s) {bad}; choose from {sorted(METHODS)}.")
    if not isinstance(fits, int) or fits < 2:
        raise ValueError(f"fits must be an integer >= 2 (intervals are over fits), got {fits!r}.")
    opts = {**TIER_OPTIONS, **(options or {})}
    check_options(opts)
    rows: list[dict[str, Any]] = []
    skipped_all: dict[str, dict[str, str]] = {}
    timings: dict[str, float] = {}
    bar = tqdm(models, desc="planted models", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        t_model = time.perf_counter()
        spec = PLANTED[name]
        model, twin = load_planted(name), load_planted(name, twin=True)
        use, skipped = _applicable(spec, methods)
        skipped_all[name] = skipped
        ev = planted_data(spec, n_eval, seed=_EVAL_SEED + seed)
        fitted_by_fit = []
        for i in range(fits):
            fit = planted_data(spec, n_fit, seed=_FIT_SEED + 1000 * seed + i)
            corrupted = corrupt_forget(spec, fit["forget"], seed=_FIT_SEED + 1000 * seed + i)
            fitted_by_fit.append(
                _fit_all(spec, model, use, fit, corrupted, opts, batch_size, seed + i)
            )
        config = BenchmarkConfig(
            model=name,
            methods=use,
            metric="top1",
            batch_size=batch_size,
            seed=seed,
            baseline_seeds=baseline_seeds,
            options=opts,
        )
        fitted = fitted_by_fit[0]
        _, curves, baselines = sweep_fitted(config, model, ev, fitted)
        extra: dict[str, dict[str, Any]] = {}
        levels = {c.name: c.held_out()["level"] for c in curves}
        for m, level in levels.items():
            if math.isfinite(level) and level > 0:
                d = unlearning_depth(
                    model, ev["forget"], fitted[m].family(level), twin, n_boot=n_boot, seed=seed
                )
                extra[m] = {"uds": d.value, "uds_low": d.low, "uds_high": d.high}
        scorecard = Scorecard.from_curves(curves, extra, baselines=baselines)
        card = scorecard.ranked()
        truth_nodes = set(spec.circuit_nodes)
        truth_edges = None
        if not spec.cfg.get("attn_only"):
            truth_edges = Circuit.from_nodes(model, spec.circuit_nodes)
        for m in use:
            level = levels.get(m, float("nan"))
            row: dict[str, Any] = {"model": name, "method": m, "level": level}
            per_fit: dict[str, list[float]] = {}
            for fitted_i in fitted_by_fit:
                fm = fitted_i[m]
                vals: dict[str, float] = {}
                if fm.node_scores is not None:
                    vals["node_auroc"] = _node_auroc(spec, fm.node_scores)
                if fm.nodes_at is not None and math.isfinite(level) and level > 0:
                    p, r = _set_scores(truth_nodes, fm.nodes_at(level))
                    vals["node_precision"], vals["node_recall"] = p, r
                if fm.edge_scores is not None and truth_edges is not None:
                    vals["edge_auroc"] = _edge_auroc(fm.edge_scores, truth_edges)
                    if fm.edges_at is not None and math.isfinite(level) and level > 0:
                        p, r = _set_scores(set(truth_edges.edges), fm.edges_at(level))
                        vals["edge_precision"], vals["edge_recall"] = p, r
                for k, v in vals.items():
                    per_fit.setdefault(k, []).append(v)
            for key in (
                "node_auroc", "node_precision", "node_recall",
                "edge_auroc", "edge_precision", "edge_recall",
            ):  # fmt: skip
                row[key], row[f"{key}_low"], row[f"{key}_high"] = _mean_interval(
                    per_fit.get(key, [])
                )
            for key in ("held_out_difference", "vs_baseline", "uds"):
                for suffix in ("", "_low", "_high"):
                    col = key + suffix
                    row[col] = (
                        float(card.loc[m, col]) if col in card and m in card.index else float("nan")
                    )
            low = row["vs_baseline_low"]
            row["scorecard_beats_random"] = None if not math.isfinite(low) else bool(low > 0)
            a_low = row["node_auroc_low"]
            row["truth_beats_random"] = None if not math.isfinite(a_low) else bool(a_low > 0.5)
            rows.append(row)
        timings[name] = time.perf_counter() - t_model
    agreement = _agreement(rows)
    return GroundTruthTier(
        "ground-truth tier",
        rows,
        agreement,
        {
            "models": models,
            "methods": methods,
            "skipped": skipped_all,
            "fits": fits,
            "n_fit": n_fit,
            "n_eval": n_eval,
            "baseline_seeds": baseline_seeds,
            "seed": seed,
            "options": opts,
            "threads": torch.get_num_threads(),
            "timings": timings,
        },
        time.perf_counter() - t_start,
    )


def _agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    both = [
        r
        for r in rows
        if math.isfinite(r.get("node_auroc", float("nan")))
        and math.isfinite(r.get("held_out_difference", float("nan")))
    ]
    rho, lo, hi = _spearman(
        [r["held_out_difference"] for r in both], [r["node_auroc"] for r in both]
    )
    verdicts = [
        r
        for r in rows
        if r.get("scorecard_beats_random") is not None and r.get("truth_beats_random") is not None
    ]
    wrong = []
    for i, a in enumerate(both):
        for b in both[i + 1 :]:
            if a["model"] != b["model"]:
                continue
            card = (
                "a" if a["held_out_difference_low"] > b["held_out_difference_high"]
                else "b" if b["held_out_difference_low"] > a["held_out_difference_high"]
                else None
            )  # fmt: skip
            truth = (
                "a" if a["node_auroc_low"] > b["node_auroc_high"]
                else "b" if b["node_auroc_low"] > a["node_auroc_high"]
                else None
            )  # fmt: skip
            if card and truth and card != truth:
                hi_card, lo_card = (a, b) if card == "a" else (b, a)
                wrong.append(
                    f"{a['model']}: the scorecard ranks {hi_card['method']} above "
                    f"{lo_card['method']}, node AUROC the other way "
                    f"({hi_card['node_auroc']:.2f} vs {lo_card['node_auroc']:.2f})"
                )
    return {
        "rho": rho,
        "rho_low": lo,
        "rho_high": hi,
        "n": len(both),
        "threshold": AGREEMENT_RHO,
        "agrees": bool(math.isfinite(rho) and rho >= AGREEMENT_RHO),
        "verdicts_agree": sum(
            r["scorecard_beats_random"] == r["truth_beats_random"] for r in verdicts
        ),
        "verdicts": len(verdicts),
        "wrongly_ranked": wrong,
    }
