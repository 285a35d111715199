import numpy as np
import pytest

from tl_unlearn import evaluate
from tl_unlearn.circuits.induction import (
    induction_scores,
    previous_token_scores,
    repeated_random_tokens,
)
from tl_unlearn.circuits.maps import (
    ComponentMap,
    component_intervention,
    component_selectivity_map,
    greedy_circuit,
)
from tl_unlearn.interventions import zero_ablation


@pytest.fixture(scope="module")
def small(tiny_data):
    return {k: v.head(6) for k, v in tiny_data.items()}


def test_map_entries_equal_single_ablation_evaluations(tiny_model, small):
    cmap = component_selectivity_map(tiny_model, small, "both", progress=False)
    assert len(cmap.components) == 2 * 4 + 2
    for comp, ev in zip(cmap.components, cmap.evaluations):
        iv = component_intervention(tiny_model, [comp])
        direct = evaluate(tiny_model, small, iv, progress=False)
        for k in small:
            assert ev[k].loss == pytest.approx(direct[k].loss, abs=1e-5)
    i = cmap.components.index((1, 3))
    direct = evaluate(tiny_model, small, zero_ablation(tiny_model, heads=[(1, 3)]), progress=False)
    f = 1 - direct["forget"].accuracy[1] / cmap.original["forget"].accuracy[1]
    assert cmap.forget_drop[i] == pytest.approx(f, abs=1e-3)


def test_map_figures_hold_the_numbers(tiny_model, small):
    cmap = component_selectivity_map(tiny_model, small, progress=False)
    heat = cmap.figure("forget")
    np.testing.assert_allclose(np.array(heat.data[0].z), cmap.forget_drop.reshape(2, 4))
    diff = cmap.figure("difference")
    np.testing.assert_allclose(np.array(diff.data[0].z), cmap.selectivity.reshape(2, 4))
    sc = cmap.figure("scatter")
    assert list(sc.data[0].text) == [f"a{l}.h{h}" for l in range(2) for h in range(4)]
    np.testing.assert_allclose(sc.data[0].x, cmap.retain_drop)
    assert "a1.h3" in sc.to_html(include_plotlyjs=False)
    again = ComponentMap.from_dict(cmap.to_dict())
    np.testing.assert_allclose(again.selectivity, cmap.selectivity)


def test_mean_and_resample_maps_need_reference(tiny_model, small, tiny_data):
    with pytest.raises(ValueError, match="reference"):
        component_selectivity_map(tiny_model, small, method="mean", progress=False)
    with pytest.raises(ValueError, match=r"needs datasets \['forget'\]; got \['retain'\]"):
        component_selectivity_map(tiny_model, {"retain": small["retain"]}, progress=False)
    cmap = component_selectivity_map(
        tiny_model,
        small,
        [(0, 1), (1, None)],
        method="mean",
        reference=tiny_data["retain"],
        progress=False,
    )
    assert cmap.labels == ["a0.h1", "m1"]


def test_greedy_circuit_respects_limits(tiny_model, small):
    cmap = component_selectivity_map(tiny_model, small, "both", progress=False)
    iv, curve = greedy_circuit(
        tiny_model, small, cmap, target_forget_drop=0.99, max_retain_drop=0.3, max_components=4
    )
    n = len(iv.info["components"])
    assert 1 <= n <= 4 and curve.levels == [float(i) for i in range(1, n + 1)]
    assert iv.info["components"][0] == cmap.labels[int(np.argmax(cmap.selectivity))]
    assert curve.retain_drop[-1] <= 0.3
    final = evaluate(tiny_model, small, iv, progress=False)
    assert final["forget"].loss == pytest.approx(curve.evaluations[-1]["forget"].loss)
    with pytest.raises(ValueError, match="max_retain_drop"):
        greedy_circuit(tiny_model, small, cmap, max_retain_drop=-1.0)


def test_tiny_head_map_on_its_induction_circuit(tiny_model, tiny_data):
    """The committed tiny model is trained with repeated random-token rows
    (``scripts/assets/train_tiny_model.py``), so it does induction. Its circuit is redundant: all four
    layer-1 heads are induction heads (by attention, measured on other data), and no single
    head carries it. So: the map of single mean ablations (induction vs prose) has finite drops
    and its top head hurts induction more than prose; ablating the induction heads together
    removes induction; the greedy circuit grows past single heads to a large forget drop."""
    from tl_unlearn.data.tasks import InductionTask

    rep = InductionTask().tokenize(tiny_model.tokenizer, "eval", max_tokens=16 * 49)
    probe = InductionTask().tokenize(tiny_model.tokenizer, "fit", max_tokens=16 * 49)
    data = {"forget": rep, "retain": tiny_data["retain"].head(16)}
    ref = tiny_data["forget"]
    clean = evaluate(tiny_model, data, progress=False)
    assert clean["forget"].accuracy[1] > 0.9
    cmap = component_selectivity_map(tiny_model, data, method="mean", reference=ref, progress=False)
    assert len(cmap.components) == 8
    assert np.isfinite(cmap.forget_drop).all() and np.isfinite(cmap.retain_drop).all()
    top = cmap.components.index(cmap.ranked("forget")[0])
    assert cmap.forget_drop[top] > max(cmap.retain_drop[top], 0.1)
    ind = induction_scores(tiny_model, probe)
    heads = [(1, h) for h in range(tiny_model.cfg.n_heads) if ind[1, h] > 0.5]
    assert len(heads) >= 2  # redundant induction heads
    ablated = evaluate(
        tiny_model, data, component_intervention(tiny_model, heads, "mean", ref), progress=False
    )
    assert ablated["forget"].accuracy[1] < 0.1
    assert ablated["retain"].accuracy[1] > clean["retain"].accuracy[1] - 0.15
    iv, curve = greedy_circuit(
        tiny_model,
        data,
        cmap,
        target_forget_drop=0.5,
        max_retain_drop=0.3,
        max_components=4,
        reference=ref,
    )
    assert np.isfinite(curve.forget_drop).all()
    assert curve.forget_drop[-1] > max(cmap.forget_drop) and len(iv.info["components"]) >= 2


