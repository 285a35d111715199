"""Edge circuits: the EAP-IG file format and edge ablation against independent references
(the corrupted run, node ablations, and path patching written out by hand)."""

from __future__ import annotations

import json

import pytest
import torch

from tl_unlearn import load_tiny_model
from tl_unlearn.circuits.edge_ablation import edge_ablation, means_after_first
from tl_unlearn.circuits.graph import Circuit
from tl_unlearn.data.tasks import ioi_task
from tl_unlearn.interventions.ablation import mean_ablation, zero_ablation
from tl_unlearn.interventions.counterfactual import counterfactual_ablation, counterfactual_pair


@pytest.fixture(scope="module")
def model64():
    """The tiny model in float64, so that equalities hold to 1e-6 and below."""
    return load_tiny_model().to(torch.float64)


@pytest.fixture(scope="module")
def pair(model64):
    return counterfactual_pair(
        ioi_task(model64.tokenizer, n=60), model64.tokenizer, max_examples=10
    )


def run(model, iv, tokens):
    with torch.no_grad(), iv.applied(model):
        return model(tokens)


def all_nodes(model):
    heads = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    mlps = [f"blocks.{l}.hook_mlp_out" for l in range(model.cfg.n_layers)]
    return heads, mlps


def test_full_circuit_is_the_clean_model(model64, pair):
    clean, corrupted = pair
    full = Circuit.of_model(model64, fill=True)
    iv = edge_ablation(model64, full, clean=clean, corrupted=corrupted)
    with torch.no_grad():
        base = model64(clean.tokens)
    assert (run(model64, iv, clean.tokens) - base).abs().max() < 1e-6


def test_empty_circuit_is_the_corrupted_run(model64, pair):
    clean, corrupted = pair
    iv = edge_ablation(model64, Circuit.of_model(model64), clean=clean, corrupted=corrupted)
    with torch.no_grad():
        want = model64(corrupted.tokens)
    got = run(model64, iv, clean.tokens)
    mask = clean.attention_mask
    assert (got - want)[mask].abs().max() < 1e-6
    # the switches TransformerLens needed are back off, no hook is left
    assert not model64.cfg.use_split_qkv_input and not model64.cfg.use_hook_mlp_in
    assert not any(hp.fwd_hooks for hp in model64.hook_dict.values())
    # any row order and batch size: rows are recognised, not assumed
    perm = torch.tensor([7, 2, 9, 0])
    got = run(model64, iv, clean.tokens[perm])
    assert (got - want[perm])[mask[perm]].abs().max() < 1e-6


@pytest.mark.parametrize("method", ["mean", "zero"])
def test_empty_circuit_is_the_fully_ablated_model(model64, pair, method):
    clean, corrupted = pair
    heads, mlps = all_nodes(model64)
    hooks = ["hook_embed", *mlps]
    if method == "mean":  # means after position 0, which keeps its own value
        iv = edge_ablation(model64, Circuit.of_model(model64), "mean", reference=corrupted)
        names = ["hook_embed", *[f"blocks.{l}.attn.hook_z" for l in range(2)], *mlps]
        means = means_after_first(model64, corrupted, names)
        node = mean_ablation(
            model64,
            None,
            heads=heads,
            hook_points=hooks,
            means=means,
            positions=list(range(1, clean.tokens.shape[1])),
        )
    else:
        iv = edge_ablation(model64, Circuit.of_model(model64), "zero")
        node = zero_ablation(model64, heads=heads, hook_points=hooks)
    assert (run(model64, iv, clean.tokens) - run(model64, node, clean.tokens)).abs().max() < 1e-6


def test_node_complete_circuit_equals_node_ablation(model64, pair):
    clean, corrupted = pair
    kept = [(0, 1), (1, 2), (1, 3), (1, None)]
    circuit = Circuit.from_nodes(model64, kept)
    heads = [(l, h) for l in range(2) for h in range(4) if (l, h) not in kept]
    node = counterfactual_ablation(
        model64, clean, corrupted, heads=heads, hook_points=["blocks.0.hook_mlp_out"]
    )
    edges = edge_ablation(model64, circuit, clean=clean, corrupted=corrupted)
    got, want = run(model64, edges, clean.tokens), run(model64, node, clean.tokens)
    mask = clean.attention_mask
    assert (got - want)[mask].abs().max() < 1e-6
    assert (got - model64(clean.tokens))[mask].abs().max() > 1e-2  # it does ablate


