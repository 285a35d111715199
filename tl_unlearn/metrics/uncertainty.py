"""Fisher-based epistemic uncertainty: ``i(w; D) = trace of the empirical Fisher``.

``i = mean over samples of ||grad_w log p(y | x)||^2``, with one sample per sequence and
``log p(y | x)`` the mean token log-likelihood of that sequence (so long and short sequences
weigh the same). Efficacy is ``1 / i`` (infinite when ``i = 0``): a model that has
"forgotten" D sits in a flatter region, with larger efficacy. The cheap bound uses one
gradient of the mean loss over all samples: ``1 / ||grad L(w, D)||^2``.

Gradients flow through the intervention hooks; the user's model is not changed (gradients
are cleared afterwards and no optimiser step is taken).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tl_unlearn.core.checks import Hooks, check_positive_int, model_device
from tl_unlearn.core.results import Result
from tl_unlearn.data.datasets import TokenDataset, predicted_positions
from tl_unlearn.metrics.evaluation import check_data

__all__ = ["FisherUncertainty", "fisher_uncertainty"]


@dataclass
class FisherUncertainty(Result):
    """Empirical Fisher trace and efficacy on one dataset.

    Attributes:
        label: The dataset's name.
        n_samples: Sequences whose gradients were taken.
        fisher_trace: Trace of the empirical Fisher (mean squared per-sequence gradient norm).
        grad_norm_sq: Squared norm of the mean gradient.
        seconds: Wall time.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import fisher_uncertainty
        >>> fu = fisher_uncertainty(m, d["forget"], max_samples=2)
        >>> fu.fisher_trace > 0
        True
    """

    label: str
    n_samples: int
    fisher_trace: float
    grad_norm_sq: float
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("efficacy",)

    @property
    def efficacy(self) -> float:
        return float("inf") if self.fisher_trace == 0 else 1.0 / self.fisher_trace

    @property
    def efficacy_bound(self) -> float:
        """Cheap bound ``1 / ||grad L(w, D)||^2``."""
        return float("inf") if self.grad_norm_sq == 0 else 1.0 / self.grad_norm_sq

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "efficacy": self.efficacy,
            "efficacy_bound": self.efficacy_bound,
        }

    def figure(self, kind: str = "efficacy") -> Any:
        """``kind="efficacy"``: efficacy ``1 / tr F`` beside its cheap bound (log y axis)."""
        import plotly.graph_objects as go

        self._check_kind(kind)
        fig = go.Figure(
            go.Bar(
                x=["efficacy (1 / tr F)", "bound (1 / |grad|^2)"],
                y=[self.efficacy, self.efficacy_bound],
            )
        )
        fig.update_layout(
            title=f"Fisher efficacy on {self.label} ({self.n_samples} sequences)",
            yaxis_type="log",
            template="plotly_white",
        )
        return fig


def _seq_loglik(model: Any, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_tok = model(tokens, return_type="loss", loss_per_token=True)  # [batch, pos-1] NLL
    valid = predicted_positions(mask).to(per_tok.dtype)
    return -(per_tok * valid).sum(1) / valid.sum(1).clamp(min=1)


def fisher_uncertainty(
    model: Any,
    data: TokenDataset,
    hooks: Hooks = (),
    *,
    max_samples: int = 16,
) -> FisherUncertainty:
    """Trace of the empirical Fisher (per-sequence gradients) and the cheap gradient bound.

    Args:
        model: The model.
        data: Token data (one sequence per gradient).
        hooks: The intervention.
        max_samples: Sequences used.

    Returns:
        :class:`FisherUncertainty` (``trace``, ``efficacy``, the gradient bound).

    Examples:
        >>> from tl_unlearn.metrics import fisher_uncertainty
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> d = make_task().tokenize(model.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> f = fisher_uncertainty(model, d["forget"], max_samples=2)
        >>> f.fisher_trace >= f.grad_norm_sq > 0
        True
    """
    check_positive_int(max_samples, "max_samples")
    check_data(model, data, 1)
    t0 = time.perf_counter()
    n = min(max_samples, len(data))
    if n == 0:
        raise ValueError("fisher_uncertainty() got an empty dataset.")
    params = [p for p in model.parameters() if p.requires_grad]
    device = model_device(model)
    was_training = model.training
    model.eval()
    total = 0.0
    mean_grad = [torch.zeros_like(p) for p in params]
    try:
        with model.hooks(fwd_hooks=list(hooks)), torch.enable_grad():
            for i in range(n):
                tokens = data.tokens[i : i + 1].to(device)
                mask = data.attention_mask[i : i + 1].to(device)
                ll = _seq_loglik(model, tokens, mask)[0]
                grads = torch.autograd.grad(ll, params, allow_unused=True)
                sq = 0.0
                for g, acc in zip(grads, mean_grad):
                    if g is not None:
                        sq += float(g.double().pow(2).sum())
                        acc.add_(g, alpha=1.0 / n)
                total += sq
    finally:
        model.train(was_training)
    grad_sq = float(sum(g.double().pow(2).sum() for g in mean_grad))
    return FisherUncertainty(data.name, n, total / n, grad_sq, time.perf_counter() - t0)
