"""A self-contained HTML report of a benchmark run (plotly.js embedded, opens offline)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from tl_unlearn.benchmark.result import BenchmarkResult, selectivity_scatter
from tl_unlearn.core.files import atomic_write_text
from tl_unlearn.metrics.evaluation import Evaluation, unit_indices
from tl_unlearn.metrics.intervals import describe_interval
from tl_unlearn.metrics.names import describe_metric
from tl_unlearn.metrics.scorecard import field_label

__all__ = ["report_figures", "selectivity_scatter", "write_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem} h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0;font-size:.8rem} td,th{border:1px solid #ddd;
padding:.25rem .4rem;text-align:right;vertical-align:top} th{background:#f4f4f4;
font-weight:600} td:first-child,th:first-child{text-align:left} td{overflow-wrap:anywhere} td.n{white-space:nowrap}
.ci{color:#666;font-size:.7rem;white-space:nowrap} .wide{overflow-x:auto} .fig{margin:1.5rem 0;border:1px solid #eee}
pre{background:#f7f7f7;padding:1rem;overflow:auto;font-size:.8rem}
"""


def report_figures(result: BenchmarkResult) -> list[tuple[str, go.Figure]]:
    """Every figure of the report, with its section title, in order."""
    figs: list[tuple[str, go.Figure]] = [
        ("Scorecard", result.scorecard.figure()),
        ("Forget vs retain drop, all methods", selectivity_scatter(result)),
    ]
    for c in result.curves:
        figs.append((f"Selectivity curve: {c.name}", c.figure()))
        figs.append((f"Perplexity ratio: {c.name}", c.figure("perplexity")))
    if result.degree_of_removal:
        figs.append(("Degree of removal: relearning", result.figure("relearn")))
    if result.logit_lens is not None:
        figs.append(("Logit lens (top-ranked method)", result.logit_lens.figure()))
        figs.append(("Logit-lens diff heatmap", result.logit_lens.figure("heatmap")))
    if result.activation_distances is not None:
        figs.append(
            (
                "Activation distance per layer (top-ranked method)",
                result.activation_distances.figure("relative_l2"),
            )
        )
    if result.component_map is not None:
        figs.append(
            (
                "Component map: each component ablated alone",
                result.component_map.figure("difference"),
            )
        )
    for name, gen in result.generation.items():
        for kind in gen.metrics:
            figs.append((f"Generated text, {name}: {kind}", gen.figure(kind)))
    return figs


#: Columns of the ranked table (with their ``_low``/``_high``); the rest go in a second table.
SCORECARD_CORE = (
    "method",
    "held_out_difference",
    "validated_level",
    "vs_baseline",
    "beats_baseline",
    "baseline",
    "max_difference",
    "best_level",
    "area_between",
    "forget_drop_at_best",
    "retain_drop_at_best",
)


def scorecard_legend() -> str:
    """The text under the scorecard, its interval described by the code that makes it."""
    return (
        f"<p class='sub'>Brackets: {html.escape(describe_interval())} over sequences, from a "
        "bootstrap paired between the original and the intervened model. <b>selectivity, held out</b> (held_out_difference): forget drop minus "
        "retain drop at <b>level chosen</b>, the level with the largest difference on the first "
        "half of each dataset's sequences, measured on the second half (the ranking uses its lower "
        "bound). <b>best selectivity, all levels</b> / <b>level of the best</b>: the largest difference over all levels "
        "on all sequences (biased upward by the choice). <b>area between drop curves</b>: area between the "
        "forget and retain drop curves. <b>selectivity − random baseline's</b>: held-out difference minus the mean "
        "held-out difference of the <b>random baseline</b>, random units of the same kind and count (neurons, "
        "heads, SAE features, or a steering matrix of the same norms) at the chosen level, one per "
        "seed, on the same sequences (paired); <b>beats random?</b> yes when that interval lies above 0. "
        "<b>forget / retain drop at best level</b>: the drops there. <b>JS divergence</b>: Jensen-Shannon "
        "divergence of the output distributions (one batch per dataset) and <b>membership AUC</b> "
        "(when on): membership-inference AUC, both at the chosen level. Seconds: fitting and "
        "evaluation time. Membership inference is off by default: no method trains on the fit texts, and an AUC needs at "
        "least 64 texts per side (--mia-texts 64). <b>relearning steps / tokens to win back half</b> "
        "(--relearn-steps, default 4): fine-tuning steps / tokens of the strongest relearning "
        "attack (relearn.lrs, intervention held; rank-8 adapters beside every MLP unless "
        "relearn.rank is 0, a full fine-tune) to win back half of the forget drop; <i>not reached</i> when "
        "half is not won back within the step budget (more steps: more robust removal); "
        "<b>random baseline: relearning</b>: the same for a random baseline; <b>ZRF</b>: 1 - JS(intervened, "
        "random twin) / ln 2 on forget data.</p>"
    )


#: Columns where an empty number means the target was not reached within the budget.
_NOT_REACHED = (
    "relearn_steps",
    "relearn_tokens",
    "baseline_relearn_steps",
    "baseline_relearn_tokens",
)