def test_one_edge_equals_path_patching_by_hand(model64, pair):
    """a0.h1 -> a1.h2<k> ablated: only head 2 of layer 1 sees, in its keys, head 1 of layer 0
    as on the corrupted prompt. Written out: k = (LN1(resid_pre + delta) + pos) W_K + b_K
    with delta = (z_corr - z_clean) W_O of that head."""
    clean, corrupted = pair
    m = model64
    c = Circuit.of_model(m, fill=True).with_edges(["a0.h1->a1.h2<k>"], in_graph=False)
    assert c.n_edges == c.n_real_edges - 1
    iv = edge_ablation(m, c, clean=clean, corrupted=corrupted)
    with torch.no_grad():
        _, cc = m.run_with_cache(corrupted.tokens)
        _, cl = m.run_with_cache(clean.tokens)
        w_o = m.blocks[0].attn.W_O[1]
        delta = (cc["blocks.0.attn.hook_z"][:, :, 1] - cl["blocks.0.attn.hook_z"][:, :, 1]) @ w_o
        block = m.blocks[1]
        x = block.ln1(cl["blocks.1.hook_resid_pre"] + delta)
        assert m.cfg.positional_embedding_type == "shortformer"
        x = x + cl["hook_pos_embed"]
        k2 = x @ block.attn.W_K[2] + block.attn.b_K[2]

        def patch(k, hook):
            k = k.clone()
            k[:, :, 2] = k2
            return k

        want = m.run_with_hooks(clean.tokens, fwd_hooks=[("blocks.1.attn.hook_k", patch)])
    got = run(m, iv, clean.tokens)
    mask = clean.attention_mask
    assert (got - want)[mask].abs().max() < 1e-6
    assert (got - cl["logits"] if "logits" in cl else got - m(clean.tokens))[mask].abs().max() > 0


HAND_WRITTEN = {
    "cfg": {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 128},
    "nodes": {
        "input": {"in_graph": True},
        "a0.h1": {"in_graph": True},
        "a1.h2": {"in_graph": True},
        "logits": {"in_graph": True},
    },
    "edges": {
        "input->a0.h1<q>": {"score": 0.5, "in_graph": True},
        "input->a0.h1<k>": {"score": 0.25, "in_graph": True},
        "a0.h1->a1.h2<k>": {"score": -1.5, "in_graph": True},
        "a1.h2->logits": {"score": 2.0, "in_graph": True},
        "input->logits": {"score": 0.1, "in_graph": False},
        "m0->a1.h3<v>": {"score": 0.0, "in_graph": False},
    },
}


def test_hand_written_circuit_file(tmp_path, tiny_model):
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(HAND_WRITTEN))
    c = Circuit.from_json(path)
    assert c.n_edges == 4
    assert c.edges == ["input->a0.h1<q>", "input->a0.h1<k>", "a0.h1->a1.h2<k>", "a1.h2->logits"]
    assert c.scores[c.parse_edge("a0.h1->a1.h2<k>")] == -1.5
    assert c.nodes == ["input", "a0.h1", "a1.h2", "logits"]
    c.check_model(tiny_model)
    # round trip: our file is the same format, every edge of the graph listed
    out = tmp_path / "out.json"
    c.to_json(out)
    again = Circuit.from_json(out)
    assert (again.in_graph == c.in_graph).all() and (again.scores == c.scores).all()
    written = json.loads(out.read_text())
    assert len(written["edges"]) == c.n_real_edges == 110
    assert written["edges"]["a0.h1->a1.h2<k>"] == {"score": -1.5, "in_graph": True}
    assert Circuit.load(c.save(tmp_path / "result.json")).edges == c.edges
    # the top of the scores
    assert c.top(2).edges == ["a0.h1->a1.h2<k>", "a1.h2->logits"]


@pytest.mark.parametrize(
    "edge, words",
    [
        ("a0.h7->a1.h2<k>", "'a0.h7'"),  # no head 7
        ("a1.h2->a0.h1<q>", "does not exist"),  # backwards
        ("input->a1.h2", "which input"),  # a head child without <q|k|v>
        ("m0->logits<q>", "Only heads"),
        ("input=>logits", "not of the form"),
    ],
)
def test_bad_edge_names_are_named(tmp_path, edge, words):
    bad = json.loads(json.dumps(HAND_WRITTEN))
    bad["edges"][edge] = {"score": 1.0, "in_graph": True}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        Circuit.from_json(path)


@pytest.mark.parametrize(
    "content, words",
    [
        ("", "it is an empty file"),
        ("parent,child,score\ninput,logits,1.0\n", "it is not JSON"),
        ("[1, 2]", "its JSON is a list"),
    ],
)
def test_a_file_that_is_not_a_circuit_is_named_with_what_was_expected(tmp_path, content, words):
    path = tmp_path / "circuit.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{path}.*{words}"):
        Circuit.from_json(path)


def test_an_unknown_node_in_the_nodes_block_is_refused(tmp_path):
    """EAP-IG files list nodes beside edges; a node the model cannot have is refused by name
    (it used to load silently)."""
    bad = json.loads(json.dumps(HAND_WRITTEN))
    bad["nodes"] = {**bad.get("nodes", {}), "a5.h0": {"in_graph": True}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"unknown node\(s\) \['a5.h0'\]"):
        Circuit.from_json(path)


