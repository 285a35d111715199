import pytest
import torch

from tl_unlearn.interventions import actadd, vector_steering
from tl_unlearn.interventions.steering import steering_matrix

TOKENS = torch.tensor([[0, 17, 230, 44, 981, 12, 7]])


def test_coefficient_zero_reproduces_logits(any_model):
    iv = actadd(any_model, "def main", "The people", layer=1, coeff=0.0)
    base = any_model(TOKENS)
    with iv.applied(any_model):
        torch.testing.assert_close(any_model(TOKENS), base, atol=1e-4, rtol=0)


def test_steering_matrix_right_pads_with_space_and_differs(tiny_model):
    add, sub = "import os", "The"
    a = tiny_model.to_tokens(add)[0]
    s = tiny_model.to_tokens(sub)[0]
    assert len(a) > len(s)
    space = tiny_model.tokenizer(" ", add_special_tokens=False)["input_ids"][0]
    s_pad = torch.cat([s, s.new_full((len(a) - len(s),), space)])
    name = "blocks.1.hook_resid_pre"
    _, ca = tiny_model.run_with_cache(a[None], names_filter=name)
    _, cs = tiny_model.run_with_cache(s_pad[None], names_filter=name)
    expected = 3.0 * (ca[name][0] - cs[name][0])
    got = steering_matrix(tiny_model, add, sub, layer=1, coeff=3.0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_actadd_adds_at_front_positions_only(tiny_model):
    iv = actadd(tiny_model, "import os", "The", layer=1, coeff=3.0)
    steer = steering_matrix(tiny_model, "import os", "The", layer=1, coeff=3.0)
    n = steer.shape[0]
    name = "blocks.1.hook_resid_pre"
    _, clean = tiny_model.run_with_cache(TOKENS, names_filter=name)
    with iv.applied(tiny_model):
        _, c = tiny_model.run_with_cache(TOKENS, names_filter=name)
    diff = c[name] - clean[name]
    torch.testing.assert_close(diff[0, :n], steer, atol=1e-5, rtol=1e-5)
    assert (diff[0, n:] == 0).all()


def test_generate_skips_single_token_decode_steps(tiny_model):
    iv = actadd(tiny_model, "import os", "The", layer=0, coeff=8.0)
    seen = []
    record = ("blocks.0.hook_resid_pre", lambda x, hook: seen.append(x.shape[1]))
    with tiny_model.hooks(fwd_hooks=[*iv.fwd_hooks, record]):
        steered = tiny_model.generate(
            "x = ", max_new_tokens=4, do_sample=False, verbose=False, use_past_kv_cache=True
        )
    plain = tiny_model.generate("x = ", max_new_tokens=4, do_sample=False, verbose=False)
    assert seen[0] > 1 and all(s == 1 for s in seen[1:])
    assert steered != plain


def test_vector_steering_width_error(tiny_model):
    with pytest.raises(ValueError, match=r"size 7.*width 128"):
        vector_steering(tiny_model, "blocks.0.hook_resid_pre", torch.randn(7))


def test_actadd_all_positions_adds_the_mean_difference_everywhere(tiny_model):
    add, sub = "import os", "The city of"
    name = "blocks.1.hook_resid_pre"
    means = []
    for p in (add, sub):  # hand-written reference: each prompt alone, mean over non-BOS positions
        _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(p), names_filter=name)
        means.append(cache[name][0, 1:].mean(0))
    expected = 2.5 * (means[0] - means[1])
    iv = actadd(tiny_model, add, sub, layer=1, coeff=2.5, positions="all")
    _, clean = tiny_model.run_with_cache(TOKENS, names_filter=name)
    with iv.applied(tiny_model):
        _, c = tiny_model.run_with_cache(TOKENS, names_filter=name)
        one = tiny_model.run_with_cache(TOKENS[:, :1], names_filter=name)[1][name]
    diff = c[name] - clean[name]
    torch.testing.assert_close(diff[0], expected.expand_as(diff[0]), atol=1e-5, rtol=1e-5)
    # single-position passes (KV-cached decoding) are steered too
    torch.testing.assert_close(one[0, 0] - clean[name][0, 0], expected, atol=1e-5, rtol=1e-5)
    assert not tiny_model.hook_dict[name].fwd_hooks


def test_actadd_bad_positions(tiny_model):
    with pytest.raises(ValueError, match="positions='middle'"):
        actadd(tiny_model, "a", "b", layer=1, positions="middle")


def test_actadd_from_token_ids_equals_a_hand_written_hook():
    """A model without a tokenizer (a planted model) steers from token-id prompts."""
    from tl_unlearn.models.planted import load_planted, planted_data

    model = load_planted("planted-lookup")
    data = planted_data("planted-lookup", 8, seed=5)
    plus, minus = data["retain"].tokens[0], data["forget"].tokens[0]
    name = "blocks.1.hook_resid_pre"
    _, c_plus = model.run_with_cache(plus[None], names_filter=[name])
    _, c_minus = model.run_with_cache(minus[None], names_filter=[name])
    steer = 3.0 * (c_plus[name][0] - c_minus[name][0])
    with torch.no_grad():
        want = model.run_with_hooks(
            data["forget"].tokens, fwd_hooks=[(name, lambda a, hook: a + steer)]
        )
        iv = actadd(model, plus, minus.tolist(), layer=1, coeff=3.0)
        with iv.applied(model):
            got = model(data["forget"].tokens)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="same"):
        actadd(model, plus, plus.clone(), layer=1)
    with pytest.raises(ValueError, match="outside"):
        actadd(model, [0, 999], minus, layer=1)
    with pytest.raises(ValueError, match="pad_token_id"):
        actadd(model, [0, 1, 2], minus, layer=1)
