import pytest
import torch

from tl_unlearn.interventions import pruning_scores, zero_ablation
from tl_unlearn.metrics import equivalent_weight_edit, weight_distance


def test_equivalent_weight_edit_reproduces_zero_pruning(tiny_model, tiny_data):
    ps = pruning_scores(tiny_model, tiny_data["forget"], tiny_data["retain"], components="both")
    iv = ps.intervention(0.05, mode="zero")
    edit = equivalent_weight_edit(tiny_model, iv)
    assert edit is not None and edit.total > 0
    # independent check: really edit a copy's weights and compare logits with the hooks
    from tl_unlearn import load_tiny_model

    copy = load_tiny_model()
    with torch.no_grad():
        for hook, units in iv.info["pruned"].items():
            layer = int(hook.split(".")[1])
            if hook.endswith("mlp.hook_post"):
                copy.blocks[layer].mlp.W_out[units] = 0
            else:
                w = copy.blocks[layer].attn.W_O
                for u in units:
                    w[u // w.shape[1], u % w.shape[1]] = 0
    tokens = tiny_data["forget"].tokens[:2]
    with iv.applied(tiny_model):
        hooked = tiny_model(tokens)
    torch.testing.assert_close(copy(tokens), hooked, atol=1e-5, rtol=1e-5)
    direct = weight_distance(tiny_model, copy)
    assert abs(direct.total - edit.total) < 1e-6
    assert set(direct.per_layer) >= {"0", "1"}


def test_no_weight_equivalent_for_mean_or_plain_ablation(tiny_model, tiny_data):
    ps = pruning_scores(tiny_model, tiny_data["forget"], tiny_data["retain"])
    assert equivalent_weight_edit(tiny_model, ps.intervention(0.05, mode="mean")) is None
    plain = zero_ablation(tiny_model, hook_points=["blocks.0.hook_resid_pre"])
    assert equivalent_weight_edit(tiny_model, plain) is None
    # a head zeroed at every position is W_O[head] set to 0 (issue 14: it used to say n/a)
    head = equivalent_weight_edit(tiny_model, zero_ablation(tiny_model, heads=[(0, 0)]))
    w_o = tiny_model.blocks[0].attn.W_O.detach()
    assert head.per_param["blocks.0.attn.W_O"][0] == pytest.approx(w_o[0].norm().item(), rel=1e-5)


def test_the_old_keyword_still_works_with_a_warning(tiny_model):
    """``intervention=`` was 0.1's name of what is now ``hooks=`` (one name, one meaning)."""
    import pytest

    iv = zero_ablation(tiny_model, heads=[(0, 0)])
    with pytest.warns(DeprecationWarning, match=r"equivalent_weight_edit\(hooks=...\)"):
        old = equivalent_weight_edit(tiny_model, intervention=iv)
    assert old.to_dict() == equivalent_weight_edit(tiny_model, hooks=iv).to_dict()
