import numpy as np
import pytest
import torch

from tl_unlearn import evaluate
from tl_unlearn.interventions import pruning_scores, selective_pruning
from tl_unlearn.interventions.pruning import UnitStats


def test_welford_matches_numpy_in_float64():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(5000, 7)) * (rng.random((5000, 7)) > 0.3)
    s = UnitStats.empty(7)
    for chunk in np.array_split(x, 13):
        s.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(s.mean.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.var.numpy(), x.var(0), rtol=1e-10)
    np.testing.assert_allclose(s.std.numpy(), x.std(0), rtol=1e-10)
    np.testing.assert_allclose(s.rms.numpy(), np.sqrt((x**2).mean(0)), rtol=1e-10)
    np.testing.assert_allclose(s.mean_abs.numpy(), np.abs(x).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.mean_sqrt.numpy(), np.sqrt(np.abs(x)).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.pos_freq.numpy(), (x > 0).mean(0), rtol=1e-12)


def test_reading_units_takes_exactly_the_masked_positions():
    """Whole prefixes of one row and whole rows are read as views, other masks by indexing:
    every way reads exactly the masked positions."""
    from tl_unlearn.interventions.pruning import _read_units

    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 9, 4, 5, generator=gen)
    one_row = torch.zeros(1, 9, dtype=torch.bool)
    one_row[0, :6] = True
    ragged = torch.ones(3, 9, dtype=torch.bool)
    ragged[1, 4:] = False
    gap = torch.ones(1, 9, dtype=torch.bool)
    gap[0, 2] = False
    for x, mask in (
        (acts[:1], one_row),
        (acts, torch.ones(3, 9, dtype=torch.bool)),
        (acts, ragged),
        (acts[:1], gap),
        (acts[:1], torch.zeros(1, 9, dtype=bool)),
    ):
        got, ref = UnitStats.empty(20), UnitStats.empty(20)
        _read_units(got, x, mask)
        ref.update(x[mask].reshape(-1, 20))
        assert got.n == ref.n == int(mask.sum())
        for k in ("mean", "m2", "mean_abs", "pos_freq"):
            assert torch.equal(getattr(got, k), getattr(ref, k)), k


@pytest.fixture(scope="module")
def fit_data(tiny_model, task):
    return task.tokenize(tiny_model.tokenizer, "fit", seq_len=64, max_tokens=6000)


def test_scores_match_their_definitions(tiny_model, fit_data):
    name = "blocks.0.mlp.hook_post"
    acts = {}
    for k in ("forget", "retain"):
        ds = fit_data[k]
        _, cache = tiny_model.run_with_cache(ds.tokens, names_filter=name)
        acts[k] = cache[name][ds.attention_mask].double()
    f, r = acts["forget"], acts["retain"]
    eps = 1e-6
    expected = {
        "abs": f.abs().mean(0) / (r.abs().mean(0) + eps),
        "freq": (f > 0).double().mean(0) / ((r > 0).double().mean(0) + eps),
        "std": f.std(0, unbiased=False) / (r.std(0, unbiased=False) + eps),
        "rms": f.pow(2).mean(0).sqrt() / (r.pow(2).mean(0).sqrt() + eps),
        "mean_diff": (f.mean(0) - r.mean(0)).abs(),
    }
    for score, exp in expected.items():
        ps = pruning_scores(tiny_model, fit_data["forget"], fit_data["retain"], score=score)
        torch.testing.assert_close(ps.scores[name], exp, rtol=1e-4, atol=1e-6)


def test_global_top_fraction_selection(tiny_model, fit_data):
    ps = pruning_scores(tiny_model, fit_data["forget"], fit_data["retain"], components="both")
    assert ps.n_units == 2 * (512 + 4 * 32)
    sel = ps.select(0.1)
    assert sum(int(s.sum()) for s in sel.values()) == round(0.1 * ps.n_units)
    flat = torch.cat(list(ps.scores.values()))
    chosen = torch.cat(list(sel.values()))
    assert flat[chosen].min() >= flat[~chosen].max()
    with pytest.raises(ValueError, match="fraction"):
        ps.select(1.5)
    with pytest.raises(ValueError, match="score"):
        pruning_scores(tiny_model, fit_data["forget"], fit_data["retain"], score="median")


def test_pruned_units_read_zero_or_mean(tiny_model, fit_data):
    ps = pruning_scores(tiny_model, fit_data["forget"], fit_data["retain"])
    iv = ps.intervention(0.05, mode="mean")
    name = "blocks.1.mlp.hook_post"
    idx = iv.info["pruned"][name]
    with iv.applied(tiny_model):
        _, c = tiny_model.run_with_cache(fit_data["retain"].tokens[:2], names_filter=name)
    torch.testing.assert_close(
        c[name][..., idx], ps.retain_stats[name].mean[idx].float().expand(2, 64, -1)
    )


def test_iterative_pruning_prunes_the_requested_count(tiny_model, fit_data):
    iv = selective_pruning(tiny_model, fit_data["forget"], fit_data["retain"], 0.1, steps=3)
    assert iv.info["n_pruned"] == round(0.1 * 1024)
    one_shot = selective_pruning(tiny_model, fit_data["forget"], fit_data["retain"], 0.1)
    assert one_shot.info["n_pruned"] == iv.info["n_pruned"]


