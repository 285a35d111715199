"""Removal depth by patching (UDS) on the planted models, whose circuit and twin are known.

Removing the circuit (mean-ablating C) must score clearly deeper than a suppression that only
pushes the last residual away from the F tokens (every earlier hidden state keeps F there);
the twin itself scores 1, no intervention 0, and ``d1`` equals a patch written by hand."""

import pytest
import torch

from tl_unlearn.metrics.depth import unlearning_depth
from tl_unlearn.models.planted import (
    PLANTED,
    _ablation_hooks,
    component_means,
    load_planted,
    planted_data,
    suppression_hooks,
)


def _setup(name):
    spec = PLANTED[name]
    model, twin = load_planted(name), load_planted(name, twin=True)
    data = planted_data(spec, 128, seed=3_000_001)["forget"]
    ref = planted_data(spec, 128, seed=3_000_002)
    means = component_means(model, torch.cat([ref["forget"].tokens, ref["retain"].tokens]))
    return spec, model, twin, data, means


def test_d1_equals_a_hand_written_patch():
    spec, model, twin, data, means = _setup("planted-induction")
    res = unlearning_depth(model, data, [], twin, n_boot=50)
    _, cache = twin.run_with_cache(data.tokens)
    name = "blocks.0.hook_resid_post"
    with torch.no_grad():
        base = model(data.tokens).log_softmax(-1)
        patched = model.run_with_hooks(
            data.tokens, fwd_hooks=[(name, lambda a, hook: cache[name])]
        ).log_softmax(-1)
    mask = data.target_mask[:, 1:]
    tgt = data.tokens[:, 1:]

    def lp(x):
        v = x[:, :-1].gather(-1, tgt[..., None])[..., 0]
        return (v * mask).sum(1) / mask.sum(1)

    assert res.layers[0]["d1"] == pytest.approx(float((lp(base) - lp(patched)).mean()), rel=1e-5)
    assert res.value == 0.0  # nothing removed


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_depth_of_circuit_ablation_and_suppression(name):
    spec, model, twin, data, means = _setup(name)
    deep = unlearning_depth(
        model, data, _ablation_hooks(list(spec.circuit_nodes), means), twin, label="C ablated"
    )
    shallow = unlearning_depth(
        model, data, suppression_hooks(model, spec), twin, label="suppressed"
    )
    print(name, "C ablated", deep.interval, "suppressed", shallow.interval)
    assert 0.0 < shallow.value < 1.0 and 0.5 < deep.value <= 1.0
    assert deep.low > shallow.high + 0.05  # removal is deeper than suppression, clearly
    # suppression at the last block leaves every earlier hidden state as it was: d2 = 0 there
    assert all(r["d2"] == pytest.approx(0.0, abs=1e-5) for r in shallow.layers[:-1])
    assert unlearning_depth(model, data, twin, twin, n_boot=50).value == 1.0
    with pytest.raises(ValueError, match="tau"):
        unlearning_depth(model, data, [], twin, tau=0)


def test_the_argument_order_of_0_1_still_works_with_a_warning():
    """unlearning_depth(model, intervened, twin, data) and completeness(model, data,
    retrained_model, hooks) were the 0.1 orders: same numbers, and a DeprecationWarning."""
    from tl_unlearn.metrics import completeness

    spec, model, twin, data, means = _setup("planted-lookup")
    new = unlearning_depth(model, data, [], twin, n_boot=20)
    with pytest.warns(DeprecationWarning, match="unlearning_depth"):
        old = unlearning_depth(model, [], twin, data, n_boot=20)
    assert (old.value, old.low, old.high) == (new.value, new.low, new.high)
    hooks = _ablation_hooks(list(spec.circuit_nodes), means)
    with pytest.warns(DeprecationWarning, match="completeness"):
        old_c = completeness(model, data, twin, hooks, k=3)
    assert old_c == completeness(model, data, hooks, retrained_model=twin, k=3)
