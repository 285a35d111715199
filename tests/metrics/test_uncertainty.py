import pytest
import torch

from tl_unlearn.interventions import zero_ablation
from tl_unlearn.metrics import fisher_uncertainty


def test_fisher_trace_by_hand(tiny_model, tiny_data, weights_guard):
    ds = tiny_data["forget"]
    iv = zero_ablation(tiny_model, heads=[(0, 0)])
    with weights_guard(tiny_model):
        f = fisher_uncertainty(tiny_model, ds, iv, max_samples=3)
    assert all(p.grad is None for p in tiny_model.parameters())
    traces, grads = [], []
    for i in range(3):
        tiny_model.zero_grad()
        with iv.applied(tiny_model):
            nll = tiny_model(ds.tokens[i : i + 1], return_type="loss", loss_per_token=True)
        valid = (ds.attention_mask[i, 1:] & ds.attention_mask[i, :-1]).float()
        ll = -(nll[0] * valid).sum() / valid.sum()
        g = torch.autograd.grad(ll, list(tiny_model.parameters()))
        traces.append(sum(float(x.double().pow(2).sum()) for x in g))
        grads.append(g)
    assert f.fisher_trace == pytest.approx(sum(traces) / 3, rel=1e-5)
    mean = [sum(gs) / 3 for gs in zip(*grads)]
    assert f.grad_norm_sq == pytest.approx(
        sum(float(m.double().pow(2).sum()) for m in mean), rel=1e-5
    )
    assert f.efficacy == pytest.approx(1 / f.fisher_trace)
    assert f.efficacy_bound >= f.efficacy  # Jensen: ||mean g||^2 <= mean ||g||^2
