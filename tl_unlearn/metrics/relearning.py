"""Degree of removal: relearn time and the Anamnesis Index (AIN).

Relearn time fine-tunes a *copy* of the model on forget data with the intervention kept in
place as hooks (pruned parts stay pruned: their hooks overwrite the activations, so no
gradient reaches them) using AdamW at a constant learning rate with gradient clipping 1.0.
With ``adapter_rank=r`` it trains rank-``r`` adapters beside every block's MLP instead (a
linear map of the MLP's normalised input added to its output, the intervention's hooks still
in place after it): no copy of the model, no weight gradients and no optimiser state for
the weights, so it fits where a full fine-tune does not (a weaker attack than a full one).
Every ``eval_every`` steps forget top-1 is measured; relearn time is the number of steps (and
seconds) until forget top-1 >= ``(1 - alpha) * top1(M0)``, or *not reached* within
``max_steps``. The whole curve is kept. The user's model is never modified.

``AIN = relearn_steps(Mu) / relearn_steps(Mr)`` for a retrained model Mr, same target and
optimiser: near 1 is ideal; much below 1 means the information is still there.

:func:`degree_of_removal` puts it together for one intervention at one level, beside a
random baseline of the same size: the strongest relearning attack (a learning-rate grid),
ZRF against a random twin, and, with a model retrained without the forget data, AIN and
completeness. It returns a :class:`DegreeOfRemoval`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import plotly.graph_objects as go
import torch
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import Hooks, check_positive_int, model_device, renamed_keywords
from tl_unlearn.core.results import OTHER_COLOURS, Result
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.metrics.distances import completeness, zrf_scores
from tl_unlearn.metrics.evaluation import check_data, evaluate

__all__ = [
    "AttackedIntervention",
    "DegreeOfRemoval",
    "RelearnResult",
    "anamnesis_index",
    "degree_of_removal",
    "relearn",
    "relearn_attack",
    "relearn_figure",
]


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
        adapter_rank: 0 when every weight of a copy was fine-tuned; else the rank of the
            adapters trained beside each MLP.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import relearn
        >>> r = relearn(m, d["forget"], d["forget"].head(2), zero_ablation(m, heads=[(1, 0)]),
        ...             max_steps=1)
        >>> type(r).from_dict(r.to_dict()).steps == r.steps
        True
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
    adapter_rank: int = 0
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
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[c[1] for c in self.curve],
                mode="lines+markers",
                name=f"{self.label} forget top-1",
            )
        )
        fig.add_hline(y=self.target, line_dash="dash", annotation_text="target")
        return _relearn_layout(fig, f"Relearning: {self.label} ({self.describe()})")


def _relearn_layout(fig: go.Figure, title: str) -> go.Figure:
    """The axes every relearning figure shares: forget top-1 against fine-tuning steps."""
    fig.update_layout(
        title=title,
        xaxis_title="fine-tuning step",
        yaxis_title="forget top-1",
        template="plotly_white",
    )
    return fig


class _Adapters(torch.nn.Module):
    """Rank-``r`` linear adapters beside every block's MLP (its attention in an attention-only
    model): ``out += normalised_in @ down @ up``, ``up`` starting at zero so that the model
    starts unchanged. :meth:`hooks` wraps an intervention's hooks so that the adapter reads
    the input the MLP sees *after* the intervention and adds to the output *before* the
    intervention's hooks on it (an ablated output stays ablated)."""

    def __init__(self, model: Any, rank: int, seed: int) -> None:
        super().__init__()
        cfg = model.cfg
        part, ln = ("attn", "ln1") if getattr(cfg, "attn_only", False) else ("mlp", "ln2")
        self.names = []
        for layer in range(cfg.n_layers):
            read = get_act_name("normalized", layer, ln)
            if read not in model.hook_dict:  # no normalisation: read the residual stream
                read = get_act_name("resid_pre" if part == "attn" else "resid_mid", layer)
            write = get_act_name(f"{part}_out", layer)
            missing = [n for n in (read, write) if n not in model.hook_dict]
            if missing:
                raise ValueError(
                    f"adapter_rank needs the hook points {missing}, which this "
                    f"model does not have; use adapter_rank=0 (full fine-tune)."
                )
            self.names.append((read, write))
        gen = torch.Generator().manual_seed(seed)
        d, dtype, device = cfg.d_model, cfg.dtype, model_device(model)
        self.down = torch.nn.ParameterList(
            torch.nn.Parameter(
                (torch.randn(d, rank, generator=gen) / math.sqrt(d)).to(device=device, dtype=dtype)
            )
            for _ in self.names
        )
        self.up = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(rank, d, device=device, dtype=dtype)) for _ in self.names
        )
        # a residual stream read without the model's normalisation is normalised here
        self.raw = ["normalized" not in read for read, _ in self.names]
        self._inputs: dict[int, torch.Tensor] = {}

    def hooks(self, intervention: Hooks) -> list[tuple[str, Any]]:
        def read(layer: int) -> Any:
            def hook(act: torch.Tensor, hook: Any) -> None:
                self._inputs[layer] = act

            return hook

        def write(layer: int) -> Any:
            def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
                x = self._inputs.pop(layer)
                if self.raw[layer]:
                    x = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
                return act + x @ self.down[layer] @ self.up[layer]

            return hook

        return (
            [(w, write(i)) for i, (_, w) in enumerate(self.names)]
            + list(intervention)
            + [(r, read(i)) for i, (r, _) in enumerate(self.names)]
        )


