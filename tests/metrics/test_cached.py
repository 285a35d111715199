"""Metrics from logits and caches equal the model-running functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tl_unlearn import evaluate
from tl_unlearn.data.tasks import ioi_task
from tl_unlearn.interventions import zero_ablation
from tl_unlearn.metrics.cached import (
    activation_distances_from_caches,
    evaluate_logits,
    logit_lens_from_caches,
)
from tl_unlearn.metrics.distances import activation_distances
from tl_unlearn.metrics.logit_lens import logit_lens_diff


def close(a, b, tol=1e-5):
    return abs(a - b) <= tol * max(1.0, abs(b))


def test_evaluate_logits_equals_evaluate(tiny_model, tiny_data):
    iv = zero_ablation(tiny_model, heads=[(1, 0), (0, 2)])
    want = evaluate(tiny_model, tiny_data, iv, progress=False)
    with torch.no_grad(), iv.applied(tiny_model):
        logits = {k: tiny_model(d.tokens) for k, d in tiny_data.items()}
    got = evaluate_logits(logits, tiny_data)
    for name in tiny_data:
        g, w = got[name], want[name]
        assert close(g.loss, w.loss) and close(g.accuracy[1], w.accuracy[1])
        assert close(g.accuracy[5], w.accuracy[5]) and close(g.accuracy_skip[1], w.accuracy_skip[1])
        assert np.allclose(g.units["loss"], w.units["loss"], rtol=1e-5, atol=1e-4)


def test_evaluate_logits_answers_and_user_metric(tiny_model):
    data = ioi_task(tiny_model.tokenizer, n=40).tokenize(tiny_model.tokenizer, max_examples=7)

    def first_logit(logits, batch):
        return batch.answer_logits(logits)[:, 0]

    want = evaluate(tiny_model, data, progress=False, metrics={"first": first_logit})
    with torch.no_grad():
        got = evaluate_logits(tiny_model(data.tokens), data, metrics={"first": first_logit})
    for k, v in want[data.name].answer.items():
        assert close(got[data.name].answer[k], v), k
    assert close(got[data.name].custom["first"], want[data.name].custom["first"])


def test_evaluate_logits_refuses_mismatched_logits(tiny_model, tiny_data):
    ds = tiny_data["forget"]
    with pytest.raises(ValueError, match="logits\\['forget'\\] has shape"):
        evaluate_logits(torch.zeros(len(ds) - 1, 4, 10), ds)
    with pytest.raises(ValueError, match="logits are for"):
        evaluate_logits({"other": torch.zeros(1, 1, 1)}, ds)


def test_caches_equal_the_model_running_lens_and_distances(tiny_model, tiny_data):
    ds = tiny_data["retain"].head(6)
    iv = zero_ablation(tiny_model, heads=[(0, 1)])
    want = logit_lens_diff(tiny_model, ds, iv)
    with torch.no_grad():
        _, clean = tiny_model.run_with_cache(ds.tokens)
        with iv.applied(tiny_model):
            _, ablated = tiny_model.run_with_cache(ds.tokens)
    got = logit_lens_from_caches(tiny_model, clean, ablated, ds)
    assert got.layers == want.layers
    for run in ("original", "intervened"):
        assert np.allclose(got.logprob[ds.name][run], want.logprob[ds.name][run], atol=1e-5)
        assert np.allclose(got.rank[ds.name][run], want.rank[ds.name][run], atol=1e-5)
    names = [f"blocks.{l}.hook_resid_post" for l in range(2)]
    want_d = activation_distances(tiny_model, ds, names, hooks_b=iv)
    got_d = activation_distances_from_caches(
        clean, ablated, ds.attention_mask, hook_names=names, dataset=ds.name
    )
    for n in names:
        assert close(got_d.l2[ds.name][n], want_d.l2[ds.name][n])
        assert close(got_d.cosine[ds.name][n], want_d.cosine[ds.name][n])
        assert close(got_d.norm[ds.name][n], want_d.norm[ds.name][n])
