"""The ground-truth tier: localisation figures against independent references, a small run
end to end, and bad input refused before any work."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tl_unlearn.benchmark.tier import (
    GroundTruthTier,
    _agreement,
    _node_auroc,
    _spearman,
    run_ground_truth_tier,
)
from tl_unlearn.cli import main
from tl_unlearn.models.planted import (
    PLANTED,
    corrupt_forget,
    load_planted,
    planted_data,
    task_accuracy,
)


def test_node_auroc_equals_sklearn_and_ranks_unscored_components_last():
    spec = PLANTED["planted-lookup"]
    rng = np.random.default_rng(0)
    scores = {n: float(rng.normal()) for n in spec.components}
    truth = [n in spec.circuit_nodes for n in spec.components]
    expected = roc_auc_score(truth, [scores[n] for n in spec.components])
    assert _node_auroc(spec, scores) == pytest.approx(expected)
    heads_only = {n: v for n, v in scores.items() if not n.startswith("m")}
    floor = min(heads_only.values()) - 1
    expected = roc_auc_score(truth, [heads_only.get(n, floor) for n in spec.components])
    assert _node_auroc(spec, heads_only) == pytest.approx(expected)


def test_spearman_matches_scipy():
    from scipy import stats

    x, y = [0.1, 0.5, 0.2, 0.9, 0.4], [0.3, 0.8, 0.1, 0.7, 0.5]
    rho, lo, hi = _spearman(x, y)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert lo < rho < hi


def test_agreement_names_a_pair_ranked_wrongly():
    def row(method, sel, auroc):
        return {
            "model": "m", "method": method, "held_out_difference": sel,
            "held_out_difference_low": sel - 0.01, "held_out_difference_high": sel + 0.01,
            "node_auroc": auroc, "node_auroc_low": auroc - 0.01, "node_auroc_high": auroc + 0.01,
            "scorecard_beats_random": sel > 0.1, "truth_beats_random": auroc > 0.5,
        }  # fmt: skip

    rows = [row("a", 0.5, 0.9), row("b", 0.3, 0.7), row("c", 0.2, 0.95), row("d", 0.0, 0.4)]
    a = _agreement(rows)
    assert a["n"] == 4 and a["verdicts"] == 4 and a["verdicts_agree"] == 4
    assert len(a["wrongly_ranked"]) == 2  # c is ranked below a and b, above both in truth
    assert all("c" in w for w in a["wrongly_ranked"])


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_corrupted_forget_takes_the_answer_away(name):
    """The counterfactual prompts patching methods need: same scored positions, and the
    model can no longer give the answer from the context."""
    spec = PLANTED[name]
    model = load_planted(name)
    data = planted_data(spec, 128, seed=77)
    bad = corrupt_forget(spec, data["forget"], seed=1)
    assert torch.equal(bad.target_mask, data["forget"].target_mask)
    clean = task_accuracy(model, {"f": data["forget"]})["f"]
    corrupted = task_accuracy(model, {"f": bad})["f"]
    assert clean > 0.95 and corrupted < 0.3, (clean, corrupted)


def test_a_small_tier_run_finds_the_circuit_and_saves(tmp_path):
    tier = run_ground_truth_tier(
        methods=["head-mean", "patching", "prune-random"],
        fits=2, n_fit=48, n_eval=96, baseline_seeds=1, n_boot=100, progress=False,
    )  # fmt: skip
    df = tier.to_dataframe()
    # on the attention-only model, pruning neurons and edge patching cannot run: listed
    assert set(tier.settings["skipped"]["planted-induction"]) == {"patching", "prune-random"}
    assert ("planted-induction", "head-mean") in df.index
    # exact activation patching on the planted circuit must rank both C nodes first
    lookup = df.loc[("planted-lookup", "patching")]
    assert lookup["node_auroc"] == 1.0 and lookup["edge_auroc"] > 0.5
    assert np.isfinite(lookup["uds"]) and 0 <= lookup["uds_low"] <= lookup["uds_high"] <= 1
    # a random ranking carries no information about C
    assert df.loc[("planted-lookup", "prune-random")]["node_auroc"] < 0.9
    assert tier.agreement["threshold"] == 0.5 and tier.agreement["n"] >= 3
    path = tier.save(tmp_path / "tier.json")
    again = GroundTruthTier.load(path)
    assert again.agreement == tier.agreement and len(again.rows) == len(tier.rows)
    assert "node AUROC" in tier.to_markdown()
    written = tier.write(tmp_path / "gt")
    assert {p.name for p in written.iterdir()} == {"results.json", "report.md", "report.html"}
    assert "Spearman" in (written / "report.html").read_text()
    assert len(tier.figure().data) == 2


def test_bad_input_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="planted-nope"):
        run_ground_truth_tier(models=["planted-nope"])
    with pytest.raises(ValueError, match="eap-nope"):
        run_ground_truth_tier(methods=["eap-nope"])
    with pytest.raises(ValueError, match="fits"):
        run_ground_truth_tier(fits=1)
    out = tmp_path / "gt"
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", "ground-truth", "--model", "tiny", "--output", str(out)])
    assert exc.value.code == 2 and "--model" in capsys.readouterr().err
    assert not out.exists()  # nothing written
