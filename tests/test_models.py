import copy

import einops
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from tl_unlearn import TextDataset, evaluate, load_model, use_fused_attention
from tl_unlearn.data.corpora import BUILTIN_CORPORA


def _unigram_loss(fit, ev, vocab):
    """Cross-entropy of an add-one unigram model fit on ``fit`` targets, measured on ``ev``."""
    counts = torch.bincount(fit.tokens[:, 1:][fit.attention_mask[:, 1:]], minlength=vocab)
    logp = (counts.double() + 1).log() - (counts.sum() + vocab).double().log()
    return float(-logp[ev.tokens[:, 1:][ev.attention_mask[:, 1:]]].mean())


def test_tiny_model_beats_unigram_on_every_corpus(tiny_model):
    vocab = tiny_model.cfg.d_vocab
    for name in BUILTIN_CORPORA:
        corpus = TextDataset.from_source(name, name="forget")
        fit = corpus.tokenize(tiny_model.tokenizer, "fit", seq_len=128, max_tokens=100_000)
        ev = corpus.tokenize(tiny_model.tokenizer, "eval", seq_len=128, max_tokens=4000)
        model_loss = evaluate(tiny_model, ev, progress=False)[ev.name].loss
        unigram = _unigram_loss(fit, ev, vocab)
        assert model_loss < unigram - 1.0, (name, model_loss, unigram)


def test_load_model_dispatch(tiny_model):
    assert load_model(tiny_model) is tiny_model
    m = load_model("tiny")
    assert isinstance(m, HookedTransformer) and m.cfg.n_layers == 2
    assert all(
        torch.equal(a, b) for a, b in zip(m.state_dict().values(), tiny_model.state_dict().values())
    )
    with pytest.raises(TypeError, match="int"):
        load_model(3)
    with pytest.raises(ValueError, match="not-a-model-xyz"):
        load_model("not-a-model-xyz")


def test_tiny_tokenizer_round_trip(tiny_model):
    text = "def f(x):\n    return x  # The Lord is my shepherd"
    assert tiny_model.to_string(tiny_model.to_tokens(text, prepend_bos=False)[0]) == text


@pytest.mark.smollm2
def test_smollm2_matches_hf_and_says_paris(smollm2):
    from transformers import AutoModelForCausalLM

    from tl_unlearn.models.loading import smollm2_hf_dir

    hf = AutoModelForCausalLM.from_pretrained(smollm2_hf_dir(), dtype=torch.float32)
    tokens = smollm2.to_tokens(
        ["The capital of France is", "def add(a, b):\n    return a + b"], padding_side="right"
    )[:, :6]
    with torch.no_grad():
        ours = smollm2(tokens).log_softmax(-1)
        ref = hf(tokens).logits.log_softmax(-1)
    assert (ours - ref).abs().max().item() < 1e-3
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    out = smollm2.generate(
        "The capital of France is", max_new_tokens=2, do_sample=False, verbose=False
    )
    assert out.startswith("The capital of France is Paris")


@pytest.mark.smollm2
def test_smollm2_config_and_offline_bridge():
    from tl_unlearn import load_default_model

    bridge = load_default_model(bridge=True)
    assert bridge.cfg.n_layers == 30
    tokens = torch.tensor([[1, 504, 2365, 6354, 282]])
    with torch.no_grad():
        logits = bridge(tokens)
    assert logits.shape == (1, 5, 49152)


