"""The benchmark's method wiring: head attribution against a hand-written reference."""

import torch

from tl_unlearn.data import TokenDataset
from tl_unlearn.methods import head_attribution


def _ragged(data, lengths):
    """The first rows of ``data``, cut to ``lengths`` real tokens (right-padded with token 0)."""
    tokens = data.tokens[: len(lengths)].clone()
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
        tokens[i, n:] = 0
    return TokenDataset(data.name, tokens, mask)


def _reference_attribution(model, data, means):
    """Plain TransformerLens: full backward (parameter gradients included), z.retain_grad()."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    count = 0
    store = {}

    def keep(acts, hook):
        acts.retain_grad()
        store[hook.name] = acts

    for start in range(0, len(data), 4):
        tokens = data.tokens[start:start + 4]
        mask = data.attention_mask[start:start + 4]
        names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
        with model.hooks(fwd_hooks=[(n, keep) for n in names]):
            per_tok = model(tokens, return_type="loss", loss_per_token=True)
            valid = mask[:, 1:] & mask[:, :-1]
            per_tok[valid].sum().backward()
        for l, n in enumerate(names):
            z, g = store[n].detach(), store[n].grad
            total[l] += ((means[n] - z) * g * mask[..., None, None]).sum((0, 1, 3)).double()
        count += int(valid.sum())
        model.zero_grad(set_to_none=True)
    return total / count


def test_head_attribution_equals_full_backward_reference(tiny_model, tiny_data, weights_guard):
    forget = _ragged(tiny_data["forget"], [64, 20, 64, 33, 9, 64, 50, 64])
    retain = _ragged(tiny_data["retain"], [64, 64, 17, 64, 40, 64, 64, 12])
    names = [f"blocks.{l}.attn.hook_z" for l in range(tiny_model.cfg.n_layers)]
    means = {n: torch.randn(tiny_model.cfg.n_heads, tiny_model.cfg.d_head) for n in names}
    expected = (_reference_attribution(tiny_model, forget, means)
                - _reference_attribution(tiny_model, retain, means))
    with weights_guard(tiny_model):
        got = head_attribution(tiny_model, forget, retain, batch_size=4, reference=means)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    # the parameters are left as they were: trainable, with no gradient
    assert all(p.requires_grad and p.grad is None for p in tiny_model.parameters())
