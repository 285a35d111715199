"""The benchmark's method wiring: head attribution against a hand-written reference."""

import torch

from tl_unlearn.benchmark.methods.head_mean import head_attribution
from tl_unlearn.data.datasets import TokenDataset


def _ragged(data, lengths):
    """The first rows of ``data``, cut to ``lengths`` real tokens (right-padded with token 0)."""
    tokens = data.tokens[: len(lengths)].clone()
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
        tokens[i, n:] = 0
    return TokenDataset(data.name, tokens, mask)


def _reference_attribution(model, data, means):
    """Plain TransformerLens: full backward (parameter gradients included), z.retain_grad()."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    count = 0
    store = {}

    def keep(acts, hook):
        acts.retain_grad()
        store[hook.name] = acts

    for start in range(0, len(data), 4):
        tokens = data.tokens[start : start + 4]
        mask = data.attention_mask[start : start + 4]
        names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
        with model.hooks(fwd_hooks=[(n, keep) for n in names]):
            per_tok = model(tokens, return_type="loss", loss_per_token=True)
            valid = mask[:, 1:] & mask[:, :-1]
            per_tok[valid].sum().backward()
        for l, n in enumerate(names):
            z, g = store[n].detach(), store[n].grad
            total[l] += ((means[n] - z) * g * mask[..., None, None]).sum((0, 1, 3)).double()
        count += int(valid.sum())
        model.zero_grad(set_to_none=True)
    return total / count


def test_head_attribution_equals_full_backward_reference(tiny_model, tiny_data, weights_guard):
    forget = _ragged(tiny_data["forget"], [64, 20, 64, 33, 9, 64, 50, 64])
    retain = _ragged(tiny_data["retain"], [64, 64, 17, 64, 40, 64, 64, 12])
    names = [f"blocks.{l}.attn.hook_z" for l in range(tiny_model.cfg.n_layers)]
    means = {n: torch.randn(tiny_model.cfg.n_heads, tiny_model.cfg.d_head) for n in names}
    expected = _reference_attribution(tiny_model, forget, means) - _reference_attribution(
        tiny_model, retain, means
    )
    with weights_guard(tiny_model):
        got = head_attribution(tiny_model, forget, retain, batch_size=4, reference=means)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    # the parameters are left as they were: trainable, with no gradient
    assert all(p.requires_grad and p.grad is None for p in tiny_model.parameters())


# ---------------------------------------------------------------- the typed method registry


def test_method_options_are_typed_and_checked_where_read(tiny_model, weights_guard):
    import pytest

    from tl_unlearn.benchmark.methods.actadd import ActAddOptions
    from tl_unlearn.benchmark.methods.pruning import PruningOptions
    from tl_unlearn.benchmark.methods.registry import METHODS, check_options, option_keys
    from tl_unlearn.benchmark.methods.sae import SAEOptions

    assert PruningOptions.read({"prune-abs.levels": [0.1, 1]}, "prune-abs").levels == (0.1, 1.0)
    assert PruningOptions.read({"prune-abs.levels": [0.1]}, "prune-freq").levels != (0.1,)
    assert SAEOptions.read({}) == SAEOptions()
    assert METHODS["actadd"].read_options({"actadd.layer": 1}) == ActAddOptions(layer=1)
    # every key a method reads is a known key, with its help text
    keys = option_keys()
    assert {
        "sae.layer",
        "actadd.prompt_add",
        "head-mean.attribution_seqs",
        "prune-random.levels",
    } <= set(keys) and all(keys.values())
    bad = [
        ({"sae.layer": "3"}, "Option sae.layer must be an integer, got '3'"),
        ({"sae.layer": True}, "Option sae.layer must be an integer"),
        ({"actadd.levels": []}, "actadd.levels must be a non-empty list of numbers"),
        ({"head-mean.levels": [0.1, "x"]}, "head-mean.levels must be a non-empty list"),
        ({"actadd.prompt_add": 3}, "actadd.prompt_add must be a string"),
        ({"sae.layr": 1}, "did you mean 'sae.layer'"),
    ]
    for options, match in bad:
        with pytest.raises(ValueError, match=match):
            check_options(options)
    check_options({"sae.layer": 1, "actadd.levels": [1, 2]}, model=tiny_model)
    for options in ({"sae.layer": 9}, {"actadd.layer": -1}):
        with pytest.raises(ValueError, match="out of range"):
            check_options(options, model=tiny_model)


def test_fitted_methods_follow_their_options(tiny_model, tiny_data, task, weights_guard):
    """Each method sweeps the levels its options give, at the layer they give, and its random
    baseline removes as many units of the same kind; head-mean removes the heads with the
    largest attribution, computed here independently."""
    from tl_unlearn.benchmark.methods.base import MethodContext
    from tl_unlearn.benchmark.methods.registry import fit_method
    from tl_unlearn.interventions import activation_means

    m = tiny_model
    fit = task.tokenize(m.tokenizer, "fit", seq_len=64, max_tokens=1500)
    options = {
        "prune-abs.levels": [0.02, 0.1],
        "head-mean.levels": [0.25],
        "head-mean.attribution_seqs": 4,
        "actadd.levels": [3.0],
        "actadd.layer": 1,
        "sae-features.levels": [0.05],
        "sae.layer": 1,
        "sae.d_sae": 64,
        "sae.training_tokens": 2000,
    }
    ctx = MethodContext(m, fit["forget"], fit["retain"], batch_size=4, options=options)
    with weights_guard(m):
        prune = fit_method("prune-abs", ctx)
        heads = fit_method("head-mean", ctx)
        steer = fit_method("actadd", ctx)
        sae = fit_method("sae-features", ctx)
    assert prune.levels == [0.02, 0.1] and heads.levels == [0.25]
    assert steer.levels == [3.0] and sae.levels == [0.05]
    n_mlp = m.cfg.n_layers * m.cfg.d_mlp
    for level in prune.levels:
        ours, rnd = prune.family(level), prune.baseline(level, 1)
        assert ours.info["n_pruned"] == rnd.info["n_pruned"] == round(level * n_mlp)
    k = round(0.25 * m.cfg.n_layers * m.cfg.n_heads)
    names = [f"blocks.{l}.attn.hook_z" for l in range(m.cfg.n_layers)]
    means = activation_means(m, fit["retain"], names)
    scores = head_attribution(m, fit["forget"].head(4), fit["retain"].head(4), reference=means)
    top = torch.topk(scores.flatten(), k).indices.tolist()
    chosen = heads.family(0.25).info["heads"]
    assert sorted(chosen) == sorted(f"a{i // m.cfg.n_heads}.h{i % m.cfg.n_heads}" for i in top)
    assert len(chosen) == k
    assert [n for n, _ in steer.family(3.0)] == ["blocks.1.hook_resid_pre"]
    assert sae.info["hook"] == "blocks.1.hook_resid_pre" and sae.info["d_sae"] == 64


def test_edge_methods_remove_their_top_edges(tiny_model, tiny_data, weights_guard):
    import numpy as np
    import pytest

    from tl_unlearn.benchmark.methods.base import MethodContext
    from tl_unlearn.benchmark.methods.registry import fit_method
    from tl_unlearn.circuits.attribution import edge_attribution
    from tl_unlearn.data.tasks import ioi_task
    from tl_unlearn.interventions.counterfactual import counterfactual_pair

    clean, corrupted = counterfactual_pair(
        ioi_task(tiny_model.tokenizer, n=60), tiny_model.tokenizer, "fit", max_examples=8
    )
    ctx = MethodContext(
        tiny_model,
        clean,
        tiny_data["retain"].head(8),
        forget_fit_corrupted=corrupted,
        options={"eap.levels": [0.05, 0.2], "eap.attribution_examples": 6},
    )
    fm = fit_method("eap", ctx)
    assert fm.levels == [0.05, 0.2] and fm.info["n_real_edges"] == 110
    want = edge_attribution(tiny_model, clean.head(6), corrupted.head(6)).top(22)
    iv = fm.family(0.2)
    assert iv.info["ablate"] == "inside" and iv.info["n_ablated_edges"] == 22
    assert iv.info["edges"] == want.edges[:20]
    base = fm.baseline(0.2, 1)
    assert base.info["n_ablated_edges"] == 22 and base.info["edges"] != iv.info["edges"]
    # removing the edges changes the model, and only while applied
    with torch.no_grad():
        before = tiny_model(clean.tokens)
        with iv.applied(tiny_model):
            after = tiny_model(clean.tokens)
    assert (after - before).abs().max() > 1e-3
    assert np.allclose(tiny_model(clean.tokens).detach(), before)
    # a forget set without corrupted partners is refused by name
    with pytest.raises(ValueError, match="needs a forget task with corrupted prompts"):
        fit_method("eap", MethodContext(tiny_model, clean, clean))


def test_benchmark_refuses_edge_methods_without_pairs_before_loading():
    import pytest

    from tl_unlearn import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig(model="no-such-model", forget="python_code", methods=["eap-ig"])
    with pytest.raises(ValueError, match=r"Method\(s\) \['eap-ig'\] patch from corrupted"):
        run_benchmark(cfg, progress=False)