def test_processed_weights_round_trip_and_bad_files(tiny_model, tmp_path):
    """The low-memory loader reads back exactly what was saved, and refuses a damaged file."""
    from tl_unlearn.models.loading import _load_processed, _save_processed

    folder = tmp_path / "hooked-test"
    before = dict(tiny_model.cfg.to_dict())
    _save_processed(tiny_model, folder)
    assert tiny_model.cfg.to_dict() == before  # the model's config is left alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hooked-")]
    loaded = use_fused_attention(_load_processed(folder, tiny_model.tokenizer))
    tokens = torch.tensor([[0, 17, 230, 44, 981, 12, 7]])
    assert torch.equal(loaded(tokens), tiny_model(tokens))
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), tiny_model.parameters()))
    attn = loaded.blocks[0].attn  # read straight into the order TL flattens it in
    assert attn.W_Q.permute(0, 2, 1).is_contiguous() and not attn.W_Q.is_contiguous()
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        _load_processed(folder, tiny_model.tokenizer)
    cfg = (folder / "config.json").read_text()
    (folder / "config.json").write_text(cfg.replace('"n_layers": 2', '"n_layers": 3'))
    with pytest.raises(ValueError, match="does not match the model's parameters"):
        _load_processed(folder, tiny_model.tokenizer)


@pytest.mark.smollm2
def test_smollm2_processed_cache_equals_transformer_lens_conversion(smollm2):
    """load_default_model reads cached processed weights; they equal TL's own conversion."""
    from tl_unlearn.models.loading import _convert_to_hooked, smollm2_hf_dir

    ref = _convert_to_hooked(smollm2_hf_dir(), smollm2.tokenizer, torch.float32, {})

    def settings(cfg):
        return {k: v for k, v in cfg.to_dict().items() if k not in ("device", "init_weights")}

    assert settings(ref.cfg) == settings(smollm2.cfg)
    tokens = smollm2.to_tokens("The capital of France is Paris, and of Italy")
    # the loaded model stores its gated-MLP, unembedding and attention matrices in the order
    # TL multiplies them in (no copy per forward); the logits are still bit-identical to the
    # conversion's
    assert smollm2.blocks[0].mlp.W_gate.T.is_contiguous() and smollm2.unembed.W_U.T.is_contiguous()
    assert smollm2.blocks[0].attn.W_O.permute(2, 0, 1).is_contiguous()
    assert smollm2.blocks[0].attn._W_K.permute(0, 2, 1).is_contiguous()
    assert ref.blocks[0].mlp.W_gate.is_contiguous()
    with torch.no_grad():
        fused = smollm2(tokens)  # fused attention: rounding only
        assert torch.allclose(fused, ref(tokens), rtol=0, atol=2e-4)
        try:
            use_fused_attention(smollm2, enabled=False)
            assert torch.equal(smollm2(tokens), ref(tokens))
        finally:
            use_fused_attention(smollm2)


def test_processed_cache_is_keyed_by_transformer_lens_version(tmp_path, monkeypatch):
    """A TransformerLens upgrade may convert differently: its cached weights must not be
    reused."""
    import importlib.metadata

    from tl_unlearn.models.loading import _processed_dir

    now = _processed_dir(tmp_path, torch.float32, {"fold_ln": True})
    assert now == _processed_dir(tmp_path, torch.float32, {"fold_ln": True})
    assert now != _processed_dir(tmp_path, torch.float32, {"fold_ln": False})
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "0.0.1" if name == "transformer_lens" else real(name),
    )
    assert _processed_dir(tmp_path, torch.float32, {"fold_ln": True}) != now


def test_tiny_twin_was_trained_without_the_forget_corpus(tiny_model, task):
    """The committed twin (same recipe and tokenizer, no python_code) is much worse than the
    tiny model on held-out code and close to it on held-out prose, measured here."""
    from tl_unlearn.metrics import evaluate
    from tl_unlearn.models.loading import load_model

    twin = load_model("tiny-twin")
    assert twin.tokenizer.get_vocab() == tiny_model.tokenizer.get_vocab()
    data = task.tokenize(tiny_model.tokenizer, "eval", seq_len=128, max_tokens=4000)
    mine, theirs = (evaluate(m, data, progress=False) for m in (tiny_model, twin))
    assert theirs["forget"].loss > mine["forget"].loss + 1.0
    assert abs(theirs["retain"].loss - mine["retain"].loss) < 0.1 * mine["retain"].loss