def _data_rows(
    original: Evaluation | None, data: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Per eval dataset: sequences, distinct documents, tokens (and the fit set's), and the
    original model's loss and top-1 with intervals and the bootstrap SE of top-1."""
    if original is None:
        return []
    data = data or {}
    rows = []
    for name, m in original.datasets.items():
        idx = unit_indices([original], name)
        se = float(np.std(m.estimate("top1", idx))) if idx is not None else float("nan")
        ev, fit = data.get("eval", {}).get(name, {}), data.get("fit", {}).get(name, {})
        row: dict[str, Any] = {
            "dataset": name,
            "sequences": m.n_units or m.n_examples,
            "documents": ev.get("documents"),
            "predicted_tokens": m.n_predictions,
            "fit_sequences": fit.get("sequences"),
            "fit_documents": fit.get("documents"),
        }
        for metric in ("loss", "top1"):
            iv = original.metric_interval(name, metric)
            row.update({metric: iv.value, f"{metric}_low": iv.low, f"{metric}_high": iv.high})
        row["top1_se"] = se
        rows.append(row)
    return rows


class _Interval(tuple):
    """A table cell ``(value, low, high)``: drawn as the value over ``[low, high]``."""


def _with_intervals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold ``x``, ``x_low``, ``x_high`` into one ``x`` cell (narrower tables)."""
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            if k.endswith(("_low", "_high")) and k.rsplit("_", 1)[0] in r:
                continue
            lo, hi = r.get(f"{k}_low"), r.get(f"{k}_high")
            if (
                isinstance(v, float)
                and isinstance(lo, float)
                and isinstance(hi, float)
                and lo == lo
                and hi == hi
            ):
                v = _Interval((v, lo, hi))
            row[k] = v
        out.append(row)
    return out


#: Words for the method settings and timing steps the report lists (scorecard fields are in
#: :data:`~tl_unlearn.metrics.scorecard.FIELD_LABELS`).
REPORT_LABELS = {
    "alive_on_fit": "SAE features alive on the fit data",
    "alive_on_forget": "SAE features alive on forget",
    "d_sae": "SAE width (features)",
    "hook": "hook point",
    "layer": "layer",
    "level_name": "what a level counts",
    "n_positions": "positions steered",
    "n_units": "units ranked",
    "prompt_add": "prompt added",
    "prompt_sub": "prompt subtracted",
    "sae_explained_variance_forget": "SAE explained variance, forget",
    "sae_explained_variance_retain": "SAE explained variance, retain",
    "sae_l0_forget": "SAE L0 (active features), forget",
    "sae_l0_retain": "SAE L0 (active features), retain",
    "top_heads": "top heads",
    "top_scores": "their scores",
    "training_tokens_distinct": "distinct SAE training tokens",
    "degree_of_removal": "relearning attacks (s)",
    "evaluate_original": "evaluating the original model (s)",
    "extra_metrics": "extra metrics (s)",
    "extras": "logit lens and distances (s)",
    "generation": "generation (s)",
    "load_model": "loading the model (s)",
    "random_baselines": "random baselines (s)",
    "second_phase_wall": "baselines and attacks, wall (s)",
    "sweeps_wall": "sweeps, wall (s)",
    "tokenize": "tokenizing (s)",
    "total": "total (s)",
    "unlearning_depth": "unlearning depth (s)",
}


def report_label(name: Any) -> str:
    """A field, setting or timing step in words (the name itself if unknown).

    Examples:
        >>> report_label("fit:prune-abs"), report_label("d_sae")
        ('fitting prune-abs (s)', 'SAE width (features)')
    """
    name = str(name)
    label = field_label(name)
    if label != name:
        return label
    for prefix, words in (("fit:", "fitting "), ("sweep:", "sweep of ")):
        if name.startswith(prefix):
            return f"{words}{name[len(prefix) :]} (s)"
    return REPORT_LABELS.get(name, name)


def _table(
    rows: list[dict[str, Any]] | dict[str, Any], key: str = "", *, transpose: str = ""
) -> str:
    """An HTML table of ``rows`` (or of a mapping, one row per key). Intervals go under their
    value and headers break at underscores, so that wide tables fit the page;
    ``transpose`` (the first column's header) makes one column per row, named by its first
    value (for few rows with many keys)."""
    if isinstance(rows, dict):
        label = report_label if key == "step" else str
        rows = [{key or "name": label(k), "value": v} for k, v in rows.items()]
    if not rows:
        return "<p>(none)</p>"
    rows = _with_intervals(rows)
    cols = list(dict.fromkeys(c for r in rows for c in r))
    if transpose:
        first = cols[0]
        rows = [{transpose: c, **{str(r.get(first)): r.get(c, "") for r in rows}} for c in cols[1:]]
        cols = list(dict.fromkeys(c for r in rows for c in r))

    def cell(v: Any, c: Any = "") -> str:
        number = isinstance(v, (float, int, _Interval)) and not isinstance(v, bool)
        return f"<td class='n'>{fmt(v, c)}</td>" if number else f"<td>{fmt(v, c)}</td>"

    def fmt(v: Any, c: Any = "") -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, _Interval):
            value, lo, hi = v
            return f"{value:.3g}<br><span class='ci'>[{lo:.3g}, {hi:.3g}]</span>"
        if isinstance(v, float) and v != v:  # NaN
            return "not reached" if str(c) in _NOT_REACHED else "–"
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, dict)):
            return html.escape(json.dumps(v)[:200])
        return html.escape(str(v))

    def header(c: Any) -> str:
        return f"<th title='{html.escape(str(c))}'>{html.escape(report_label(c))}</th>"

    head = "".join(header(c) for c in cols)
    if transpose:  # the measures are the rows: label them, and read their cells by name
        body = "".join(
            "<tr>"
            + "".join(
                cell(report_label(r[c]) if c == transpose else r.get(c, ""), r[transpose])
                for c in cols
            )
            + "</tr>"
            for r in rows
        )
    else:
        body = "".join(
            "<tr>" + "".join(cell(r.get(c, ""), c) for c in cols) + "</tr>" for r in rows
        )
    # a table wider than the page (many optional columns) scrolls instead of being clipped
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"


def render_report(result: BenchmarkResult) -> str:
    """The report as one HTML string."""
    cfg = result.config
    ranked = result.scorecard.ranked().reset_index()
    score_rows = ranked.to_dict(orient="records")
    # the ranking's own columns in the ranked table; every other measure (JS, membership,
    # relearning, seconds: a number that depends on the run's options) in a transposed table
    # with one column per method, so that neither runs off the page
    core = [
        c
        for c in ranked.columns
        if c in SCORECARD_CORE
        or (c.endswith(("_low", "_high")) and c.rsplit("_", 1)[0] in SCORECARD_CORE)
    ]
    main_rows = [{k: r[k] for k in core} for r in score_rows]
    more_rows = [{k: v for k, v in r.items() if k not in core or k == "method"} for r in score_rows]
    base_rows = _data_rows(result.original, result.data)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>tl_unlearn report: {html.escape(cfg.forget)} vs {html.escape(cfg.retain)}</title>",
        f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        "<h1>tl_unlearn benchmark</h1>",
        f"<p class='sub'>model <b>{html.escape(str(cfg.model))}</b> · forget <b>"
        f"{html.escape(cfg.forget)}</b> · retain <b>{html.escape(cfg.retain)}</b> · metric "
        f"<b>{html.escape(describe_metric(cfg.metric))}</b> · ranked by {html.escape(field_label(result.scorecard.rank_by))}</p>",
        "<h2>Ranked scorecard</h2>",
        _table(main_rows),
        "<h3>Further measures per method</h3>",
        _table(more_rows, transpose="measure"),
        scorecard_legend(),
        "<h2>Data and the original model</h2>",
        _table(base_rows),
        "<p class='sub'>Sequences are chunks of the eval documents, spread over as many "
        "documents as the token budget allows (one chunk of every document before a second "
        "of any). top-1 standard error is the bootstrap standard error of top-1 accuracy over sequences; "
        "the level of each method is chosen on the first half of the sequences and reported "
        "on the second half.</p>",
    ]
    for i, (title, fig) in enumerate(report_figures(result)):
        parts.append(f"<h2>{html.escape(title)}</h2><div class='fig'>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}"))
        parts.append("</div>")
    for name, gen in result.generation.items():
        st = gen.settings
        parts += [
            f"<h2>Generated text, {html.escape(name)}: sample continuations</h2>",
            f"<p>{len(gen.prompts)} prompts (openings of forget eval documents) x "
            f"{st.get('n_samples')} samples x {st.get('max_new_tokens')} tokens, "
            f"temperature {st.get('temperature')}, seed {st.get('seed')}; topic list "
            f"{html.escape(str(st.get('topic')))}. Fluency is perplexity under the "
            "original model; forget likeness is the mean per-token log ratio of "
            "forget vs retain unigram models (&gt; 0: forget-like). Intervals: "
            f"{html.escape(describe_interval())} over prompts and samples.</p>",
            _table(
                [
                    {k: field_label(v) if k == "metric" else v for k, v in row.items()}
                    for row in gen.to_dataframe().to_dict(orient="records")
                ]
            ),
            gen.samples_html(2),
        ]
    parts += [
        "<h2>Methods</h2>",
        _table([{"method": k, **v} for k, v in result.method_info.items()], transpose="setting"),
        "<h2>Timings (seconds)</h2>",
        _table(result.timings, "step"),
        "<h2>Settings</h2>",
        f"<pre>{html.escape(json.dumps(result.to_dict()['config'], indent=1))}</pre>",
        "<h2>Environment</h2>",
        _table(result.environment, "package"),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: BenchmarkResult, path: str | Path) -> Path:
    """Write the HTML report atomically (temporary file, then rename)."""
    return atomic_write_text(path, render_report(result))
