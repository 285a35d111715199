import sys
from contextlib import nullcontext

import pytest
import torch

from tl_unlearn.interventions import resample_ablation, zero_ablation
from tl_unlearn.metrics import RelearnResult, anamnesis_index, relearn, relearn_attack

relearn_module = sys.modules["tl_unlearn.metrics.relearning"]  # the package exports a function too


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
    iv = zero_ablation(
        tiny_model,
        heads=[(l, h) for l in range(2) for h in range(4)],
        neurons={l: list(range(512)) for l in range(2)},
    )
    r = relearn(tiny_model, fit, ev, iv, lr=1e-5, max_steps=3, eval_every=1)
    assert not r.reached and r.steps is None and r.seconds_to_target is None
    assert r.describe() == "not reached within 3 steps"
    assert [c[0] for c in r.curve] == [0, 1, 2, 3]
    assert anamnesis_index(r, r) is None


def test_relearn_attack_picks_fastest(tiny_model, forget):
    fit, ev = forget
    iv = zero_ablation(tiny_model, neurons={1: list(range(64))})
    best, results = relearn_attack(
        tiny_model, fit, ev, iv, lrs=(1e-5, 3e-3), max_steps=20, eval_every=5
    )
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
    r = relearn(
        tiny_model, fit, ev, iv, lr=3e-4, max_steps=40, eval_every=8, recover=0.5, batch_size=8
    )
    assert r.curve[0][1] == pytest.approx(start)
    assert r.target == pytest.approx(start + 0.5 * (orig - start))
    assert start < orig - 0.05  # a real drop to win back
    assert r.reached and r.tokens == r.steps * 8 * fit.tokens.shape[1]
    with pytest.raises(ValueError, match="recover"):
        relearn(tiny_model, fit, ev, iv, recover=1.5)


def test_adapter_relearn_learns_and_leaves_the_model_as_it_was(tiny_model, forget, weights_guard):
    fit, ev = forget
    iv = zero_ablation(tiny_model, neurons={1: list(range(512))})
    flags = [p.requires_grad for p in tiny_model.parameters()]
    with weights_guard(tiny_model):
        r = relearn(
            tiny_model, fit, ev, iv, lr=1e-2, max_steps=10, eval_every=5, adapter_rank=8, alpha=0.0
        )
    assert [p.requires_grad for p in tiny_model.parameters()] == flags
    assert all(p.grad is None for p in tiny_model.parameters())
    assert r.adapter_rank == 8 and RelearnResult.from_dict(r.to_dict()) == r
    # the adapters start at zero (step 0 is the intervened model) and then learn
    losses = [c[2] for c in r.curve]
    assert losses[-1] < losses[0] - 0.05


def test_adapters_add_to_the_mlp_output_and_keep_an_ablated_output_ablated(tiny_model):
    from transformer_lens.utilities import get_act_name

    from tl_unlearn.metrics.relearning import _Adapters

    tokens = tiny_model.to_tokens(
        ["def f(x):\n    return x + 1", "import os"], padding_side="right"
    )
    adapters = _Adapters(tiny_model, rank=4, seed=0)
    with torch.no_grad():
        for up in adapters.up:
            up.normal_()
    out0, out1 = get_act_name("mlp_out", 0), get_act_name("mlp_out", 1)
    norm1 = get_act_name("normalized", 1, "ln2")
    iv = [(out0, lambda act, hook: torch.zeros_like(act))]  # layer 0's MLP ablated
    seen = {}

    def keep(act, hook):
        seen[hook.name] = act.detach().clone()

    watch = [(n, keep) for n in (out0, out1, norm1)]
    with torch.no_grad():
        tiny_model.run_with_hooks(tokens, fwd_hooks=adapters.hooks(iv) + watch)
        with_adapters = dict(seen)
        # reference by hand: the same intervention without adapters, then layer 1's MLP
        # output plus normalised input @ down @ up
        tiny_model.run_with_hooks(tokens, fwd_hooks=iv + watch)
    assert torch.count_nonzero(with_adapters[out0]) == 0  # the ablation holds
    # layer 1 sees a different residual (layer 0's adapter is ablated, so only its own adds)
    expected = seen[out1] + seen[norm1] @ adapters.down[1] @ adapters.up[1]
    torch.testing.assert_close(with_adapters[out1], expected, rtol=1e-5, atol=1e-5)
    assert tiny_model.hook_dict[out1].fwd_hooks == []


