import pytest
import torch

from tl_unlearn.interventions import (
    activation_means,
    directional_ablation,
    keep_only_circuit,
    mean_ablation,
    resample_ablation,
    zero_ablation,
)

TOKENS = torch.tensor([[0, 17, 230, 44, 981, 12, 7], [0, 3, 3, 3, 400, 401, 402]])


def _z(model, iv, layer):
    name = f"blocks.{layer}.attn.hook_z"
    _, clean = model.run_with_cache(TOKENS, names_filter=name)
    with iv.applied(model):
        _, ablated = model.run_with_cache(TOKENS, names_filter=name)
    return clean[name], ablated[name]


def test_zero_head_is_exactly_zero_and_nothing_else_changes(any_model):
    clean, ablated = _z(any_model, zero_ablation(any_model, heads=[(1, 2)]), 1)
    assert (ablated[:, :, 2] == 0).all()
    keep = [h for h in range(any_model.cfg.n_heads) if h != 2]
    assert torch.equal(ablated[:, :, keep], clean[:, :, keep])


def test_zero_ablation_changes_downstream_output(any_model):
    base = any_model(TOKENS)
    with zero_ablation(any_model, heads=[(0, 0), (0, 1)]).applied(any_model):
        out = any_model(TOKENS)
    assert (out - base).abs().max() > 1e-4


def test_zero_neurons_and_positions(tiny_model):
    iv = zero_ablation(tiny_model, neurons={0: [5, 9]}, positions=[1, -1])
    name = "blocks.0.mlp.hook_post"
    _, clean = tiny_model.run_with_cache(TOKENS, names_filter=name)
    with iv.applied(tiny_model):
        _, abl = tiny_model.run_with_cache(TOKENS, names_filter=name)
    a, c = abl[name], clean[name]
    assert (a[:, [1, 6]][..., [5, 9]] == 0).all()
    assert torch.equal(a[:, [0, 2, 3, 4, 5]], c[:, [0, 2, 3, 4, 5]])
    other = [i for i in range(512) if i not in (5, 9)]
    assert torch.equal(a[..., other], c[..., other])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(heads=[(2, 0)]), r"Layer 2 is out of range.*0\.\.1"),
        (dict(heads=[(0, 4)]), r"Head \(layer 0\) index 4 is out of range.*0\.\.3"),
        (dict(neurons={1: [512]}), r"Neuron \(layer 1\) index 512.*0\.\.511"),
        (dict(hook_points={"blocks.0.hook_resid_pre": [128]}), r"index 128.*0\.\.127"),
        (dict(), "Nothing selected"),
    ],
)
def test_bad_selection_errors_name_the_value(tiny_model, kwargs, match, weights_guard):
    with weights_guard(tiny_model), pytest.raises(ValueError, match=match):
        zero_ablation(tiny_model, **kwargs)


def test_mean_ablation_equals_hand_written_hook(tiny_model, tiny_data):
    ref = tiny_data["retain"]
    name = "blocks.1.mlp.hook_post"
    # independent reference: run_with_cache over the whole reference set, masked mean
    _, cache = tiny_model.run_with_cache(ref.tokens, names_filter=name)
    acts = cache[name][ref.attention_mask]
    mean = acts.double().mean(0).float()

    def hand(acts, hook):
        acts = acts.clone()
        acts[..., [3, 100, 200]] = mean[[3, 100, 200]]
        return acts

    expected = tiny_model.run_with_hooks(TOKENS, fwd_hooks=[(name, hand)])
    iv = mean_ablation(tiny_model, ref, neurons={1: [3, 100, 200]}, batch_size=5)
    with iv.applied(tiny_model):
        got = tiny_model(TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_per_position_means_match_direct_computation(tiny_model, tiny_data):
    ref = tiny_data["forget"]
    name = "blocks.0.hook_resid_post"
    means = activation_means(tiny_model, ref, [name], per_position=True, batch_size=3)[name]
    _, cache = tiny_model.run_with_cache(ref.tokens, names_filter=name)
    m = ref.attention_mask.unsqueeze(-1).float()
    direct = (cache[name] * m).sum(0) / m.sum(0).clamp(min=1)
    torch.testing.assert_close(means, direct, atol=1e-4, rtol=1e-4)
    iv = mean_ablation(tiny_model, ref, hook_points=[name], per_position=True)
    with pytest.raises(ValueError, match="positions"), iv.applied(tiny_model):
        tiny_model(torch.zeros(1, ref.tokens.shape[1] + 1, dtype=torch.long))


def test_resample_reproducible_by_seed(any_model, tiny_data):
    ref = tiny_data["retain"].tokens[:, :16]
    outs = []
    for seed in (0, 0, 1):
        iv = resample_ablation(any_model, ref, heads=[(0, 1), (1, 1)], seed=seed)
        with iv.applied(any_model):
            outs.append(any_model(TOKENS))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


def test_resample_uses_reference_activations(tiny_model, tiny_data):
    ref = tiny_data["retain"].tokens[:1, :16]  # one reference row: every input gets it
    name = "blocks.0.attn.hook_z"
    _, rc = tiny_model.run_with_cache(ref, names_filter=name)
    with resample_ablation(tiny_model, ref, heads=[(0, 2)]).applied(tiny_model):
        _, c = tiny_model.run_with_cache(TOKENS, names_filter=name)
    assert torch.equal(c[name][:, :, 2], rc[name][:, :7, 2].expand(2, -1, -1))


def test_keep_only_circuit_ablates_the_complement(tiny_model, tiny_data):
    iv = keep_only_circuit(tiny_model, heads=[(1, 1)], layers=[1], method="zero")
    clean, ablated = _z(tiny_model, iv, 1)
    assert torch.equal(ablated[:, :, 1], clean[:, :, 1])
    assert (ablated[:, :, [0, 2, 3]] == 0).all()
    with pytest.raises(ValueError, match="reference"):
        keep_only_circuit(tiny_model, heads=[(1, 1)], method="mean")
    iv = keep_only_circuit(
        tiny_model,
        heads=[(0, 0)],
        include_mlp=True,
        neurons={0: [1]},
        method="mean",
        reference=tiny_data["retain"],
    )
    assert len(iv.info["ablated_heads"]) == 7


def test_directional_ablation_projects_out_a_subspace(any_model):
    d = any_model.cfg.d_model
    dirs = torch.randn(2, d)
    name = "blocks.1.hook_resid_pre"
    iv = directional_ablation(any_model, name, dirs)
    with iv.applied(any_model):
        _, c = any_model.run_with_cache(TOKENS, names_filter=name)
    _, clean = any_model.run_with_cache(TOKENS, names_filter=name)
    assert (c[name] @ dirs.T).abs().max() < 1e-3 * clean[name].abs().max() * d
    # the orthogonal complement is untouched
    q, _ = torch.linalg.qr(dirs.T)
    proj = clean[name] - (clean[name] @ q) @ q.T
    torch.testing.assert_close(c[name], proj, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="does not match"):
        directional_ablation(any_model, name, torch.randn(d + 1))
