"""Generation behaviour: decoding against a hand-written loop, metrics against hand counts."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from tl_unlearn.interventions import actadd, zero_ablation
from tl_unlearn.metrics.generation import (
    GenerationBehaviour,
    UnigramDomain,
    generate_tokens,
    generation_behaviour,
    topic_words,
)
from tl_unlearn.metrics.intervals import paired_difference_interval, ratio_interval

PROMPTS = ["The cat sat on the", "def main():", "In the beginning", "The city of"]


def argmax_loop(model, tokens, hooks, n):
    """Step-by-step greedy decoding with full forward passes (no KV cache)."""
    seq = tokens
    for _ in range(n):
        logits = model.run_with_hooks(seq, fwd_hooks=list(hooks))
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, tokens.shape[1] :]


@pytest.mark.parametrize("which", ["actadd", "heads", "none"])
def test_greedy_equals_argmax_loop(tiny_model, weights_guard, which):
    model = tiny_model
    iv = {
        "actadd": lambda: actadd(model, "def f(x):", "The city", layer=1, coeff=6.0),
        "heads": lambda: zero_ablation(model, heads=[(0, 1), (1, 2)]),
        "none": lambda: [],
    }[which]()
    tokens = model.to_tokens(["The cat sat on", "The dog sat on"])
    assert tokens.shape[1] == len(model.to_tokens("The cat sat on")[0])  # same length: no padding
    with weights_guard(model):
        got = generate_tokens(model, tokens, list(iv), max_new_tokens=12, greedy=True)
        want = argmax_loop(model, tokens, iv, 12)
    assert torch.equal(got, want)
    if which == "actadd":  # the steering really changes what is generated
        assert not torch.equal(got, argmax_loop(model, tokens, [], 12))


def test_bridge_generation_matches_loop(tiny_bridge):
    tokens = tiny_bridge.to_tokens("The cat sat on")
    hooks = list(zero_ablation(tiny_bridge, heads=[(0, 1)]))
    got = generate_tokens(tiny_bridge, tokens, hooks, max_new_tokens=5, greedy=True)
    assert torch.equal(got, argmax_loop(tiny_bridge, tokens, hooks, 5))


def test_metrics_match_hand_counts(tiny_model, task):
    model = tiny_model
    fit = task.tokenize(model.tokenizer, "fit", seq_len=64, max_tokens=2000)
    dom = UnigramDomain.fit(fit["forget"], fit["retain"], model.cfg.d_vocab)
    topic = ["the", "of", "and", "def", "return"]
    gb = generation_behaviour(
        model,
        PROMPTS,
        zero_ablation(model, heads=[(1, 0)]),
        topic=topic,
        domain=dom,
        max_new_tokens=16,
        n_samples=3,
        temperature=1.3,
        seed=1,
        n_boot=200,
        progress=False,
        stop_at_eos=False,
    )
    run = gb.runs[0]
    all_words = [re.findall(r"[a-z]+", c.lower()) for row in run.continuations for c in row]
    n_words = sum(len(w) for w in all_words)
    assert run.value("topic_frequency") == pytest.approx(
        sum(x in topic for w in all_words for x in w) / n_words
    )
    trigrams = [[tuple(w[i : i + 3]) for i in range(len(w) - 2)] for w in all_words]
    repeated = sum(sum(g in t[:i] for i, g in enumerate(t)) for t in trigrams)
    assert run.value("repetition") == pytest.approx(repeated / sum(len(t) for t in trigrams))
    # fluency: the original model's own per-token loss on prompt + continuation (re-tokenized
    # ids are not used: decode/encode is not an identity, so regenerate the ids greedily)
    g = generation_behaviour(
        model,
        PROMPTS[:1],
        zero_ablation(model, heads=[(1, 0)]),
        topic=None,
        max_new_tokens=10,
        greedy=True,
        n_boot=50,
        progress=False,
        stop_at_eos=False,
    )
    prompt = model.to_tokens(PROMPTS[0])
    new = generate_tokens(
        model, prompt, list(zero_ablation(model, heads=[(1, 0)])), max_new_tokens=10, greedy=True
    )
    per_tok = model(torch.cat([prompt, new], 1), return_type="loss", loss_per_token=True)
    want = math.exp(per_tok[0, prompt.shape[1] - 1 :].mean().item())
    assert g.runs[0].value("fluency_perplexity") == pytest.approx(want, rel=1e-4)
    # forget likeness: the unigram log ratio summed over the continuation's ids
    f_ids = fit["forget"].tokens[:, 1:][fit["forget"].attention_mask[:, 1:]]
    r_ids = fit["retain"].tokens[:, 1:][fit["retain"].attention_mask[:, 1:]]
    pf = torch.bincount(f_ids, minlength=model.cfg.d_vocab).double() + 1
    pr = torch.bincount(r_ids, minlength=model.cfg.d_vocab).double() + 1
    ratio = (pf / pf.sum()).log() - (pr / pr.sum()).log()
    g2 = generation_behaviour(
        model,
        PROMPTS[:1],
        [],
        topic=None,
        domain=dom,
        max_new_tokens=10,
        greedy=True,
        n_boot=50,
        progress=False,
        stop_at_eos=False,
    )
    base = generate_tokens(model, prompt, [], max_new_tokens=10, greedy=True)
    assert g2.original.value("forget_likeness") == pytest.approx(
        ratio[base[0]].mean().item(), rel=1e-6
    )


def test_seeded_and_paired(tiny_model):
    model = tiny_model
    kw = dict(topic="code", max_new_tokens=10, n_samples=2, seed=3, n_boot=50, progress=False)
    a = generation_behaviour(
        model, PROMPTS, lambda c: actadd(model, "def", "The", 0, c), [0.0, 8.0], **kw
    )
    b = generation_behaviour(
        model, PROMPTS, lambda c: actadd(model, "def", "The", 0, c), [0.0, 8.0], **kw
    )
    assert a.runs[1].continuations == b.runs[1].continuations
    # coefficient 0 changes nothing, and every run uses the same seed: identical samples
    assert a.runs[0].continuations == a.original.continuations
    assert a.runs[1].continuations != a.original.continuations
    assert a.difference("distinct_2", a.runs[0]).value == 0.0


def test_no_hook_left_on_error(tiny_model, weights_guard):
    model = tiny_model

    def boom(act, hook):
        raise RuntimeError("boom")

    with weights_guard(model), pytest.raises(RuntimeError, match="boom"):
        generation_behaviour(
            model, PROMPTS, [("blocks.0.hook_resid_pre", boom)], max_new_tokens=3, progress=False
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prompts": []}, "prompts"),
        ({"prompts": "The cat"}, "prompts"),
        ({"prompts": ["ok", ""]}, "non-empty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 10_000}, "n_ctx"),
        ({"n_samples": 0}, "n_samples"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"topic": "weddingz"}, "weddingz"),
        ({"levels": [1.0]}, "levels"),
        ({"n_boot": 0}, "n_boot"),
    ],
)
def test_bad_input(tiny_model, weights_guard, kwargs, match):
    args = {"prompts": PROMPTS, "interventions": zero_ablation(tiny_model, heads=[(0, 0)])}
    args.update(kwargs)
    with weights_guard(tiny_model), pytest.raises(ValueError, match=match):
        generation_behaviour(
            tiny_model, args.pop("prompts"), args.pop("interventions"), progress=False, **args
        )


def test_family_needs_levels(tiny_model):
    with pytest.raises(ValueError, match="levels"):
        generation_behaviour(
            tiny_model, PROMPTS, lambda c: actadd(tiny_model, "a", "b", 0, c), progress=False
        )


def test_round_trip_and_figure(tiny_model, tmp_path):
    model = tiny_model
    gb = generation_behaviour(
        model,
        PROMPTS,
        lambda c: actadd(model, "def", "The", 1, c),
        [1.0, 4.0],
        topic="wedding",
        max_new_tokens=6,
        n_samples=2,
        n_boot=100,
        progress=False,
        level_name="coeff",
    )
    back = GenerationBehaviour.load(gb.save(tmp_path / "g.json"))
    assert back.to_dataframe().equals(gb.to_dataframe())
    fig = gb.figure("fluency_perplexity")
    line = fig.data[-1]
    assert list(line.x) == [1.0, 4.0]
    assert line.y[1] == pytest.approx(gb.runs[1].value("fluency_perplexity"))
    assert fig.data[2].y[0] == pytest.approx(gb.original.value("fluency_perplexity"))
    html = gb.samples_html()
    assert "<script" not in html.replace("&lt;script", "")
    with pytest.raises(ValueError, match="forget_likeness"):
        gb.figure("forget_likeness")  # no domain was given
    assert "wedding" in topic_words("wedding")


def test_interval_coverage_synthetic():
    """Nominal 95% bootstrap intervals cover the true ratio in 90-99% of 200 seeded repeats."""
    rng = np.random.default_rng(0)
    p_true, n_units, per_unit = 0.3, 60, 20
    covered = 0
    for rep in range(200):
        # units with their own rate (clustered data), mean rate p_true
        rates = rng.beta(3 * p_true / (1 - p_true), 3, size=n_units)
        num = rng.binomial(per_unit, rates).astype(float)
        den = np.full(n_units, float(per_unit))
        lo, hi = ratio_interval(num, den, n_boot=400, seed=rep)
        covered += lo <= p_true <= hi
    assert 0.90 * 200 <= covered <= 0.99 * 200, covered


def test_paired_interval_is_narrower_than_unpaired():
    rng = np.random.default_rng(1)
    base = rng.normal(10, 3, size=(40, 1)).clip(0)
    shifted = base + 0.5
    den = np.ones_like(base)
    lo, hi = paired_difference_interval(shifted, den, base, den, n_boot=300, seed=0)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
