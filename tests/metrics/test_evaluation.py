import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformer_lens.utilities import lm_accuracy, lm_cross_entropy_loss

from tl_unlearn import Evaluation, evaluate
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.interventions import zero_ablation


def _full(model, ds):
    """Reference: all logits at once, TL's own metric functions, per-token masks."""
    logits = model(ds.tokens)
    valid = ds.attention_mask[:, 1:] & ds.attention_mask[:, :-1]
    acc = lm_accuracy(logits, ds.tokens, per_token=True)[valid].double().mean()
    ce = lm_cross_entropy_loss(logits, ds.tokens, per_token=True)[valid].mean()
    return logits.detach(), valid, float(acc), float(ce.detach())


@pytest.fixture(params=["vocab-slices", "rows", "position-blocks"])
def scoring_blocks(request, monkeypatch):
    """Score from the final residual 7 vocabulary entries by 5 positions at a time (what a
    TransformerLens unembedding gets, here with every boundary case), or from logits (an
    unembedding with a hook on it): whole rows, or 5 positions at a time (what a 512-token
    SmolLM2 row gets: its logits exceed the scoring budget)."""
    if request.param == "vocab-slices":
        monkeypatch.setattr("tl_unlearn.engine.scoring._VOCAB_SLICE", 7)
        monkeypatch.setattr("tl_unlearn.engine.scoring._SLICE_POSITIONS", 5)
    else:
        monkeypatch.setattr("tl_unlearn.metrics.evaluation.plain_unembed", lambda model: False)
    if request.param == "position-blocks":
        monkeypatch.setattr("tl_unlearn.engine.forward._ROW_BYTES", 5 * 4096 * 4)
        monkeypatch.setattr("tl_unlearn.engine.forward._BLOCK_BYTES", 5 * 4096 * 4)
    return request.param


def test_top1_and_loss_match_transformer_lens(tiny_model, tiny_data, scoring_blocks):
    ev = evaluate(tiny_model, tiny_data, batch_size=5, progress=False)
    for name, ds in tiny_data.items():
        _, valid, acc, ce = _full(tiny_model, ds)
        assert ev[name].n_predictions == int(valid.sum())
        assert abs(ev[name].accuracy[1] - acc) < 1e-9
        assert abs(ev[name].loss - ce) < 1e-5
        assert abs(ev[name].perplexity - torch.tensor(ce).exp().item()) < 1e-3


def test_unpadded_batches_match_tl_mean_loss(tiny_model, tiny_data):
    ds = tiny_data["retain"]
    full = ds.attention_mask.all(1)
    only_full = TokenDataset("x", ds.tokens[full], ds.attention_mask[full])
    ev = evaluate(tiny_model, only_full, progress=False)
    ref = lm_cross_entropy_loss(tiny_model(only_full.tokens), only_full.tokens).detach()
    assert abs(ev["x"].loss - float(ref)) < 1e-5


def test_topk_and_skip_common_by_hand(tiny_model, tiny_data, scoring_blocks):
    ds = tiny_data["forget"]
    ev = evaluate(tiny_model, ds, top_k=(1, 5), skip_common=20, progress=False)[ds.name]
    logits, valid, _, _ = _full(tiny_model, ds)
    targets = ds.tokens[:, 1:]
    top5 = logits[:, :-1].topk(5, -1).indices
    hit5 = (top5 == targets[..., None]).any(-1)
    assert abs(ev.accuracy[5] - float(hit5[valid].double().mean())) < 1e-9
    counts = torch.bincount(targets[valid])
    common = counts.topk(20).indices
    keep = valid & ~torch.isin(targets, common)
    hit1 = logits[:, :-1].argmax(-1) == targets
    assert ev.n_predictions_skip == int(keep.sum())
    assert abs(ev.accuracy_skip[1] - float(hit1[keep].double().mean())) < 1e-9
    assert abs(ev.accuracy_skip[5] - float(hit5[keep].double().mean())) < 1e-9
    # per sequence too (what the intervals resample)
    per_seq = hit5.logical_and(valid).sum(1).double()
    assert torch.equal(torch.tensor(ev.units["top5"]), per_seq)


