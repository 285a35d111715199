"""Bootstrap intervals over sequences: coverage on synthetic data with a known truth, pairing,
agreement of the per-sequence statistics with the reported numbers, and round trips."""

import numpy as np
import pytest
from scipy import stats

from tl_unlearn import load_tiny_model, make_task
from tl_unlearn.interventions import zero_ablation
from tl_unlearn.metrics import SelectivityCurve, evaluate, selectivity_curve
from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation, unit_indices
from tl_unlearn.metrics.intervals import bootstrap_indices


def _clustered(rng, n_seq, p, factor=1.0):
    """Sequences of 20-60 positions whose own hit rate varies around ``p`` (correlated
    tokens, as in text); the same sequences with every rate scaled by ``factor``."""
    n = rng.integers(20, 61, n_seq).astype(float)
    rates = rng.beta(6 * p, 6 * (1 - p), n_seq)
    hits = rng.binomial(n.astype(int), rates).astype(float)
    hits_after = rng.binomial(n.astype(int), rates * factor).astype(float)
    return n, hits, hits_after


def _evaluation(name, n, hits):
    units = {"n": n.tolist(), "loss": n.tolist(), "top1": hits.tolist()}
    m = DatasetMetrics(name, int(n.sum()), 1.0, {1: float(hits.sum() / n.sum())}, units=units)
    return Evaluation({name: m})


def test_interval_covers_the_truth_at_its_nominal_rate():
    """Accuracy (a ratio of sums) and a paired relative drop: the 95% intervals cover the
    true values in 90-99% of 200 seeded repeats."""
    p, factor = 0.6, 0.7
    covered_acc = covered_drop = 0
    repeats = 200
    for r in range(repeats):
        rng = np.random.default_rng(r)
        n, hits, after = _clustered(rng, 40, p, factor)
        orig, new = _evaluation("forget", n, hits), _evaluation("forget", n, after)
        iv = orig.metric_interval("forget", "top1", n_boot=500, seed=r)
        covered_acc += iv.low <= p <= iv.high
        idx = unit_indices([orig, new], "forget", n_boot=500, seed=r)
        reps = 1 - new["forget"].estimate("top1", idx) / orig["forget"].estimate("top1", idx)
        lo, hi = np.percentile(reps, [2.5, 97.5])
        covered_drop += lo <= 1 - factor <= hi
    assert 0.90 <= covered_acc / repeats <= 0.99, covered_acc
    assert 0.90 <= covered_drop / repeats <= 0.99, covered_drop


def test_a_token_level_interval_would_undercover_clustered_data():
    """The reason intervals resample sequences: a binomial interval over tokens is too narrow
    for correlated tokens (scipy's exact binomial interval, same data)."""
    covered = 0
    for r in range(200):
        rng = np.random.default_rng(r)
        n, hits, _ = _clustered(rng, 40, 0.6)
        ci = stats.binomtest(int(hits.sum()), int(n.sum())).proportion_ci(0.95)
        covered += ci.low <= 0.6 <= ci.high
    assert covered / 200 < 0.85


def test_paired_drop_interval_is_narrower_than_unpaired():
    rng = np.random.default_rng(0)
    n, hits, after = _clustered(rng, 60, 0.6, 0.7)
    orig, new = _evaluation("forget", n, hits), _evaluation("forget", n, after)
    idx = unit_indices([orig, new], "forget", n_boot=2000, seed=0)
    paired = 1 - new["forget"].estimate("top1", idx) / orig["forget"].estimate("top1", idx)
    other = bootstrap_indices(len(n), n_boot=2000, seed=99)[0]
    unpaired = 1 - new["forget"].estimate("top1", other) / orig["forget"].estimate("top1", idx)
    assert np.std(paired) < 0.7 * np.std(unpaired)


@pytest.fixture(scope="module")
def tiny():
    model = load_tiny_model()
    data = make_task().tokenize(model.tokenizer, "eval", seq_len=32, max_tokens=1500)
    return model, data


def test_per_sequence_statistics_add_up_to_the_reported_numbers(tiny):
    model, data = tiny
    ev = evaluate(model, data, batch_size=3, progress=False)
    for name, ds in data.items():
        m = ev[name]
        assert m.n_units == len(ds)
        assert sum(m.units["n"]) == m.n_predictions
        # each sequence's own count of predicted positions, from its mask
        assert m.units["n"] == [float(ds.attention_mask[i].sum() - 1) for i in range(len(ds))]
        for metric in ("top1", "top5", "loss", "perplexity", "top1_skip"):
            assert m.estimate(metric) == pytest.approx(ev.metric(name, metric), rel=1e-9)
        # one sequence evaluated alone gives its own row
        alone = evaluate(model, {name: ds.rows(slice(2, 3))}, progress=False, skip_common=0)
        assert alone[name].units["top1"][0] == m.units["top1"][2]
        assert alone[name].units["loss"][0] == pytest.approx(m.units["loss"][2], rel=1e-5)


