"""Induction heads: repeated random tokens and per-head induction scores from attention.

On ``[BOS] r r`` (a random token sequence ``r`` of length ``L`` shown twice) an induction head
at position ``i`` in the second copy attends to ``i - L + 1``: the token *after* the previous
occurrence of the current token. The induction score of a head is its mean attention on that
offset over the second copy.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.data.datasets import TokenDataset

__all__ = ["induction_scores", "previous_token_scores", "repeated_random_tokens"]


def repeated_random_tokens(
    model: Any, n: int = 16, half_len: int = 30, seed: int = 0, low: int = 100
) -> TokenDataset:
    """``n`` sequences ``[BOS] r r`` with ``r`` uniform over token ids ``[low, d_vocab)``.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> ds = repeated_random_tokens(load_tiny_model(), n=2, half_len=5)
        >>> ds.tokens.shape, bool((ds.tokens[:, 1:6] == ds.tokens[:, 6:]).all())
        (torch.Size([2, 11]), True)
    """
    if half_len < 2 or n < 1:
        raise ValueError("repeated_random_tokens() needs n >= 1 and half_len >= 2.")
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(low, model.cfg.d_vocab, (n, half_len), generator=gen)
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else 0
    tokens = torch.cat([torch.full((n, 1), bos or 0), r, r], dim=1)
    return TokenDataset("repeated_random", tokens, torch.ones_like(tokens, dtype=torch.bool))


@torch.inference_mode()
def induction_scores(model: Any, data: TokenDataset) -> Float[Tensor, "layer head_index"]:
    """Mean attention from each second-copy position ``i`` to ``i - L + 1``, per head."""
    return _offset_scores(model, data, lambda q, length: q - length + 1)


@torch.inference_mode()
def previous_token_scores(model: Any, data: TokenDataset) -> Float[Tensor, "layer head_index"]:
    """Mean attention from each second-copy position ``i`` to ``i - 1``, per head (the
    previous-token heads that induction heads compose with)."""
    return _offset_scores(model, data, lambda q, length: q - 1)


def _offset_scores(model: Any, data: TokenDataset, key_of: Any) -> Tensor:
    length = (data.tokens.shape[1] - 1) // 2
    names = [get_act_name("pattern", l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(data.tokens, names_filter=names, return_type=None)
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    q = torch.arange(length + 1, 2 * length + 1)  # positions of the second copy
    k = key_of(q, length)
    for l, n in enumerate(names):
        pattern = cache[n]  # [batch, head_index, query_pos, key_pos]
        scores[l] = pattern[:, :, q, k].mean((0, 2)).float()
    return scores
