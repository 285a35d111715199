"""Shared fixtures: the tiny committed model, the default task, and (marked) SmolLM2."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model():
    from tl_unlearn import load_tiny_model

    return load_tiny_model()


@pytest.fixture(scope="session")
def task():
    from tl_unlearn import make_task

    return make_task("python_code", "wikipedia")


@pytest.fixture(scope="session")
def tiny_data(tiny_model, task):
    """Small eval token sets (forget = code, retain = prose) for the tiny model."""
    return task.tokenize(tiny_model.tokenizer, "eval", seq_len=64, max_tokens=3000)


@pytest.fixture(scope="session")
def smollm2():
    from tl_unlearn import load_default_model

    return load_default_model()


@pytest.fixture(scope="session")
def tiny_bridge(tmp_path_factory, tiny_model):
    """A TransformerBridge over a small random Llama built offline (tiny tokenizer)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_model.tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return TransformerBridge.boot_transformers(str(path))


@pytest.fixture(scope="session")
def tiny_sae_model(tiny_model):
    """The tiny model as a HookedSAETransformer (same weights)."""
    from sae_lens import HookedSAETransformer

    model = HookedSAETransformer(tiny_model.cfg, tokenizer=tiny_model.tokenizer)
    model.load_state_dict(tiny_model.state_dict())
    model.eval()
    return model


@pytest.fixture(params=["hooked", "sae", "bridge"])
def any_model(request):
    """Each model type an intervention must work on."""
    name = {"hooked": "tiny_model", "sae": "tiny_sae_model", "bridge": "tiny_bridge"}
    return request.getfixturevalue(name[request.param])


def make_sae(model, hook_name, d_sae=256, seed=0):
    """A random sae_lens StandardSAE on ``hook_name`` (d_in from the model)."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    sae = StandardSAE(
        StandardSAEConfig(
            d_in=model.cfg.d_model, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook_name)
        )
    )
    with torch.no_grad():  # make features fire: random weights, negative-free biases
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.normal_(0, 0.1)
    return sae


@pytest.fixture
def sae_factory():
    return make_sae


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"weight {k} changed"


def n_hooks(model):
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in model.hook_dict.values())


@pytest.fixture
def weights_guard():
    """Use as ``with weights_guard(model): ...`` to assert no weight changed and no hook left."""
    from contextlib import contextmanager

    @contextmanager
    def guard(model):
        before, hooks = snapshot(model), n_hooks(model)
        yield
        assert_unchanged(model, before)
        assert n_hooks(model) == hooks, "a hook was left on the model"

    return guard


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_model):
    """One small benchmark run (every default method) written to a folder: (folder, result)."""
    from settings import SMALL

    from tl_unlearn.benchmark.runner import BenchmarkConfig, run_benchmark

    out = tmp_path_factory.mktemp("run")
    result = run_benchmark(
        BenchmarkConfig(**SMALL), model=tiny_model, output_dir=out, progress=False
    )
    return out, result


@pytest.fixture(scope="module")
def local_cluster():
    """A local Ray cluster of 2 CPUs for a test module (skipped without Ray)."""
    ray = pytest.importorskip("ray")
    from tl_unlearn.execution.executors import Execution, connect_cluster, release_cluster

    assert connect_cluster(Execution("ray", actors=2, threads=1))  # on loopback, as users get
    yield ray
    release_cluster()
