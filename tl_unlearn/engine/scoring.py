"""Next-token scores: cross-entropy and the target's rank, per scored position.

Two ways to the same numbers:

- from logits (:func:`batch_statistics`), for any model;
- from the final normalised residual (:func:`residual_statistics`), for a TransformerLens
  unembedding with no hook on it: the vocabulary is unembedded a slice at a time (4,096
  entries by 512 positions, 8 MB in float32) into one reused buffer, with a running
  log-sum-exp and each slice's top k. A 512-token SmolLM2 row never has its 100 MB of
  logits at once, and the unembedding stays a large matrix product instead of one pass over
  the whole 113 MB ``W_U`` per few positions. The logits are bit-equal to the whole
  unembedding's; the loss differs by float rounding of the sum only.

A target is *in the top k* when fewer than k vocabulary entries come before it, where an entry
comes before the target when its logit is larger, or equal with a smaller token id (the order
of a stable descending sort; for k = 1 this is ``argmax``, which takes the first of tied
maxima). Both ways count it exactly, ties included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_unlearn.data.datasets import TokenDataset, predicted_positions

__all__ = [
    "answer_logit_diff",
    "batch_statistics",
    "plain_unembed",
    "residual_statistics",
    "scored_logprob",
]

_VOCAB_SLICE = 4096  # vocabulary entries per unembedding slice
_SLICE_POSITIONS = 512  # positions per slice: 512 x 4096 float32 logits = 8 MB


def _ahead(
    block: Float[Tensor, "n vocab"], target_logit: Float[Tensor, "n 1"], column: Int[Tensor, " n"]
) -> Int[Tensor, " n"]:
    """Entries of each row of ``block`` that come before the one at ``column`` (a larger
    logit, or an equal one at a smaller column)."""
    # signs of the differences: 1 above, 0 equal, -1 below (exact, and their float sums are
    # exact counts); 3x faster than summing boolean comparisons, which go through int64
    sign = (block - target_logit).sign_()
    above_minus_below = sign.sum(-1)
    not_equal = sign.abs_().sum(-1)
    ahead = ((above_minus_below + not_equal) / 2).long()
    tied = (not_equal < block.shape[-1] - 1).nonzero()[:, 0]
    if len(tied):  # rare: count the equal logits at smaller ids, only for those rows
        cols = torch.arange(block.shape[-1], device=block.device)
        ahead[tied] += ((block[tied] == target_logit[tied]) & (cols < column[tied, None])).sum(-1)
    return ahead


def scored_targets(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    valid: Bool[Tensor, "batch pos_minus_1"],
    top_k: Sequence[int],
) -> tuple[Int[Tensor, " n"], Float[Tensor, " n"], Bool[Tensor, "k n"]]:
    """Targets, cross-entropy and hit@k at the ``valid`` positions (row-major order).

    Only those positions go through the full-vocabulary log-softmax and rank.
    """
    batch, pos, d_vocab = logits.shape
    # position t of row b predicts tokens[b, t + 1]; the last position predicts nothing
    targets = torch.cat([tokens[:, 1:], tokens.new_zeros(batch, 1)], 1).reshape(-1)
    keep = torch.cat([valid, valid.new_zeros(batch, 1)], 1).reshape(-1)
    flat = logits.reshape(batch * pos, d_vocab)  # a view: no copy of the logits
    dense = int(keep.sum()) * 2 > keep.numel()
    if not dense:  # e.g. answer tokens only: copy out just those rows
        flat, targets = flat[keep], targets[keep]
    flat = flat.float()
    # fused log-softmax + NLL (one pass over the vocabulary)
    nll = torch.nn.functional.cross_entropy(flat, targets, reduction="none")
    ahead = _ahead(flat, flat.gather(1, targets[:, None]), targets)
    hits = torch.stack([ahead < k for k in top_k])
    if dense:  # computed on every position; keep the scored ones (row-major order)
        targets, nll, hits = targets[keep], nll[keep], hits[:, keep]
    return targets, nll, hits


def plain_unembed(model: Any) -> bool:
    """Whether ``model`` unembeds with TransformerLens's own ``Unembed``, with no hook on it
    (then :func:`residual_statistics` gives its scores without its whole logits)."""
    from tl_unlearn.engine.tl_patches import Unembed

    unembed = getattr(model, "unembed", None)
    if type(unembed) is not Unembed:
        return False
    points = [getattr(unembed, n) for n in ("hook_in", "hook_out") if hasattr(unembed, n)]
    return not any(p._forward_hooks or p._forward_pre_hooks for p in points)


@torch.no_grad()
def _scored_residual(
    model: Any,
    normed: Float[Tensor, "n d_model"],
    targets: Int[Tensor, " n"],
    top_k: Sequence[int],
) -> tuple[Float[Tensor, " n"], Bool[Tensor, "k n"]]:
    """Cross-entropy and hit@k of ``targets`` from the normalised final residual, the
    vocabulary a slice at a time (see the module docstring)."""
    from tl_unlearn.engine.tl_patches import apply_softcap

    w_u, b_u = model.unembed.W_U, model.unembed.b_U  # [d_model, d_vocab], [d_vocab]
    bias = b_u is not None and bool(b_u.any())
    cap = getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0
    d_vocab, k_max = w_u.shape[1], max(top_k)
    n = len(normed)
    nll = torch.empty(n, dtype=torch.float32, device=normed.device)
    ahead = torch.zeros(n, dtype=torch.long, device=normed.device)
    buf = torch.empty(
        min(n, _SLICE_POSITIONS), min(d_vocab, _VOCAB_SLICE), dtype=w_u.dtype, device=normed.device
    )
    for p0 in range(0, n, _SLICE_POSITIONS):
        x = normed[p0 : p0 + _SLICE_POSITIONS].to(w_u.dtype)
        tgt = targets[p0 : p0 + _SLICE_POSITIONS]
        m = len(x)
        # NaN until the target's slice sets it (an id outside the vocabulary stays NaN, and
        # evaluation refuses a non-finite loss)
        target_logit = torch.full((m, 1), torch.nan, dtype=torch.float32, device=x.device)
        own = torch.zeros(m, dtype=torch.long, device=x.device)
        maxes, sums, tops = [], [], []
        for v0 in range(0, d_vocab, _VOCAB_SLICE):
            v1 = min(v0 + _VOCAB_SLICE, d_vocab)
            out = buf[:m, : v1 - v0]
            if bias:  # what F.linear does: the bias, then the product added to it
                torch.addmm(b_u[v0:v1], x, w_u[:, v0:v1], out=out)
            else:
                torch.mm(x, w_u[:, v0:v1], out=out)
            logits = (apply_softcap(out, cap) if cap > 0 else out).float()
            inside = (tgt >= v0) & (tgt < v1)
            n_inside = int(inside.sum())
            # the target's own slice: its logit, and who comes before it
            if n_inside * 2 > m:  # most rows (the most common ids): on the whole slice
                col = (tgt - v0).clamp(0, v1 - v0 - 1)
                t = logits.gather(1, col[:, None])
                target_logit = torch.where(inside[:, None], t, target_logit)
                own = torch.where(inside, _ahead(logits, t, col), own)
            elif n_inside:  # a few rows: copied out
                rows = inside.nonzero()[:, 0]
                block = logits[rows]
                t = block.gather(1, (tgt[rows] - v0)[:, None])
                target_logit[rows] = t
                own[rows] = _ahead(block, t, tgt[rows] - v0)
            if v1 - v0 < d_vocab:  # other rows' targets: this slice's top k
                top = logits.topk(min(k_max, v1 - v0), dim=-1).values  # largest first
                tops.append(top)
                shift = top[:, :1]
            else:  # one slice: every target's rank was counted whole
                shift = logits.amax(-1, keepdim=True)
            shift = shift.clamp(min=torch.finfo(torch.float32).min)  # not -inf - -inf
            maxes.append(shift[:, 0])
            # the slice's sum of exp(logit - max), in place (the logits are not needed now)
            sums.append(logits.sub_(shift).exp_().sum(-1))
        mx = torch.stack(maxes, 1)
        peak = mx.amax(1)
        lse = peak + torch.log((torch.stack(sums, 1) * torch.exp(mx - peak[:, None])).sum(1))
        nll[p0 : p0 + m] = lse - target_logit[:, 0]
        # other slices: their top k holds every entry before the target while fewer than k
        # are (ids below the target's slice come first on a tie, ids above it do not)
        own_slice = tgt // _VOCAB_SLICE
        for s, top in enumerate(tops):
            before = (top >= target_logit).sum(-1)
            after = (top > target_logit).sum(-1)
            own += torch.where(own_slice > s, before, torch.where(own_slice < s, after, 0))
        ahead[p0 : p0 + m] = own
    return nll, torch.stack([ahead < k for k in top_k])


def _row_sums(
    valid: Bool[Tensor, "batch pos_minus_1"],
    targets: Int[Tensor, " n"],
    nll: Float[Tensor, " n"],
    hits: Bool[Tensor, "k n"],
    skip_ids: Int[Tensor, " n_skip"] | None,
) -> Float[Tensor, "batch stats"]:
    rows = valid.nonzero()[:, 0]  # row of each scored position (row-major, as the scores)
    n_rows = valid.shape[0]

    def per_row(weights: Tensor) -> Tensor:
        return torch.bincount(rows, weights=weights.double(), minlength=n_rows)

    out = [valid.sum(1).double(), per_row(nll)] + [per_row(h) for h in hits]
    if skip_ids is not None:
        keep = ~torch.isin(targets, skip_ids.to(targets.device))
        out.append(per_row(keep))
        out += [per_row(h & keep) for h in hits]
    return torch.stack(out, 1).cpu()


def _valid(
    mask: Bool[Tensor, "batch pos"], scored: Bool[Tensor, "batch pos_minus_1"] | None
) -> Bool[Tensor, "batch pos_minus_1"]:
    valid = predicted_positions(mask)
    return valid if scored is None else valid & scored


def batch_statistics(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    top_k: Sequence[int],
    skip_ids: Int[Tensor, " n"] | None = None,
    scored: Bool[Tensor, "batch pos_minus_1"] | None = None,
) -> Float[Tensor, "batch stats"]:
    """Per-sequence sums: ``[n, loss_sum, hits@k..., n_skip, hits_skip@k...]`` (float64).

    One row per sequence, so that intervals can resample sequences (the sufficient
    statistics of every token metric; never logits). ``scored`` restricts the counted
    positions (default: every predicted position). Computed without Python loops over
    positions.

    Examples:
        >>> logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.0]]])
        >>> stats = batch_statistics(logits, torch.tensor([[0, 1, 2]]),
        ...                          torch.ones(1, 3, dtype=torch.bool), top_k=(1, 2))
        >>> stats[0, [0, 2, 3]].tolist()  # predictions, hits@1 (only token 2), hits@2
        [2.0, 1.0, 2.0]
    """
    valid = _valid(mask, scored)
    targets, nll, hits = scored_targets(logits, tokens, valid, top_k)
    return _row_sums(valid, targets, nll, hits, skip_ids)


def residual_statistics(
    model: Any,
    normed: Float[Tensor, "batch pos d_model"],
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    top_k: Sequence[int],
    skip_ids: Int[Tensor, " n"] | None = None,
    scored: Bool[Tensor, "batch pos_minus_1"] | None = None,
) -> Float[Tensor, "batch stats"]:
    """:func:`batch_statistics` from the normalised final residual (the input of
    ``model.unembed``), the vocabulary a slice at a time: the same hits, the same loss up
    to float rounding, without the batch's logits. Needs :func:`plain_unembed`.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); t = m.to_tokens(["def f(x):", "import os"])
        >>> mask = torch.ones_like(t, dtype=torch.bool)
        >>> normed = m.ln_final(m(t, stop_at_layer=m.cfg.n_layers))
        >>> a = residual_statistics(m, normed, t, mask, (1, 5))
        >>> b = batch_statistics(m(t), t, mask, (1, 5))
        >>> bool(torch.equal(a[:, 2:], b[:, 2:])), bool(torch.allclose(a, b, atol=1e-4))
        (True, True)
    """
    device = normed.device
    valid = _valid(mask.to(device), None if scored is None else scored.to(device))
    targets = tokens.to(device)[:, 1:][valid]
    d_vocab = model.unembed.W_U.shape[1]
    if len(targets) and not 0 <= int(targets.min()) <= int(targets.max()) < d_vocab:
        raise ValueError(
            f"Target token ids must be in 0..{d_vocab - 1} (the unembedding's "
            f"vocabulary); got {int(targets.min())}..{int(targets.max())}."
        )
    nll, hits = _scored_residual(model, normed[:, :-1][valid], targets, top_k)
    return _row_sums(valid, targets, nll, hits, skip_ids)


def answer_logit_diff(logits: Tensor, batch: TokenDataset) -> Tensor:
    """Per example: logit of the answer minus logit of the counterfactual, at the position
    that predicts the answer (TransformerLens's IOI metric).

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.data.tasks import ioi_task
        >>> m = load_tiny_model()
        >>> b = ioi_task(m.tokenizer, n=20).tokenize(m.tokenizer, max_examples=3)
        >>> answer_logit_diff(m(b.tokens), b).shape
        torch.Size([3])
    """
    if batch.counterfactual is None:
        raise ValueError(
            f"Dataset {batch.name!r} has no counterfactual answers: pass your own "
            "metric(logits, batch) or use a task with counterfactuals (ioi, "
            "greater_than, facts)."
        )
    final = batch.answer_logits(logits)
    rows = torch.arange(len(batch), device=final.device)
    return (
        final[rows, batch.answers.to(final.device)]
        - final[rows, batch.counterfactual.to(final.device)]
    )


def scored_logprob(logits: Tensor, batch: TokenDataset) -> Tensor:
    """Per example: the mean log-probability of its scored target tokens (for tasks without a
    counterfactual answer, e.g. induction's second copy).

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.data.tasks import InductionTask
        >>> m = load_tiny_model(); b = InductionTask(half=6).tokenize(m.tokenizer, max_tokens=26)
        >>> scored_logprob(m(b.tokens), b).shape
        torch.Size([2])
    """
    valid = batch.scored_positions().to(logits.device)
    lp = logits[:, :-1].log_softmax(-1).gather(-1, batch.tokens[:, 1:, None].to(logits.device))
    lp = (lp[..., 0] * valid).sum(1)
    return lp / valid.sum(1).clamp_min(1)
