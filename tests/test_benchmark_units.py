"""The benchmark cut into units: the same numbers as the sweeps made by hand, in one piece or
in shards, in-process or on Ray, interrupted and resumed, with an actor killed."""

import json
import math

import numpy as np
import pytest
import torch

from tl_unlearn import load_tiny_model, make_task, selectivity_curve
from tl_unlearn.benchmark.runner import BenchmarkConfig, run_benchmark
from tl_unlearn.benchmark.units import BenchmarkState, SweepUnit, prepare_data
from tl_unlearn.execution.executors import Execution
from tl_unlearn.metrics import evaluate_many

CFG = dict(
    model="tiny",
    methods=["prune-abs", "head-mean", "sae-features"],
    fit_tokens=1200,
    eval_tokens=1000,
    seq_len=32,
    batch_size=8,
    baseline_seeds=2,
    relearn_steps=2,
    extras=False,
    generation_prompts=0,
    options={"sae.training_tokens": 2000, "sae.d_sae": 64},
)
TIMES = ("fit_seconds", "eval_seconds")


def _config(**change):
    return BenchmarkConfig(**{**CFG, **change})


def _numbers(result):
    """Every number of the scorecard but the timings, and the curves' intervals."""
    card = result.scorecard.ranked().drop(columns=list(TIMES))
    intervals = {c.name: c.intervals() for c in result.curves}
    return card, intervals


def _same(a, b, tol=0.0):
    (ca, ia), (cb, ib) = _numbers(a), _numbers(b)
    assert list(ca.index) == list(cb.index) and list(ca.columns) == list(cb.columns)
    num = ca.select_dtypes("number")
    diff = (num - cb.select_dtypes("number")).abs().to_numpy()
    assert np.all((diff <= tol) | (np.isnan(num.to_numpy()) & np.isnan(diff)))
    for name in ia:
        for key in ia[name]:
            assert ia[name][key].low == pytest.approx(ib[name][key].low, abs=tol)
            assert ia[name][key].high == pytest.approx(ib[name][key].high, abs=tol)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As many threads as each Ray actor has: the same sums, bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return run_benchmark(_config(), output_dir=tmp_path_factory.mktemp("whole"), progress=False)


