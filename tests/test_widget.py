import pytest

from tl_unlearn import evaluate
from tl_unlearn.circuits.maps import component_intervention
from tl_unlearn.widget import AblationWidget


@pytest.fixture
def small(tiny_data):
    return {k: v.head(4) for k, v in tiny_data.items()}


def test_toggle_shows_exactly_what_the_evaluation_api_returns(tiny_model, small):
    w = AblationWidget(tiny_model, small)
    w.widget()  # build the UI too: its figures must follow the state
    w.toggle(1, 2)
    w.toggle(0, None)
    expected = evaluate(
        tiny_model, small, component_intervention(tiny_model, [(1, 2), (0, None)]), progress=False
    )
    n = w.numbers
    for k in ("forget", "retain"):
        assert n[k]["top1"] == expected[k].accuracy[1]
        assert n[k]["loss"] == expected[k].loss
    top1, loss = w._ui["bars"].data[1], w._ui["bars"].data[3]
    assert list(top1.y) == [n["forget"]["top1"], n["retain"]["top1"]]
    assert list(loss.y) == [n["forget"]["loss"], n["retain"]["loss"]]
    # top-1 (a fraction) and loss (nats) on axes of their own
    assert top1.yaxis == "y" and loss.yaxis == "y2"
    assert tuple(w._ui["bars"].layout.yaxis.range) == (0, 1)
    point = w._ui["point"]
    assert point.data[1].y == (n["forget"]["drop"],) and point.data[1].x == (n["retain"]["drop"],)
    # the axes hold the point shown (they used to keep a stale range that did not)
    lo, hi = point.layout.yaxis.range
    assert lo < n["forget"]["drop"] < hi
    lo, hi = point.layout.xaxis.range
    assert lo < n["retain"]["drop"] < hi
    # the two figures fit side by side in a notebook cell of a 1,400 px window
    assert w._ui["bars"].layout.width + point.layout.width <= 1000
    assert w._ui["buttons"][(1, 2)].value is True
    assert "m0" in w._ui["status"].value
    # toggling back restores the original numbers exactly
    w.toggle(1, 2)
    w.toggle(0, None)
    assert w.current is w.original and w.selection == []


def test_buttons_drive_state_and_export(tiny_model, small):
    w = AblationWidget(tiny_model, small)
    w.widget()
    w._ui["buttons"][(0, 3)].value = True  # a click in the notebook
    assert w.selection == [(0, 3)]
    iv = w.export()
    assert w.exported is iv and iv.hook_names == ["blocks.0.attn.hook_z"]
    namespace = {"model": tiny_model}
    exec(w.code(), namespace)
    with namespace["intervention"].applied(tiny_model):
        a = tiny_model(small["forget"].tokens)
    with iv.applied(tiny_model):
        b = tiny_model(small["forget"].tokens)
    assert (a == b).all()


def test_widget_errors(tiny_model, small):
    w = AblationWidget(tiny_model, small, include_mlp=False)
    with pytest.raises(ValueError, match="Head .* index 9"):
        w.toggle(0, 9)
    with pytest.raises(ValueError, match="include_mlp"):
        w.toggle(0)
    with pytest.raises(ValueError, match="reference"):
        AblationWidget(tiny_model, small, method="mean")
    with pytest.raises(ValueError, match=r"AblationWidget needs datasets \['retain'\]"):
        AblationWidget(tiny_model, {"forget": small["forget"]})


def test_widget_with_a_user_metric_on_a_prompt_answer_task(tiny_model, tiny_data):
    from tl_unlearn import make_task

    ioi = make_task("ioi", "wikipedia").tokenize(tiny_model.tokenizer, max_tokens=400)
    data = {"forget": ioi["forget"], "retain": tiny_data["retain"].head(4)}

    def logit_diff(logits, batch):
        final = batch.answer_logits(logits)
        return (
            final.gather(1, batch.answers[:, None]) - final.gather(1, batch.counterfactual[:, None])
        )[:, 0]

    w = AblationWidget(tiny_model, data, metric={"forget": logit_diff, "retain": "top1"})
    w.toggle(1, 0)
    expected = evaluate(
        tiny_model, data, component_intervention(tiny_model, [(1, 0)]), progress=False
    )
    n = w.numbers
    assert n["forget"]["metric"] == pytest.approx(expected["forget"].answer["logit_diff"], abs=1e-5)
    assert n["retain"]["metric"] == expected["retain"].accuracy[1]
    assert n["forget"]["drop"] == pytest.approx(
        1 - n["forget"]["metric"] / n["forget"]["original_metric"]
    )


WIDGET_CELL = """from tl_unlearn import AblationWidget, load_tiny_model, make_task
model = load_tiny_model()
data = {k: v.head(4) for k, v in make_task().tokenize(model.tokenizer, "eval", seq_len=64,
                                                       max_tokens=3000).items()}
w = AblationWidget(model, data)
w.widget()"""


def test_widget_in_jupyterlab_in_headless_chromium(tmp_path, tiny_model, small):
    """JupyterLab on localhost, the notebook opened in headless Chromium (1400 px window):
    clicking a1.h2 shows the numbers the Python API gives, and both figures lie inside the
    cell's output with axes that hold the selectivity point."""
    import re

    import nbformat
    from browser import jupyterlab_server, require_browser_stack

    chromium = require_browser_stack("playwright", "jupyterlab")
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(WIDGET_CELL)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "widget.ipynb")
    expected = AblationWidget(tiny_model, small)  # the same data as the cell's
    expected.toggle(1, 2)
    want = expected.numbers
    with (
        jupyterlab_server(tmp_path, tmp_path / "jupyter.log") as (url, token),
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/widget.ipynb?token={token}")
            page.wait_for_function(
                "window.jupyterapp && window.jupyterapp.commands"
                ".hasCommand('notebook:run-all-cells')",
                timeout=90_000,
            )
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_timeout(2000)  # the kernel session
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            button = page.get_by_role("button", name="a1.h2", exact=True)
            button.wait_for(timeout=180_000)
            button.click()
            page.wait_for_function(
                "[...document.querySelectorAll('.widget-html-content')]"
                ".some(e => e.innerText.includes('ablated (zero): a1.h2'))",
                timeout=60_000,
            )
            status = page.locator(".widget-html-content").filter(has_text="ablated").inner_text()
            page.screenshot(path=str(tmp_path / "widget.png"))
            plots = page.locator(".js-plotly-plot")
            boxes = [plots.nth(i).bounding_box() for i in range(plots.count())]
            ranges = plots.nth(1).evaluate(
                "el => [el._fullLayout.xaxis.range, el._fullLayout.yaxis.range]"
            )
            output = page.locator(".jp-OutputArea-output").first.bounding_box()
        finally:
            browser.close()
    drops = re.search(r"forget drop (-?[\d.]+), retain drop (-?[\d.]+)", status)
    assert drops, status
    assert drops.group(1) == f"{want['forget']['drop']:.3f}"
    assert drops.group(2) == f"{want['retain']['drop']:.3f}"
    assert len(boxes) == 2
    for box in boxes:  # nothing cut off at the right edge
        assert box["x"] + box["width"] <= output["x"] + output["width"] + 1
    (x_lo, x_hi), (y_lo, y_hi) = ranges
    assert x_lo < want["retain"]["drop"] < x_hi and y_lo < want["forget"]["drop"] < y_hi
