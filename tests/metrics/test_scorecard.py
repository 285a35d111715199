import pytest

from tl_unlearn.metrics import Scorecard


def test_scorecard_ranks_and_figure_holds_numbers():
    sc = Scorecard(
        [
            {
                "method": "random",
                "max_difference": 0.01,
                "forget_drop_at_best": 0.02,
                "retain_drop_at_best": 0.01,
            },
            {
                "method": "prune-abs",
                "max_difference": 0.2,
                "forget_drop_at_best": 0.3,
                "retain_drop_at_best": 0.1,
            },
        ]
    )
    df = sc.ranked()
    assert df.index.tolist() == ["prune-abs", "random"]
    fig = sc.figure()
    bars = {t.name: list(t.y) for t in fig.data if t.type == "bar"}
    from tl_unlearn.metrics.scorecard import field_label

    assert bars[field_label("forget_drop_at_best")] == [0.3, 0.02]  # legends in words
    assert Scorecard.from_dict(sc.to_dict()).rows == sc.rows
    assert "prune-abs" in fig.to_html(include_plotlyjs=False)
    with pytest.raises(ValueError, match="at least one"):
        Scorecard([])
