import json
import math

import pytest
from settings import SMALL

from tl_unlearn.benchmark import config as bm
from tl_unlearn.benchmark.methods import registry as methods
from tl_unlearn.benchmark.report import report_figures
from tl_unlearn.benchmark.runner import BenchmarkConfig, BenchmarkResult, run_benchmark
from tl_unlearn.cli import main


def test_run_writes_report_and_json_that_load_back(run_dir):
    out, result = run_dir
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json"]
    again = BenchmarkResult.load(out)
    assert [c.name for c in again.curves] == list(bm.DEFAULT_METHODS)
    assert again.scorecard.ranked().index.tolist() == result.scorecard.ranked().index.tolist()
    for c, d in zip(result.curves, again.curves):
        assert c.max_difference == pytest.approx(d.max_difference)
    data = json.loads((out / "results.json").read_text())
    assert {"torch", "transformer_lens", "sae_lens"} <= set(data["environment"])
    assert data["timings"]["total"] > 0 and "fit:head-mean" in data["timings"]
    html = (out / "report.html").read_text()
    assert html.count('class="plotly-graph-div"') == len(report_figures(result))
    # generation behaviour: actadd and the top-ranked ablation method, loaded back unchanged
    top = [m for m in result.scorecard.ranked().index if m != "actadd"][0]
    assert sorted(again.generation) == sorted({top, "actadd"})
    for name, gen in result.generation.items():
        assert again.generation[name].to_dataframe().equals(gen.to_dataframe())
        assert [r.level for r in gen.runs] == result.curve(name).levels
        assert "forget_likeness" in gen.metrics and "topic_frequency" in gen.metrics
        assert "Generated text, " + name in html
    assert "generation" in data["timings"]
    assert "Ranked scorecard" in html and "Settings" in html and "Environment" in html


def test_scorecard_matches_curves(run_dir):
    _, result = run_dir
    df = result.scorecard.ranked()
    for c in result.curves:
        assert df.loc[c.name, "max_difference"] == pytest.approx(c.max_difference)
        held = c.held_out()["difference"]
        assert df.loc[c.name, "held_out_difference_low"] == pytest.approx(held.low)
    assert result.scorecard.rank_by == "held_out_difference_low"
    assert df["held_out_difference_low"].is_monotonic_decreasing


def test_every_method_is_compared_with_its_random_baseline(run_dir):
    """Each default method has a random counterpart of the same kind, 3 seeds at its
    validated level on the held-out halves; the scorecard's comparison is recomputed from the
    saved evaluations; the membership AUC carries an interval."""
    from tl_unlearn.metrics.selectivity import RandomBaseline

    out, result = run_dir
    df = result.scorecard.ranked()
    saved = json.loads((out / "results.json").read_text())["random_baselines"]
    assert sorted(saved) == sorted(bm.DEFAULT_METHODS)
    for c in result.curves:
        base = RandomBaseline.from_dict(saved[c.name])
        assert base.level == c.held_out()["level"] and base.seeds == [1, 2, 3]
        if base.level != 0:
            assert len(base.evaluations) == 3
            n_held = c.original["forget"].n_units - c.original["forget"].n_units // 2
            assert base.evaluations[0]["forget"].n_units == n_held
        vs = c.versus(base)
        assert df.loc[c.name, "vs_baseline"] == pytest.approx(vs.value)
        assert df.loc[c.name, "beats_baseline"] == (vs.low > 0)
        assert df.loc[c.name, "baseline"].endswith("(3 seeds)")
        row = df.loc[c.name]
        if row["validated_level"] > 0:
            assert row["mia_auc_loss_low"] <= row["mia_auc_loss"] <= row["mia_auc_loss_high"]


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(methods=["prune-abs", "bogus"]), "Unknown method"),
        (dict(forget="no_such_corpus"), "neither a builtin corpus"),
        (dict(options={"sae.layr": 1}), "Unknown option"),
        (dict(options={"sae.layer": 9}), "Layer 9 is out of range"),
        (dict(options={"actadd.layer": -1}), "Layer -1 is out of range"),
        (dict(seq_len=4096), "n_ctx=256"),
        (dict(metric="top3"), "Unknown metric"),
        (dict(model="definitely-not-a-model"), "definitely-not-a-model"),
        (dict(device="gpu0"), "device='gpu0' is not a torch device"),
        (dict(device="cuda:99"), "cuda:99"),  # no CUDA here, or not 100 GPUs there
    ],
)
def test_bad_configuration_stops_before_heavy_work(tmp_path, change, match, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fitted = []
    monkeypatch.setattr(methods, "fit_method", lambda *a, **k: fitted.append(a))
    with pytest.raises(ValueError, match=match):
        run_benchmark(
            BenchmarkConfig(**{**SMALL, **change}), output_dir=tmp_path / "out", progress=False
        )
    assert not fitted
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"prune-abs.levels": [0.01, 1.5]},
            r"prune-abs.levels: each level must be a number in \[0, 1\], got 1.5",
        ),
        (
            {"head-mean.levels": [-0.1]},
            r"head-mean.levels: each level must be a number in \[0, 1\]",
        ),
        ({"prune-abs.levels": []}, "prune-abs.levels must be a non-empty list"),
        ({"actadd.levels": [float("nan")]}, "actadd.levels: each level must be finite"),
        ({"prune-abs.levelz": [0.1]}, "did you mean 'prune-abs.levels'"),
    ],
)
def test_a_configuration_error_is_refused_before_the_model_loads(
    tmp_path, options, match, monkeypatch
):
    """Every check of a run's configuration happens before the model loads, and a refused
    configuration leaves no run folder (resume could never finish one)."""
    import tl_unlearn.models.loading as loading

    loaded = []
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loaded.append(a))
    with pytest.raises(ValueError, match=match):
        run_benchmark(
            BenchmarkConfig(**{**SMALL, "options": options}),
            output_dir=tmp_path / "out",
            progress=False,
        )
    assert not loaded
    assert not (tmp_path / "out").exists()


