"""Activation patching, EAP and EAP-IG against TransformerLens and hand-written gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import patching

from tl_unlearn.circuits.attribution import activation_patching, edge_attribution
from tl_unlearn.data.tasks import ioi_task
from tl_unlearn.engine.scoring import answer_logit_diff
from tl_unlearn.engine.tl_patches import edge_flags
from tl_unlearn.interventions.counterfactual import counterfactual_ablation, counterfactual_pair


@pytest.fixture(scope="module")
def pair(tiny_model):
    return counterfactual_pair(
        ioi_task(tiny_model.tokenizer, n=60), tiny_model.tokenizer, max_examples=10
    )


def tl_head_map(model, clean, corrupted):
    """TransformerLens's head-output patch, clean and corrupted swapped: the clean run with
    one head's output from the corrupted cache."""
    _, corrupted_cache = model.run_with_cache(corrupted.tokens)
    return patching.get_act_patch_attn_head_out_all_pos(
        model, clean.tokens, corrupted_cache, lambda logits: answer_logit_diff(logits, clean).mean()
    ).numpy()


def test_head_map_equals_transformer_lens_patching(tiny_model, pair):
    clean, corrupted = pair
    ours = activation_patching(tiny_model, clean, corrupted, batch_size=3)
    assert np.abs(ours.head_grid() - tl_head_map(tiny_model, clean, corrupted)).max() < 1e-5


def test_patching_scores_equal_the_counterfactual_node_map(tiny_model, pair):
    clean, corrupted = pair
    ours = activation_patching(tiny_model, clean, corrupted)
    with torch.no_grad():
        base = answer_logit_diff(tiny_model(clean.tokens), clean).mean()
        for name, score in zip(ours.nodes, ours.scores):
            layer = int(name[1:].split(".")[0])
            if name.startswith("a"):
                iv = counterfactual_ablation(
                    tiny_model, clean, corrupted, heads=[(layer, int(name.split(".h")[1]))]
                )
            else:
                iv = counterfactual_ablation(
                    tiny_model, clean, corrupted, hook_points=[f"blocks.{layer}.hook_mlp_out"]
                )
            with iv.applied(tiny_model):
                value = answer_logit_diff(tiny_model(clean.tokens), clean).mean()
            assert abs(float(value - base) - score) < 1e-5, name


def test_eap_equals_gradient_times_difference_by_hand(tiny_model, pair):
    clean, corrupted = pair
    m = tiny_model
    eap = edge_attribution(m, clean, corrupted, batch_size=4)
    is_result = lambda n: n.endswith(("hook_z", "hook_embed", "mlp_out"))  # noqa: E731
    with edge_flags(m):
        with torch.no_grad():
            _, cc = m.run_with_cache(corrupted.tokens, names_filter=is_result)
            _, cl = m.run_with_cache(clean.tokens, names_filter=is_result)
        kept = {}

        def keep(acts, hook):
            acts.retain_grad()
            kept[hook.name] = acts

        emb = m.embed(clean.tokens).detach().requires_grad_(True)
        hooks = [
            ("hook_embed", lambda a, hook: emb),
            ("blocks.1.hook_k_input", keep),
            ("blocks.1.hook_v_input", keep),
            ("blocks.1.hook_mlp_in", keep),
        ]
        with m.hooks(fwd_hooks=hooks):
            answer_logit_diff(m(clean.tokens), clean).mean().backward()
    m.zero_grad(set_to_none=True)
    cases = {
        "a0.h1->a1.h2<k>": (
            (cc["blocks.0.attn.hook_z"][:, :, 1] - cl["blocks.0.attn.hook_z"][:, :, 1])
            @ m.blocks[0].attn.W_O[1],
            kept["blocks.1.hook_k_input"].grad[:, :, 2],
        ),
        "input->a1.h0<v>": (
            cc["hook_embed"] - cl["hook_embed"],
            kept["blocks.1.hook_v_input"].grad[:, :, 0],
        ),
        "m0->m1": (
            cc["blocks.0.hook_mlp_out"] - cl["blocks.0.hook_mlp_out"],
            kept["blocks.1.hook_mlp_in"].grad,
        ),
    }
    for edge, (diff, grad) in cases.items():
        hand = float((diff * grad).sum())
        assert abs(eap.scores[eap.parse_edge(edge)] - hand) < 1e-6 * max(1, abs(hand)), edge
    assert np.abs(eap.scores).max() > 0
    # the model's own gradients were not touched
    assert all(p.grad is None for p in m.parameters())