@pytest.mark.smollm2
def test_smollm2_head_map_finds_the_induction_circuit(smollm2, task):
    """Forget = repeated random tokens, retain = prose, all 270 heads mean-ablated one by one.

    The heads whose ablation hurts the forget set most belong to the induction circuit:
    induction heads (attend to the token after the previous occurrence) and the
    previous-token heads they compose with. Measured: the top 3 are L16H0 (previous-token,
    0.91), L19H8 (previous-token, 0.61) and L18H6 (induction, 0.87).
    """
    rep = repeated_random_tokens(smollm2, n=3, half_len=30)
    prose = task.retain.tokenize(smollm2.tokenizer, "eval", seq_len=61, max_tokens=3 * 61)
    ref = task.retain.tokenize(smollm2.tokenizer, "fit", seq_len=61, max_tokens=8 * 61)
    cmap = component_selectivity_map(
        smollm2,
        {"forget": rep, "retain": prose},
        method="mean",
        reference=ref,
        progress=False,
        batch_size=4,
    )
    assert len(cmap.components) == 270
    probe = repeated_random_tokens(smollm2, n=4, half_len=30, seed=1)
    ind = induction_scores(smollm2, probe)
    prev = previous_token_scores(smollm2, probe)
    circuit = (ind > 0.3) | (prev > 0.5)
    top = cmap.ranked("forget")[:5]
    print(
        "top forget-drop heads",
        top,
        [(float(ind[c]), float(prev[c])) for c in top],
        "circuit heads",
        int(circuit.sum()),
    )
    # 18 of 270 heads are circuit heads: 3 random heads are all circuit heads with
    # probability ~3e-4; measured top 3: L16H0 (prev 0.91), L19H8 (prev 0.61), L18H6 (ind 0.87)
    assert all(bool(circuit[c]) for c in top[:3])
    best_induction = divmod(int(ind.argmax()), smollm2.cfg.n_heads)
    assert best_induction in cmap.ranked("forget")[:5]


def test_shared_prefix_mean_map_equals_one_pass_per_component(tiny_model, small, tiny_data):
    ref = tiny_data["retain"]
    fast = component_selectivity_map(
        tiny_model, small, "both", method="mean", reference=ref, progress=False
    )
    slow = component_selectivity_map(
        tiny_model, small, "both", method="mean", reference=ref, progress=False, share_prefix=False
    )
    for a, b in zip(fast.evaluations, slow.evaluations):
        for k in small:
            assert a[k].loss == pytest.approx(b[k].loss, abs=1e-5)
            assert a[k].accuracy[1] == pytest.approx(b[k].accuracy[1], abs=2e-3)
    np.testing.assert_allclose(fast.forget_drop, slow.forget_drop, atol=5e-3)


@pytest.mark.parametrize("per_position", [False, True])
def test_mean_map_entries_equal_mean_ablation(tiny_model, small, tiny_data, per_position):
    """Precomputed means give what mean_ablation computes itself, pooled or per position."""
    from tl_unlearn.interventions import mean_ablation

    ref = tiny_data["retain"]
    comps = [(0, 1), (1, None)]
    cmap = component_selectivity_map(
        tiny_model,
        small,
        comps,
        method="mean",
        reference=ref,
        per_position=per_position,
        progress=False,
    )
    direct = [
        mean_ablation(tiny_model, ref, heads=[(0, 1)], per_position=per_position),
        mean_ablation(
            tiny_model, ref, hook_points=["blocks.1.hook_mlp_out"], per_position=per_position
        ),
    ]
    for ev, iv in zip(cmap.evaluations, direct):
        d = evaluate(tiny_model, small, iv, progress=False)
        for k in small:
            assert ev[k].loss == pytest.approx(d[k].loss, abs=1e-6)


def test_mean_ablation_with_means_needs_every_site(tiny_model):
    from tl_unlearn.interventions import mean_ablation

    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.hook_z"):
        mean_ablation(tiny_model, None, heads=[(1, 0)], means={"blocks.0.attn.hook_z": 0})
    with pytest.raises(ValueError, match="reference data or precomputed means"):
        mean_ablation(tiny_model, None, heads=[(1, 0)])