@pytest.mark.smollm2
def test_selective_pruning_beats_random_on_smollm2(smollm2):
    cfg = BenchmarkConfig(
        methods=["prune-abs", "prune-random"],
        seq_len=128,
        fit_tokens=2000,
        eval_tokens=1000,
        mia_texts=0,
        extras=False,
        relearn_steps=0,
    )
    result = run_benchmark(cfg, model=smollm2, output_dir=None, progress=False)
    assert result.curve("prune-abs").max_difference > result.curve("prune-random").max_difference


def test_benchmark_on_a_prompt_answer_task_with_a_user_metric(tmp_path, tiny_model):
    """``--forget ioi`` with the logit difference as the forget metric, through the CLI and
    through ``run_benchmark(metrics=...)`` with the notebook's own metric: same numbers."""
    code = main(
        [
            "run",
            "--model",
            "tiny",
            "--forget",
            "ioi",
            "--retain",
            "wikipedia",
            "--methods",
            "prune-abs,head-mean",
            "--metric",
            "forget=logit_diff,retain=top1",
            "--seq-len",
            "64",
            "--fit-tokens",
            "2000",
            "--eval-tokens",
            "1500",
            "--output",
            str(tmp_path / "cli"),
            "--quiet",
        ]
    )
    assert code == 0
    cli = BenchmarkResult.load(tmp_path / "cli")
    assert cli.config.metric == {"forget": "logit_diff", "retain": "top1"}
    assert cli.curves[0].original["forget"].answer["logit_diff"] != 0

    def my_ld(logits, batch):
        final = batch.answer_logits(logits)
        return (
            final.gather(1, batch.answers[:, None]) - final.gather(1, batch.counterfactual[:, None])
        )[:, 0]

    from tl_unlearn.metrics.names import OnDatasets

    cfg = BenchmarkConfig(
        model="tiny",
        forget="ioi",
        methods=["prune-abs", "head-mean"],
        metric={"forget": "my_ld", "retain": "top1"},
        seq_len=64,
        fit_tokens=2000,
        eval_tokens=1500,
    )
    result = run_benchmark(
        cfg,
        model=tiny_model,
        output_dir=tmp_path / "py",
        progress=False,
        metrics={"my_ld": OnDatasets(my_ld, ("forget",))},
    )
    for a, b in zip(cli.curves, result.curves):
        assert a.name == b.name
        assert a.forget_drop == pytest.approx(b.forget_drop, abs=1e-5)
        assert a.retain_drop == pytest.approx(b.retain_drop, abs=1e-9)


