import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformer_lens.utilities import lm_accuracy, lm_cross_entropy_loss

from tl_unlearn import Evaluation, evaluate
from tl_unlearn.data import TokenDataset
from tl_unlearn.interventions import zero_ablation


def _full(model, ds):
    """Reference: all logits at once, TL's own metric functions, per-token masks."""
    logits = model(ds.tokens)
    valid = ds.attention_mask[:, 1:] & ds.attention_mask[:, :-1]
    acc = lm_accuracy(logits, ds.tokens, per_token=True)[valid].double().mean()
    ce = lm_cross_entropy_loss(logits, ds.tokens, per_token=True)[valid].mean()
    return logits.detach(), valid, float(acc), float(ce.detach())


def test_top1_and_loss_match_transformer_lens(tiny_model, tiny_data):
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


def test_topk_and_skip_common_by_hand(tiny_model, tiny_data):
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
    import pytest

    with pytest.raises(ValueError, match="no dataset"):
        evaluate(tiny_model, {}, progress=False)
    ds = TokenDataset("x", torch.ones(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate(tiny_model, ds, progress=False).metric("x", "top3")


PEAK_SCRIPT = textwrap.dedent("""
    import sys, torch
    from tl_unlearn import load_tiny_model, evaluate
    from tl_unlearn.data import TokenDataset
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
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(n_seqs)], check=True,
                         capture_output=True, text=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_token_count():
    """4x the tokens: peak extra memory of evaluation stays that of one batch (ratio <= 1.1)."""
    small, large = _peak_increase_kb(32), _peak_increase_kb(128)
    # one batch of logits is 8*128*4096*4 B = 16 MiB; holding all logits of 128 sequences
    # would add ~256 MiB
    assert large <= 1.1 * small, (small, large)


def test_evaluate_many_shared_prefix_equals_full_passes(any_model, tiny_data):
    from tl_unlearn.interventions import actadd, zero_ablation
    from tl_unlearn.metrics import evaluate_many

    ivs = [
        [],
        zero_ablation(any_model, heads=[(1, 0)]),
        zero_ablation(any_model, neurons={0: [1, 2, 3]}),
        zero_ablation(any_model, heads=[(1, 2)]) + zero_ablation(any_model, neurons={1: [5]}),
        actadd(any_model, "def", "The", layer=1, coeff=4.0),
    ]
    shared = evaluate_many(any_model, tiny_data, ivs, progress=False)
    full = evaluate_many(any_model, tiny_data, ivs, progress=False, share_prefix=False)
    one_by_one = [evaluate(any_model, tiny_data, iv, progress=False) for iv in ivs]
    for a, b, c in zip(shared, full, one_by_one):
        for k in tiny_data:
            assert abs(a[k].loss - b[k].loss) < 1e-5 and abs(a[k].loss - c[k].loss) < 1e-5
            assert abs(a[k].accuracy[1] - b[k].accuracy[1]) < 2e-3
    assert shared[1]["forget"].loss != shared[0]["forget"].loss


def test_evaluate_many_with_attached_sae_falls_back(tiny_sae_model, tiny_data, sae_factory):
    from tl_unlearn.interventions import zero_ablation
    from tl_unlearn.metrics import evaluate_many

    sae = sae_factory(tiny_sae_model, "blocks.1.hook_resid_pre")
    with tiny_sae_model.saes(saes=[sae], use_error_term=True):
        iv = zero_ablation(tiny_sae_model, heads=[(1, 0)])
        a, b = evaluate_many(tiny_sae_model, tiny_data, [[], iv], progress=False)
    base = evaluate(tiny_sae_model, tiny_data, progress=False)
    assert abs(a["forget"].loss - base["forget"].loss) < 1e-4


def _llama_like_model():
    """A small random LLaMA-shaped HookedTransformer: RMSNorm, gated MLP, GQA, rotary."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=3, d_model=64, n_heads=4, d_head=16, d_mlp=128,
                                  d_vocab=300, n_ctx=64, act_fn="silu", gated_mlp=True,
                                  normalization_type="RMS", positional_embedding_type="rotary",
                                  n_key_value_heads=2, final_rms=True)
    return HookedTransformer(cfg).eval()


def test_resuming_from_block_outputs_is_bit_exact(tiny_model, tiny_data):
    """Head / MLP-layer ablations resume from the cached block (hook_z / hook_mlp_out):
    the logits must be exactly those of a full pass with the same hooks."""
    from tl_unlearn.circuits import component_intervention
    from tl_unlearn.metrics.evaluation import (
        _block_output_layer,
        _resume_from_block,
        unembed_residual,
    )

    ref = tiny_data["retain"]
    for model in (tiny_model, _llama_like_model()):
        toks = tiny_data["forget"].tokens[:4] % model.cfg.d_vocab
        ref = TokenDataset("ref", ref.tokens % model.cfg.d_vocab, ref.attention_mask)
        _, cache = model.run_with_cache(toks)
        n = model.cfg.n_layers
        ivs = [component_intervention(model, [(l, 1)]) for l in range(n)]
        ivs += [component_intervention(model, [(l, None)], "mean", ref) for l in range(n)]
        ivs += [component_intervention(model, [(n - 1, 0), (n - 1, 3), (n - 1, None)])]
        pairs = [(iv, iv) for iv in ivs]
        # resample draws fresh rows on every call: the resumed pass gets a twin built with
        # the same seed, so both passes see the same replacement rows
        pairs += [tuple(component_intervention(model, [(0, 2)], "resample", ref, seed=3)
                        for _ in range(2))]
        for iv, twin in pairs:
            layer = _block_output_layer(model, list(iv))
            assert layer is not None, iv.name
            with model.hooks(fwd_hooks=list(iv)):
                full = model(toks)
            final = _resume_from_block(model, layer, cache, list(twin), toks)
            resumed = unembed_residual(model, model.ln_final(final))
            assert torch.equal(full, resumed), iv.name
            assert not torch.equal(full, model(toks)), iv.name


def test_block_shortcut_only_for_block_outputs_of_one_layer(tiny_model, tiny_sae_model,
                                                            tiny_bridge):
    from tl_unlearn.circuits import component_intervention
    from tl_unlearn.metrics.evaluation import _block_output_layer

    def fn(act, hook):
        return act

    assert _block_output_layer(tiny_model, component_intervention(tiny_model, [(1, 0)])) == 1
    # two layers, a neuron hook, other hook points, other model types: full path
    assert _block_output_layer(tiny_model, component_intervention(tiny_model, [(0, 0), (1, 0)])) is None
    assert _block_output_layer(tiny_model, zero_ablation(tiny_model, neurons={0: [1]})) is None
    assert _block_output_layer(tiny_model, [("blocks.0.attn.hook_pattern", fn)]) is None
    assert _block_output_layer(tiny_model, [("blocks.0.hook_resid_post", fn)]) is None
    assert _block_output_layer(tiny_bridge, [("blocks.0.attn.hook_z", fn)]) is None
    # a hook the user left on the model would be skipped by the shortcut: not taken
    tiny_sae_model.add_hook("blocks.0.hook_resid_pre", fn)
    try:
        assert _block_output_layer(tiny_sae_model, [("blocks.1.attn.hook_z", fn)]) is None
    finally:
        tiny_sae_model.reset_hooks()
    assert _block_output_layer(tiny_sae_model, [("blocks.1.attn.hook_z", fn)]) == 1


def test_evaluate_many_with_persistent_user_hook_matches_full_passes(tiny_model, tiny_data):
    from tl_unlearn.circuits import component_intervention
    from tl_unlearn.metrics import evaluate_many

    def scale(act, hook):
        return act * 0.5

    ivs = [[], component_intervention(tiny_model, [(1, 2)]),
           component_intervention(tiny_model, [(0, None)])]
    tiny_model.add_hook("blocks.0.hook_resid_post", scale)
    try:
        shared = evaluate_many(tiny_model, tiny_data, ivs, progress=False)
        full = evaluate_many(tiny_model, tiny_data, ivs, progress=False, share_prefix=False)
    finally:
        tiny_model.reset_hooks()
    for a, b in zip(shared, full):
        assert abs(a["forget"].loss - b["forget"].loss) < 1e-5


def test_block_shortcut_respects_spliced_saes(tiny_sae_model, tiny_data, sae_factory):
    """An SAE spliced in at a hook point of the ablated block must still be applied."""
    from tl_unlearn.circuits import component_intervention
    from tl_unlearn.metrics import evaluate_many

    for hook in ("blocks.0.hook_resid_post", "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"):
        # (a hook on the very point an SAE replaces is not hookable; those are left out)
        ivs = [[]] + [iv for iv in (component_intervention(tiny_sae_model, [(0, 1)]),
                                    component_intervention(tiny_sae_model, [(0, None)]))
                      if iv.fwd_hooks[0][0] != hook]
        sae = sae_factory(tiny_sae_model, hook)
        with tiny_sae_model.saes(saes=[sae], use_error_term=False):
            shared = evaluate_many(tiny_sae_model, tiny_data, ivs, progress=False)
            full = evaluate_many(tiny_sae_model, tiny_data, ivs, progress=False,
                                 share_prefix=False)
        for a, b in zip(shared, full):
            assert abs(a["forget"].loss - b["forget"].loss) < 1e-5, hook


def test_block_shortcut_applies_non_idempotent_hooks_once(tiny_model, tiny_data):
    """A scaling hook on hook_z and hook_mlp_out of one layer (the block shortcut) gives the
    same numbers as full forward passes: each hook runs exactly once."""
    from tl_unlearn.metrics import evaluate_many
    from tl_unlearn.metrics.evaluation import _block_output_layer

    hooks = [("blocks.1.attn.hook_z", lambda z, hook: z * 0.5),
             ("blocks.1.hook_mlp_out", lambda x, hook: x * 2.0 + 0.1)]
    assert _block_output_layer(tiny_model, hooks) == 1
    data = {k: v.head(8) for k, v in tiny_data.items()}
    fast, = evaluate_many(tiny_model, data, [hooks], progress=False)
    slow, = evaluate_many(tiny_model, data, [hooks], share_prefix=False, progress=False)
    for name in data:
        assert fast[name].loss == pytest.approx(slow[name].loss, rel=1e-5)
        assert fast[name].accuracy == slow[name].accuracy