def test_code_selective_pruning_is_selective(tiny_model, task):
    """Top 5% code-selective MLP neurons (abs): code loss rises >= 3x prose, and > random."""
    fit = task.tokenize(tiny_model.tokenizer, "fit", seq_len=128, max_tokens=20_000)
    ev = task.tokenize(tiny_model.tokenizer, "eval", seq_len=128, max_tokens=8000)
    base = evaluate(tiny_model, ev, progress=False)
    rise = {}
    for score in ("abs", "random"):
        iv = selective_pruning(tiny_model, fit["forget"], fit["retain"], 0.05, score=score)
        ev_iv = evaluate(tiny_model, ev, iv, progress=False)
        rise[score] = {k: ev_iv[k].loss - base[k].loss for k in ("forget", "retain")}
    print(rise)
    assert rise["abs"]["forget"] >= 3 * max(rise["abs"]["retain"], 1e-6)
    assert rise["abs"]["forget"] > rise["random"]["forget"]


def test_partial_statistics_track_only_what_a_score_reads():
    """Each statistic tracked alone equals the one of a full collection; an untracked one is
    refused with a message naming it, before any work."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(0.5, 1.0, size=(900, 5)))
    full = UnitStats.empty(5)
    parts = {
        k: UnitStats.empty(5, [k]) for k in ("mean", "m2", "mean_abs", "mean_sqrt", "pos_freq")
    }
    for chunk in torch.split(x, 128):
        full.update(chunk)
        for s in parts.values():
            s.update(chunk)
    for k, s in parts.items():
        assert torch.allclose(getattr(s, k), getattr(full, k), rtol=1e-12, atol=1e-12), k
    only_abs = parts["mean_abs"]
    assert only_abs.mean is None and only_abs.tracked == ("mean_abs",)
    with pytest.raises(ValueError, match=r"\['m2'\]"):
        _ = only_abs.var
    with pytest.raises(ValueError, match="Unknown statistics"):
        UnitStats.empty(5, ["median"])


def test_rescoring_partial_statistics_names_what_is_missing(tiny_model, fit_data):
    with pytest.raises(ValueError, match="'std' score needs the statistics"):
        pruning_scores(
            tiny_model, fit_data["forget"], fit_data["retain"], score="std", statistics=["mean_abs"]
        )  # refused before any forward pass
    ps = pruning_scores(tiny_model, fit_data["forget"], fit_data["retain"], statistics=["mean_abs"])
    with pytest.raises(ValueError, match="'freq' score needs the statistics"):
        ps.rescored("freq")
    with pytest.raises(ValueError, match="mode='mean' pruning needs"):
        ps.intervention(0.05, mode="mean")


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_statistics_read_in_the_evaluation_passes_equal_their_own_passes(tiny_model, task, mode):
    """With evaluate_on holding the fit sequences first, each step's statistics are read in
    the evaluation's passes: the same pruned units and evaluations as separate collection
    passes, in 4 passes per side instead of 7 (counted at hook_embed)."""
    fit = task.tokenize(tiny_model.tokenizer, "fit", seq_len=64, max_tokens=3000)
    more = task.tokenize(tiny_model.tokenizer, "fit", seq_len=64, max_tokens=3500)
    assert len(more["forget"]) > len(fit["forget"])  # the evaluation has extra sequences
    passes = []
    counter = ("blocks.1.hook_resid_post", lambda x, hook: passes.append(x.shape[0]))
    opts = {"progress": False, "skip_common": 0}

    def run(**kwargs):
        passes.clear()
        with tiny_model.hooks(fwd_hooks=[counter]):
            iv = selective_pruning(
                tiny_model,
                fit["forget"],
                fit["retain"],
                0.06,
                steps=3,
                mode=mode,
                batch_size=4,
                **kwargs,
            )
        return iv, sum(passes)

    separate_evals = []
    separate, n_separate = run(
        on_step=lambda step, iv: separate_evals.append(
            evaluate(tiny_model, more, iv, batch_size=4, **opts)
        )
    )
    fused, n_fused = run(evaluate_on=more, evaluate_options=opts)
    assert fused.info["statistics_read_in_evaluation"] == ["forget", "retain"]
    assert fused.info["pruned"] == separate.info["pruned"]
    evals = fused.info["evaluations"]
    assert len(evals) == 4
    for a, b in zip(evals[1:], separate_evals):
        for k in ("forget", "retain"):
            assert a[k].accuracy == b[k].accuracy and abs(a[k].loss - b[k].loss) < 1e-6
    n_fit = len(fit["forget"]) + len(fit["retain"])
    n_eval = len(more["forget"]) + len(more["retain"])
    # 3 collections + 3 evaluations (and a prefix pass where a step prunes only layer 1)
    assert n_separate >= 3 * n_fit + 3 * n_eval
    assert n_fused == 4 * n_eval  # step 0 and 3 steps, the collections inside them
    # evaluation data that does not start with the fit sequences: separate passes, same units
    other = task.tokenize(tiny_model.tokenizer, "eval", seq_len=64, max_tokens=1000)
    apart, _ = run(evaluate_on=other, evaluate_options=opts)
    assert apart.info["statistics_read_in_evaluation"] == []
    assert apart.info["pruned"] == separate.info["pruned"]
    with pytest.raises(ValueError, match="evaluate_options takes"):
        selective_pruning(
            tiny_model,
            fit["forget"],
            fit["retain"],
            0.06,
            evaluate_on=more,
            evaluate_options={"batch_size": 3},
        )
