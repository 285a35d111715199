"""The plan / forward half of evaluate_many: shared prefixes and the block shortcut must give
the numbers of full forward passes (the block shortcut bit for bit)."""

import pytest
import torch

from tl_unlearn import evaluate
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.forward import (
    block_output_layer,
    plan_forward,
    resume_from_block,
    unembed_residual,
)
from tl_unlearn.interventions import zero_ablation


def test_plan_forward_gives_the_logits_of_full_passes(any_model, tiny_data):
    """Every intervention's logits from the plan (prefix once, then resumed) equal those of
    a full pass with its hooks, chunk by chunk."""
    from tl_unlearn.circuits.maps import component_intervention
    from tl_unlearn.interventions import actadd

    model = any_model
    ivs = [
        [],
        zero_ablation(model, heads=[(1, 0)]),
        zero_ablation(model, neurons={1: [3]}),
        actadd(model, "def", "The", layer=1, coeff=4.0),
    ]
    if hasattr(model, "W_O"):  # HookedTransformer: the block shortcut too
        ivs.append(component_intervention(model, [(1, None)]))
    plan = plan_forward(model, ivs)
    tokens = tiny_data["forget"].tokens[:5]
    cache = plan.prefix(model, tokens)
    for i, iv in enumerate(ivs):
        for full_logits in (False, True):
            out = plan.forward(model, i, iv, tokens, cache, full_logits=full_logits)
            got = torch.cat([part for _, part in out.logit_chunks()])
            with model.hooks(fwd_hooks=list(iv)):
                want = model(tokens)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert not any(hp.fwd_hooks for hp in model.hook_dict.values())
    unshared = plan_forward(model, ivs, share_prefix=False)
    assert unshared.needed == [] and unshared.starts == [0] * len(ivs)


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
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_mlp=128,
        d_vocab=300,
        n_ctx=64,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        n_key_value_heads=2,
        final_rms=True,
    )
    return HookedTransformer(cfg).eval()