def test_units_equal_the_sweeps_made_by_hand(whole):
    """Independent reference: each method fitted here, its curve from selectivity_curve on
    all the data, its baselines from evaluate_many on the held-out halves."""
    cfg = _config()
    model = load_tiny_model()
    _, ev, ctx = prepare_data(cfg, make_task(cfg.forget, cfg.retain), model)
    from tl_unlearn.benchmark.methods.registry import fit_method

    for curve in whole.curves:
        fm = fit_method(curve.name, ctx)
        ref = selectivity_curve(model, ev, fm.family, fm.levels, name=curve.name, progress=False)
        assert np.array_equal(curve.forget_drop, ref.forget_drop)
        assert np.array_equal(curve.retain_drop, ref.retain_drop)
        assert curve.held_out() == ref.held_out()
        level = ref.held_out()["level"]
        held = {k: d.rows(slice(len(d) // 2, None)) for k, d in ev.items()}
        base = evaluate_many(model, held, [fm.baseline(level, s) for s in (1, 2)], progress=False)
        got = whole.random_baselines[curve.name]
        assert got.level == level
        for a, b in zip(got.evaluations, base):
            assert a.metric("forget", "top1") == b.metric("forget", "top1")
            assert a["retain"].units["top1"] == b["retain"].units["top1"]


def test_shards_merge_to_the_run_in_one_piece(whole, tmp_path):
    sharded = run_benchmark(_config(), output_dir=tmp_path, progress=False, shards=3)
    _same(sharded, whole, tol=1e-12)
    # skip-common accuracies count the whole dataset's common tokens in every shard
    assert sharded.original.metric("forget", "top1_skip") == pytest.approx(
        whole.original.metric("forget", "top1_skip"), abs=1e-12
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json"]


def test_an_interrupted_run_resumes_to_the_same_report(whole, tmp_path):
    def stop(n, executor):
        if n == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(_config(), output_dir=tmp_path, progress=False, shards=2, on_unit=stop)
    assert len(list((tmp_path / "units").glob("*.json"))) == 4
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ValueError, match="another job"):
        run_benchmark(_config(seed=1), output_dir=tmp_path, progress=False, resume=True)
    computed = []
    again = run_benchmark(
        _config(),
        output_dir=tmp_path,
        progress=False,
        resume=True,
        on_unit=lambda n, ex: computed.append(n),
    )
    # 2 original + 2 curve units per method, then one relearning unit and 2 baseline units
    # per method that removes something at its validated level
    baselines = sum(1 for b in whole.random_baselines.values() if b.evaluations)
    total = 2 + 2 * len(CFG["methods"]) + len(whole.degree_of_removal) + 2 * baselines
    assert len(computed) == total - 4
    _same(again, whole, tol=1e-12)


def test_the_runs_component_map_equals_the_map_made_by_hand(tmp_path):
    """Independent reference: component_selectivity_map on all the evaluation data."""
    from tl_unlearn import component_selectivity_map
    from tl_unlearn.benchmark.result import BenchmarkResult

    cfg = _config(methods=["actadd"], component_map="heads", relearn_steps=0, baseline_seeds=0)
    result = run_benchmark(cfg, output_dir=tmp_path, progress=False, shards=2)
    assert result.timings["component_map"] > 0
    model = load_tiny_model()
    _, ev, _ = prepare_data(cfg, make_task(cfg.forget, cfg.retain), model)
    ref = component_selectivity_map(model, ev, "heads", method="zero", progress=False)
    got = BenchmarkResult.load(tmp_path).component_map
    assert got.components == ref.components == [(l, h) for l in range(2) for h in range(4)]
    assert np.allclose(got.forget_drop, ref.forget_drop, atol=1e-12)
    assert np.allclose(got.retain_drop, ref.retain_drop, atol=1e-12)
    assert "Component map" in (tmp_path / "report.html").read_text()


def test_bad_execution_input_is_refused_before_any_work(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="Unknown executor"):
        run_benchmark(_config(), executor="dask", output_dir=None)
    with pytest.raises(ValueError, match="do not travel"):
        run_benchmark(_config(), executor="ray", metrics={"m": lambda lg, b: lg.sum()})
    with pytest.raises(ValueError, match="live model"):
        run_benchmark(_config(), executor="ray", model=tiny_model, output_dir=None)
    with pytest.raises(ValueError, match="output_dir"):
        run_benchmark(_config(), resume=True, output_dir=None)
    with pytest.raises(ValueError, match="shards"):
        run_benchmark(_config(), shards=0, output_dir=None)
    with pytest.raises(ValueError, match="Nothing to resume"):
        run_benchmark(_config(), resume=True, output_dir=tmp_path / "none", progress=False)
    with pytest.raises(ValueError, match="actors"):
        Execution("ray", actors=0)
    assert not (tmp_path / "none" / "results.json").exists()
    assert not tiny_model.hook_dict["blocks.0.hook_resid_pre"].fwd_hooks


def test_a_different_fit_is_caught_by_its_probe(tiny_model):
    """A worker whose fit differs (here: fitted on other data) stops the run."""
    cfg = _config()
    task = make_task(cfg.forget, cfg.retain)
    fit, ev, ctx = prepare_data(cfg, task, tiny_model)
    state = BenchmarkState(cfg, tiny_model, ev, fit=fit, ctx=ctx)
    same = BenchmarkState(cfg, tiny_model, ev, fit=fit, ctx=ctx)
    state.check_probe("prune-abs", same.probe_of("prune-abs"))  # equal fits pass
    _, _, other_ctx = prepare_data(_config(seed=3), task, tiny_model)
    other = BenchmarkState(cfg, tiny_model, ev, ctx=other_ctx)
    with pytest.raises(RuntimeError, match="differs from the driver's"):
        state.check_probe("prune-abs", other.probe_of("prune-abs"))


def test_units_are_json():
    u = SweepUnit("baseline", "prune-abs", 2, 0.05, True)
    assert SweepUnit.from_dict(json.loads(json.dumps(u.to_dict()))) == u
    with pytest.raises(ValueError, match="unit kind"):
        SweepUnit("sweep")


def test_ray_run_equals_the_inprocess_run(local_cluster, whole, tmp_path):
    on_ray = run_benchmark(_config(), output_dir=tmp_path, progress=False, executor="ray")
    _same(on_ray, whole, tol=1e-6)
    assert math.isfinite(on_ray.timings["sweeps_wall"])


def test_a_killed_actor_changes_nothing(local_cluster, whole):
    killed = []

    def kill(n, executor):
        if n == 3:
            local_cluster.kill(executor.actors[0])
            killed.append(executor)

    result = run_benchmark(_config(), output_dir=None, progress=False, executor="ray", on_unit=kill)
    assert killed and killed[0].retries >= 1
    _same(result, whole, tol=1e-6)