def test_degree_of_removal_columns_and_relearn_figure(tmp_path, tiny_model):
    """--relearn-steps: each method at its validated level and one random baseline get a
    relearning attack and ZRF; the columns, the saved curves and the report figure agree."""
    cfg = BenchmarkConfig(
        **{
            **SMALL,
            "methods": ["prune-abs"],
            "mia_texts": 0,
            "extras": False,
            "generation_prompts": 0,
            "relearn_steps": 8,
            "options": {"prune-abs.levels": [0.05, 0.2], "relearn.lrs": [3e-3, 1e-2]},
        }
    )
    result = run_benchmark(cfg, model=tiny_model, output_dir=tmp_path, progress=False)
    row = result.scorecard.ranked().loc["prune-abs"]
    removal = result.degree_of_removal
    if row["validated_level"] == 0:
        assert removal == {}
        return
    entry = removal["prune-abs"]
    assert entry.level == row["validated_level"] and entry.max_steps == 8
    for attacked, prefix in ((entry.method, ""), (entry.baseline, "baseline_")):
        best = attacked.best
        assert [r.lr for r in attacked.runs] == [3e-3, 1e-2]  # the grid asked for
        assert {r.adapter_rank for r in attacked.runs} == {8}  # the default attack
        assert best.steps == min((r.steps for r in attacked.runs if r.reached), default=None)
        assert row[f"{prefix}relearn_steps"] == best.steps or (
            best.steps is None and row[f"{prefix}relearn_steps"] != row[f"{prefix}relearn_steps"]
        )
        assert 0.0 <= row[f"{prefix}zrf"] <= 1.0
        start = best.curve[0][1]
        assert best.target == pytest.approx(start + 0.5 * (best.original_top1 - start))
        # the committed twin retrained without python_code relearns to the same target
        mr = attacked.retrained
        assert mr.target == pytest.approx(best.target) and mr.lr == best.lr
        assert 0.0 <= row[f"{prefix}completeness"] <= 1.0
        if best.steps and mr.steps:
            assert row[f"{prefix}ain"] == pytest.approx(best.steps / mr.steps)
    assert "random neurons" in entry.baseline.label
    html = (tmp_path / "report.html").read_text()
    assert "Degree of removal: relearning" in html
    again = BenchmarkResult.load(tmp_path)
    from tl_unlearn import load_result

    assert type(load_result(tmp_path / "results.json")) is BenchmarkResult
    assert again.degree_of_removal["prune-abs"].to_dict() == entry.to_dict()
    assert len(result.figure("relearn").data) == 2
    # a results.json written before DegreeOfRemoval (plain dicts) still loads, typed
    old = result.to_dict()
    old["degree_of_removal"] = {
        "prune-abs": {
            "level": entry.level,
            "row": {"relearn_budget": 8},
            **{
                role: {
                    "label": a.label,
                    "best": a.best.to_dict(),
                    "all": [r.to_dict() for r in a.runs],
                    "zrf": a.zrf,
                }
                for role, a in (("method", entry.method), ("baseline", entry.baseline))
            },
        }
    }
    legacy = BenchmarkResult.from_dict(old).degree_of_removal["prune-abs"]
    assert legacy.label == "prune-abs" and legacy.max_steps == 8
    assert legacy.method.best.to_dict() == entry.method.best.to_dict()
    assert len(legacy.baseline.runs) == len(entry.baseline.runs) == 2


def test_default_run_has_the_degree_of_removal(run_dir):
    """The relearning attack and ZRF are on by default (4 steps, adapters, lr 1e-2), for every
    method with something removed at its validated level, and their columns are ranked."""
    out, result = run_dir
    assert result.config.relearn_steps == 4 == BenchmarkConfig().relearn_steps
    ranked = result.scorecard.ranked()
    attacked = {n for n in ranked.index if 0 < ranked.loc[n, "validated_level"] < math.inf}
    assert attacked and set(result.degree_of_removal) == attacked
    for name, entry in result.degree_of_removal.items():
        for side in (entry.method, entry.baseline):
            assert [(r.lr, r.adapter_rank, r.max_steps) for r in side.runs] == [(1e-2, 8, 4)]
        assert ranked.loc[name, "zrf"] == pytest.approx(entry.method.zrf)
        assert ranked.loc[name, "baseline_zrf"] == pytest.approx(entry.baseline.zrf)
    assert "Degree of removal: relearning" in (out / "report.html").read_text()


def test_the_tiny_model_run_has_an_unlearning_depth_column(run_dir):
    """The tiny model has a retrained twin: each method's UDS at its validated level is a
    scorecard column with its interval, and the report shows it."""
    out, result = run_dir
    df = result.scorecard.ranked()
    assert "uds" in df and df["uds"].notna().any()
    for name in df["uds"].dropna().index:
        assert (
            0.0 <= df.loc[name, "uds_low"] <= df.loc[name, "uds"] <= df.loc[name, "uds_high"] <= 1
        )
        assert result.curve(name).held_out()["level"] > 0
    assert "unlearning depth" in (out / "report.html").read_text()


def test_the_large_preset_is_large_and_valid():
    """``--config large``: 25x the default's tokens, every text method, 5 baselines; the
    default configuration is not changed by it."""
    from tl_unlearn.benchmark.config import DEFAULT_METHODS

    large, default = BenchmarkConfig.preset("large"), BenchmarkConfig()
    large.validate()
    assert large.eval_tokens >= 50_000 and large.fit_tokens >= 50_000
    assert large.eval_tokens == 25 * default.eval_tokens
    assert set(DEFAULT_METHODS) < set(large.methods) and large.baseline_seeds == 5
    assert large.component_map == "heads" and default.component_map == ""
    assert default.eval_tokens == 2000 and default.baseline_seeds == 3
    with pytest.raises(ValueError, match="huge"):
        BenchmarkConfig.preset("huge")
