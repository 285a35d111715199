import pytest
import torch

from tl_unlearn.interventions import sae_direction_steering, sae_feature_intervention

TOKENS = torch.tensor([[0, 17, 230, 44, 981, 12, 7], [0, 3, 3, 3, 400, 401, 402]])
HOOK = "blocks.1.hook_resid_pre"


def _features(model, sae):
    _, cache = model.run_with_cache(TOKENS, names_filter=HOOK)
    return sae.encode(cache[HOOK])


def test_clamp_to_current_value_reproduces_logits(any_model, sae_factory):
    sae = sae_factory(any_model, HOOK)
    feats = _features(any_model, sae).detach()
    idx = [2, 5, 11]
    assert (feats[..., idx] > 0).any()
    iv = sae_feature_intervention(any_model, sae, idx, "clamp", feats[..., idx])
    base = any_model(TOKENS)
    with iv.applied(any_model):
        out = any_model(TOKENS)
    torch.testing.assert_close(out, base, atol=1e-4, rtol=0)
    # scale by 1 also reproduces; zeroing active features changes the output
    with sae_feature_intervention(any_model, sae, idx, "scale", 1.0).applied(any_model):
        torch.testing.assert_close(any_model(TOKENS), base, atol=1e-4, rtol=0)
    active = feats.flatten(0, 1).gt(0).sum(0).topk(5).indices.tolist()
    with sae_feature_intervention(any_model, sae, active, "zero").applied(any_model):
        assert (any_model(TOKENS) - base).abs().max() > 1e-3


def test_zero_features_equals_manual_splice(tiny_model, sae_factory):
    sae = sae_factory(tiny_model, HOOK)
    idx = [0, 1, 2, 3]

    def manual(x, hook):
        f = sae.encode(x)
        g = f.clone()
        g[..., idx] = 0
        return sae.decode(g) + (x - sae.decode(f))

    expected = tiny_model.run_with_hooks(TOKENS, fwd_hooks=[(HOOK, manual)])
    with sae_feature_intervention(tiny_model, sae, idx).applied(tiny_model):
        torch.testing.assert_close(tiny_model(TOKENS), expected, atol=1e-5, rtol=1e-5)


def test_hooked_sae_transformer_attached_sae(tiny_sae_model, sae_factory):
    sae = sae_factory(tiny_sae_model, HOOK)
    idx = [4, 8]
    with torch.no_grad():
        plain = sae_feature_intervention(tiny_sae_model, sae, idx, "clamp", 2.0)
        with plain.applied(tiny_sae_model):
            expected = tiny_sae_model(TOKENS)
        with tiny_sae_model.saes(saes=[sae], use_error_term=True):
            base = tiny_sae_model(TOKENS)
            iv = sae_feature_intervention(tiny_sae_model, sae, idx, "clamp", 2.0)
            assert iv.hook_names == [f"{HOOK}.hook_sae_acts_post"]
            with iv.applied(tiny_sae_model):
                got = tiny_sae_model(TOKENS)
    torch.testing.assert_close(base, tiny_sae_model(TOKENS), atol=1e-4, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_sae_errors(tiny_model, sae_factory):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    wrong = StandardSAE(StandardSAEConfig(d_in=64, d_sae=32, metadata=SAEMetadata(hook_name=HOOK)))
    with pytest.raises(ValueError, match=r"d_in=64 does not match.*128"):
        sae_feature_intervention(tiny_model, wrong, [0])
    sae = sae_factory(tiny_model, HOOK)
    with pytest.raises(ValueError, match=r"SAE feature index 256 is out of range.*0\.\.255"):
        sae_feature_intervention(tiny_model, sae, [256])
    missing = sae_factory(tiny_model, "blocks.9.hook_resid_pre")
    with pytest.raises(ValueError, match="Unknown hook name 'blocks.9.hook_resid_pre'"):
        sae_feature_intervention(tiny_model, missing, [0])
    with pytest.raises(ValueError, match="mode"):
        sae_feature_intervention(tiny_model, sae, [0], "double")


def test_sae_direction_steering_adds_decoder_row(tiny_model, sae_factory):
    sae = sae_factory(tiny_model, HOOK)
    iv = sae_direction_steering(tiny_model, sae, 7, coeff=2.0)
    _, clean = tiny_model.run_with_cache(TOKENS, names_filter=HOOK)
    with iv.applied(tiny_model):
        _, c = tiny_model.run_with_cache(TOKENS, names_filter=HOOK)
    torch.testing.assert_close(
        c[HOOK] - clean[HOOK], (2.0 * sae.W_dec[7]).expand_as(c[HOOK]), atol=1e-5, rtol=1e-5
    )