def test_curve_intervals_round_trip_and_contain_the_estimates(tiny, tmp_path):
    model, data = tiny
    family = lambda k: zero_ablation(model, heads=[(1, h) for h in range(int(k))])  # noqa: E731
    curve = selectivity_curve(model, data, family, [1, 2, 4], progress=False, n_boot=300)
    s = curve.summary()
    assert s["max_difference_low"] <= s["max_difference"] <= s["max_difference_high"]
    assert s["area_between_low"] <= s["area_between"] <= s["area_between_high"]
    lo, hi = curve.drop_interval("forget", n_boot=300)
    assert np.all(lo[1:] <= curve.forget_drop[1:] + 1e-12)
    assert np.all(curve.forget_drop[1:] <= hi[1:] + 1e-12) and np.all(hi[1:] > lo[1:])
    held = curve.held_out()
    assert held["level"] in curve.x.tolist()
    assert held["difference"].low <= held["difference"].value <= held["difference"].high
    curve.save(tmp_path / "c.json")
    again = SelectivityCurve.load(tmp_path / "c.json")
    assert again.summary() == s and again.n_boot == 300


def test_results_on_different_data_are_not_paired(tiny):
    model, data = tiny
    a = evaluate(model, data, progress=False)
    b = evaluate(model, {k: v.rows(slice(0, 3)) for k, v in data.items()}, progress=False)
    with pytest.raises(ValueError, match="not evaluated on the same data"):
        unit_indices([a, b], "forget")


def test_versus_baseline_is_paired_and_significance_follows_the_interval(tiny):
    model, data = tiny
    heads = lambda k: zero_ablation(model, heads=[(1, h) for h in range(int(k))])  # noqa: E731
    curve = selectivity_curve(model, data, heads, [1, 2, 4], progress=False, n_boot=300)
    same = curve.versus(curve)
    assert same.value == 0.0 and same.low == 0.0 and same.high == 0.0
    other = selectivity_curve(
        model,
        data,
        lambda k: zero_ablation(model, heads=[(0, h) for h in range(int(k))]),
        [1, 2, 4],
        progress=False,
        n_boot=300,
    )
    vs = curve.versus(other)
    level = curve.held_out()["level"]
    j = list(curve.x).index(level)
    assert vs.value == pytest.approx(curve.held_out_at(j)[0] - other.held_out_at(j)[0])
    assert vs.low <= vs.value <= vs.high
    from tl_unlearn.metrics import Scorecard

    sc = Scorecard.from_curves([curve, other], baselines={curve.name: other.name})
    row = next(r for r in sc.rows if r["method"] == curve.name)
    assert row["beats_baseline"] == (vs.low > 0) and row["vs_baseline"] == vs.value
    with pytest.raises(ValueError, match="no curve named"):
        Scorecard.from_curves([curve], baselines={curve.name: "nope"})


