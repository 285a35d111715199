"""Membership inference on text: can a score tell forget texts from held-out texts?

Per text, three scores from the (intervened) model's token log-probabilities:

- ``loss``: mean negative log-likelihood (nats/token);
- ``zlib``: total NLL divided by the length in bytes of the zlib-compressed text;
- ``min_k``: mean of the lowest ``k`` (default 20%) token log-probabilities, negated.

Higher scores mean "less familiar". AUC is the probability that a held-out text (label 1)
scores higher than a forget text (label 0), computed by ranks (Mann-Whitney U, ties count
one half). AUC 0.5: the model cannot tell them apart.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.stats import rankdata

from tl_unlearn.core.checks import Hooks, model_device
from tl_unlearn.core.results import Result
from tl_unlearn.metrics.intervals import Interval, error_bars

__all__ = [
    "MembershipInference",
    "auc_interval",
    "auc_score",
    "membership_inference",
    "text_scores",
]

SCORE_NAMES = ("loss", "zlib", "min_k")


def auc_score(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC by ranks: P(score of a label-1 item > score of a label-0 item), ties 1/2.

    Args:
        labels: 0 or 1 per item.
        scores: A score per item.

    Returns:
        The AUC (0.5: the scores cannot tell the labels apart).

    Examples:
        >>> from tl_unlearn.metrics import auc_score
        >>> auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs at least one item of each label.")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@torch.inference_mode()
def text_scores(
    model: Any,
    texts: Sequence[str],
    hooks: Hooks = (),
    *,
    max_tokens: int = 128,
    k: float = 0.2,
) -> dict[str, np.ndarray]:
    """LOSS, zlib and Min-K% scores of each text (first ``max_tokens`` tokens, BOS first)."""
    if not texts:
        raise ValueError("text_scores() got no text.")
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    out: dict[str, list[float]] = {n: [] for n in SCORE_NAMES}
    device = model_device(model)
    with model.hooks(fwd_hooks=list(hooks)):
        for text in texts:
            tokens = model.to_tokens(text, prepend_bos=True)[:, :max_tokens].to(device)
            if tokens.shape[1] < 2:
                raise ValueError(f"Text {text[:30]!r} has no token to predict.")
            logp = model(tokens).log_softmax(-1)[0, :-1]
            tok_lp = logp.gather(-1, tokens[0, 1:, None]).squeeze(-1).double()
            shown = model.to_string(tokens[0, 1:])
            out["loss"].append(float(-tok_lp.mean()))
            out["zlib"].append(float(-tok_lp.sum()) / len(zlib.compress(shown.encode("utf-8"))))
            n_low = max(1, int(round(k * tok_lp.numel())))
            out["min_k"].append(float(-tok_lp.sort().values[:n_low].mean()))
    return {n: np.array(v) for n, v in out.items()}


@dataclass
class MembershipInference(Result):
    """AUC of each score at separating held-out texts (1) from forget texts (0).

    Attributes:
        label: The intervention's name.
        auc: AUC per score.
        n_forget: Forget texts scored.
        n_heldout: Held-out texts scored.
        auc_low: Lower end of each AUC's percentile bootstrap interval (forget and held-out
            texts resampled independently), NaN when not computed.
        auc_high: Upper end.
        confidence: Nominal coverage of the intervals.
        seconds: Wall time.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import membership_inference
        >>> texts = [f"def f{i}(x): return x + {i}" for i in range(8)]
        >>> mi = membership_inference(m, texts[:4], texts[4:], n_boot=100)
        >>> all(0.0 <= a <= 1.0 for a in mi.auc.values())
        True
    """

    label: str
    auc: dict[str, float]
    n_forget: int
    n_heldout: int
    auc_low: dict[str, float] = field(default_factory=dict)
    auc_high: dict[str, float] = field(default_factory=dict)
    confidence: float = 0.95
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("auc",)

    def figure(self, kind: str = "auc") -> Any:
        """``kind="auc"``: each score's AUC with its interval; 0.5 = no separation."""
        import plotly.graph_objects as go

        self._check_kind(kind)
        names = list(self.auc)
        nan = float("nan")
        ivs = [
            Interval(self.auc[n], self.auc_low.get(n, nan), self.auc_high.get(n, nan))
            for n in names
        ]
        fig = go.Figure(go.Bar(x=names, y=[i.value for i in ivs], error_y=error_bars(ivs)))
        fig.add_hline(y=0.5, line_dash="dash", annotation_text="chance")
        fig.update_layout(
            title=f"Membership inference: {self.label} "
            f"({self.n_forget} forget vs {self.n_heldout} held-out texts)",
            yaxis_title="AUC",
            template="plotly_white",
        )
        return fig


