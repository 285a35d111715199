import pytest
import torch
from transformer_lens import HookedTransformer

from tl_unlearn import TextDataset, evaluate, load_model
from tl_unlearn.corpora import BUILTIN_CORPORA


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
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                   tiny_model.state_dict().values()))
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

    from tl_unlearn.models import smollm2_hf_dir

    hf = AutoModelForCausalLM.from_pretrained(smollm2_hf_dir(), dtype=torch.float32)
    tokens = smollm2.to_tokens(["The capital of France is", "def add(a, b):\n    return a + b"],
                               padding_side="right")[:, :6]
    with torch.no_grad():
        ours = smollm2(tokens).log_softmax(-1)
        ref = hf(tokens).logits.log_softmax(-1)
    assert (ours - ref).abs().max().item() < 1e-3
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    out = smollm2.generate("The capital of France is", max_new_tokens=2, do_sample=False,
                           verbose=False)
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
    from tl_unlearn.models import _load_processed, _save_processed

    folder = tmp_path / "hooked-test"
    before = dict(tiny_model.cfg.to_dict())
    _save_processed(tiny_model, folder)
    assert tiny_model.cfg.to_dict() == before  # the model's config is left alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hooked-")]
    loaded = _load_processed(folder, tiny_model.tokenizer)
    tokens = torch.tensor([[0, 17, 230, 44, 981, 12, 7]])
    assert torch.equal(loaded(tokens), tiny_model(tokens))
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), tiny_model.parameters()))
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
    from tl_unlearn.models import _convert_to_hooked, smollm2_hf_dir

    ref = _convert_to_hooked(smollm2_hf_dir(), smollm2.tokenizer, torch.float32, {})
    def settings(cfg):
        return {k: v for k, v in cfg.to_dict().items() if k not in ("device", "init_weights")}

    assert settings(ref.cfg) == settings(smollm2.cfg)
    tokens = smollm2.to_tokens("The capital of France is Paris, and of Italy")
    # the loaded model stores its gated-MLP and unembedding matrices transposed (no copy per
    # forward); the logits are still bit-identical to the conversion's
    assert smollm2.blocks[0].mlp.W_gate.T.is_contiguous() and smollm2.unembed.W_U.T.is_contiguous()
    assert ref.blocks[0].mlp.W_gate.is_contiguous()
    with torch.no_grad():
        assert torch.equal(smollm2(tokens), ref(tokens))


def test_processed_cache_is_keyed_by_transformer_lens_version(tmp_path, monkeypatch):
    """A TransformerLens upgrade may convert differently: its cached weights must not be
    reused."""
    import importlib.metadata

    from tl_unlearn.models import _processed_dir

    now = _processed_dir(tmp_path, torch.float32, {"fold_ln": True})
    assert now == _processed_dir(tmp_path, torch.float32, {"fold_ln": True})
    assert now != _processed_dir(tmp_path, torch.float32, {"fold_ln": False})
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.0.1" if name == "transformer_lens" else real(name))
    assert _processed_dir(tmp_path, torch.float32, {"fold_ln": True}) != now


def test_tiny_twin_was_trained_without_the_forget_corpus(tiny_model, task):
    """The committed twin (same recipe and tokenizer, no python_code) is much worse than the
    tiny model on held-out code and close to it on held-out prose, measured here."""
    from tl_unlearn.metrics import evaluate
    from tl_unlearn.models import load_model

    twin = load_model("tiny-twin")
    assert twin.tokenizer.get_vocab() == tiny_model.tokenizer.get_vocab()
    data = task.tokenize(tiny_model.tokenizer, "eval", seq_len=128, max_tokens=4000)
    mine, theirs = (evaluate(m, data, progress=False) for m in (tiny_model, twin))
    assert theirs["forget"].loss > mine["forget"].loss + 1.0
    assert abs(theirs["retain"].loss - mine["retain"].loss) < 0.1 * mine["retain"].loss
