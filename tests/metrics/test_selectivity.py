import json

import numpy as np
import pytest

from tl_unlearn import Evaluation, evaluate
from tl_unlearn.interventions import pruning_scores
from tl_unlearn.metrics import SelectivityCurve, selectivity_curve


@pytest.fixture(scope="module")
def curve(tiny_model, task):
    fit = task.tokenize(tiny_model.tokenizer, "fit", seq_len=64, max_tokens=4000)
    ev = task.tokenize(tiny_model.tokenizer, "eval", seq_len=64, max_tokens=2000)
    ps = pruning_scores(tiny_model, fit["forget"], fit["retain"])
    c = selectivity_curve(
        tiny_model,
        ev,
        ps.intervention,
        [0.02, 0.05, 0.1],
        name="prune-abs",
        fit_seconds=ps.fit_seconds,
        progress=False,
    )
    return c, ps, ev


def test_curve_points_equal_direct_evaluations(tiny_model, curve):
    c, ps, ev = curve
    base = evaluate(tiny_model, ev, progress=False)
    direct = evaluate(tiny_model, ev, ps.intervention(0.05), progress=False)
    assert c.x.tolist() == [0.0, 0.02, 0.05, 0.1]
    f = 1 - direct["forget"].accuracy[1] / base["forget"].accuracy[1]
    r = 1 - direct["retain"].accuracy[1] / base["retain"].accuracy[1]
    assert c.forget_drop[2] == pytest.approx(f) and c.retain_drop[2] == pytest.approx(r)
    diff = c.forget_drop - c.retain_drop
    assert c.max_difference == pytest.approx(diff.max())
    assert c.area_between == pytest.approx(np.trapezoid(diff, c.x))
    ppl = direct["forget"].perplexity / base["forget"].perplexity
    assert c.perplexity_ratio("forget")[2] == pytest.approx(ppl)


def test_figures_hold_the_numbers_and_render(curve):
    c, _, _ = curve
    fig = c.figure()
    forget = next(t for t in fig.data if t.name == "forget drop")
    np.testing.assert_allclose(forget.y, c.forget_drop)
    np.testing.assert_allclose(forget.x, c.x)
    html = fig.to_html(include_plotlyjs=False)
    assert "forget drop" in html
    pfig = c.figure("perplexity")
    np.testing.assert_allclose(
        next(t for t in pfig.data if t.name == "retain").y, c.perplexity_ratio("retain")
    )
    assert pfig.layout.yaxis.type == "log"


def test_save_and_load_round_trip(tmp_path, curve):
    c, _, _ = curve
    path = tmp_path / "curve.json"
    c.save(path)
    again = SelectivityCurve.load(path)
    np.testing.assert_allclose(again.forget_drop, c.forget_drop)
    assert again.summary() == c.summary()
    assert json.loads(path.read_text())["summary"]["max_difference"] == c.max_difference
    assert [p.name for p in tmp_path.iterdir()] == ["curve.json"]  # no temp file left


def test_curve_validation(tiny_model, curve):
    c, ps, ev = curve
    with pytest.raises(ValueError, match=r"selectivity_curve\(\) needs datasets \['retain'\]"):
        selectivity_curve(
            tiny_model, {"forget": ev["forget"]}, ps.intervention, [0.1], progress=False
        )
    with pytest.raises(ValueError, match="levels"):
        SelectivityCurve("x", [0.1], c.original, [])
    with pytest.raises(ValueError, match=r"needs datasets \['retain'\]"):
        SelectivityCurve("x", [0.1], Evaluation({"forget": c.original["forget"]}), [c.original])


def test_a_held_out_half_the_model_scores_0_on_is_a_clear_error_not_a_crash(tiny_model):
    """Top-1 of 0 on a held-out half (a task the model cannot do yet) made the benchmark stop
    with a ZeroDivisionError; the relative drop there is undefined, and the error says so."""
    from tl_unlearn import make_task, selectivity_curve, zero_ablation
    from tl_unlearn.metrics import random_tokens

    retain = make_task().retain.tokenize(tiny_model.tokenizer, "eval", seq_len=32, max_tokens=800)
    forget = random_tokens(tiny_model, n=16, seq_len=32, seed=1)  # top-1 0: nothing to predict
    curve = selectivity_curve(
        tiny_model,
        {"forget": forget, "retain": retain},
        lambda f: zero_ablation(tiny_model, heads=[(1, 0)] if f < 0.5 else [(1, 0), (0, 1)]),
        [0.25, 0.75],
        progress=False,
    )
    with pytest.raises(ValueError, match=r"top1 on 'forget' is 0 on these 8 sequences"):
        curve.held_out()
