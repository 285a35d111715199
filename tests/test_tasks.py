"""Prompt→answer tasks, answer metrics and user metrics (checked against hand-written TL code)."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch

from tl_unlearn import Evaluation, evaluate, make_task
from tl_unlearn.circuits.maps import (
    component_intervention,
    component_selectivity_map,
    greedy_circuit,
)
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.data.tasks import (
    InductionTask,
    PromptAnswers,
    facts_task,
    greater_than_task,
    induction_vocab,
    ioi_task,
)
from tl_unlearn.metrics.names import OnDatasets, resolve_metric
from tl_unlearn.metrics.selectivity import selectivity_curve


def reference_answer_metrics(model, prompts, answers, counterfactuals=None):
    """Answer metrics, one unpadded example at a time, with plain TransformerLens calls."""
    tok = model.tokenizer
    rows = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        p_ids = [tok.bos_token_id, *tok(p, add_special_tokens=False)["input_ids"]]
        a_ids = tok(a, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + a_ids])
        with torch.no_grad():
            logits = model(ids)[0].double()
        logp = logits.log_softmax(-1)
        pos = range(len(p_ids) - 1, len(p_ids) + len(a_ids) - 1)
        lp = [float(logp[t, a_ids[j]]) for j, t in enumerate(pos)]
        hits = [int(logits[t].argmax()) == a_ids[j] for j, t in enumerate(pos)]
        last = logits[len(p_ids) - 1]
        row = {
            "logprob": sum(lp),
            "n": len(a_ids),
            "exact": all(hits),
            "first": hits[0],
            "rank": 1 + int((last > last[a_ids[0]]).sum()),
            "nll": -sum(lp),
        }
        if counterfactuals is not None:
            c = tok(counterfactuals[i], add_special_tokens=False)["input_ids"][0]
            row["ld"] = float(last[a_ids[0]] - last[c])
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def mixed(tiny_model):
    """Prompts of different lengths, answers of 1-3 tokens, counterfactuals."""
    prompts = [
        "The capital of France is",
        "def f(x):\n    return",
        "And God said, Let there be",
        "x",
        "In the beginning God created the heaven and the",
        "import os\nimport",
        "The cat sat on the",
        "for i in range(10):\n   ",
    ] * 3
    prompts = [p + " " * (i // 8) for i, p in enumerate(prompts)]
    answers = [" Paris is big", " x", " light", " = 1", " earth", " sys", " mat.", " print"] * 3
    cfs = [" Rome", " y", " darkness", " + 2", " sea", " re", " hat", " pass"] * 3
    pa = PromptAnswers("mixed", prompts, answers, cfs, eval_fraction=0.5)
    idx = pa.examples("eval") + pa.examples("fit")
    return pa, idx


def test_batched_equals_one_at_a_time_and_hand_written(tiny_model, mixed):
    pa, _ = mixed
    ds = pa.tokenize(tiny_model.tokenizer, "eval", max_tokens=None)
    order = [pa.examples("eval")[i] for i in torch.randperm(len(pa.examples("eval"))).tolist()]
    assert len(set(ds.answer_start.tolist())) > 1  # mixed prompt lengths
    batched = evaluate(tiny_model, ds, batch_size=5, progress=False)["mixed"]
    singles = [
        evaluate(tiny_model, ds.rows(slice(i, i + 1)), progress=False)["mixed"]
        for i in range(len(ds))
    ]
    for key in ("answer_logprob", "answer_accuracy", "logit_diff", "answer_rank", "answer_prob"):
        assert batched.answer[key] == pytest.approx(
            np.mean([s.answer[key] for s in singles]), abs=1e-4
        )
    # the dataset's rows are in a seeded order: rebuild the reference in that order
    texts = [(ds.tokens[r, 1 : ds.answer_start[r]].tolist()) for r in range(len(ds))]
    by_ids = {
        tuple(tiny_model.tokenizer(pa.prompts[i], add_special_tokens=False)["input_ids"]): i
        for i in order
    }
    rows = [by_ids[tuple(t)] for t in texts]
    ref = reference_answer_metrics(
        tiny_model,
        [pa.prompts[i] for i in rows],
        [pa.answers[i] for i in rows],
        [pa.counterfactuals[i] for i in rows],
    )
    assert max(r["n"] for r in ref) >= 2  # multi-token answers
    assert batched.answer["answer_logprob"] == pytest.approx(
        np.mean([r["logprob"] for r in ref]), abs=1e-4
    )
    assert batched.answer["answer_logprob_per_token"] == pytest.approx(
        np.mean([r["logprob"] / r["n"] for r in ref]), abs=1e-4
    )
    assert batched.answer["answer_accuracy"] == np.mean([r["exact"] for r in ref])
    assert batched.answer["first_token_accuracy"] == np.mean([r["first"] for r in ref])
    assert batched.answer["answer_rank"] == pytest.approx(np.mean([r["rank"] for r in ref]))
    assert batched.answer["logit_diff"] == pytest.approx(np.mean([r["ld"] for r in ref]), abs=1e-4)
    # answer loss: mean cross-entropy over answer tokens only
    assert batched.loss == pytest.approx(
        sum(r["nll"] for r in ref) / sum(r["n"] for r in ref), abs=1e-4
    )
    assert batched.n_predictions == sum(r["n"] for r in ref)


def test_user_metric_same_through_evaluate_curve_and_map(tiny_model):
    task = make_task("ioi", "wikipedia")
    data = task.tokenize(tiny_model.tokenizer, max_tokens=1500, seq_len=64)

    def logit_diff(logits, batch):
        final = batch.answer_logits(logits)
        return (
            final.gather(1, batch.answers[:, None]) - final.gather(1, batch.counterfactual[:, None])
        ).squeeze(1)

    metric = {"forget": logit_diff, "retain": "top1"}
    cmap = component_selectivity_map(
        tiny_model, data, [(0, 1), (1, 2), (1, None)], metric=metric, progress=False
    )
    spec, fns = resolve_metric(metric)
    for comp, ev_map in zip(cmap.components, cmap.evaluations):
        iv = component_intervention(tiny_model, [comp], "zero")
        ev = evaluate(tiny_model, data, iv, metrics=fns, progress=False)
        assert ev["forget"].custom["logit_diff"] == ev_map["forget"].custom["logit_diff"]
        # the user's logit difference is the builtin one
        assert ev["forget"].custom["logit_diff"] == pytest.approx(
            ev["forget"].answer["logit_diff"], abs=1e-5
        )
        assert "logit_diff" not in ev["retain"].custom  # only on the dataset that asked
    drop = cmap.forget_drop
    assert np.isfinite(drop).all()
    curve = selectivity_curve(
        tiny_model,
        data,
        lambda k: component_intervention(tiny_model, [(1, int(k))], "zero"),
        [1, 2],
        metric=metric,
        progress=False,
    )
    assert (
        curve.evaluations[1]["forget"].custom["logit_diff"]
        == cmap.evaluations[1]["forget"].custom["logit_diff"]
    )
    iv, gc = greedy_circuit(
        tiny_model, data, cmap, max_components=2, max_retain_drop=1.0, target_forget_drop=10.0
    )
    assert len(gc.evaluations) >= 1 and "logit_diff" in gc.evaluations[0]["forget"].custom


def test_user_metric_scalar_and_per_example_agree(tiny_model, mixed):
    pa, _ = mixed
    ds = pa.tokenize(tiny_model.tokenizer, "eval", max_tokens=None)

    def per_example(logits, batch):
        return batch.answer_logits(logits).max(-1).values

    def scalar(logits, batch):
        return batch.answer_logits(logits).max(-1).values.mean()

    ev = evaluate(
        tiny_model, ds, metrics={"pe": per_example, "sc": scalar}, batch_size=3, progress=False
    )["mixed"]
    assert ev.custom["pe"] == pytest.approx(ev.custom["sc"], abs=1e-5)


def test_induction_second_copy_on_tiny_model(tiny_model):
    """The committed tiny model does induction (it is trained with repeated rows): the second
    copy is predicted, the first copy is not."""
    ds = InductionTask().tokenize(tiny_model.tokenizer, max_tokens=49 * 32)
    ev = evaluate(tiny_model, ds, progress=False)["induction"]
    first_copy = TokenDataset(
        "first",
        ds.tokens,
        ds.attention_mask,
        torch.zeros_like(ds.tokens, dtype=torch.bool).index_fill_(1, torch.arange(2, 25), True),
    )
    ev_first = evaluate(tiny_model, first_copy, progress=False)["first"]
    assert ev.accuracy[1] > 0.5 > 0.05 > ev_first.accuracy[1]


def test_word_induction_prompt_answer_task_on_tiny_model(tiny_model, tiny_data):
    """A prompt→answer task the tiny model can do: a list of words, then its start again; the
    answer is the word that came next in the list, the counterfactual the word two before it.
    The clean answer accuracy and logit difference are well above chance, and mean-ablating
    the tiny model's induction heads (chosen by attention on other data) takes most of both
    away."""
    import random

    from tl_unlearn.circuits.induction import induction_scores

    tok = tiny_model.tokenizer
    vocab = [tok.decode([i]) for i in induction_vocab(tok).tolist()]
    words = sorted({w[1:] for w in vocab if w[:1] == " " and w[1:].isalpha() and len(w) >= 5})
    assert len(words) >= 50
    rng = random.Random(0)
    prompts, answers, cfs = [], [], []
    for _ in range(96):
        seq = rng.sample(words, 12)
        k = rng.randrange(3, 11)
        prompts.append(" ".join(seq + seq[:k]))
        answers.append(" " + seq[k])
        cfs.append(" " + seq[k - 2])
    pa = PromptAnswers("word_induction", prompts, answers, cfs, eval_fraction=0.5)
    data = {"forget": pa.tokenize(tok, "eval", max_tokens=None)}
    clean = evaluate(tiny_model, data, progress=False)
    acc, ld = clean.metric("forget", "answer_accuracy"), clean.metric("forget", "logit_diff")
    assert clean["forget"].n_examples >= 30
    assert acc > 0.5 and ld > 2.0, (acc, ld)
    probe = InductionTask().tokenize(tok, "fit", max_tokens=16 * 49)
    ind = induction_scores(tiny_model, probe)
    heads = [(1, h) for h in range(tiny_model.cfg.n_heads) if ind[1, h] > 0.5]
    iv = component_intervention(tiny_model, heads, "mean", tiny_data["retain"])
    ablated = evaluate(tiny_model, data, iv, progress=False)
    assert ablated.metric("forget", "answer_accuracy") < acc / 2
    assert ablated.metric("forget", "logit_diff") < ld / 2


@pytest.mark.smollm2
def test_induction_second_copy_on_smollm2(smollm2):
    """Only the second copy is scored, and it is the predictable part (SmolLM2 has induction
    heads)."""
    ds = InductionTask(half=20).tokenize(smollm2.tokenizer, max_tokens=41 * 8)
    ev = evaluate(smollm2, ds, progress=False)["induction"]
    first_copy = TokenDataset(
        "first",
        ds.tokens,
        ds.attention_mask,
        torch.zeros_like(ds.tokens, dtype=torch.bool).index_fill_(1, torch.arange(2, 21), True),
    )
    ev_first = evaluate(smollm2, first_copy, progress=False)["first"]
    assert ev.n_predictions == 8 * 19 and ev_first.n_predictions == 8 * 19
    assert ev.accuracy[1] > 0.5 > 0.05 > ev_first.accuracy[1]


def test_ioi_on_tiny_model_and_normalised_logit_diff(tiny_model):
    pa = ioi_task(tiny_model.tokenizer)
    clean = evaluate(
        tiny_model, {"forget": pa.tokenize(tiny_model.tokenizer, max_tokens=3000)}, progress=False
    )
    base = evaluate(
        tiny_model,
        {"forget": pa.tokenize(tiny_model.tokenizer, corrupted=True, max_tokens=3000)},
        progress=False,
    )
    assert np.isfinite(list(clean["forget"].answer.values())).all()
    assert clean["forget"].n_examples == base["forget"].n_examples > 50
    ld_c, ld_b = clean.metric("forget", "logit_diff"), base.metric("forget", "logit_diff")
    assert ld_c != ld_b
    assert clean.normalised_logit_diff(clean, base)["forget"] == pytest.approx(1.0)
    assert base.normalised_logit_diff(clean, base)["forget"] == pytest.approx(0.0)
    half = Evaluation.from_dict(clean.to_dict())
    half["forget"].answer["logit_diff"] = (ld_c + ld_b) / 2
    assert half.normalised_logit_diff(clean, base)["forget"] == pytest.approx(0.5)


def test_sources(tmp_path, tiny_model):
    rows = [
        {"prompt": f"Question {i}?", "answer": f" A{i}", "counterfactual": " no"} for i in range(12)
    ]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with (tmp_path / "qa.csv").open("w") as fh:
        fh.write("prompt,answer,counterfactual\n")
        fh.writelines(f"{r['prompt']},{r['answer']},{r['counterfactual']}\n" for r in rows)
    a = PromptAnswers.from_source(tmp_path / "qa.jsonl")
    b = PromptAnswers.from_source(tmp_path / "qa.csv")
    c = PromptAnswers.from_source(datasets.Dataset.from_list(rows))
    d = PromptAnswers.from_source([(r["prompt"], r["answer"], r["counterfactual"]) for r in rows])
    for pa in (b, c, d):
        assert (pa.prompts, pa.answers, pa.counterfactuals) == (
            a.prompts,
            a.answers,
            a.counterfactuals,
        )
        assert pa.examples("eval") == a.examples("eval")
    from transformer_lens.evals import IOIDataset

    ioi = IOIDataset(tiny_model.tokenizer, num_samples=20, seed=1, names=["John", "David", "Sam"])
    pa = PromptAnswers.from_source(ioi)
    s = ioi.samples[0]
    assert pa.prompts[0] + pa.answers[0] == s["text"] and pa.counterfactuals[0] == s["S"]


def test_builtin_tasks_split_by_group_and_tokenize(tiny_model):
    facts = facts_task()
    fit_groups = {facts.groups[i] for i in facts.examples("fit")}
    assert not fit_groups & {facts.groups[i] for i in facts.examples("eval")}
    gt = greater_than_task(n=50)
    tok = tiny_model.tokenizer
    for i in range(50):
        start = int(gt.prompts[i].split("year ")[1][2:4])
        assert int(gt.answers[i]) > start > int(gt.counterfactuals[i])
    ds = gt.tokenize(tok, max_tokens=None)
    assert (ds.answers != ds.counterfactual).all()
    pa = ioi_task(tok, n=50)
    assert all(len(tok(a, add_special_tokens=False)["input_ids"]) == 1 for a in pa.answers)
    task = make_task("facts", "induction")
    data = task.tokenize(tok, max_tokens=500)
    assert data["forget"].has_answers and not data["retain"].has_answers


class _StripTokenizer:
    """A tokenizer whose normaliser strips whitespace (so " " tokenizes to nothing)."""

    def __init__(self, tok):
        self.tok = tok
        self.bos_token_id, self.eos_token_id = tok.bos_token_id, tok.eos_token_id
        self.pad_token_id = tok.pad_token_id

    def __call__(self, text, add_special_tokens=False):
        return self.tok(text.strip(), add_special_tokens=add_special_tokens)


def test_bad_inputs_name_the_problem(tiny_model):
    tok = tiny_model.tokenizer
    prompts = [f"Prompt number {i} is" for i in range(20)]
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        PromptAnswers("x", prompts, [" "] * 20).tokenize(_StripTokenizer(tok), max_tokens=None)
    with pytest.raises(ValueError, match="counterfactual of example 3 equals its answer"):
        PromptAnswers(
            "x",
            prompts,
            [f" {i}" for i in range(20)],
            [f" {i + 1}" if i != 3 else " 3" for i in range(20)],
        )
    long = PromptAnswers("x", ["word " * 300] * 20, [" a"] * 20, groups=[str(i) for i in range(20)])
    with pytest.raises(ValueError, match="n_ctx is 256"):
        long.tokenize(tok, n_ctx=tiny_model.cfg.n_ctx, max_tokens=None)
    with pytest.raises(ValueError, match="same first token"):
        PromptAnswers("x", prompts, [" Paris is"] * 20, [" Paris was"] * 20).tokenize(
            tok, max_tokens=None
        )
    with pytest.raises(ValueError, match="2 answers for 20 prompts"):
        PromptAnswers("x", prompts, [" a", " b"])
    ds = PromptAnswers("x", prompts, [" a"] * 20).tokenize(tok, max_tokens=None)
    with pytest.raises(ValueError, match=r"Metric 'bad' returned shape \(\d+, 2\)"):
        evaluate(
            tiny_model, ds, metrics={"bad": lambda lg, b: torch.zeros(len(b), 2)}, progress=False
        )
    with pytest.raises(ValueError, match="Metric 'nan' returned NaN"):
        evaluate(
            tiny_model,
            ds,
            metrics={"nan": lambda lg, b: torch.tensor(float("nan"))},
            progress=False,
        )
    with pytest.raises(ValueError, match="shadows a builtin metric"):
        evaluate(tiny_model, ds, metrics={"top1": lambda lg, b: 0.0}, progress=False)
    with pytest.raises(ValueError, match="has no 'logit_diff'"):
        evaluate(tiny_model, ds, progress=False).metric("x", "logit_diff")
    assert not any(hp.fwd_hooks for hp in tiny_model.hook_dict.values())
    assert isinstance(resolve_metric({"forget": len})[1]["len"], OnDatasets)


@pytest.mark.smollm2
def test_smollm2_ioi_logit_diff_equals_hand_written(smollm2):
    """The clean IOI logit difference on SmolLM2 equals a hand-written TL computation."""
    model = smollm2
    pa = ioi_task(model.tokenizer, n=64, seed=3)
    ds = pa.tokenize(model.tokenizer, max_tokens=None, max_examples=24)
    ev = evaluate(model, {"ioi": ds}, batch_size=8, progress=False)["ioi"]
    diffs = []
    for r in range(len(ds)):
        n = int(ds.answer_start[r])
        with torch.no_grad():
            logits = model(ds.tokens[r : r + 1, :n])[0, -1]  # prompt only, no padding
        diffs.append(float(logits[ds.tokens[r, n]] - logits[ds.counterfactual[r]]))
    assert ev.answer["logit_diff"] == pytest.approx(float(np.mean(diffs)), abs=1e-4)
    assert ev.answer["logit_diff"] > 0.5