def auc_interval(
    forget_scores: np.ndarray,
    heldout_scores: np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of the AUC, resampling each side's texts independently (of the
    default kind of :func:`~tl_unlearn.metrics.intervals.bootstrap_interval`, with
    ``n_forget + n_heldout - 2`` degrees of freedom).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> lo, hi = auc_interval(rng.normal(0, 1, 64), rng.normal(1, 1, 64))
        >>> 0.5 < lo < hi < 1.0
        True
    """
    from tl_unlearn.metrics.intervals import bootstrap_interval, check_interval_settings

    check_interval_settings(n_boot, confidence)
    f, h = np.asarray(forget_scores, float), np.asarray(heldout_scores, float)
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(len(f)), np.ones(len(h))]
    reps = np.array(
        [
            auc_score(
                labels,
                np.r_[f[rng.integers(len(f), size=len(f))], h[rng.integers(len(h), size=len(h))]],
            )
            for _ in range(n_boot)
        ]
    )
    value = auc_score(labels, np.r_[f, h])
    return bootstrap_interval(reps, value, min(len(f), len(h)), confidence, df=len(f) + len(h) - 2)


def membership_inference(
    model: Any,
    forget_texts: Sequence[str],
    heldout_texts: Sequence[str],
    hooks: Hooks = (),
    *,
    max_tokens: int = 128,
    k: float = 0.2,
    label: str = "",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MembershipInference:
    """Membership-inference AUC (LOSS, zlib, Min-K%) of forget vs held-out texts, with
    bootstrap intervals over texts.

    With few texts the AUC is noise (8 texts per side gave 0.41-0.59 for the same model):
    use at least 64 per side and read the interval.

    Args:
        model: The model.
        forget_texts: Texts the claim is about (label 0).
        heldout_texts: Texts of the same distribution the model was not fitted on (label 1).
        hooks: The intervention.
        max_tokens: Tokens per text scored.
        k: The share of lowest token log-probabilities Min-K% averages.
        label: Name of the intervention.
        n_boot: Bootstrap replicates over texts.
        confidence: Nominal coverage.
        seed: Seed of the resampling.

    Returns:
        :class:`MembershipInference` (an AUC with its interval per score).

    Examples:
        >>> from tl_unlearn.metrics import membership_inference
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model(); t = make_task()
        >>> mi = membership_inference(model, t.forget.fit[:4], t.forget.eval[:4], max_tokens=32)
        >>> sorted(mi.auc), mi.auc_low["loss"] <= mi.auc["loss"] <= mi.auc_high["loss"]
        (['loss', 'min_k', 'zlib'], True)
    """
    t0 = time.perf_counter()
    f = text_scores(model, forget_texts, hooks, max_tokens=max_tokens, k=k)
    h = text_scores(model, heldout_texts, hooks, max_tokens=max_tokens, k=k)
    labels = [0] * len(forget_texts) + [1] * len(heldout_texts)
    auc = {n: auc_score(labels, np.concatenate([f[n], h[n]])) for n in SCORE_NAMES}
    bounds = {
        n: auc_interval(f[n], h[n], n_boot=n_boot, confidence=confidence, seed=seed)
        for n in SCORE_NAMES
    }
    return MembershipInference(
        label,
        auc,
        len(forget_texts),
        len(heldout_texts),
        {n: b[0] for n, b in bounds.items()},
        {n: b[1] for n, b in bounds.items()},
        confidence,
        time.perf_counter() - t0,
    )