def _rotary_gqa_model():
    """A random rotary, grouped-query, RMS-normed model (SmolLM2's kind of attention)."""
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=64,
        n_heads=4,
        n_key_value_heads=2,
        d_head=16,
        d_mlp=128,
        d_vocab=300,
        n_ctx=64,
        act_fn="silu",
        normalization_type="RMS",
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=16,
        seed=0,
    )
    return HookedTransformer(cfg).eval()


def _standard_attention_model():
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        d_vocab=300,
        n_ctx=64,
        act_fn="gelu",
        seed=0,
    )
    return HookedTransformer(cfg).eval()


@pytest.mark.parametrize("kind", ["standard", "rotary-gqa"])
def test_weight_layout_changes_no_output(kind):
    """use_transposed_layout relays the attention, gated-MLP and unembedding weights into the
    order TransformerLens flattens them in; logits, activations and gradients stay
    bit-identical, on TL's attention path and on the fused one."""
    from tl_unlearn.engine.tl_patches import _LAYOUTS, layout_params, use_transposed_layout

    model = _standard_attention_model() if kind == "standard" else _rotary_gqa_model()
    ref = copy.deepcopy(model)
    use_transposed_layout(model)
    relaid = [
        (type(m).__name__, n)
        for m in model.modules()
        for n, p, perm in layout_params(m)
        if p.permute(perm).is_contiguous() and not p.is_contiguous()
    ]
    expected = {
        "standard": {"Attention", "Unembed"},
        "rotary-gqa": {"GroupedQueryAttention", "GatedMLP", "Unembed"},
    }[kind]
    assert {t for t, _ in relaid} == expected
    assert len(relaid) == sum(
        len(_LAYOUTS[t]) * sum(type(m).__name__ == t for m in model.modules()) for t in expected
    )
    tokens = torch.randint(1, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    attn = model.blocks[0].attn  # TL's flattenings are views now: no copy per forward pass
    for w, pattern in ((attn.W_Q, "h m d -> (h d) m"), (attn.W_O, "h d m -> m (h d)")):
        assert einops.rearrange(w, pattern).data_ptr() == w.data_ptr()

    def names(name):
        return name.endswith(("hook_q", "hook_k", "hook_v", "hook_z", "attn_out"))

    for fused in (False, True):
        for m in (model, ref):
            use_fused_attention(m, enabled=fused)
        with torch.no_grad():
            (a, cache_a), (b, cache_b) = (
                m.run_with_cache(tokens, names_filter=names) for m in (model, ref)
            )
        assert torch.equal(a, b)
        assert all(torch.equal(cache_a[k], cache_b[k]) for k in cache_b)
    for m in (model, ref):
        m.zero_grad()
        m(tokens, return_type="loss").backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), n


def _fused_layers(model):
    return sum("forward" in vars(b.attn) for b in model.blocks)


