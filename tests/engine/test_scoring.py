import copy

import pytest
import torch

from tl_unlearn import evaluate
from tl_unlearn.engine.scoring import batch_statistics, plain_unembed, residual_statistics


def _stable_ahead(logits, targets):
    """Reference: the target's place in a stable descending sort of its row (entries before
    it: a larger logit, or an equal one at a smaller id)."""
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices
    return (order == targets[:, None]).float().argmax(-1)


@pytest.fixture(params=["7 x 5", "one slice"])
def small_slices(request, monkeypatch):
    """Slices of 7 vocabulary entries by 5 positions (every boundary case at test sizes), or
    the whole vocabulary in one slice (the tiny model's 4,096 entries by default)."""
    vocab, positions = (7, 5) if request.param == "7 x 5" else (4096, 512)
    monkeypatch.setattr("tl_unlearn.engine.scoring._VOCAB_SLICE", vocab)
    monkeypatch.setattr("tl_unlearn.engine.scoring._SLICE_POSITIONS", positions)


def _inputs(model, data, batch=3, pos=12):
    tokens = data.tokens[:batch, :pos].clone()
    mask = torch.ones(batch, pos, dtype=torch.bool)
    mask[1, 8:] = False  # right padding
    with torch.no_grad():
        normed = model.ln_final(model(tokens, stop_at_layer=model.cfg.n_layers))
    return tokens, mask, normed


def _check_against_references(model, tokens, mask, normed, top_k=(1, 2, 5), skip=None, scored=None):
    with torch.no_grad():
        logits = model(tokens)
    by_slices = residual_statistics(model, normed, tokens, mask, top_k, skip, scored)
    by_logits = batch_statistics(logits, tokens, mask, top_k, skip, scored)
    # hits (and counts) exactly; the loss to float rounding of the sum
    assert torch.equal(by_slices[:, 2:], by_logits[:, 2:])
    assert torch.equal(by_slices[:, 0], by_logits[:, 0])
    assert torch.allclose(by_slices[:, 1], by_logits[:, 1], rtol=1e-6, atol=1e-4)
    # independent reference: TL's cross-entropy and a stable sort
    valid = mask[:, 1:] & mask[:, :-1]
    if scored is not None:
        valid &= scored
    targets = tokens[:, 1:][valid]
    flat = logits[:, :-1][valid]
    nll = torch.nn.functional.cross_entropy(flat, targets, reduction="none")
    rows = valid.nonzero()[:, 0]
    ref_loss = torch.zeros(len(tokens), dtype=torch.float64).index_add_(0, rows, nll.double())
    assert torch.allclose(by_slices[:, 1], ref_loss, rtol=1e-6, atol=1e-4)
    ahead = _stable_ahead(flat, targets)
    for j, k in enumerate(top_k):
        ref = torch.zeros(len(tokens), dtype=torch.float64).index_add_(
            0, rows, (ahead < k).double()
        )
        assert torch.equal(by_slices[:, 2 + j], ref), k
    return by_slices


def test_slices_give_the_scores_of_whole_logits(tiny_model, tiny_data, small_slices):
    tokens, mask, normed = _inputs(tiny_model, tiny_data["forget"])
    gen = torch.Generator().manual_seed(1)
    scored = torch.rand(tokens[:, 1:].shape, generator=gen) < 0.7
    skip = tokens[0, :4].unique()
    stats = _check_against_references(tiny_model, tokens, mask, normed, skip=skip, scored=scored)
    assert stats[:, 2].sum() > 0  # some hits: the comparison is not vacuous


def test_ties_go_to_the_smaller_token_id(tiny_model, tiny_data, small_slices):
    """Zeroed unembedding columns give exactly equal logits (0): targets tie with ids below
    and above them, within a slice and across slice boundaries; a zeroed unembedding ties
    every entry."""
    model = copy.deepcopy(tiny_model)
    tokens, mask, _ = _inputs(model, tiny_data["retain"])
    w = model.unembed.W_U.data
    targets = tokens[:, 1:].reshape(-1)
    tied = {3, 4, 10, 11, 4000}
    for t in targets[::2].tolist():  # every other target, and ids next to it
        tied |= {t - 1, t, t + 1, t + 8}
    ids = [i for i in tied if 0 <= i < model.cfg.d_vocab]
    w[:, ids] = 0
    model.unembed.b_U.data[ids] = 0
    with torch.no_grad():
        logits = model(tokens)
        normed = model.ln_final(model(tokens, stop_at_layer=model.cfg.n_layers))
    flat = logits[:, :-1].reshape(-1, model.cfg.d_vocab)
    assert ((flat == flat.gather(1, targets[:, None])).sum(-1) > 1).sum() >= 6  # real ties
    stats = _check_against_references(model, tokens, mask, normed, top_k=(1, 3, 5, 40))
    assert stats[:, 5].sum() > 0
    w.zero_()
    model.unembed.b_U.data.zero_()  # every logit equal: only targets among the first k ids are hits
    with torch.no_grad():
        normed = model.ln_final(model(tokens, stop_at_layer=model.cfg.n_layers))
    stats = _check_against_references(model, tokens, mask, normed, top_k=(1, 5))
    valid = mask[:, 1:] & mask[:, :-1]
    assert stats[:, 3].sum() == float((tokens[:, 1:][valid] < 5).sum())


def test_a_target_outside_the_vocabulary_is_refused(tiny_model, tiny_data):
    tokens, mask, normed = _inputs(tiny_model, tiny_data["forget"])
    tokens[0, 3] = tiny_model.cfg.d_vocab
    with pytest.raises(ValueError, match="Target token ids must be in 0..4095"):
        residual_statistics(tiny_model, normed, tokens, mask, (1,))


def test_softcap_and_bias_are_applied_per_slice(tiny_model, tiny_data, small_slices):
    model = copy.deepcopy(tiny_model)
    gen = torch.Generator().manual_seed(3)
    model.unembed.b_U.data = torch.randn(model.cfg.d_vocab, generator=gen)
    model.cfg.output_logits_soft_cap = 2.0
    tokens, mask, normed = _inputs(model, tiny_data["forget"])
    _check_against_references(model, tokens, mask, normed)


def test_a_hooked_unembedding_is_scored_from_its_logits(tiny_model, tiny_data):
    """A hook on the unembedding's output must count: evaluation then scores the hooked
    logits, not the residual."""
    ds = tiny_data["forget"]
    assert plain_unembed(tiny_model)

    def favour_token_5(logits, hook):
        logits[..., 5] += 1e4
        return logits

    with tiny_model.hooks(fwd_hooks=[("unembed.hook_out", favour_token_5)]):
        assert not plain_unembed(tiny_model)
        hooked = evaluate(tiny_model, ds, progress=False)[ds.name]
    targets = ds.tokens[:, 1:][ds.attention_mask[:, 1:] & ds.attention_mask[:, :-1]]
    assert hooked.accuracy[1] == pytest.approx(float((targets == 5).double().mean()))
    assert plain_unembed(tiny_model)