def _shortformer_model(attn_only: bool = False):
    """A small random model with shortformer positions (added to queries and keys only, as in
    TransformerLens's attn-only toy models): a pass that starts at a layer needs them given."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_mlp=128,
        d_vocab=300,
        n_ctx=64,
        act_fn="gelu",
        normalization_type="LN",
        attn_only=attn_only,
        positional_embedding_type="shortformer",
    )
    return HookedTransformer(cfg).eval()


@pytest.mark.parametrize("attn_only", [False, True])
def test_plan_forward_on_a_shortformer_model(tiny_data, attn_only):
    """Resumed passes (from a cached residual, or the block shortcut) give a shortformer
    model's full-pass logits: without its positional embedding given, a pass from layer 1
    attends as if every token were at no position."""
    from tl_unlearn.circuits.maps import component_intervention
    from tl_unlearn.metrics import evaluate_many

    model = _shortformer_model(attn_only)
    tokens = tiny_data["forget"].tokens[:4] % model.cfg.d_vocab
    ivs = [
        [],
        zero_ablation(model, heads=[(1, 0)]),
        zero_ablation(model, heads=[(2, 3)]),
        component_intervention(model, [(1, 2)]),
    ]
    if not attn_only:
        ivs.append(zero_ablation(model, neurons={1: [3]}))
    plan = plan_forward(model, ivs)
    assert max(plan.starts) > 0  # some pass does resume
    cache = plan.prefix(model, tokens)
    for i, iv in enumerate(ivs):
        got = plan.forward(model, i, iv, tokens, cache, full_logits=True).logits
        with model.hooks(fwd_hooks=list(iv)):
            want = model(tokens)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    data = {
        k: TokenDataset(k, d.tokens[:6] % model.cfg.d_vocab, d.attention_mask[:6])
        for k, d in tiny_data.items()
    }
    shared = evaluate_many(model, data, ivs, progress=False)
    full = evaluate_many(model, data, ivs, progress=False, share_prefix=False)
    for a, b in zip(shared, full):
        for k in data:
            assert a[k].loss == pytest.approx(b[k].loss, abs=1e-5)


def test_resuming_from_block_outputs_is_bit_exact(tiny_model, tiny_data):
    """Head / MLP-layer ablations resume from the cached block (hook_z / hook_mlp_out):
    the logits must be exactly those of a full pass with the same hooks."""
    from tl_unlearn.circuits.maps import component_intervention

    ref = tiny_data["retain"]
    for model in (tiny_model, _llama_like_model(), _shortformer_model()):
        toks = tiny_data["forget"].tokens[:4] % model.cfg.d_vocab
        ref = TokenDataset("ref", ref.tokens % model.cfg.d_vocab, ref.attention_mask)
        # (as the prefix pass caches: no pattern, so the tiny model's fused attention runs)
        _, cache = model.run_with_cache(
            toks, names_filter=lambda name: not name.endswith(("pattern", "attn_scores"))
        )
        n = model.cfg.n_layers
        ivs = [component_intervention(model, [(l, 1)]) for l in range(n)]
        ivs += [component_intervention(model, [(l, None)], "mean", ref) for l in range(n)]
        ivs += [component_intervention(model, [(n - 1, 0), (n - 1, 3), (n - 1, None)])]
        pairs = [(iv, iv) for iv in ivs]
        # resample draws fresh rows on every call: the resumed pass gets a twin built with
        # the same seed, so both passes see the same replacement rows
        pairs += [
            tuple(
                component_intervention(model, [(0, 2)], "resample", ref, seed=3) for _ in range(2)
            )
        ]
        for iv, twin in pairs:
            layer = block_output_layer(model, list(iv))
            assert layer is not None, iv.name
            with model.hooks(fwd_hooks=list(iv)):
                full = model(toks)
            final = resume_from_block(model, layer, cache, list(twin), toks)
            resumed = unembed_residual(model, model.ln_final(final))
            assert torch.equal(full, resumed), iv.name
            assert not torch.equal(full, model(toks)), iv.name


def test_block_shortcut_only_for_block_outputs_of_one_layer(
    tiny_model, tiny_sae_model, tiny_bridge
):
    from tl_unlearn.circuits.maps import component_intervention

    def fn(act, hook):
        return act

    assert block_output_layer(tiny_model, component_intervention(tiny_model, [(1, 0)])) == 1
    # two layers, a neuron hook, other hook points, other model types: full path
    assert (
        block_output_layer(tiny_model, component_intervention(tiny_model, [(0, 0), (1, 0)])) is None
    )
    assert block_output_layer(tiny_model, zero_ablation(tiny_model, neurons={0: [1]})) is None
    assert block_output_layer(tiny_model, [("blocks.0.attn.hook_pattern", fn)]) is None
    assert block_output_layer(tiny_model, [("blocks.0.hook_resid_post", fn)]) is None
    assert block_output_layer(tiny_bridge, [("blocks.0.attn.hook_z", fn)]) is None
    # a hook the user left on the model would be skipped by the shortcut: not taken
    tiny_sae_model.add_hook("blocks.0.hook_resid_pre", fn)
    try:
        assert block_output_layer(tiny_sae_model, [("blocks.1.attn.hook_z", fn)]) is None
    finally:
        tiny_sae_model.reset_hooks()
    assert block_output_layer(tiny_sae_model, [("blocks.1.attn.hook_z", fn)]) == 1


def test_evaluate_many_with_persistent_user_hook_matches_full_passes(tiny_model, tiny_data):
    from tl_unlearn.circuits.maps import component_intervention
    from tl_unlearn.metrics import evaluate_many

    def scale(act, hook):
        return act * 0.5

    ivs = [
        [],
        component_intervention(tiny_model, [(1, 2)]),
        component_intervention(tiny_model, [(0, None)]),
    ]
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
    from tl_unlearn.circuits.maps import component_intervention
    from tl_unlearn.metrics import evaluate_many

    for hook in ("blocks.0.hook_resid_post", "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"):
        # (a hook on the very point an SAE replaces is not hookable; those are left out)
        ivs = [[]] + [
            iv
            for iv in (
                component_intervention(tiny_sae_model, [(0, 1)]),
                component_intervention(tiny_sae_model, [(0, None)]),
            )
            if iv.fwd_hooks[0][0] != hook
        ]
        sae = sae_factory(tiny_sae_model, hook)
        with tiny_sae_model.saes(saes=[sae], use_error_term=False):
            shared = evaluate_many(tiny_sae_model, tiny_data, ivs, progress=False)
            full = evaluate_many(tiny_sae_model, tiny_data, ivs, progress=False, share_prefix=False)
        for a, b in zip(shared, full):
            assert abs(a["forget"].loss - b["forget"].loss) < 1e-5, hook


def test_block_shortcut_applies_non_idempotent_hooks_once(tiny_model, tiny_data):
    """A scaling hook on hook_z and hook_mlp_out of one layer (the block shortcut) gives the
    same numbers as full forward passes: each hook runs exactly once."""
    from tl_unlearn.metrics import evaluate_many

    hooks = [
        ("blocks.1.attn.hook_z", lambda z, hook: z * 0.5),
        ("blocks.1.hook_mlp_out", lambda x, hook: x * 2.0 + 0.1),
    ]
    assert block_output_layer(tiny_model, hooks) == 1
    data = {k: v.head(8) for k, v in tiny_data.items()}
    (fast,) = evaluate_many(tiny_model, data, [hooks], progress=False)
    (slow,) = evaluate_many(tiny_model, data, [hooks], share_prefix=False, progress=False)
    for name in data:
        assert fast[name].loss == pytest.approx(slow[name].loss, rel=1e-5)
        assert fast[name].accuracy == slow[name].accuracy
