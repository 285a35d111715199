"""Counterfactual ablation: the corrupted partner's activation, found for any row order."""

from __future__ import annotations

import pytest
import torch

from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.data.tasks import ioi_task
from tl_unlearn.interventions.counterfactual import counterfactual_ablation, counterfactual_pair


@pytest.fixture(scope="module")
def pair(tiny_model):
    return counterfactual_pair(
        ioi_task(tiny_model.tokenizer, n=60), tiny_model.tokenizer, max_examples=9
    )


def test_heads_read_their_own_partner(tiny_model, pair):
    clean, corrupted = pair
    name = "blocks.1.attn.hook_z"
    iv = counterfactual_ablation(tiny_model, clean, corrupted, heads=[(1, 3)])
    with torch.no_grad():
        _, want = tiny_model.run_with_cache(corrupted.tokens, names_filter=name)
        order = torch.tensor([8, 3, 0, 5])
        with iv.applied(tiny_model):
            _, got = tiny_model.run_with_cache(clean.tokens[order], names_filter=name)
            _, whole = tiny_model.run_with_cache(clean.tokens, names_filter=name)
    mask = clean.attention_mask[order]
    assert torch.equal(got[name][:, :, 3][mask], want[name][order][:, :, 3][mask])
    assert torch.equal(got[name][:, :, :3], whole[name][order][:, :, :3])  # other heads clean


def test_mlp_outputs_and_positions(tiny_model, pair):
    clean, corrupted = pair
    name = "blocks.0.hook_mlp_out"
    iv = counterfactual_ablation(tiny_model, clean, corrupted, hook_points=[name], positions=[2])
    with torch.no_grad():
        _, want = tiny_model.run_with_cache(corrupted.tokens, names_filter=name)
        _, base = tiny_model.run_with_cache(clean.tokens, names_filter=name)
        with iv.applied(tiny_model):
            _, got = tiny_model.run_with_cache(clean.tokens, names_filter=name)
    assert torch.equal(got[name][:, 2], want[name][:, 2])
    assert torch.equal(got[name][:, 3:], base[name][:, 3:])


def test_pairs_of_different_lengths_are_named(tiny_model):
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 5, 6, 7, 8]])
    clean = TokenDataset("clean", tokens, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool())
    corrupted = TokenDataset(
        "corrupted", tokens, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]).bool()
    )
    with pytest.raises(
        ValueError, match="Example 1: the clean prompt is 5 tokens but its corrupted prompt is 3"
    ):
        counterfactual_ablation(tiny_model, clean, corrupted, heads=[(0, 0)])
    with pytest.raises(ValueError, match="Clean data has 2 examples but corrupted data has 1"):
        counterfactual_ablation(tiny_model, clean, corrupted.head(1), heads=[(0, 0)])
    assert not any(hp.fwd_hooks for hp in tiny_model.hook_dict.values())


def test_a_row_that_is_not_clean_data_raises(tiny_model, pair):
    clean, corrupted = pair
    iv = counterfactual_ablation(tiny_model, clean, corrupted, heads=[(0, 0)])
    with (
        pytest.raises(ValueError, match="Batch row 0 is not one of the 9 clean"),
        iv.applied(tiny_model),
    ):
        tiny_model(tiny_model.to_tokens(["something else entirely here"]))


def test_induction_pairs_corrupt_the_first_copy(tiny_model):
    from tl_unlearn.data.tasks import InductionTask
    from tl_unlearn.engine.scoring import scored_logprob

    task = InductionTask(half=10)
    clean, corrupted = counterfactual_pair(task, tiny_model.tokenizer, max_tokens=210)
    assert clean.tokens.shape == corrupted.tokens.shape
    assert torch.equal(clean.tokens[:, 11:], corrupted.tokens[:, 11:])  # second copy kept
    assert not (clean.tokens[:, 1:11] == corrupted.tokens[:, 1:11]).any()  # first copy not
    with torch.no_grad():  # the tiny model does induction: the corruption takes it away
        good = scored_logprob(tiny_model(clean.tokens), clean).mean()
        bad = scored_logprob(tiny_model(corrupted.tokens), clean).mean()
    assert good > bad + 1.0