@pytest.mark.parametrize("kind", ["tiny", "rotary-gqa"])
def test_fused_attention_equals_transformer_lens_attention(kind):
    """The fused path gives TL's logits (to rounding), with right and left padding, runs the
    same hook_z hooks, and gives TL's gradients; a model passed in is changed only on request."""
    model = load_model("tiny") if kind == "tiny" else _rotary_gqa_model()
    if kind == "rotary-gqa":
        assert _fused_layers(model) == 0  # not loaded by tl_unlearn: left alone
        use_fused_attention(model)
    assert _fused_layers(model) == model.cfg.n_layers
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, min(300, model.cfg.d_vocab), (3, 40), generator=gen)
    mask = torch.ones_like(tokens)
    mask[1, :9] = 0  # left padding: queries with no key to attend to
    mask[2, :1] = 0

    def scale_head(z, hook):
        z = z.clone()
        z[:, :, 1] *= 0.5
        return z

    seen = []
    hooks = [
        ("blocks.1.attn.hook_z", scale_head),
        ("blocks.0.attn.hook_z", lambda z, hook: seen.append(z.clone())),
    ]

    def run(**kwargs):
        with model.hooks(fwd_hooks=hooks):
            return model(tokens, **kwargs)

    with torch.no_grad():
        fused, fused_masked = run(), run(attention_mask=mask)
        use_fused_attention(model, enabled=False)
        assert _fused_layers(model) == 0
        exact, exact_masked = run(), run(attention_mask=mask)
    assert not torch.equal(fused, exact)  # the fused path did run
    assert torch.allclose(fused, exact, rtol=0, atol=1e-4)
    real = mask.bool()
    assert torch.allclose(fused_masked[real], exact_masked[real], rtol=0, atol=1e-4)
    assert torch.allclose(seen[0], seen[2], atol=1e-5)
    assert torch.allclose(seen[1], seen[3], atol=1e-5)  # z is 0 where TL's pattern is NaN
    assert not seen[1].isnan().any()

    grads = []
    for enabled in (True, False):
        use_fused_attention(model, enabled=enabled)
        model.zero_grad()
        model(tokens, return_type="loss").backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad()
    for g, h in zip(*grads):
        assert torch.allclose(g, h, rtol=1e-3, atol=1e-5)


def test_fused_attention_gives_way_to_what_needs_the_pattern(tiny_model):
    """Hooks or a cache on the scores / pattern, and KV-cached generation, take TL's own path:
    bit-identical to a model without the fused path. A deep copy keeps its own fused path."""
    reference = copy.deepcopy(tiny_model)
    use_fused_attention(reference, enabled=False)
    assert _fused_layers(tiny_model) == 2 and _fused_layers(reference) == 0
    tokens = tiny_model.to_tokens(["def f(x): return x + 1", "The river flows north"])
    names = lambda n: n.endswith("hook_pattern")  # noqa: E731
    with torch.no_grad():
        logits, cache = tiny_model.run_with_cache(tokens, names_filter=names)
        ref_logits, ref_cache = reference.run_with_cache(tokens, names_filter=names)
        assert torch.equal(logits, ref_logits)
        assert all(torch.equal(cache[k], ref_cache[k]) for k in ref_cache.keys())
        zero_scores = [
            (f"blocks.{i}.attn.hook_attn_scores", lambda s, hook: s * 0.5) for i in range(2)
        ]
        assert torch.equal(
            tiny_model.run_with_hooks(tokens, fwd_hooks=zero_scores),
            reference.run_with_hooks(tokens, fwd_hooks=zero_scores),
        )
        kwargs = {"max_new_tokens": 6, "do_sample": False, "verbose": False}
        assert tiny_model.generate("def f(x):", **kwargs) == reference.generate(
            "def f(x):", **kwargs
        )
    twin = copy.deepcopy(tiny_model)
    assert _fused_layers(twin) == 2
    with torch.no_grad():
        twin.blocks[0].attn.W_O.mul_(0)
        assert not torch.equal(twin(tokens), tiny_model(tokens))  # the copy's own weights
        assert torch.allclose(tiny_model(tokens), ref_logits, atol=1e-4)


def test_fused_attention_leaves_unsupported_attention_alone():
    """ALiBi and bidirectional attention are not implemented by the fused path: not switched."""
    base = {
        "n_layers": 1,
        "d_model": 32,
        "n_heads": 2,
        "d_head": 16,
        "d_vocab": 50,
        "n_ctx": 16,
        "attn_only": True,
    }
    alibi = HookedTransformer(HookedTransformerConfig(**base, positional_embedding_type="alibi"))
    bidirectional = HookedTransformer(
        HookedTransformerConfig(**base, attention_dir="bidirectional")
    )
    for model in (alibi, bidirectional):
        use_fused_attention(model)
        assert _fused_layers(model) == 0