def test_position_blocks_give_the_statistics_of_whole_rows(tiny_model, tiny_data, monkeypatch):
    """Scored positions (a target mask) and every per-sequence statistic are the same when a
    row's logits come in blocks of positions (blocks overlap by one position; the path of an
    unembedding with a hook on it)."""
    ds = tiny_data["forget"]
    gen = torch.Generator().manual_seed(0)
    scored = TokenDataset(
        "x", ds.tokens, ds.attention_mask, torch.rand(ds.tokens.shape, generator=gen) < 0.6
    )
    monkeypatch.setattr("tl_unlearn.metrics.evaluation.plain_unembed", lambda model: False)
    whole = evaluate(tiny_model, scored, skip_common=10, progress=False)["x"]
    for width in (2, 3, 7, 63):
        monkeypatch.setattr("tl_unlearn.engine.forward._ROW_BYTES", width * 4096 * 4)
        monkeypatch.setattr("tl_unlearn.engine.forward._BLOCK_BYTES", width * 4096 * 4)
        blocks = evaluate(tiny_model, scored, skip_common=10, progress=False)["x"]
        assert blocks.n_predictions == whole.n_predictions > 0
        assert blocks.accuracy == whole.accuracy and blocks.accuracy_skip == whole.accuracy_skip
        assert abs(blocks.loss - whole.loss) < 1e-6
        for k, v in whole.units.items():
            assert torch.allclose(torch.tensor(blocks.units[k]), torch.tensor(v), atol=1e-4), k


def test_relative_drop_json_round_trip_and_dataframe(tiny_model, tiny_data):
    base = evaluate(tiny_model, tiny_data, progress=False)
    iv = zero_ablation(tiny_model, heads=[(0, 0), (0, 1), (0, 2)])
    ablated = evaluate(tiny_model, tiny_data, iv, progress=False, label=iv.name)
    drop = ablated.relative_drop(base, "top1")
    for k in tiny_data:
        assert abs(drop[k] - (1 - ablated[k].accuracy[1] / base[k].accuracy[1])) < 1e-12
    assert drop["forget"] > 0
    again = Evaluation.from_dict(json.loads(json.dumps(ablated.to_dict())))
    assert again == ablated
    df = ablated.to_dataframe()
    assert set(df.index) == {"forget", "retain"} and {"loss", "top1", "top5_skip"} <= set(df)


def test_evaluate_errors(tiny_model):

    with pytest.raises(ValueError, match="no dataset"):
        evaluate(tiny_model, {}, progress=False)
    ds = TokenDataset("x", torch.ones(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate(tiny_model, ds, progress=False).metric("x", "top3")


PEAK_SCRIPT = textwrap.dedent("""
    import sys, torch
    from tl_unlearn import load_tiny_model, evaluate
    from tl_unlearn.data.datasets import TokenDataset
    n = int(sys.argv[1])
    model = load_tiny_model()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(model.cfg.d_vocab, (n, 128), generator=g)
    ds = TokenDataset("x", tokens, torch.ones_like(tokens, dtype=torch.bool))
    evaluate(model, ds, batch_size=8, progress=False)      # warm-up (allocator, kernels)
    open("/proc/self/clear_refs", "w").write("5")           # reset the peak-RSS counter
    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])
    before = rss("VmRSS:")
    evaluate(model, ds, batch_size=8, progress=False)
    print(rss("VmHWM:") - before)
""")


def _peak_increase_kb(n_seqs):
    # Large blocks via mmap, returned to the OS at free: peak RSS then tracks live tensors
    # instead of glibc's heap-growth heuristics (which add +-50 MB of noise otherwise).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(n_seqs)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_token_count():
    """4x the tokens: peak extra memory of evaluation stays that of one batch (ratio <= 1.1)."""
    small, large = _peak_increase_kb(32), _peak_increase_kb(128)
    # one batch of logits is 8*128*4096*4 B = 16 MiB; holding all logits of 128 sequences
    # would add ~256 MiB
    assert large <= 1.1 * small, (small, large)