@contextmanager
def _recomputed_blocks(model: Any) -> Iterator[None]:
    """Inside the block, each transformer block of ``model`` keeps no activations for the
    backward pass: :func:`torch.utils.checkpoint.checkpoint` runs it again there (its hooks
    too), so a backward pass holds the graph of one block at a time. Restored after."""
    from torch.utils.checkpoint import checkpoint

    blocks = list(model.blocks)
    for block in blocks:

        def forward(*args: Any, _inner: Any = block.forward, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return _inner(*args, **kwargs)
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # the instance attribute: the class's forward again


def _check_recomputable(hooks: Hooks) -> None:
    """Recomputing a block calls its hooks again: a hook that draws at random per call (resample
    ablation) would give the backward pass another forward pass than the one the loss saw."""

    def kinds(info: dict[str, Any]) -> Iterator[Any]:
        yield info.get("kind")
        for part in info.get("parts", []):
            yield from kinds(part)

    if "resample" in kinds(getattr(hooks, "info", {})):
        raise ValueError(
            f"recompute=True calls every hook again in the backward pass, and "
            f"{hooks.name!r} (resample ablation) draws new donors on every call; "
            f"use recompute=False."
        )


@contextmanager
def _frozen(model: Any) -> Iterator[None]:
    """The model's parameters without gradients inside the block (restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


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
    adapter_rank: int = 0,
    micro_batch_size: int | None = None,
    recompute: bool = False,
    label: str = "",
) -> RelearnResult:
    """Fine-tune a copy of the model (or adapters beside it) on ``forget_fit`` with ``hooks``
    kept in place.

    Args:
        model: The (original) model; it is copied (or, with adapters, its weights are frozen
            and restored), never changed.
        forget_fit: Data to fine-tune on (its scored positions: every next token of a text,
            the answers of a task with a target mask).
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
        seed: Seed of the batch order (and of the adapters' initialisation).
        adapter_rank: 0 (default): fine-tune every weight of a copy of the model (memory:
            the copy, its gradients and AdamW state, about 4x the weights). ``r > 0``: train
            rank-``r`` adapters beside every MLP instead, on the model itself with its weights
            frozen (restored after): no copy, far less memory, a weaker attack.
        micro_batch_size: Sequences per forward/backward pass; a step accumulates the
            gradients of ``batch_size`` sequences (the same step, less activation memory).
            Default: the whole batch at once.
        recompute: Keep no block's activations for the backward pass; recompute each block
            there instead (:func:`torch.utils.checkpoint.checkpoint`): the same gradients,
            activation memory of one block instead of all, about one more forward pass of
            time. The hooks are called again, so they must give the same output twice (every
            tl_unlearn intervention but resample ablation does; that one is refused).

    Examples:
        >>> from tl_unlearn.metrics import relearn
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> d = make_task().tokenize(model.tokenizer, "eval", seq_len=32, max_tokens=300)
        >>> r = relearn(model, d["forget"], d["forget"], max_steps=2, eval_every=1, alpha=0.0)
        >>> r.curve[0][0], r.reached
        (0, True)
        >>> relearn(model, d["forget"], d["forget"], max_steps=2, adapter_rank=4).adapter_rank
        4
    """
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha < 1.0):
        raise ValueError(
            f"alpha must be in [0, 1) (the target is (1 - alpha) x the original "
            f"top-1), got {alpha!r}."
        )
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    check_positive_int(max_steps, "max_steps")
    check_positive_int(eval_every, "eval_every")
    if not (
        isinstance(adapter_rank, int) and not isinstance(adapter_rank, bool) and adapter_rank >= 0
    ):
        raise ValueError(
            f"adapter_rank must be an integer >= 0 (0: full fine-tune), got {adapter_rank!r}."
        )
    micro = batch_size if micro_batch_size is None else micro_batch_size
    check_positive_int(micro, "micro_batch_size")
    check_data(model, {"forget_fit": forget_fit, "forget_eval": forget_eval}, batch_size)
    if recompute:
        _check_recomputable(hooks)
    hooks = list(hooks)
    if original_top1 is None:
        original_top1 = evaluate(model, forget_eval, progress=False, skip_common=0)[
            forget_eval.name
        ].accuracy[1]
    if recover is not None and not (isinstance(recover, (int, float)) and 0.0 < recover <= 1.0):
        raise ValueError(
            f"recover must be in (0, 1] (the share of the forget drop to win "
            f"back), got {recover!r}."
        )
    fixed_target = target
    target = (1.0 - alpha) * original_top1 if fixed_target is None else float(fixed_target)
    if adapter_rank:
        adapters = _Adapters(model, adapter_rank, seed)
        student, training, frozen = model, model.training, _frozen(model)
        params = list(adapters.parameters())
        held = adapters.hooks(hooks)
    else:
        student, training, frozen = copy.deepcopy(model), True, nullcontext()
        student.train()
        params = [p for p in student.parameters() if p.requires_grad]
        held = hooks
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    device = model_device(student)
    curve: list[tuple[int, float, float, float]] = []
    t0 = time.perf_counter()

    def measure(step: int) -> bool:
        # hooks are already on the student (outer context): evaluate without adding them again
        student.eval()
        m = evaluate(student, forget_eval, progress=False, skip_common=0)[forget_eval.name]
        student.train(training)
        curve.append((step, m.accuracy[1], m.loss, time.perf_counter() - t0))
        return m.accuracy[1] >= target

    steps = seconds = None
    recomputed = _recomputed_blocks(student) if recompute else nullcontext()
    with frozen, recomputed, student.hooks(fwd_hooks=held):
        reached = measure(0)
        if recover is not None and fixed_target is None:
            start = curve[0][1]
            target = start + recover * (original_top1 - start)
            reached = start >= target
        if reached:
            steps, seconds = 0, 0.0
        else:
            # every next token of a text; a task's answers, not its prompts
            scored_all = forget_fit.scored_positions()
            for step in range(1, max_steps + 1):
                idx = torch.randint(len(forget_fit), (batch_size,), generator=gen)
                tokens = forget_fit.tokens[idx].to(device)
                scored = scored_all[idx].to(device)
                opt.zero_grad(set_to_none=True)
                for s in range(0, batch_size, micro):  # gradients accumulate: the batch mean
                    per_tok = student(
                        tokens[s : s + micro], return_type="loss", loss_per_token=True
                    )
                    (per_tok[scored[s : s + micro]].sum() / scored.sum()).backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                if step % eval_every == 0 or step == max_steps:
                    if measure(step):
                        steps, seconds = step, curve[-1][3]
                        break
    return RelearnResult(
        label,
        target,
        original_top1,
        steps,
        seconds,
        curve,
        lr,
        max_steps,
        batch_size * forget_fit.tokens.shape[1],
        time.perf_counter() - t0,
        adapter_rank,
    )


def relearn_attack(
    model: Any,
    forget_fit: TokenDataset,
    forget_eval: TokenDataset,
    hooks: Hooks = (),
    *,
    lrs: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3),
    **kwargs: Any,
) -> tuple[RelearnResult, list[RelearnResult]]:
    """Relearning attack: sweep learning rates and return the strongest (fewest steps) and all.

    Args:
        model: The original model.
        forget_fit: Data the attack fine-tunes on.
        forget_eval: Data forget top-1 is measured on.
        hooks: The intervention, held during the attack.
        lrs: The learning-rate grid.
        **kwargs: Passed to :func:`relearn` (``max_steps``, ``batch_size``, ``adapter_rank``...).

    Returns:
        ``(strongest, every run)``.

    Examples:
        >>> from tl_unlearn.metrics import relearn_attack
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> best, runs = relearn_attack(m, d["forget"], d["forget"].head(2),
        ...                             zero_ablation(m, heads=[(1, 0)]), lrs=[1e-3], max_steps=1)
        >>> len(runs)
        1
    """
    if "original_top1" not in kwargs:
        kwargs["original_top1"] = evaluate(model, forget_eval, progress=False, skip_common=0)[
            forget_eval.name
        ].accuracy[1]
    results = [relearn(model, forget_fit, forget_eval, hooks, lr=lr, **kwargs) for lr in lrs]
    best = min(results, key=lambda r: (not r.reached, r.steps or 0, -r.curve[-1][1]))
    return best, results


def anamnesis_index(unlearned: RelearnResult, retrained: RelearnResult) -> float | None:
    """``AIN = steps(Mu) / steps(Mr)``; None when either did not reach the target.

    Both results must use the same target (same original model and alpha).

    Args:
        unlearned: The relearning run of the intervened model.
        retrained: The relearning run of the retrained model (same target and optimiser).

    Returns:
        The ratio, or None.

    Examples:
        >>> from tl_unlearn.metrics import RelearnResult
        >>> from tl_unlearn.metrics import anamnesis_index
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


@dataclass
class AttackedIntervention:
    """One intervention under the relearning attack (a part of :class:`DegreeOfRemoval`).

    Attributes:
        label: The intervention's name.
        best: The strongest run (fewest steps to the target) of the learning-rate grid.
        runs: Every run of the grid.
        zrf: ZRF on the check data: ``1 - JS(intervened, random twin) / ln 2``.
        retrained: The retrained model relearning to ``best``'s target with its learning rate
            (None without a retrained model).
        ain: ``best.steps / retrained.steps`` (None when either did not reach the target).
        completeness: Top-10 Jaccard with the retrained model on the check data.
    """

    label: str
    best: RelearnResult
    runs: list[RelearnResult]
    zrf: float
    retrained: RelearnResult | None = None
    ain: float | None = None
    completeness: float | None = None

    def row(self, prefix: str = "") -> dict[str, Any]:
        """Scorecard columns (``relearn_steps``, ``relearn_tokens``, ``relearn_lr``, ``zrf``
        and, with a retrained model, ``ain`` and ``completeness``), names ``prefix``-ed."""
        row = {
            "relearn_steps": self.best.steps,
            "relearn_tokens": self.best.tokens,
            "relearn_lr": self.best.lr,
            "zrf": self.zrf,
        }
        if self.retrained is not None:
            row.update(ain=self.ain, completeness=self.completeness)
        return {prefix + k: v for k, v in row.items()}


@dataclass
class DegreeOfRemoval(Result):
    """How removed a capability is under one intervention, beside a random baseline.

    Attributes:
        label: The method (or intervention) it is about.
        level: The level the intervention was taken at.
        method: The intervention under the attack.
        baseline: A random intervention of the same kind and size under the same attack
            (None when not given).
        max_steps: The attack's step budget.
        seconds: Wall time of all of it.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import degree_of_removal
        >>> r = degree_of_removal(m, d["forget"], d["forget"].head(2), zero_ablation(m, heads=[(1, 0)]),
        ...                       lrs=[1e-3], max_steps=1)
        >>> type(r).from_dict(r.to_dict()).label == r.label
        True
    """

    label: str
    level: float
    method: AttackedIntervention
    baseline: AttackedIntervention | None = None
    max_steps: int = 0
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("relearn",)

    def row(self) -> dict[str, Any]:
        """The scorecard's degree-of-removal columns (see :meth:`AttackedIntervention.row`;
        the baseline's start with ``baseline_``) and ``relearn_budget``."""
        row = self.method.row()
        if self.baseline is not None:
            row.update(self.baseline.row("baseline_"))
        return {**row, "relearn_budget": self.max_steps}

    def figure(self, kind: str = "relearn") -> go.Figure:
        """``"relearn"``: forget top-1 against fine-tuning steps of the strongest attack on the
        intervention (solid) and on its random baseline (dotted)."""
        self._check_kind(kind)
        return relearn_figure([self])


def relearn_figure(removals: Sequence[DegreeOfRemoval]) -> go.Figure:
    """Forget top-1 against fine-tuning steps of the strongest relearning attack, one colour
    per method (solid) and its random baseline (dotted)."""
    fig = go.Figure()
    for i, removal in enumerate(removals):
        for attacked, dash in ((removal.method, "solid"), (removal.baseline, "dot")):
            if attacked is None:
                continue
            best = attacked.best
            role = "" if attacked is removal.method else "random baseline "
            fig.add_trace(
                go.Scatter(
                    x=[c[0] for c in best.curve],
                    y=[c[1] for c in best.curve],
                    mode="lines+markers",
                    name=f"{removal.label} {role}(lr {best.lr:g})",
                    line={"color": OTHER_COLOURS[i % len(OTHER_COLOURS)], "dash": dash},
                )
            )
    return _relearn_layout(
        fig,
        "Relearning attack: forget top-1 while fine-tuning on forget "
        "data (intervention held); target: half of the drop won back",
    )


@renamed_keywords(intervention="hooks")
def degree_of_removal(
    model: Any,
    forget_fit: TokenDataset,
    forget_check: TokenDataset,
    hooks: Hooks,
    *,
    baseline: Hooks | None = None,
    level: float = float("nan"),
    lrs: Sequence[float] = (1e-4, 3e-4, 1e-3),
    max_steps: int = 100,
    recover: float = 0.5,
    batch_size: int = 8,
    seed: int = 0,
    random_model: Any | None = None,
    retrained_model: Any | None = None,
    adapter_rank: int = 0,
    micro_batch_size: int | None = None,
    recompute: bool = False,
    label: str = "",
) -> DegreeOfRemoval:
    """Relearning attack, ZRF (and with ``retrained_model`` AIN and completeness) of an
    intervention, and of a random ``baseline`` of it under the same attack.

    Each attack fine-tunes a copy of ``model`` on ``forget_fit`` with the intervention held,
    at every learning rate of ``lrs``, until ``recover`` of the forget drop on
    ``forget_check`` is won back (at most ``max_steps`` steps; forget top-1 is measured four
    times over the budget); the fewest steps is the attack's strength. The model is never
    changed.

    Args:
        model: The original model.
        forget_fit: Data the attack fine-tunes on.
        forget_check: Data the forget top-1 (and ZRF, completeness) is measured on.
        hooks: The intervention (an :class:`Intervention` or hook list), e.g. a method at
            its validated level (``intervention=`` until the next release).
        baseline: A random intervention of the same kind and size (optional).
        level: The level ``hooks`` is at (recorded).
        lrs: The attack's learning-rate grid.
        max_steps: Step budget of every run.
        recover: Share of the forget drop to win back.
        batch_size: Sequences per fine-tuning step.
        seed: Seed of the batch order (and of the random twin).
        random_model: The randomly initialised twin ZRF compares with (default: a
            :func:`~tl_unlearn.metrics.distances.random_twin` of ``model`` in bfloat16, made
            for ZRF and let go before the attacks; see
            :func:`~tl_unlearn.metrics.distances.zrf_scores`).
        retrained_model: A model trained without the forget data (optional).
        adapter_rank: 0: every attack fine-tunes every weight of a copy; ``r``: it trains
            rank-``r`` adapters beside every MLP instead (see :func:`relearn`).
        micro_batch_size: Sequences per forward/backward pass (see :func:`relearn`).
        recompute: Recompute each block in the backward pass (see :func:`relearn`).
        label: What it is about (default: the intervention's name).

    Examples:
        >>> from tl_unlearn.metrics import degree_of_removal
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> from tl_unlearn.interventions import zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=300)
        >>> r = degree_of_removal(m, d["forget"], d["forget"].head(4),
        ...                       zero_ablation(m, heads=[(1, 0)]), lrs=[1e-3], max_steps=2)
        >>> sorted(r.row())
        ['relearn_budget', 'relearn_lr', 'relearn_steps', 'relearn_tokens', 'zrf']
    """
    check_positive_int(max_steps, "max_steps")
    scored = [h for h in (hooks, baseline) if h is not None]
    if recompute:
        for h in scored:
            _check_recomputable(h)
    t0 = time.perf_counter()
    tuning = {
        "max_steps": max_steps,
        "eval_every": max(1, max_steps // 4),
        "batch_size": batch_size,
        "seed": seed,
        "adapter_rank": adapter_rank,
        "micro_batch_size": micro_batch_size,
        "recompute": recompute,
    }
    # ZRF first, one run of the random twin for both: a twin made there is let go before the
    # attacks, which need memory of their own
    zrf = dict(
        zip(
            map(id, scored),
            zrf_scores(
                model,
                forget_check,
                scored,
                random_model=random_model,
                seed=seed,
                batch_size=batch_size,
            ),
        )
    )

    def attack(hooks: Hooks) -> AttackedIntervention:
        name = getattr(hooks, "name", "") or "intervention"
        best, every = relearn_attack(
            model,
            forget_fit,
            forget_check,
            list(hooks),
            lrs=lrs,
            recover=recover,
            label=name,
            **tuning,
        )
        out = AttackedIntervention(name, best, every, zrf[id(hooks)])
        if retrained_model is not None:
            # the retrained model relearns to the same target with the same optimiser
            out.retrained = relearn(
                retrained_model,
                forget_fit,
                forget_check,
                (),
                target=best.target,
                lr=best.lr,
                label="retrained model",
                **tuning,
            )
            out.ain = anamnesis_index(best, out.retrained)
            out.completeness = completeness(
                model,
                forget_check,
                list(hooks),
                retrained_model=retrained_model,
                batch_size=batch_size,
            )
        return out

    method = attack(hooks)
    base = attack(baseline) if baseline is not None else None
    return DegreeOfRemoval(
        label or method.label, float(level), method, base, max_steps, time.perf_counter() - t0
    )
