import pytest
import torch

from tl_unlearn.core.checks import check_hook_name
from tl_unlearn.engine.hooks import positions_mask, stream_activations
from tl_unlearn.interventions import Intervention, compose, mean_ablation, zero_ablation


def test_unknown_hook_name_suggests_close_names(tiny_model):
    with pytest.raises(ValueError, match=r"Unknown hook name 'blocks.0.attn.hook_zz'.*hook_z"):
        check_hook_name(tiny_model, "blocks.0.attn.hook_zz")
    with pytest.raises(ValueError, match="hook_resid_pr"):
        zero_ablation(tiny_model, hook_points=["blocks.0.hook_resid_pr"])


def test_works_in_run_with_hooks_hooks_ctx_and_run_with_cache(any_model, weights_guard):
    iv = zero_ablation(any_model, heads=[(1, 0)])
    tokens = torch.tensor([[0, 5, 6, 7, 8]])
    with weights_guard(any_model):
        a = any_model.run_with_hooks(tokens, fwd_hooks=iv.fwd_hooks)
        with any_model.hooks(fwd_hooks=list(iv)):
            b = any_model(tokens)
        with iv.applied(any_model):
            c, cache = any_model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
        base = any_model(tokens)
    assert torch.equal(a, b) and torch.equal(b, c)
    assert not torch.allclose(a, base)
    assert (cache["blocks.1.attn.hook_z"][:, :, 0] == 0).all()


def test_no_hook_left_after_exception_in_forward(any_model, weights_guard):
    def boom(acts, hook):
        raise RuntimeError("boom")

    iv = zero_ablation(any_model, neurons={0: [1]}) + [("blocks.1.hook_resid_pre", boom)]
    with weights_guard(any_model):
        with pytest.raises(RuntimeError, match="boom"), iv.applied(any_model):
            any_model(torch.tensor([[0, 5, 6]]))
        with pytest.raises(RuntimeError, match="boom"):
            any_model.run_with_hooks(torch.tensor([[0, 5, 6]]), fwd_hooks=iv.fwd_hooks)


def test_compose_runs_both_in_order(tiny_model):
    a = zero_ablation(tiny_model, heads={0: [0]})
    b = zero_ablation(tiny_model, heads={0: [1]})
    ab = a + b
    assert ab.hook_names == ["blocks.0.attn.hook_z"] and len(ab) == 2
    both = zero_ablation(tiny_model, heads={0: [0, 1]})
    tokens = torch.tensor([[0, 9, 10, 11]])
    with ab.applied(tiny_model):
        x = tiny_model(tokens)
    with both.applied(tiny_model):
        y = tiny_model(tokens)
    assert torch.equal(x, y)
    assert torch.equal(
        compose(a, b).fwd_hooks[1][1](torch.ones(1, 1, 4, 32), None)[0, 0, 1], torch.zeros(32)
    )
    assert sum([a, b]).hook_names == ab.hook_names


def test_positions_mask_variants():
    assert positions_mask("all", 4) is None
    assert positions_mask("last", 4).tolist() == [False, False, False, True]
    assert positions_mask([0, -2], 4).tolist() == [True, False, True, False]
    m = torch.tensor([[True, False, True, False, True]])
    assert positions_mask(m, 3).tolist() == [[True, False, True]]
    with pytest.raises(ValueError, match="positions"):
        positions_mask("first", 4)


def test_every_intervention_leaves_weights_bit_identical(
    tiny_model, tiny_data, weights_guard, sae_factory
):
    from tl_unlearn.interventions import (
        actadd,
        directional_ablation,
        keep_only_circuit,
        resample_ablation,
        sae_feature_intervention,
        selective_pruning,
    )

    ref = tiny_data["retain"]
    with weights_guard(tiny_model):
        ivs = [
            zero_ablation(tiny_model, heads=[(0, 1)]),
            mean_ablation(tiny_model, ref, neurons={1: [1, 2]}),
            resample_ablation(tiny_model, ref, heads=[(1, 3)]),
            keep_only_circuit(tiny_model, heads=[(0, 0)], method="mean", reference=ref),
            directional_ablation(tiny_model, "blocks.1.hook_resid_pre", torch.randn(128)),
            sae_feature_intervention(
                tiny_model, sae_factory(tiny_model, "blocks.1.hook_resid_pre"), [1, 2], "clamp", 3.0
            ),
            actadd(tiny_model, "def", "The", layer=1, coeff=3.0),
            selective_pruning(tiny_model, tiny_data["forget"], ref, 0.05, mode="mean"),
        ]
        for iv in ivs:
            assert isinstance(iv, Intervention)
            with iv.applied(tiny_model):
                tiny_model(ref.tokens[:2, :32])


def test_stream_activations_reads_masked_activations_after_fwd_hooks(
    tiny_model, tiny_data, weights_guard
):
    """The one streaming loop hands each hook the activations of every batch (with the
    fwd_hooks applied first) and its mask, as run_with_cache does on the same batch."""
    data = tiny_data["forget"]
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    iv = zero_ablation(tiny_model, heads=[(0, 1)])
    seen: dict[str, list] = {n: [] for n in names}
    with weights_guard(tiny_model):
        n = stream_activations(
            tiny_model,
            data,
            names,
            lambda name, acts, mask: seen[name].append(acts[mask].clone()),
            batch_size=3,
            fwd_hooks=list(iv),
        )
        ref: dict[str, list] = {nm: [] for nm in names}
        for tokens, mask in data.batches(3):
            with tiny_model.hooks(fwd_hooks=list(iv)):
                _, cache = tiny_model.run_with_cache(tokens, names_filter=names)
            for nm in names:
                ref[nm].append(cache[nm][mask])
    assert n == -(-len(data) // 3)
    for nm in names:
        assert torch.equal(torch.cat(seen[nm]), torch.cat(ref[nm]))
    assert not tiny_model.hook_dict[names[0]].fwd_hooks
    with pytest.raises(ValueError, match="hook_zz"):
        stream_activations(tiny_model, data, ["blocks.1.attn.hook_zz"], lambda *a: None)
