import pytest
import torch

from tl_unlearn.interventions import zero_ablation
from tl_unlearn.metrics import RelearnResult, anamnesis_index, relearn, relearn_attack


@pytest.fixture(scope="module")
def forget(tiny_model, task):
    fit = task.forget.tokenize(tiny_model.tokenizer, "fit", seq_len=64, max_tokens=6000)
    ev = task.forget.tokenize(tiny_model.tokenizer, "eval", seq_len=64, max_tokens=1500)
    return fit, ev


def test_relearn_is_finite_for_a_few_zeroed_neurons(tiny_model, forget, weights_guard):
    fit, ev = forget
    iv = zero_ablation(tiny_model, neurons={0: list(range(8)), 1: list(range(8))})
    with weights_guard(tiny_model):
        r = relearn(tiny_model, fit, ev, iv, lr=1e-3, max_steps=60, eval_every=5, label=iv.name)
    assert r.reached and 0 <= r.steps <= 60 and r.seconds >= 0
    assert r.curve[-1][1] >= r.target and r.curve[0][0] == 0
    assert RelearnResult.from_dict(r.to_dict()) == r
    fig = r.figure()
    assert list(fig.data[0].y) == [c[1] for c in r.curve]
    assert "not reached" not in r.describe()


def test_relearn_reports_not_reached_when_budget_runs_out(tiny_model, forget):
    fit, ev = forget
    iv = zero_ablation(tiny_model, heads=[(l, h) for l in range(2) for h in range(4)],
                       neurons={l: list(range(512)) for l in range(2)})
    r = relearn(tiny_model, fit, ev, iv, lr=1e-5, max_steps=3, eval_every=1)
    assert not r.reached and r.steps is None and r.seconds_to_target is None
    assert r.describe() == "not reached within 3 steps"
    assert [c[0] for c in r.curve] == [0, 1, 2, 3]
    assert anamnesis_index(r, r) is None


def test_relearn_attack_picks_fastest(tiny_model, forget):
    fit, ev = forget
    iv = zero_ablation(tiny_model, neurons={1: list(range(64))})
    best, results = relearn_attack(tiny_model, fit, ev, iv, lrs=(1e-5, 3e-3), max_steps=20,
                                   eval_every=5)
    assert len(results) == 2
    reached = [r for r in results if r.reached]
    if reached:
        assert best.steps == min(r.steps for r in reached)


def test_anamnesis_index():
    a = RelearnResult("u", 0.5, 0.55, 6, 1.0)
    b = RelearnResult("r", 0.5, 0.55, 24, 4.0)
    assert anamnesis_index(a, b) == 0.25
    with pytest.raises(ValueError, match="same target"):
        anamnesis_index(a, RelearnResult("r", 0.4, 0.55, 24, 4.0))
    assert torch.isinf(torch.tensor(anamnesis_index(a, RelearnResult("r", 0.5, 0.55, 0, 0.0))))


def test_recover_half_of_the_drop_sets_the_target_from_step_zero(tiny_model, forget):
    """recover=0.5: the target is halfway between the intervened model's forget top-1 at
    step 0 (checked with evaluate() and the hooks) and the original's; tokens count steps x
    batch x sequence length."""
    from tl_unlearn.metrics import evaluate

    fit, ev = forget
    iv = zero_ablation(tiny_model, neurons={0: list(range(256)), 1: list(range(256))})
    start = evaluate(tiny_model, ev, iv, progress=False, skip_common=0)["forget"].accuracy[1]
    orig = evaluate(tiny_model, ev, progress=False, skip_common=0)["forget"].accuracy[1]
    r = relearn(tiny_model, fit, ev, iv, lr=3e-4, max_steps=40, eval_every=8, recover=0.5,
                batch_size=8)
    assert r.curve[0][1] == pytest.approx(start)
    assert r.target == pytest.approx(start + 0.5 * (orig - start))
    assert start < orig - 0.05  # a real drop to win back
    assert r.reached and r.tokens == r.steps * 8 * fit.tokens.shape[1]
    with pytest.raises(ValueError, match="recover"):
        relearn(tiny_model, fit, ev, iv, recover=1.5)
