"""Degree of removal: relearn time and the Anamnesis Index (AIN).

Relearn time fine-tunes a *copy* of the model on forget data with the intervention kept in
place as hooks (pruned parts stay pruned: their hooks overwrite the activations, so no
gradient reaches them) using AdamW at a constant learning rate with gradient clipping 1.0.
Every ``eval_every`` steps forget top-1 is measured; relearn time is the number of steps (and
seconds) until forget top-1 >= ``(1 - alpha) * top1(M0)``, or *not reached* within
``max_steps``. The whole curve is kept. The user's model is never modified.

``AIN = relearn_steps(Mu) / relearn_steps(Mr)`` for a retrained model Mr, same target and
optimiser: near 1 is ideal; much below 1 means the information is still there.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import plotly.graph_objects as go
import torch

from tl_unlearn.data import TokenDataset, predicted_positions
from tl_unlearn.interventions.base import Hooks, check_positive_int, model_device
from tl_unlearn.metrics.evaluation import check_data, evaluate
from tl_unlearn.results import Result

__all__ = ["RelearnResult", "anamnesis_index", "relearn", "relearn_attack"]



@dataclass
class RelearnResult(Result):
    """Outcome of relearning the forget set.

    Attributes:
        label: What was relearned (the intervention's name).
        target: Forget top-1 to reach, ``(1 - alpha) * top1(M0)``.
        original_top1: Forget top-1 of the original model.
        steps: Steps to reach the target, or None when not reached within ``max_steps``.
        seconds_to_target: Wall time to reach the target, or None.
        curve: ``(step, forget top-1, forget loss, seconds)`` at each evaluation.
        lr: Learning rate used.
        max_steps: Step budget.
        tokens_per_step: Tokens per fine-tuning step (``batch_size x seq_len``).
        seconds: Wall time of the whole run (model copy and evaluations included).
    """

    label: str
    target: float
    original_top1: float
    steps: int | None
    seconds_to_target: float | None
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)
    lr: float = 0.0
    max_steps: int = 0
    tokens_per_step: int = 0
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("curve",)

    @property
    def tokens(self) -> int | None:
        """Tokens fine-tuned on until the target was reached (None when not reached)."""
        return None if self.steps is None else self.steps * self.tokens_per_step

    @property
    def reached(self) -> bool:
        return self.steps is not None

    def describe(self) -> str:
        if self.reached:
            return f"{self.steps} steps ({self.seconds_to_target:.1f}s)"
        return f"not reached within {self.max_steps} steps"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reached": self.reached, "tokens": self.tokens}

    def figure(self, kind: str = "curve") -> go.Figure:
        """``kind="curve"``: forget top-1 vs fine-tuning step, with the target line."""
        self._check_kind(kind)
        fig = go.Figure()
        steps = [c[0] for c in self.curve]
        fig.add_trace(go.Scatter(x=steps, y=[c[1] for c in self.curve], mode="lines+markers",
                                 name=f"{self.label} forget top-1"))
        fig.add_hline(y=self.target, line_dash="dash", annotation_text="target")
        fig.update_layout(title=f"Relearning: {self.label} ({self.describe()})",
                          xaxis_title="fine-tuning step", yaxis_title="forget top-1",
                          template="plotly_white")
        return fig


def relearn(
    model: Any,
    forget_fit: TokenDataset,
    forget_eval: TokenDataset,
    hooks: Hooks = (),
    *,
    original_top1: float | None = None,
    alpha: float = 0.05,
    recover: float | None = None,
    target: float | None = None,
    lr: float = 1e-3,
    max_steps: int = 100,
    eval_every: int = 5,
    batch_size: int = 8,
    seed: int = 0,
    label: str = "",
) -> RelearnResult:
    """Fine-tune a copy of the model on ``forget_fit`` with ``hooks`` kept in place.

    Args:
        model: The (original) model; it is copied, never changed.
        forget_fit: Data to fine-tune on.
        forget_eval: Data the forget top-1 is measured on.
        hooks: The intervention (kept during fine-tuning and evaluation).
        original_top1: Forget top-1 of M0 (computed when None).
        alpha: Target is ``(1 - alpha) * original_top1``.
        recover: Instead of ``alpha``: the target is this share of the forget drop recovered,
            ``top1(step 0) + recover * (original_top1 - top1(step 0))`` (0.5: half of it).
        target: Instead of both: this forget top-1 (e.g. another run's target, so that two
            relearn times can be compared, as the Anamnesis Index needs).
        lr: Constant AdamW learning rate.
        max_steps: Step budget; the result says "not reached" past it.
        eval_every: Evaluate every this many steps.
        batch_size: Sequences per step.
        seed: Seed of the batch order.

    Example:
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> d = make_task().tokenize(model.tokenizer, "eval", seq_len=32, max_tokens=300)
        >>> r = relearn(model, d["forget"], d["forget"], max_steps=2, eval_every=1, alpha=0.0)
        >>> r.curve[0][0], r.reached
        (0, True)
    """
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha < 1.0):
        raise ValueError(f"alpha must be in [0, 1) (the target is (1 - alpha) x the original "
                         f"top-1), got {alpha!r}.")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    check_positive_int(max_steps, "max_steps")
    check_positive_int(eval_every, "eval_every")
    check_data(model, {"forget_fit": forget_fit, "forget_eval": forget_eval}, batch_size)
    hooks = list(hooks)
    if original_top1 is None:
        original_top1 = evaluate(model, forget_eval, progress=False, skip_common=0)[
            forget_eval.name].accuracy[1]
    if recover is not None and not (isinstance(recover, (int, float)) and 0.0 < recover <= 1.0):
        raise ValueError(f"recover must be in (0, 1] (the share of the forget drop to win "
                         f"back), got {recover!r}.")
    fixed_target = target
    target = (1.0 - alpha) * original_top1 if fixed_target is None else float(fixed_target)
    student = copy.deepcopy(model)
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    device = model_device(student)
    curve: list[tuple[int, float, float, float]] = []
    t0 = time.perf_counter()

    def measure(step: int) -> bool:
        # hooks are already on the student (outer context): evaluate without adding them again
        student.eval()
        m = evaluate(student, forget_eval, progress=False, skip_common=0)[forget_eval.name]
        student.train()
        curve.append((step, m.accuracy[1], m.loss, time.perf_counter() - t0))
        return m.accuracy[1] >= target

    steps = seconds = None
    with student.hooks(fwd_hooks=hooks):
        reached = measure(0)
        if recover is not None and fixed_target is None:
            start = curve[0][1]
            target = start + recover * (original_top1 - start)
            reached = start >= target
        if reached:
            steps, seconds = 0, 0.0
        else:
            for step in range(1, max_steps + 1):
                idx = torch.randint(len(forget_fit), (batch_size,), generator=gen)
                tokens = forget_fit.tokens[idx].to(device)
                mask = forget_fit.attention_mask[idx].to(device)
                per_tok = student(tokens, return_type="loss", loss_per_token=True)
                loss = per_tok[predicted_positions(mask)].mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                if step % eval_every == 0 or step == max_steps:
                    if measure(step):
                        steps, seconds = step, curve[-1][3]
                        break
    return RelearnResult(label, target, original_top1, steps, seconds, curve, lr, max_steps,
                         batch_size * forget_fit.tokens.shape[1],
                         time.perf_counter() - t0)


def relearn_attack(
    model: Any,
    forget_fit: TokenDataset,
    forget_eval: TokenDataset,
    hooks: Hooks = (),
    *,
    lrs: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3),
    **kwargs: Any,
) -> tuple[RelearnResult, list[RelearnResult]]:
    """Relearning attack: sweep learning rates and return the strongest (fewest steps) and all."""
    if "original_top1" not in kwargs:
        kwargs["original_top1"] = evaluate(model, forget_eval, progress=False, skip_common=0)[
            forget_eval.name].accuracy[1]
    results = [relearn(model, forget_fit, forget_eval, hooks, lr=lr, **kwargs) for lr in lrs]
    best = min(results, key=lambda r: (not r.reached, r.steps or 0, -r.curve[-1][1]))
    return best, results


def anamnesis_index(unlearned: RelearnResult, retrained: RelearnResult) -> float | None:
    """``AIN = steps(Mu) / steps(Mr)``; None when either did not reach the target.

    Both results must use the same target (same original model and alpha).

    Example:
        >>> r = lambda s: RelearnResult("x", 0.5, 0.6, s, 1.0)
        >>> anamnesis_index(r(10), r(40))
        0.25
    """
    if abs(unlearned.target - retrained.target) > 1e-9:
        raise ValueError("AIN needs both relearn runs to use the same target.")
    if not unlearned.reached or not retrained.reached:
        return None
    if retrained.steps == 0:
        return float("inf") if unlearned.steps else 1.0
    return unlearned.steps / retrained.steps
