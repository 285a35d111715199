import numpy as np
import pytest

from tl_unlearn.interventions import zero_ablation
from tl_unlearn.metrics import logit_lens_diff


def test_final_lens_point_equals_model_output(tiny_model, tiny_data):
    ds = tiny_data["forget"]
    iv = zero_ablation(tiny_model, neurons={1: list(range(100))})
    lens = logit_lens_diff(
        tiny_model, {"forget": ds, "retain": tiny_data["retain"]}, iv, batch_size=4, label=iv.name
    )
    valid = ds.attention_mask[:, 1:] & ds.attention_mask[:, :-1]
    for run, hooks in (("original", ()), ("intervened", iv.fwd_hooks)):
        with tiny_model.hooks(fwd_hooks=list(hooks)):
            lp = tiny_model(ds.tokens).log_softmax(-1)[:, :-1]
        tlp = lp.gather(-1, ds.tokens[:, 1:, None])[..., 0]
        assert lens.logprob["forget"][run][-1] == pytest.approx(
            float(tlp[valid].double().mean()), rel=1e-5
        )
        rank = (lp > tlp[..., None]).sum(-1)[valid].double().mean()
        # the lens unembeds its own copy of the last residual: a float near-tie may flip a rank
        # by one at a few of the positions
        assert lens.rank["forget"][run][-1] == pytest.approx(float(rank), abs=3 / int(valid.sum()))
    # layer 0's resid_pre and layer 1's resid_pre are before the MLP-1 ablation: no change
    np.testing.assert_allclose(lens.diff("forget")[:2], 0.0, atol=1e-9)
    assert lens.diff("forget")[-1] < 0
    fig = lens.figure()
    np.testing.assert_allclose(fig.data[1].y, lens.logprob["forget"]["intervened"])
    heat = lens.figure("heatmap")
    np.testing.assert_allclose(np.array(heat.data[0].z)[0], lens.diff("forget"))
    assert "Logit" in heat.to_html(include_plotlyjs=False)