def test_eap_ig_with_one_right_step_is_eap_and_more_steps_differ(tiny_model, pair):
    clean, corrupted = pair
    eap = edge_attribution(tiny_model, clean, corrupted)
    one = edge_attribution(
        tiny_model, clean, corrupted, method="eap-ig", steps=1, ig_points="right"
    )
    assert np.abs(eap.scores - one.scores).max() < 1e-9
    five = edge_attribution(tiny_model, clean, corrupted, method="eap-ig", steps=5)
    assert np.abs(eap.scores - five.scores).max() > 1e-6


def _hand_ig(m, clean, corrupted, ks, steps):
    """EAP-IG by hand for three edges: the parent's difference (corrupted - clean) times the
    child's input gradient averaged over the embeddings interpolated at alpha = k / steps."""
    is_result = lambda n: n.endswith(("hook_z", "hook_embed", "mlp_out"))  # noqa: E731
    with edge_flags(m):
        with torch.no_grad():
            _, cc = m.run_with_cache(corrupted.tokens, names_filter=is_result)
            _, cl = m.run_with_cache(clean.tokens, names_filter=is_result)
        e_clean, e_corrupt = cl["hook_embed"], cc["hook_embed"]
        grads = {"k": 0.0, "v": 0.0, "mlp": 0.0}
        for k in ks:
            kept = {}

            def keep(acts, hook, kept=kept):
                acts.retain_grad()
                kept[hook.name] = acts

            emb = (e_corrupt + (k / steps) * (e_clean - e_corrupt)).requires_grad_(True)
            hooks = [
                ("hook_embed", lambda a, hook, emb=emb: emb),
                ("blocks.1.hook_k_input", keep),
                ("blocks.1.hook_v_input", keep),
                ("blocks.1.hook_mlp_in", keep),
            ]
            with m.hooks(fwd_hooks=hooks):
                answer_logit_diff(m(clean.tokens), clean).mean().backward()
            grads["k"] += kept["blocks.1.hook_k_input"].grad[:, :, 2] / len(ks)
            grads["v"] += kept["blocks.1.hook_v_input"].grad[:, :, 0] / len(ks)
            grads["mlp"] += kept["blocks.1.hook_mlp_in"].grad / len(ks)
    m.zero_grad(set_to_none=True)
    z = "blocks.0.attn.hook_z"
    return {
        "a0.h1->a1.h2<k>": float(
            (((cc[z][:, :, 1] - cl[z][:, :, 1]) @ m.blocks[0].attn.W_O[1]) * grads["k"]).sum()
        ),
        "input->a1.h0<v>": float(((e_corrupt - e_clean) * grads["v"]).sum()),
        "m0->m1": float(
            ((cc["blocks.0.hook_mlp_out"] - cl["blocks.0.hook_mlp_out"]) * grads["mlp"]).sum()
        ),
    }


@pytest.mark.parametrize("ig_points, ks", [("left", range(0, 4)), ("right", range(1, 5))])
def test_eap_ig_equals_a_hand_written_riemann_sum(tiny_model, pair, ig_points, ks):
    """``left`` (the default) is EAP-IG's reference code and MIB's: alpha = k / m for
    k = 0..m-1; ``right`` is k = 1..m. Each equals its hand-written sum, and they differ."""
    clean, corrupted = pair
    ours = edge_attribution(
        tiny_model, clean, corrupted, method="eap-ig", steps=4, batch_size=4, ig_points=ig_points
    )
    hand = _hand_ig(tiny_model, clean, corrupted, ks, 4)
    for edge, value in hand.items():
        assert abs(ours.scores[ours.parse_edge(edge)] - value) < 1e-6 * max(1, abs(value)), edge
    other = _hand_ig(
        tiny_model, clean, corrupted, [k - 1 if ig_points == "right" else k + 1 for k in ks], 4
    )
    assert any(abs(other[e] - hand[e]) > 1e-4 for e in hand)
    assert ours.info["ig_points"] == ig_points


def test_bad_method_and_metric(tiny_model, pair):
    clean, corrupted = pair
    with pytest.raises(ValueError, match="method must be 'eap' or 'eap-ig'"):
        edge_attribution(tiny_model, clean, corrupted, method="acdc")
    with pytest.raises(ValueError, match="one value per example"):
        activation_patching(tiny_model, clean, corrupted, lambda logits, b: logits.sum())


@pytest.mark.smollm2
def test_smollm2_head_map_equals_transformer_lens(smollm2):
    clean, corrupted = counterfactual_pair(
        ioi_task(smollm2.tokenizer, n=40), smollm2.tokenizer, max_examples=3
    )
    # one node per pass, the batch as TransformerLens runs it (float32 sums depend on it)
    ours = activation_patching(
        smollm2, clean, corrupted, include_mlp=False, rows_per_pass=len(clean)
    )
    want = tl_head_map(smollm2, clean, corrupted)
    # float32 through 30 layers: 1e-5 of the values (logit differences near 5)
    assert np.abs(ours.head_grid() - want).max() < 1e-5 * np.abs(want).max()
