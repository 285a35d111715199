"""A catalogue of plausible mistakes across the public API (issue 14).

Each entry calls one public entry point with one bad input and asserts: the exception type,
that the message names the bad value or parameter, that no hook is left on the model and no
weight changed, and (for the benchmark and the CLI) that no file was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tl_unlearn import TokenDataset, evaluate, make_task
from tl_unlearn.benchmark.runner import BenchmarkConfig, run_benchmark
from tl_unlearn.circuits.maps import component_selectivity_map, greedy_circuit
from tl_unlearn.cli import main
from tl_unlearn.interventions import (
    actadd,
    directional_ablation,
    keep_only_circuit,
    mean_ablation,
    pruning_scores,
    resample_ablation,
    selective_pruning,
    vector_steering,
    zero_ablation,
)
from tl_unlearn.metrics import (
    activation_distances,
    completeness,
    fisher_uncertainty,
    logit_lens_diff,
    output_distances,
    relearn,
    selectivity_curve,
    zrf_score,
)
from tl_unlearn.metrics.generation import generation_behaviour
from tl_unlearn.widget import AblationWidget

ROWS = torch.ones(2, 8, dtype=torch.bool)


def tds(tokens, mask=None, name="x"):
    tokens = torch.as_tensor(tokens)
    return TokenDataset(
        name, tokens, torch.ones(tokens.shape, dtype=torch.bool) if mask is None else mask
    )


def left_padded():
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, :3] = False
    return tds(torch.ones(2, 8, dtype=torch.long), mask)


def nan_hook(act, hook):
    return act * float("nan")


# (id, call(model, data, fit, tmp_path), exception type, regex naming the bad input)
CASES = [
    # interventions
    ("head-float", lambda m, d, f, t: zero_ablation(m, heads=[(0, 1.5)]), TypeError, "1.5"),
    ("layer-float", lambda m, d, f, t: zero_ablation(m, heads=[(1.5, 0)]), TypeError, "1.5"),
    ("head-range", lambda m, d, f, t: zero_ablation(m, heads=[(0, 9)]), ValueError, "9"),
    ("layer-range", lambda m, d, f, t: zero_ablation(m, heads=[(5, 0)]), ValueError, "Layer 5"),
    ("head-bool", lambda m, d, f, t: zero_ablation(m, heads=[(0, True)]), TypeError, "True"),
    ("head-string", lambda m, d, f, t: zero_ablation(m, heads="L0H1"), TypeError, "L0H1"),
    (
        "head-triple",
        lambda m, d, f, t: zero_ablation(m, heads=[(0, 1, 2)]),
        ValueError,
        r"\(0, 1, 2\)",
    ),
    (
        "neuron-range",
        lambda m, d, f, t: zero_ablation(m, neurons={0: [10_000]}),
        ValueError,
        "10000",
    ),
    ("neuron-negative", lambda m, d, f, t: zero_ablation(m, neurons={0: [-1]}), ValueError, "-1"),
    (
        "hook-name",
        lambda m, d, f, t: zero_ablation(m, hook_points=["blocks.0.hook_resid_prex"]),
        ValueError,
        "hook_resid_prex",
    ),
    ("nothing", lambda m, d, f, t: zero_ablation(m), ValueError, "heads=, neurons="),
    (
        "means-shape",
        lambda m, d, f, t: mean_ablation(
            m, None, heads=[(0, 1)], means={"blocks.0.attn.hook_z": torch.zeros(7)}
        ),
        ValueError,
        r"means\['blocks.0.attn.hook_z'\] has shape \[7\]",
    ),
    (
        "means-missing",
        lambda m, d, f, t: mean_ablation(m, None, heads=[(0, 1)], means={}),
        ValueError,
        "blocks.0.attn.hook_z",
    ),
    (
        "mean-no-reference",
        lambda m, d, f, t: mean_ablation(m, None, heads=[(0, 1)]),
        ValueError,
        "reference",
    ),
    (
        "resample-empty",
        lambda m, d, f, t: resample_ablation(
            m, torch.zeros(0, 8, dtype=torch.long), heads=[(0, 1)]
        ),
        ValueError,
        "empty",
    ),
    (
        "direction-zero",
        lambda m, d, f, t: directional_ablation(
            m, "blocks.0.hook_resid_pre", torch.zeros(m.cfg.d_model)
        ),
        ValueError,
        "all-zero",
    ),
    (
        "direction-nan",
        lambda m, d, f, t: directional_ablation(
            m, "blocks.0.hook_resid_pre", torch.full((m.cfg.d_model,), float("nan"))
        ),
        ValueError,
        "NaN",
    ),
    (
        "direction-size",
        lambda m, d, f, t: directional_ablation(m, "blocks.0.hook_resid_pre", torch.ones(5)),
        ValueError,
        "size 5",
    ),
    (
        "prune-fraction-high",
        lambda m, d, f, t: selective_pruning(m, f["forget"], f["retain"], 1.5),
        ValueError,
        "fraction.*1.5",
    ),
    (
        "prune-fraction-negative",
        lambda m, d, f, t: selective_pruning(m, f["forget"], f["retain"], -0.1),
        ValueError,
        "fraction.*-0.1",
    ),
    (
        "prune-steps",
        lambda m, d, f, t: selective_pruning(m, f["forget"], f["retain"], 0.1, steps=0),
        ValueError,
        "steps",
    ),
    (
        "prune-score",
        lambda m, d, f, t: pruning_scores(m, f["forget"], f["retain"], score="bogus"),
        ValueError,
        "bogus",
    ),
    ("actadd-layer", lambda m, d, f, t: actadd(m, "a", "b", layer=9), ValueError, "Layer 9"),
    (
        "actadd-empty-prompts",
        lambda m, d, f, t: actadd(m, "", "", layer=1),
        ValueError,
        "prompt_add and prompt_sub are the same",
    ),
    (
        "mask-all-false",
        lambda m, d, f, t: TokenDataset(
            "x", torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool)
        ),
        ValueError,
        "attention_mask has no True entry in any row",
    ),
    (
        "mask-row-false",
        lambda m, d, f, t: TokenDataset(
            "x", torch.zeros(2, 4, dtype=torch.long), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
        ),
        ValueError,
        "attention_mask has no True entry in row 1",
    ),
    (
        "steer-size",
        lambda m, d, f, t: vector_steering(m, "blocks.0.hook_resid_pre", torch.ones(3)),
        ValueError,
        "size 3",
    ),
    (
        "keep-only-method",
        lambda m, d, f, t: keep_only_circuit(m, heads=[(0, 1)], method="bogus"),
        ValueError,
        "bogus",
    ),
    # data
    (
        "task-identical",
        lambda m, d, f, t: make_task(
            [f"text {i}" for i in range(30)], [f"text {i}" for i in range(30)]
        ),
        ValueError,
        "share 30 document",
    ),
    ("task-empty", lambda m, d, f, t: make_task([], ["a b"] * 3), ValueError, "no non-empty"),
    ("task-non-string", lambda m, d, f, t: make_task([1, 2, 3], ["a"]), TypeError, "strings"),
    (
        "task-path",
        lambda m, d, f, t: make_task("no/such/corpus.txt", "kjv"),
        ValueError,
        "no/such/corpus.txt",
    ),
    (
        "task-eval-fraction",
        lambda m, d, f, t: make_task(eval_fraction=1.5),
        ValueError,
        "eval_fraction",
    ),
    ("tokens-left-padded", lambda m, d, f, t: left_padded(), ValueError, "left-padded"),
    ("tokens-float", lambda m, d, f, t: tds(torch.ones(2, 8)), TypeError, "float32"),
    ("tokens-minus-100", lambda m, d, f, t: tds(torch.full((2, 8), -100)), ValueError, "-100"),
    (
        "tokens-mask-shape",
        lambda m, d, f, t: tds(
            torch.ones(2, 8, dtype=torch.long), torch.ones(2, 7, dtype=torch.bool)
        ),
        ValueError,
        r"\(2, 7\)",
    ),
    (
        "tokenize-n_ctx",
        lambda m, d, f, t: make_task().tokenize(m.tokenizer, seq_len=4096, n_ctx=m.cfg.n_ctx),
        ValueError,
        "4096",
    ),
    (
        "tokenize-split",
        lambda m, d, f, t: make_task().tokenize(m.tokenizer, "test"),
        ValueError,
        "'test'",
    ),
    # evaluation
    ("eval-batch-size", lambda m, d, f, t: evaluate(m, d, batch_size=0), ValueError, "batch_size"),
    ("eval-string", lambda m, d, f, t: evaluate(m, "def f(x):"), TypeError, "str"),
    ("eval-tensor", lambda m, d, f, t: evaluate(m, d["forget"].tokens), TypeError, "Tensor"),
    (
        "eval-dict-of-tensors",
        lambda m, d, f, t: evaluate(m, {"forget": d["forget"].tokens}),
        TypeError,
        "'forget'",
    ),
    (
        "eval-n_ctx",
        lambda m, d, f, t: evaluate(m, tds(torch.ones(1, 300, dtype=torch.long))),
        ValueError,
        "300 tokens",
    ),
    (
        "eval-vocab",
        lambda m, d, f, t: evaluate(m, tds(torch.full((1, 8), 99_999))),
        ValueError,
        "99999",
    ),
    (
        "eval-hook-layer",
        lambda m, d, f, t: evaluate(m, d, [("blocks.5.attn.hook_z", lambda a, hook: a)]),
        ValueError,
        "blocks.5.attn.hook_z",
    ),
    (
        "eval-hook-not-callable",
        lambda m, d, f, t: evaluate(m, d, [("blocks.0.attn.hook_z", 3)]),
        TypeError,
        "blocks.0.attn.hook_z",
    ),
    (
        "eval-nan",
        lambda m, d, f, t: evaluate(
            m, d, [("blocks.1.hook_resid_pre", nan_hook)], label="nan-hook"
        ),
        ValueError,
        "nan-hook.*not finite",
    ),
    ("eval-top-k", lambda m, d, f, t: evaluate(m, d, top_k=(0,)), ValueError, "top_k"),
    (
        "curve-metric",
        lambda m, d, f, t: selectivity_curve(
            m, d, lambda k: zero_ablation(m, heads=[(0, 0)]), [1], metric="top3"
        ),
        ValueError,
        "top3",
    ),
    (
        "curve-no-retain",
        lambda m, d, f, t: selectivity_curve(
            m, {"forget": d["forget"]}, lambda k: zero_ablation(m, heads=[(0, 0)]), [1]
        ),
        ValueError,
        "retain",
    ),
    (
        "curve-no-levels",
        lambda m, d, f, t: selectivity_curve(m, d, lambda k: zero_ablation(m, heads=[(0, 0)]), []),
        ValueError,
        "level",
    ),
    # metrics
    (
        "relearn-alpha",
        lambda m, d, f, t: relearn(m, f["forget"], d["forget"], alpha=5),
        ValueError,
        "alpha",
    ),
    (
        "relearn-lr",
        lambda m, d, f, t: relearn(m, f["forget"], d["forget"], lr=0.0),
        ValueError,
        "lr",
    ),
    (
        "relearn-steps",
        lambda m, d, f, t: relearn(m, f["forget"], d["forget"], max_steps=0),
        ValueError,
        "max_steps",
    ),
    (
        "relearn-rank",
        lambda m, d, f, t: relearn(m, f["forget"], d["forget"], adapter_rank=-2),
        ValueError,
        "adapter_rank",
    ),
    (
        "relearn-micro-batch",
        lambda m, d, f, t: relearn(m, f["forget"], d["forget"], micro_batch_size=0),
        ValueError,
        "micro_batch_size",
    ),
    (
        "map-components",
        lambda m, d, f, t: component_selectivity_map(m, d, "bogus"),
        ValueError,
        "bogus",
    ),
    (
        "map-metric",
        lambda m, d, f, t: component_selectivity_map(m, d, metric="top3"),
        ValueError,
        "top3",
    ),
    (
        "map-mean-no-reference",
        lambda m, d, f, t: component_selectivity_map(m, d, method="mean"),
        ValueError,
        "reference",
    ),
    (
        "map-method",
        lambda m, d, f, t: component_selectivity_map(m, d, method="bogus"),
        ValueError,
        "bogus",
    ),
    (
        "generation-temperature",
        lambda m, d, f, t: generation_behaviour(m, ["The cat"], [], temperature=0.0),
        ValueError,
        "temperature",
    ),
    (
        "generation-hook",
        lambda m, d, f, t: generation_behaviour(
            m, ["The cat"], [("blocks.7.hook_resid_pre", lambda a, hook: a)]
        ),
        ValueError,
        "blocks.7.hook_resid_pre",
    ),
    (
        "generation-prompts",
        lambda m, d, f, t: generation_behaviour(m, "The cat", []),
        ValueError,
        "prompts",
    ),
    ("js-string", lambda m, d, f, t: output_distances(m, "def f(x):"), TypeError, "str"),
    (
        "zrf-n_ctx",
        lambda m, d, f, t: zrf_score(m, tds(torch.ones(1, 300, dtype=torch.long))),
        ValueError,
        "300 tokens",
    ),
    (
        "activations-batch",
        lambda m, d, f, t: activation_distances(m, d, batch_size=0),
        ValueError,
        "batch_size",
    ),
    (
        "completeness-k",
        lambda m, d, f, t: completeness(m, d["forget"], retrained_model=m, k=0),
        ValueError,
        "k must",
    ),
    ("lens-tensor", lambda m, d, f, t: logit_lens_diff(m, d["forget"].tokens), TypeError, "Tensor"),
    (
        "fisher-vocab",
        lambda m, d, f, t: fisher_uncertainty(m, tds(torch.full((1, 8), 99_999))),
        ValueError,
        "99999",
    ),
    ("widget-string", lambda m, d, f, t: AblationWidget(m, "forget"), TypeError, "str"),
    # benchmark (nothing may be written)
    (
        "bench-method",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig(model="tiny", methods=["prune-abs", "bogus"]), output_dir=t / "o"
        ),
        ValueError,
        "bogus",
    ),
    (
        "bench-methods-string",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig.from_dict({"model": "tiny", "methods": "prune-abs, bogus"}),
            output_dir=t / "o",
        ),
        ValueError,
        r"\['bogus'\]",
    ),
    (
        "bench-seq-len-type",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig(model="tiny", seq_len="128"), output_dir=t / "o"
        ),
        ValueError,
        "seq_len.*'128'",
    ),
    (
        "bench-metric",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig(model="tiny", metric="top3"), output_dir=t / "o"
        ),
        ValueError,
        "top3",
    ),
    (
        "bench-key",
        lambda m, d, f, t: BenchmarkConfig.from_dict({"modle": "tiny"}),
        ValueError,
        "modle",
    ),
    (
        "bench-output-is-file",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig(model="tiny"), output_dir=(t / "file.txt")
        ),
        ValueError,
        "file.txt.*existing file",
    ),
    (
        "bench-topic",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig(model="tiny", options={"generation.topic": "weddingz"}),
            output_dir=t / "o",
        ),
        ValueError,
        "weddingz",
    ),
    (
        "bench-generation-tokens",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig(model="tiny", generation_tokens=0), output_dir=t / "o"
        ),
        ValueError,
        "generation_tokens",
    ),
    (
        "bench-relearn-rank",
        lambda m, d, f, t: run_benchmark(
            BenchmarkConfig(model="tiny", relearn_steps=2, options={"relearn.rank": -1}),
            output_dir=t / "o",
        ),
        ValueError,
        "relearn.rank",
    ),
]


@pytest.fixture(scope="module")
def fit_data(tiny_model, task):
    return task.tokenize(tiny_model.tokenizer, "fit", seq_len=32, max_tokens=600)


@pytest.fixture(scope="module")
def small_data(tiny_model, task):
    return task.tokenize(tiny_model.tokenizer, "eval", seq_len=32, max_tokens=400)


def test_catalogue_has_at_least_50_cases():
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tiny_model, small_data, fit_data, tmp_path, weights_guard, monkeypatch):
    _, call, exc, pattern = case
    (tmp_path / "file.txt").write_text("not a folder")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    with weights_guard(tiny_model), pytest.raises(exc, match=pattern):
        call(tiny_model, small_data, fit_data, tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a file was written"


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("methods: [prune-abs\nseq_len: 3\n", "not valid YAML"),
        ("methods: prune-abs, bogus\n", "bogus"),
        ("seq_len: many\n", "seq_len"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(tmp_path, capsys, text, pattern, monkeypatch):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["run", "--config", str(cfg), "--output", str(tmp_path / "out"), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tl-unlearn: error:"), err
    assert "Traceback" not in err[0]
    import re

    assert re.search(pattern, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


def test_methods_string_in_yaml_is_one_method():
    """Documented leniency: ``methods: prune-abs`` means one method, not letters."""
    assert BenchmarkConfig.from_dict({"methods": "prune-abs"}).methods == ["prune-abs"]


# ------------------------------------------------------------------ correctness bugs


def test_resample_draws_new_rows_on_every_call(tiny_model, small_data):
    ref = small_data["retain"]
    iv = resample_ablation(tiny_model, ref, hook_points=["blocks.0.hook_resid_pre"], n_reference=16)
    ((name, fn),) = list(iv)
    acts = torch.zeros(2, 8, tiny_model.cfg.d_model)
    rows = set()
    for _ in range(20):
        out = fn(acts, None)[:, 5, :4]  # position 5: past BOS, where sequences differ
        rows |= {tuple(r) for r in out.tolist()}
    assert len(rows) > 4  # the old code re-seeded per call: the same 2 rows every time


def test_relative_drop_of_a_zero_baseline_raises(tiny_model, small_data):
    from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation

    zero = Evaluation(
        {
            "forget": DatasetMetrics("forget", 10, 1.0, {1: 0.0}),
            "retain": DatasetMetrics("retain", 10, 1.0, {1: 0.5}),
        }
    )
    with pytest.raises(ValueError, match="'forget' is 0"):
        zero.relative_drop(zero, "top1")


def test_greedy_circuit_refuses_a_task_the_model_cannot_do(tiny_model, small_data):
    from tl_unlearn.circuits.maps import ComponentMap
    from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation

    zero = Evaluation(
        {
            "forget": DatasetMetrics("forget", 10, 1.0, {1: 0.0}),
            "retain": DatasetMetrics("retain", 10, 1.0, {1: 0.5}),
        }
    )
    with pytest.raises(ValueError, match="is 0"):
        ComponentMap([(0, 0)], zero, [zero], n_layers=2, n_heads=4)
    good = component_selectivity_map(tiny_model, small_data, [(0, 0)], progress=False)
    good.original = zero  # a map whose original model scores 0 on forget
    with pytest.raises(ValueError, match="is 0"):
        greedy_circuit(tiny_model, small_data, good)


def test_equivalent_weight_edit_of_zeroed_neurons(tiny_model, small_data):
    from tl_unlearn.metrics import equivalent_weight_edit

    iv = zero_ablation(tiny_model, neurons={1: [3, 4, 10]})
    edit = equivalent_weight_edit(tiny_model, iv)
    assert edit is not None
    w = tiny_model.blocks[1].mlp.W_out.detach()
    assert edit.per_param["blocks.1.mlp.W_out"][0] == pytest.approx(
        w[[3, 4, 10]].norm().item(), rel=1e-5
    )
    # the edited copy gives the hooked model's logits
    import copy

    edited = copy.deepcopy(tiny_model)
    with torch.no_grad():
        edited.blocks[1].mlp.W_out[[3, 4, 10]] = 0
    toks = small_data["forget"].tokens[:2]
    with iv.applied(tiny_model):
        hooked = tiny_model(toks)
    torch.testing.assert_close(hooked, edited(toks), atol=1e-5, rtol=1e-5)
    # positions-limited ablation has no weight equivalent
    assert (
        equivalent_weight_edit(
            tiny_model, zero_ablation(tiny_model, neurons={1: [3]}, positions="last")
        )
        is None
    )


def test_zrf_with_a_bridge(tiny_bridge):
    from tl_unlearn.metrics import zrf_score

    toks = torch.randint(5, 200, (2, 12))
    assert 0.0 <= zrf_score(tiny_bridge, tds(toks)) <= 1.0


# ------------------------------------------------------------------ Ctrl-C

WRAPPER = textwrap.dedent("""
    import os, signal, sys, importlib
    # Ctrl-C as in a terminal, even when this test runs with SIGINT ignored (a shell's
    # background job starts its children so, and Python then installs no handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    target = os.environ["STOP_AT"]
    module, _, attr = target.rpartition(":")
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for p in path:
        owner = getattr(owner, p)
    original = getattr(owner, name)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered here
        return original(*args, **kwargs)

    setattr(owner, name, interrupted)
    from tl_unlearn.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize(
    "stop_at",
    [
        "tl_unlearn.metrics.evaluation:evaluate_many",
        "sae_lens.training.sae_trainer:SAETrainer.fit",
        "tl_unlearn.benchmark.runner:selectivity_curve",
        "tl_unlearn.benchmark.runner:generation_behaviour",
        "tl_unlearn.benchmark.report:render_report",
    ],
)
def test_ctrl_c_prints_one_line_exits_130_and_writes_no_results(tmp_path, stop_at):
    work = tmp_path / "cwd"
    work.mkdir()
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    out = work / "out"
    env = {**os.environ, "STOP_AT": stop_at, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "run",
            "--model",
            "tiny",
            "--quiet",
            "--output",
            str(out),
            "--seq-len",
            "32",
            "--fit-tokens",
            "600",
            "--eval-tokens",
            "300",
            "--option",
            "sae.training_tokens=2000",
            "--option",
            "sae.d_sae=64",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 130, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines[-1] == (
        f"tl-unlearn: interrupted; no results were written. Finished units are kept in {out}: "
        "add --resume to continue."
    ), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # only what --resume reads back: the job and finished units, each a whole JSON file
    files = [f for f in work.rglob("*") if f.is_file()]
    assert all(f == out / "job.json" or f.parent == out / "units" for f in files), files
    for f in files:
        json.loads(f.read_text())
