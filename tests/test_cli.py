"""The command line: config files and flags, the smoke check, the option list, and clear
errors (exit status 2, one line) for bad input."""

import json

import pytest

from tl_unlearn.benchmark.runner import BenchmarkResult
from tl_unlearn.cli import main


def test_cli_with_yaml_config_and_flags(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "model: tiny\nseq_len: 64\nfit_tokens: 2000\neval_tokens: 1000\n"
        "mia_texts: 0\nextras: false\nmethods: [prune-abs]\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--config",
            str(cfg),
            "--methods",
            "prune-abs,prune-random",
            "--option",
            "prune-abs.levels=[0.01,0.05]",
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "prune-abs" in printed and "prune-random" in printed and "report:" in printed
    result = BenchmarkResult.load(out)
    assert result.config.methods == ["prune-abs", "prune-random"]
    assert result.curve("prune-abs").levels == [0.01, 0.05]


def test_cli_bad_method_exits_2_with_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                "--model",
                "tiny",
                "--methods",
                "prune-abs,nope",
                "--output",
                str(tmp_path / "o"),
            ]
        )
    assert exc.value.code == 2
    assert "Unknown method(s) ['nope']" in capsys.readouterr().err


def test_cli_smoke_prints_the_evaluation_as_json(capsys, tiny_model, task):
    """``smoke --json`` prints the original model's evaluation; the numbers are those of
    evaluate() on the same data."""
    from tl_unlearn import Evaluation, evaluate

    assert main(["smoke", "--model", "tiny", "--tokens", "600", "--seq-len", "64", "--json"]) == 0
    printed = capsys.readouterr().out
    ev = Evaluation.from_dict(json.loads(printed.strip().splitlines()[-1]))
    data = task.tokenize(
        tiny_model.tokenizer, "eval", seq_len=64, max_tokens=600, n_ctx=tiny_model.cfg.n_ctx
    )
    ref = evaluate(tiny_model, data, progress=False)
    for name in ("forget", "retain"):
        assert ev[name].loss == pytest.approx(ref[name].loss, rel=1e-6)
        assert ev[name].n_predictions == ref[name].n_predictions
    assert "perplexity" in printed


def test_cli_options_lists_every_method_option(capsys):
    from tl_unlearn.benchmark.config import RunOptions
    from tl_unlearn.benchmark.methods.registry import METHODS, option_keys

    assert main(["options"]) == 0
    printed = capsys.readouterr().out
    for key in option_keys(RunOptions):
        assert key in printed
    for name in METHODS:
        assert name in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--option", "sae.layer"], "--option must look like key=value, got 'sae.layer'"),
        (["--option", "sae.layer=x3"], "Option sae.layer must be an integer, got 'x3'"),
        (["--option", "actadd.levels=[1,"], "--option actadd.levels=[1,: not valid JSON"),
        (["--config", "missing.yaml"], "missing.yaml' does not exist"),
        (["--resume"], "Nothing to resume in"),
        (["--shards", "0"], "shards must be a positive integer, got 0"),
        (["--component-map", "heads", "--actors", "0", "--ray"], "actors must be a positive"),
    ],
)
def test_cli_bad_input_exits_2_naming_it(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "tiny", *argv, "--output", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_device_flag_reaches_the_config(tmp_path, capsys):
    """``--device`` is a setting of the run: a bad one is named before any work."""
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "tiny", "--device", "gpu0", "--output", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "device='gpu0'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