@pytest.mark.parametrize("adapter_rank", [0, 4])
def test_micro_batches_and_recompute_give_the_same_steps_as_the_whole_batch(
    tiny_model, forget, adapter_rank
):
    fit, ev = forget
    iv = zero_ablation(tiny_model, neurons={1: list(range(256))})
    runs = [
        relearn(
            tiny_model,
            fit,
            ev.head(8),
            iv,
            lr=1e-2,
            max_steps=3,
            eval_every=1,
            alpha=0.0,
            batch_size=4,
            adapter_rank=adapter_rank,
            micro_batch_size=micro,
            recompute=recompute,
        )
        for micro, recompute in ((None, False), (1, False), (None, True))
    ]
    whole, micro, recomputed = ([c[2] for c in r.curve] for r in runs)
    assert whole[-1] != whole[0]
    assert whole == pytest.approx(micro, rel=1e-4)
    assert whole == pytest.approx(recomputed, rel=1e-4)
    assert all("forward" not in vars(b) for b in tiny_model.blocks)


def test_recomputed_blocks_give_the_same_gradients_and_keep_one_block(tiny_model, forget):
    """A hand-run backward with and without recomputation: equal weight gradients, and far
    fewer bytes kept for the backward pass (counted with saved_tensors_hooks)."""
    _, ev = forget
    tokens = ev.tokens[:2]
    # a hook inside the blocks runs in the recomputation too: the ablation must hold there
    iv = zero_ablation(tiny_model, neurons={0: list(range(64))})

    def backward(recompute: bool) -> tuple[dict[str, torch.Tensor], int]:
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        tiny_model.zero_grad(set_to_none=True)
        ctx = relearn_module._recomputed_blocks(tiny_model) if recompute else nullcontext()
        with (
            ctx,
            iv.applied(tiny_model),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            tiny_model(tokens, return_type="loss").backward()
        params = {p.untyped_storage().data_ptr() for p in tiny_model.parameters()}
        kept = sum(n for ptr, n in saved.items() if ptr not in params)
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
        tiny_model.zero_grad(set_to_none=True)
        return grads, kept

    plain, kept_plain = backward(False)
    recomputed, kept_recomputed = backward(True)
    for name, g in plain.items():
        torch.testing.assert_close(recomputed[name], g, rtol=1e-5, atol=1e-7, msg=name)
    assert torch.count_nonzero(plain["blocks.0.mlp.W_out"][:64]) == 0  # the ablation held
    assert kept_recomputed < 0.5 * kept_plain
    assert all("forward" not in vars(b) for b in tiny_model.blocks)


def test_recompute_refuses_resample_ablation_before_any_work(tiny_model, forget):
    fit, ev = forget
    iv = resample_ablation(tiny_model, ev, heads=[(0, 1)]) + zero_ablation(
        tiny_model, heads=[(1, 0)]
    )
    with pytest.raises(ValueError, match=r"resample.*recompute=False"):
        relearn(tiny_model, fit, ev, iv, recompute=True)
    relearn(
        tiny_model, fit, ev, zero_ablation(tiny_model, heads=[(1, 0)]), max_steps=1, recompute=True
    )  # a deterministic one is fine
    assert all("forward" not in vars(b) for b in tiny_model.blocks)
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


@pytest.mark.parametrize("recompute", [False, True])
def test_the_method_and_its_baseline_keep_their_places(tiny_model, forget, recompute):
    """Each attacked intervention carries its own ZRF, computed independently by zrf_score
    (a regression: a loop variable once turned the method into its baseline)."""
    from tl_unlearn.metrics import degree_of_removal, zrf_score

    fit, check = forget
    method = zero_ablation(tiny_model, heads=[(1, 0), (1, 2)])
    baseline = zero_ablation(tiny_model, heads=[(0, 3)])
    r = degree_of_removal(
        tiny_model,
        fit,
        check,
        method,
        baseline=baseline,
        lrs=[1e-3],
        max_steps=1,
        recompute=recompute,
    )
    assert r.method.zrf == pytest.approx(zrf_score(tiny_model, check, method), abs=1e-9)
    assert r.baseline.zrf == pytest.approx(zrf_score(tiny_model, check, baseline), abs=1e-9)
    assert r.method.zrf != pytest.approx(r.baseline.zrf, abs=1e-6)