def test_random_baseline_on_held_out_halves_matches_a_direct_computation(tiny):
    """A RandomBaseline evaluated on the held-out halves only: its difference is the mean over
    seeds of (forget drop - retain drop) computed directly with evaluate() on those halves;
    the same evaluations on all sequences give the same comparison; and a "baseline" that is
    the method itself gives a zero-width interval at 0 (the comparison is paired)."""
    from tl_unlearn.metrics import Scorecard
    from tl_unlearn.metrics.selectivity import RandomBaseline

    model, data = tiny
    heads = lambda k: zero_ablation(model, heads=[(1, h) for h in range(int(k))])  # noqa: E731
    curve = selectivity_curve(
        model, data, heads, [1, 2, 4], progress=False, n_boot=300, include_zero=False
    )
    level = curve.held_out()["level"]
    j = list(curve.x).index(level)
    half = curve.held_out_data(data)
    assert len(half["forget"]) == len(data["forget"]) - len(data["forget"]) // 2
    rand = [
        zero_ablation(model, heads=[(0, (s + h) % 4) for h in range(int(level))]) for s in (1, 2)
    ]
    base_half = RandomBaseline(
        "random heads", level, [1, 2], [evaluate(model, half, iv, progress=False) for iv in rand]
    )
    base_full = RandomBaseline(
        "random heads", level, [1, 2], [evaluate(model, data, iv, progress=False) for iv in rand]
    )
    orig_half = evaluate(model, half, progress=False)
    direct = np.mean(
        [
            e.relative_drop(orig_half)["forget"] - e.relative_drop(orig_half)["retain"]
            for e in base_half.evaluations
        ]
    )
    vs = curve.versus(base_half)
    assert vs.value == pytest.approx(curve.held_out_at(j)[0] - direct, abs=1e-9)
    assert vs.low <= vs.value <= vs.high
    full = curve.versus(base_full)
    assert (full.value, full.low, full.high) == pytest.approx((vs.value, vs.low, vs.high), abs=1e-9)
    itself = RandomBaseline(
        "itself", level, [0], [evaluate(model, half, heads(level), progress=False)]
    )
    same = curve.versus(itself)
    assert same.value == pytest.approx(0.0, abs=1e-9)
    assert same.high - same.low == pytest.approx(0.0, abs=1e-9)
    sc = Scorecard.from_curves([curve], baselines={curve.name: base_half})
    assert sc.rows[0]["baseline"] == "random heads (2 seeds)"
    assert sc.rows[0]["vs_baseline"] == vs.value
    again = RandomBaseline.from_dict(base_half.to_dict())
    assert curve.versus(again) == vs


def test_t_interval_of_a_mean_equals_scipys_t_interval():
    """For a mean, ``kind="t"`` is the classical t interval: the bootstrap's standard
    error times sqrt(n / (n - 1)) is the sample's standard error (up to resampling noise)."""
    from tl_unlearn.metrics.intervals import bootstrap_interval

    x = np.random.default_rng(3).gamma(2.0, size=12)
    reps = x[np.random.default_rng(4).integers(0, 12, (20000, 12))].mean(1)
    lo, hi = bootstrap_interval(reps, x.mean(), 12, kind="t")
    ref = stats.t.interval(0.95, 11, x.mean(), stats.sem(x))
    assert lo == pytest.approx(ref[0], rel=0.02) and hi == pytest.approx(ref[1], rel=0.02)
    p_lo, p_hi = bootstrap_interval(reps, x.mean(), 12, kind="percentile")
    assert hi - lo > 1.1 * (p_hi - p_lo)  # the percentile interval is too narrow at n=12


def test_welch_df_equals_scipys():
    from tl_unlearn.metrics.intervals import welch_df

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 9), rng.normal(0, 3, 14)
    res = stats.ttest_ind(a, b, equal_var=False)
    df = welch_df(a.var(ddof=1) / 9, 9, b.var(ddof=1) / 14, 14)
    assert df == pytest.approx(float(res.df), rel=1e-9)


def test_proportion_interval_stays_in_unit_range_and_is_logit_symmetric():
    from tl_unlearn.metrics.intervals import bootstrap_interval

    rng = np.random.default_rng(1)
    reps = np.clip(rng.normal(0.05, 0.03, 2000), 0, 1)
    lo, hi = bootstrap_interval(reps, 0.05, 8, kind="t", proportion=True)
    assert 0.0 < lo < 0.05 < hi < 1.0
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(hi) - logit(0.05) == pytest.approx(logit(0.05) - logit(lo), rel=1e-9)
    with pytest.raises(ValueError, match="bogus"):
        bootstrap_interval(reps, 0.05, 8, kind="bogus")


def test_rows_recompute_metrics_from_the_sequences():
    """``Evaluation.rows`` equals evaluating only those sequences."""
    model = load_tiny_model()
    data = make_task().tokenize(model.tokenizer, "eval", seq_len=32, max_tokens=600)
    data = {k: data[k] for k in ("forget", "retain")}
    full = evaluate(model, data, progress=False)
    idx = {"forget": [3, 0, 5], "retain": [1, 2]}
    part = full.rows(idx)
    import torch

    direct = evaluate(
        model, {k: data[k].rows(torch.tensor(v)) for k, v in idx.items()}, progress=False
    )
    for ds in idx:
        for metric in ("top1", "top5", "loss", "top1_skip"):
            if metric == "top1_skip":
                continue  # the common tokens are counted on the evaluated data itself
            assert part.metric(ds, metric) == pytest.approx(direct.metric(ds, metric), rel=1e-9)
        assert part[ds].n_predictions == direct[ds].n_predictions
    with pytest.raises(ValueError, match="within"):
        full.rows({"forget": [10_000]})