def test_wrong_model_shape_is_refused_before_hooks(tiny_model):
    c = Circuit.empty(3, 4)
    with pytest.raises(ValueError, match="3 layers of 4 heads"):
        edge_ablation(tiny_model, c, "zero")
    assert not any(hp.fwd_hooks for hp in tiny_model.hook_dict.values())
    with pytest.raises(ValueError, match="needs clean= and corrupted="):
        edge_ablation(tiny_model, Circuit.of_model(tiny_model), "counterfactual")


def test_a_transformer_bridge_is_refused_by_name(tiny_bridge):
    with pytest.raises(TypeError, match="needs a HookedTransformer, got TransformerBridge"):
        Circuit.of_model(tiny_bridge)
    with pytest.raises(TypeError, match="needs a HookedTransformer, got TransformerBridge"):
        counterfactual_ablation(
            tiny_bridge,
            tiny_bridge.to_tokens(["a b"]),
            tiny_bridge.to_tokens(["a c"]),
            heads=[(0, 0)],
        )


@pytest.mark.smollm2
def test_smollm2_edges_grouped_heads_and_rotary(smollm2):
    """SmolLM2 has grouped key/value heads and rotary positions: the empty circuit is the
    corrupted run, and one key edge into a head whose group-mates keep theirs (the pass must
    ungroup that key/value head) matches TransformerLens's own split-input path."""
    from tl_unlearn.engine.tl_patches import edge_flags

    m = smollm2
    clean, corrupted = counterfactual_pair(ioi_task(m.tokenizer, n=40), m.tokenizer, max_examples=3)
    mask = clean.attention_mask
    with torch.no_grad():
        want = m(corrupted.tokens)
    got = run(
        m, edge_ablation(m, Circuit.of_model(m), clean=clean, corrupted=corrupted), clean.tokens
    )
    assert (got - want)[mask].abs().max() < 2e-3 * want.abs().max()
    c = Circuit.of_model(m, fill=True).with_edges(["a3.h1->a7.h4<k>"], in_graph=False)
    got = run(m, edge_ablation(m, c, clean=clean, corrupted=corrupted), clean.tokens)
    with torch.no_grad(), edge_flags(m):
        _, cc = m.run_with_cache(corrupted.tokens, names_filter="blocks.3.attn.hook_z")
        _, cl = m.run_with_cache(clean.tokens, names_filter="blocks.3.attn.hook_z")
        w_o = m.blocks[3].attn.W_O[1]
        delta = (cc["blocks.3.attn.hook_z"][:, :, 1] - cl["blocks.3.attn.hook_z"][:, :, 1]) @ w_o

        def patch(x, hook):  # TransformerLens's per-head key input, by hand
            x = x.clone()
            x[:, :, 4] = x[:, :, 4] + delta
            return x

        ref = m.run_with_hooks(clean.tokens, fwd_hooks=[("blocks.7.hook_k_input", patch)])
        base = m(clean.tokens)
    assert (got - ref)[mask].abs().max() < 1e-3 * ref.abs().max()
    assert (got - base)[mask].abs().max() > 1e-4


def test_grouped_heads_ungrouped_in_our_hooks_equal_transformer_lens_ungrouping():
    """With grouped key/value heads whose query heads read different inputs, the fused path
    gives each query head its own key and value in edge ablation's hooks; TransformerLens's own
    ungrouping (``ungroup_grouped_query_attention``, taken when the fused path is off) must
    give the same logits. A random small circuit on a grouped-query model from a config."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from tl_unlearn import TokenDataset, use_fused_attention
    from tl_unlearn.circuits.faithfulness import random_scores
    from tl_unlearn.engine.tl_patches import runs_fused

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=4, n_key_value_heads=2, d_head=8, d_mlp=64,
        d_vocab=50, n_ctx=16, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", gated_mlp=True, dtype=torch.float64, seed=0,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 50, (6, 10), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2:5] = torch.randint(1, 50, (6, 3), generator=gen)
    mask = torch.ones_like(clean, dtype=torch.bool)
    clean_ds, corrupted_ds = TokenDataset("c", clean, mask), TokenDataset("x", corrupted, mask)
    circuit = random_scores(Circuit.of_model(model), 0).top(60)
    outs = []
    for fused in (True, False):
        use_fused_attention(model, enabled=fused)
        assert runs_fused(model.blocks[0].attn) is fused
        iv = edge_ablation(model, circuit, clean=clean_ds, corrupted=corrupted_ds)
        outs.append(run(model, iv, clean))
        assert model.cfg.ungroup_grouped_query_attention is False  # switched back
    plain = run(model, edge_ablation(model, Circuit.of_model(model, fill=True)), clean)
    assert not torch.allclose(outs[0], plain, atol=1e-3)  # the circuit changes the output
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-9)
