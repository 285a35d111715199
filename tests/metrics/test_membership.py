import zlib

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tl_unlearn.metrics import auc_score, membership_inference
from tl_unlearn.metrics.membership import text_scores


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.5, 1.0), 1)  # rounding makes ties
    assert auc_score(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError, match="each label"):
        auc_score([1, 1], [0.2, 0.3])


def test_scores_by_hand(tiny_model):
    text = "def f(x):\n    return x + 1\n"
    s = text_scores(tiny_model, [text], max_tokens=64, k=0.5)
    tokens = tiny_model.to_tokens(text)
    lp = tiny_model(tokens).log_softmax(-1)[0, :-1].gather(-1, tokens[0, 1:, None])[:, 0]
    lp = lp.detach().double().numpy()
    assert s["loss"][0] == pytest.approx(-lp.mean(), rel=1e-6)
    shown = tiny_model.to_string(tokens[0, 1:])
    assert s["zlib"][0] == pytest.approx(-lp.sum() / len(zlib.compress(shown.encode())), rel=1e-6)
    low = np.sort(lp)[: round(0.5 * len(lp))]
    assert s["min_k"][0] == pytest.approx(-low.mean(), rel=1e-6)


def test_membership_of_fine_tuned_texts_is_detected(tiny_model, task):
    """Texts a copy was fine-tuned on (members, label 0) vs unseen texts of the same corpus."""
    import copy

    import torch

    members, unseen = task.forget.eval[:8], task.forget.eval[8:16]
    student = copy.deepcopy(tiny_model)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    tokens = torch.cat([student.to_tokens(t)[:, :48] for t in members])
    for _ in range(25):
        loss = student(tokens, return_type="loss")
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    trained = membership_inference(student, members, unseen, max_tokens=48)
    before = membership_inference(tiny_model, members, unseen, max_tokens=48)
    assert trained.auc["loss"] > 0.9 and trained.auc["min_k"] > 0.9
    assert before.auc["loss"] < trained.auc["loss"]
    assert set(trained.to_dict()["auc"]) == {"loss", "zlib", "min_k"}


def test_auc_interval_covers_the_true_auc():
    """Two Gaussian score samples with a known AUC, Phi(d / sqrt 2): the 95% bootstrap
    interval over texts covers it in 90-99 of 100 seeded repeats."""
    from scipy.stats import norm

    from tl_unlearn.metrics.membership import auc_interval

    d = 0.5
    truth = norm.cdf(d / np.sqrt(2))
    hits = 0
    for rep in range(100):
        rng = np.random.default_rng(rep)
        lo, hi = auc_interval(rng.normal(0, 1, 64), rng.normal(d, 1, 64), n_boot=400, seed=rep)
        hits += lo <= truth <= hi
    assert 90 <= hits <= 99  # 96 here; resampling one side only gives 87
