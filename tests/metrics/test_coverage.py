"""The scorecard's intervals keep their level: coverage simulated on the tiny model.

The population is the tiny model's evaluation on several hundred 128-token sequences per
dataset from many documents (the eval split); samples of 16 sequences per dataset (the
default benchmark's size) are drawn from it, and each interval the scorecard reports must
cover the population's value in [0.93, 0.97] of them. The forget top-1 of the original model
is the exception, with its own floor (see ``docs/metrics.md``, "Intervals"): its
per-sequence values are strongly skewed and no interval kind tried reaches 0.93 there.
"""

import pytest

from tl_unlearn import load_tiny_model, make_task
from tl_unlearn.benchmark.methods.base import MethodContext
from tl_unlearn.benchmark.methods.registry import fit_method
from tl_unlearn.metrics.coverage import interval_coverage
from tl_unlearn.metrics.selectivity import selectivity_curve


@pytest.fixture(scope="module")
def population():
    model = load_tiny_model()
    task = make_task()
    fit = task.tokenize(model.tokenizer, "fit", seq_len=128, max_tokens=128 * 16)
    data = task.tokenize(model.tokenizer, "eval", seq_len=128, max_tokens=128 * 800)
    data = {k: data[k] for k in ("forget", "retain")}
    ctx = MethodContext(model, fit["forget"], fit["retain"])
    curves, original = {}, None
    for name in ("prune-abs", "prune-random"):
        fm = fit_method(name, ctx)
        curves[name] = selectivity_curve(
            model, data, fm.family, fm.levels, name=name, original=original,
            progress=False, batch_size=32,
        )  # fmt: skip
        original = curves[name].original
    return curves


def test_default_intervals_cover_at_their_level(population):
    cov = interval_coverage(
        population["prune-abs"], population["prune-random"], n_units=16, n_sims=1000,
        kinds=("t", "percentile"),
    )  # fmt: skip
    table = cov.to_markdown()
    print(table)
    for r in cov.rows:
        if r["kind"] != "t":
            continue
        if r["interval"] == "metric forget":
            assert r["coverage"] >= 0.90, table  # the skewed forget top-1: its floor
        else:
            assert 0.93 <= r["coverage"] <= 0.97, (r, table)
    # the old percentile intervals undercover the paired drops and differences
    assert cov.coverage("drop forget", "percentile") < 0.93
    assert cov.coverage("held_out_difference", "percentile") < 0.93


def test_coverage_refuses_a_too_small_population(population):
    with pytest.raises(ValueError, match="at least"):
        interval_coverage(population["prune-abs"], n_units=1000, n_sims=2)
