"""The result protocol: every result type has label, seconds, to_dict/from_dict, save/load and
figure(kind=...), and round-trips through a file (one parametrised test over all types)."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

import tl_unlearn.benchmark.runner  # noqa: F401  (registers BenchmarkResult)
from tl_unlearn import component_selectivity_map, evaluate, selectivity_curve
from tl_unlearn.core.results import Result, load_result, result_types
from tl_unlearn.interventions import pruning_scores, zero_ablation
from tl_unlearn.metrics import (
    activation_distances,
    degree_of_removal,
    fisher_uncertainty,
    logit_lens_diff,
    membership_inference,
    output_distances,
    relearn,
    weight_distance,
)
from tl_unlearn.metrics.generation import generation_behaviour
from tl_unlearn.metrics.scorecard import Scorecard
from tl_unlearn.metrics.selectivity import RandomBaseline


@pytest.fixture(scope="module")
def results(tiny_model, tiny_data, task):
    """One real instance of every result type, computed on the tiny model."""
    from tl_unlearn.benchmark.runner import BenchmarkConfig, run_benchmark
    from tl_unlearn.benchmark.tier import run_ground_truth_tier
    from tl_unlearn.circuits.ground_truth import verify_planted
    from tl_unlearn.metrics.coverage import interval_coverage
    from tl_unlearn.metrics.depth import unlearning_depth
    from tl_unlearn.models.planted import load_planted, planted_data

    m, data = tiny_model, {k: v.head(4) for k, v in tiny_data.items()}
    head = zero_ablation(m, heads=[(1, 0)])
    fit = task.tokenize(m.tokenizer, "fit", seq_len=64, max_tokens=1500)
    scores = pruning_scores(m, fit["forget"], fit["retain"])
    curve = selectivity_curve(m, data, scores.intervention, [0.05, 0.2], progress=False, n_boot=50)
    level = curve.held_out()["level"] or 0.05
    base = RandomBaseline(
        "random neurons",
        level,
        [1],
        [evaluate(m, data, scores.intervention(level), progress=False)],
    )
    from tl_unlearn import activation_patching, edge_attribution, faithfulness_curves
    from tl_unlearn.data.tasks import ioi_task
    from tl_unlearn.interventions import counterfactual_pair

    clean, corrupted = counterfactual_pair(ioi_task(m.tokenizer, n=40), m.tokenizer, max_examples=4)
    eap = edge_attribution(m, clean, corrupted)
    run = run_benchmark(
        BenchmarkConfig(
            model="tiny",
            seq_len=64,
            fit_tokens=1500,
            eval_tokens=800,
            methods=["prune-abs"],
            mia_texts=0,
            generation_prompts=0,
            baseline_seeds=1,
            relearn_steps=0,
        ),  # a run without: the figure refuses
        model=m,
        progress=False,
    )
    return [
        evaluate(m, data, head, progress=False, label="L1H0"),
        curve,
        base,
        component_selectivity_map(m, data, components=[(0, 0), (1, 0)], progress=False),
        logit_lens_diff(m, data, head, label="L1H0"),
        activation_distances(m, data, None, head, label="original vs L1H0"),
        output_distances(m, data["forget"], head),
        membership_inference(
            m,
            task.forget.fit[:4],
            task.forget.eval[:4],
            head,
            max_tokens=32,
            n_boot=50,
            label="L1H0",
        ),
        fisher_uncertainty(m, data["forget"], head, max_samples=2),
        weight_distance(m, m),
        relearn(
            m,
            fit["forget"],
            data["forget"],
            head,
            max_steps=2,
            eval_every=1,
            batch_size=2,
            label="L1H0",
        ),
        degree_of_removal(
            m,
            fit["forget"],
            data["forget"],
            head,
            baseline=zero_ablation(m, heads=[(0, 1)]),
            level=1,
            lrs=[1e-3],
            max_steps=2,
            batch_size=2,
            retrained_model=m,
            label="L1H0",
        ),
        Scorecard.from_curves([curve]),
        generation_behaviour(
            m,
            ["The"],
            lambda c: head,
            [1.0],
            max_new_tokens=4,
            n_samples=2,
            topic="code",
            progress=False,
            n_boot=50,
            label="heads",
        ),
        run,
        activation_patching(m, clean, corrupted),
        eap.top(12, label="EAP top 12"),
        faithfulness_curves(
            m, clean, corrupted, {"EAP": eap}, fractions=[0.1, 1.0], n_random=1, n_boot=50
        ),
        interval_coverage(curve, n_units=2, n_sims=5, n_boot=50),
        verify_planted("planted-induction", n=16),
        unlearning_depth(
            load_planted("planted-induction"),
            planted_data("planted-induction", 8, seed=0)["forget"],
            [],
            load_planted("planted-induction", twin=True),
            n_boot=20,
        ),
        run_ground_truth_tier(
            models=["planted-lookup"],
            methods=["head-mean", "prune-random"],
            fits=2,
            n_fit=16,
            n_eval=32,
            baseline_seeds=1,
            n_boot=20,
            progress=False,
        ),  # fmt: skip
    ]


def _json(d):
    return json.dumps(d, sort_keys=True, default=str)


def test_every_result_type_round_trips_through_save_and_load(results, tmp_path):
    covered = {type(r).__name__ for r in results}
    assert covered == set(result_types()), "a result type is missing from this test"
    for r in results:
        name = type(r).__name__
        assert isinstance(r, Result) and isinstance(r.label, str) and r.label, name
        assert isinstance(r.seconds, float) and r.seconds >= 0, name
        path = r.save(tmp_path / f"{name}.json")
        again = type(r).load(path)
        assert type(again) is type(r)
        assert _json(again.to_dict()) == _json(r.to_dict()), name
        assert _json(type(r).from_dict(r.to_dict()).to_dict()) == _json(r.to_dict()), name
        assert type(load_result(path)) is type(r)
        for kind in type(r).FIGURE_KINDS or ("topic_frequency",):
            if name == "BenchmarkResult" and kind == "relearn":
                with pytest.raises(ValueError, match="relearn_steps"):
                    r.figure(kind)
                continue
            assert isinstance(r.figure(kind=kind), go.Figure), (name, kind)
        if type(r).FIGURE_KINDS:
            with pytest.raises(ValueError, match="kind must be one of"):
                r.figure(kind="no-such-kind")


def test_results_measure_their_time_and_keep_their_numbers(results):
    by_type = {type(r).__name__: r for r in results}
    # computed results report a positive wall time (hand-built ones may say 0.0)
    for name in (
        "Evaluation",
        "SelectivityCurve",
        "ComponentMap",
        "LogitLensDiff",
        "ActivationDistances",
        "OutputDistances",
        "MembershipInference",
        "FisherUncertainty",
        "RelearnResult",
        "DegreeOfRemoval",
        "GenerationBehaviour",
        "BenchmarkResult",
    ):
        assert by_type[name].seconds > 0, name
    run = by_type["BenchmarkResult"]
    again = type(run).from_dict(run.to_dict())
    assert again.original.to_dict() == run.original.to_dict()
    assert again.curves[0].max_difference == run.curves[0].max_difference
    assert again.logit_lens == run.logit_lens and again.config == run.config
    assert again.random_baselines["prune-abs"].seeds == [1]
    assert run.random_baselines["prune-abs"].seconds > 0  # computed by the benchmark


def test_load_refuses_another_type(results, tmp_path):
    ev, curve = results[0], results[1]
    path = ev.save(tmp_path / "ev.json")
    with pytest.raises(TypeError, match="holds a Evaluation, not a SelectivityCurve"):
        type(curve).load(path)
    (tmp_path / "bad.json").write_text('{"type": "Nope"}')
    with pytest.raises(ValueError, match="does not name a tl_unlearn result type"):
        load_result(tmp_path / "bad.json")
