import math
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from tl_unlearn.interventions import zero_ablation
from tl_unlearn.metrics import (
    activation_distances,
    completeness,
    js_divergence,
    output_distances,
    random_tokens,
    random_twin,
    zrf_score,
    zrf_scores,
)


def test_js_matches_scipy_squared_natural_log():
    torch.manual_seed(0)
    a, b = torch.randn(50, 300) * 3, torch.randn(50, 300) * 3
    ours = js_divergence(a, b).numpy()
    p, q = a.double().softmax(-1).numpy(), b.double().softmax(-1).numpy()
    ref = np.array([jensenshannon(p[i], q[i]) ** 2 for i in range(50)])
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-12)


def test_js_bounded_by_ln2_and_symmetric():
    a = torch.tensor([[1000.0, -1000.0, 0.0]])
    b = torch.tensor([[-1000.0, 1000.0, 0.0]])
    assert float(js_divergence(a, b)) == pytest.approx(math.log(2), abs=1e-9)
    x, y = torch.randn(4, 10), torch.randn(4, 10)
    torch.testing.assert_close(js_divergence(x, y), js_divergence(y, x))


def _probs(model, ds, hooks=()):
    with model.hooks(fwd_hooks=list(hooks)):
        logits = model(ds.tokens)[:, :-1].double()
    valid = ds.attention_mask[:, 1:] & ds.attention_mask[:, :-1]
    return logits.softmax(-1)[valid].detach().numpy()


def test_zrf_equals_one_minus_mean_normalised_js_with_random_twin(tiny_model, tiny_data):
    ds = tiny_data["forget"]
    twin = random_twin(tiny_model, seed=3)
    iv = zero_ablation(tiny_model, neurons={0: list(range(50))})
    zrf = zrf_score(tiny_model, ds, iv, random_model=twin, batch_size=3)
    p, q = _probs(tiny_model, ds, iv), _probs(twin, ds)
    js = np.array([jensenshannon(p[i], q[i]) ** 2 for i in range(len(p))])
    assert zrf == pytest.approx(1 - (js / math.log(2)).mean(), abs=1e-6)
    assert 0 <= zrf <= 1
    # a model is at distance 0 from itself: output JS 0
    assert output_distances(tiny_model, ds).js == pytest.approx(0.0, abs=1e-6)  # float32 path


def test_zrf_scores_share_one_twin_built_inside(tiny_model, tiny_data, monkeypatch):
    """Several interventions, the twin built (and freed) inside, and the distances taken a
    few positions at a time: each equals scipy on a twin built here with the same seed."""
    monkeypatch.setattr(
        sys.modules["tl_unlearn.metrics.distances"], "_BLOCK_BYTES", 4 * tiny_model.cfg.d_vocab * 5
    )  # blocks of 5 positions
    ds = tiny_data["forget"]
    ivs = [zero_ablation(tiny_model, neurons={0: list(range(50))}), []]
    scores = zrf_scores(tiny_model, ds, ivs, seed=3, batch_size=3)
    twin = random_twin(tiny_model, seed=3, dtype=torch.bfloat16)  # the one built inside
    assert twin.W_E.dtype == torch.bfloat16
    for iv, zrf in zip(ivs, scores):
        p, q = _probs(tiny_model, ds, iv), _probs(twin, ds)
        js = np.array([jensenshannon(p[i], q[i]) ** 2 for i in range(len(p))])
        assert zrf == pytest.approx(1 - (js / math.log(2)).mean(), abs=1e-6)
    assert scores[0] != pytest.approx(scores[1], abs=1e-4)
    # a float32 twin of the same seed: a random model all the same
    fp32 = zrf_scores(tiny_model, ds, ivs, random_model=random_twin(tiny_model, seed=3))
    assert fp32 == pytest.approx(scores, abs=2e-3)
    assert zrf_score(tiny_model, ds, ivs[0], seed=3, batch_size=3) == pytest.approx(
        scores[0], abs=1e-12
    )


def test_output_l2_by_hand(tiny_model, tiny_data):
    ds = tiny_data["retain"]
    iv = zero_ablation(tiny_model, heads=[(1, 0)])
    d = output_distances(tiny_model, ds, iv, batch_size=4)
    p, q = _probs(tiny_model, ds, iv), _probs(tiny_model, ds)
    assert d.prob_l2 == pytest.approx(np.linalg.norm(p - q, axis=-1).mean(), rel=1e-6)
    assert d.n_positions == len(p)


def test_activation_distances_by_hand(tiny_model, tiny_data):
    ds = tiny_data["forget"]
    iv = zero_ablation(tiny_model, heads=[(0, 2)])
    name = "blocks.1.hook_resid_pre"
    res = activation_distances(
        tiny_model,
        {"forget": ds, "random": random_tokens(tiny_model)},
        [name, "blocks.0.hook_resid_pre"],
        iv,
        batch_size=3,
    )
    _, ca = tiny_model.run_with_cache(ds.tokens, names_filter=name)
    with iv.applied(tiny_model):
        _, cb = tiny_model.run_with_cache(ds.tokens, names_filter=name)
    a, b = ca[name][ds.attention_mask].double(), cb[name][ds.attention_mask].double()
    assert res.l2["forget"][name] == pytest.approx(float((a - b).norm(dim=-1).mean()), rel=1e-6)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    assert res.cosine["forget"][name] == pytest.approx(float(cos), rel=1e-6)
    assert res.l2["forget"]["blocks.0.hook_resid_pre"] == 0.0  # before the ablated layer
    fig = res.figure()
    assert list(fig.data[0].y) == [res.l2["forget"][name], 0.0]
    assert "<div" in fig.to_html(include_plotlyjs=False)
    with pytest.raises(ValueError, match="Unknown hook name"):
        activation_distances(tiny_model, ds, ["blocks.0.hook_nope"])


def test_random_twin_vs_original_activation_distance(tiny_model, tiny_data):
    twin = random_twin(tiny_model)
    res = activation_distances(tiny_model, tiny_data["retain"], model_b=twin)
    assert all(v > 0 for v in res.l2["retain"].values())


def test_completeness_by_hand(tiny_model, tiny_data):
    ds = tiny_data["forget"]
    other = random_twin(tiny_model)
    iv = zero_ablation(tiny_model, heads=[(1, 1)])
    got = completeness(tiny_model, ds, iv, retrained_model=other, k=5, batch_size=4)
    with iv.applied(tiny_model):
        ta = tiny_model(ds.tokens)[:, :-1].topk(5, -1).indices
    tb = other(ds.tokens)[:, :-1].topk(5, -1).indices
    valid = ds.attention_mask[:, 1:] & ds.attention_mask[:, :-1]
    jac = [
        len(set(x.tolist()) & set(y.tolist())) / len(set(x.tolist()) | set(y.tolist()))
        for x, y in zip(ta[valid], tb[valid])
    ]
    assert got == pytest.approx(np.mean(jac), rel=1e-9)
    assert completeness(tiny_model, ds, retrained_model=tiny_model) == 1.0


def test_js_float32_path_close_to_scipy():
    torch.manual_seed(1)
    a, b = torch.randn(20, 5000) * 4, torch.randn(20, 5000) * 4
    p, q = a.double().softmax(-1).numpy(), b.double().softmax(-1).numpy()
    ref = np.array([jensenshannon(p[i], q[i]) ** 2 for i in range(20)])
    np.testing.assert_allclose(
        js_divergence(a, b, torch.float32).numpy(), ref, rtol=1e-4, atol=1e-6
    )
