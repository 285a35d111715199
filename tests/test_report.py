"""The HTML report: every figure drawn in a real browser, rendered from the typed result (the
same page from results.json as from the run), escaped, and never half-written."""

import json
import os

import pytest
from browser import check_html_in_browser, find_chromium, require_browser_stack
from settings import SMALL

from tl_unlearn.benchmark.report import render_report, report_figures, write_report
from tl_unlearn.benchmark.runner import BenchmarkConfig, BenchmarkResult, run_benchmark


def test_report_draws_every_figure_in_headless_chromium(run_dir, tmp_path):
    if find_chromium() is None:
        if os.environ.get("TL_UNLEARN_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (TL_UNLEARN_REQUIRE_CHROMIUM) but not found")
        pytest.skip("no Chromium installed")
    out, result = run_dir
    seen = check_html_in_browser(out / "report.html", screenshot=tmp_path / "shot.png")
    n = len(report_figures(result))
    assert seen["figures"] == n and seen["drawn"] == n
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_failed_report_leaves_no_half_written_file(tmp_path, tiny_model, monkeypatch):
    from tl_unlearn.benchmark import report

    def broken(result):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "render_report", broken)
    cfg = BenchmarkConfig(**{**SMALL, "methods": ["prune-random"], "mia_texts": 0})
    with pytest.raises(RuntimeError, match="disk full"):
        run_benchmark(cfg, model=tiny_model, output_dir=tmp_path, progress=False)
    # the report is rendered before either file is written; what is left is what --resume
    # reads back: the job and its finished units, each a whole JSON file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json", "units"]
    for unit in (tmp_path / "units").iterdir():
        json.loads(unit.read_text())


def test_report_renders_the_same_from_results_json(run_dir, tmp_path):
    """The report needs nothing but the typed result: rendered from the loaded results.json
    it is the page the run wrote, and its scorecard table holds the scorecard's numbers."""
    out, result = run_dir
    again = BenchmarkResult.load(out)
    page = render_report(again)
    assert page == (out / "report.html").read_text()
    assert [t for t, _ in report_figures(again)] == [t for t, _ in report_figures(result)]
    ranked = result.scorecard.ranked()
    for name in ranked.index:
        row = ranked.loc[name]
        cell = (
            f"{row['held_out_difference']:.3g}<br><span class='ci'>["
            f"{row['held_out_difference_low']:.3g}, {row['held_out_difference_high']:.3g}]"
        )
        assert f"<td class='n'>{cell}</span></td>" in page, name
    path = write_report(again, tmp_path / "again.html")
    assert path.read_text() == page


def test_report_escapes_what_the_user_named(run_dir):
    """Names that come from the user (a forget path, a label) are escaped, never markup."""
    _, result = run_dir
    again = BenchmarkResult.from_dict(result.to_dict())
    again.config.forget = "<script>alert(1)</script>.txt"
    again.method_info = {"<b>m</b>": {"note": "<i>x</i>"}}
    page = render_report(again)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.txt" in page
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt;" in page


def test_report_tables_fit_a_1280_pixel_window(run_dir):
    """In Chromium at 1280 x 800, no table runs past the window: the ranked scorecard (with
    its intervals), the transposed table of further measures (membership columns here) and
    the transposed methods table fit."""
    chromium = require_browser_stack("playwright")
    from playwright.sync_api import sync_playwright

    out, _ = run_dir
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto((out / "report.html").as_uri())
            rights = page.evaluate("""() => [...document.querySelectorAll('table')].map(
                t => [t.rows[0].cells.length, t.getBoundingClientRect().right])""")
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert rights and rights[0][0] >= 11  # the ranked scorecard
    assert all(right <= 1280 for _, right in rights), rights
    assert scroll_width <= 1280


def test_report_tables_speak_words_not_field_names(run_dir):
    """Headers are labels (the field name only in the hover title), verdicts are yes/no and
    an unreached relearning target reads "not reached", never True/False or nan."""
    import html
    import re

    from tl_unlearn.benchmark.report import _table
    from tl_unlearn.metrics.scorecard import FIELD_LABELS as COLUMN_LABELS

    _, result = run_dir
    page = render_report(result)
    headers = re.findall(r"<th title='([^']*)'>([^<]*)</th>", page)
    assert ("held_out_difference", html.escape(COLUMN_LABELS["held_out_difference"])) in headers
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    assert not {"True", "False", "nan"} & set(cells)
    assert {"yes", "no"} & set(cells), "the beats-random verdict is shown as yes/no"
    table = _table([{"method": "m", "relearn_steps": float("nan"), "js_forget": float("nan")}])
    assert "<td class='n'>not reached</td>" in table and "<td class='n'>–</td>" in table
    # no field name anywhere a reader looks: headers, the transposed table's row names, the
    # subtitle, the scorecard figure's table
    field_name = re.compile(r"[a-z0-9]+(_[a-z0-9]+)+")
    assert not [label for _, label in headers if field_name.fullmatch(label)]
    read = page.split("<h2>Environment</h2>")[0]  # package names stay names
    assert not [c for c in re.findall(r"<td[^>]*>([^<]*)</td>", read) if field_name.fullmatch(c)]
    assert (
        "ranked by " + html.escape(COLUMN_LABELS["held_out_difference"]) + ": lower bound" in page
    )
    figure_table = next(t for t in result.scorecard.figure().data if t.type == "table")
    assert not [h for h in figure_table.header.values if field_name.fullmatch(h)]


def test_the_report_describes_the_intervals_the_code_computes(run_dir):
    """The note under the scorecard is generated from the interval kind in use: it cannot
    say "percentile" while the intervals are t intervals."""
    import html

    from tl_unlearn.metrics import intervals

    _, result = run_dir
    page = render_report(result)
    assert html.escape(intervals.describe_interval(intervals.DEFAULT_INTERVAL)) in page
    assert "percentile bootstrap interval over sequences" not in page
