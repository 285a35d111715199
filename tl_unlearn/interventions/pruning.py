"""Selective pruning: rank units by forget-vs-retain activation statistics and prune the top.

Units are MLP neurons (``blocks.{l}.mlp.hook_post``) and/or attention head dimensions
(``blocks.{l}.attn.hook_z``, one unit per ``(head, d_head)`` entry). Statistics are streamed
over the real tokens of the forget and retain data, batch by batch, in float64 with the
parallel (Chan et al.) form of Welford's update: count, mean, variance, mean ``|x|``, mean
``sqrt|x|`` and the share of positive activations. No per-token Python loops.

Scores (forget over retain, ``eps`` guards division; see ``shared/specs/metrics.md``):

=========== =============================================================
``abs``     ``mean|x|_F / (mean|x|_R + eps)``
``freq``    ``pos_F / (pos_R + eps)``
``rms``     ``rms_F / (rms_R + eps)`` with ``rms = sqrt(mean^2 + var)``
``std``     ``std_F / (std_R + eps)``
``sqrt``    ``mean sqrt|x|_F / (mean sqrt|x|_R + eps)``
``mean_diff`` ``|mean_F - mean_R|``
``random``  uniform random (seeded): the baseline
=========== =============================================================

The top ``fraction`` of all units across layers (globally) is pruned by zeroing or by
replacing with the retain mean. In iterative mode statistics are re-collected after each step
with the already-pruned units in place (they then read 0 or their mean and are not re-picked).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.data import TokenDataset
from tl_unlearn.interventions.ablation import replace_hook
from tl_unlearn.interventions.base import (
    HookFn,
    Intervention,
    check_fraction,
    check_positive_int,
    hook_shapes,
    stream_activations,
)

__all__ = ["SCORES", "PruningScores", "UnitStats", "collect_statistics", "pruning_scores",
           "selective_pruning"]

Score = Literal["abs", "freq", "rms", "std", "sqrt", "mean_diff", "random"]
SCORES: tuple[str, ...] = ("abs", "freq", "rms", "std", "sqrt", "mean_diff", "random")
Components = Literal["mlp", "attn", "both"]


@dataclass
class UnitStats:
    """Streaming per-unit statistics (float64), merged batch by batch.

    Example:
        >>> s = UnitStats.empty(2)
        >>> x = torch.randn(1000, 2, dtype=torch.float64)
        >>> s.update(x[:300]); s.update(x[300:])
        >>> torch.allclose(s.var, x.var(0, unbiased=False))
        True
    """

    n: float
    mean: Float[Tensor, " units"]
    m2: Float[Tensor, " units"]
    mean_abs: Float[Tensor, " units"]
    mean_sqrt: Float[Tensor, " units"]
    pos_freq: Float[Tensor, " units"]

    @classmethod
    def empty(cls, units: int) -> UnitStats:
        z = torch.zeros(units, dtype=torch.float64)
        return cls(0.0, z.clone(), z.clone(), z.clone(), z.clone(), z.clone())

    def update(self, x: Float[Tensor, "n units"]) -> None:
        """Merge a batch of observations (rows) into the running statistics.

        Batch sums are accumulated in float64 straight from the input dtype (no float64 copy
        of the batch), then merged with Chan et al.'s parallel update in float64.
        """
        nb = x.shape[0]
        if nb == 0:
            return
        f64 = torch.float64
        n = self.n + nb
        mb = x.sum(0, dtype=f64) / nb
        centered = x - mb.to(x.dtype)
        # two-pass centred sum of squares, corrected for the rounding of the centre
        m2b = centered.square().sum(0, dtype=f64) - centered.sum(0, dtype=f64) ** 2 / nb
        delta = mb - self.mean
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.mean = self.mean + delta * nb / n
        w = nb / n
        xa = x.abs()
        self.mean_abs = self.mean_abs + w * (xa.sum(0, dtype=f64) / nb - self.mean_abs)
        self.mean_sqrt = self.mean_sqrt + w * (xa.sqrt_().sum(0, dtype=f64) / nb - self.mean_sqrt)
        self.pos_freq = self.pos_freq + w * ((x > 0).sum(0, dtype=f64) / nb - self.pos_freq)
        self.n = n

    @property
    def var(self) -> Tensor:
        """Population variance."""
        return self.m2 / max(self.n, 1.0)

    @property
    def std(self) -> Tensor:
        return self.var.sqrt()

    @property
    def rms(self) -> Tensor:
        return (self.mean**2 + self.var).sqrt()


def _hooks_for(model: Any, components: Components) -> list[str]:
    if components not in ("mlp", "attn", "both"):
        raise ValueError(f"components must be 'mlp', 'attn' or 'both', got {components!r}")
    names = []
    for layer in range(model.cfg.n_layers):
        if components in ("attn", "both"):
            names.append(get_act_name("z", layer))
        if components in ("mlp", "both"):
            names.append(get_act_name("post", layer))
    return names


@torch.inference_mode()
def collect_statistics(
    model: Any,
    data: TokenDataset | Tensor,
    hook_names: Sequence[str],
    *,
    batch_size: int = 8,
    fwd_hooks: Sequence[tuple[str, HookFn]] = (),
) -> dict[str, UnitStats]:
    """Per-unit statistics at each hook over the real tokens of ``data``.

    ``fwd_hooks`` (e.g. pruning already applied) run before the statistics are read.
    """
    shapes = hook_shapes(model, hook_names)
    stats = {n: UnitStats.empty(int(torch.tensor(shapes[n]).prod())) for n in hook_names}

    def read(name: str, acts: Tensor, mask: Tensor) -> None:
        x = acts[mask]
        stats[name].update(x.reshape(x.shape[0], -1).cpu())

    n_batches = stream_activations(model, data, hook_names, read, batch_size=batch_size,
                                   fwd_hooks=fwd_hooks)
    if n_batches == 0 or not any(s.n for s in stats.values()):
        raise ValueError("collect_statistics() got an empty dataset.")
    return stats


def _score(f: UnitStats, r: UnitStats, score: Score, eps: float, gen: torch.Generator) -> Tensor:
    if score == "abs":
        return f.mean_abs / (r.mean_abs + eps)
    if score == "freq":
        return f.pos_freq / (r.pos_freq + eps)
    if score == "rms":
        return f.rms / (r.rms + eps)
    if score == "std":
        return f.std / (r.std + eps)
    if score == "sqrt":
        return f.mean_sqrt / (r.mean_sqrt + eps)
    if score == "mean_diff":
        return (f.mean - r.mean).abs()
    if score == "random":
        return torch.rand(f.mean.shape, generator=gen, dtype=torch.float64)
    raise ValueError(f"Unknown score {score!r}; choose one of {SCORES}.")


@dataclass
class PruningScores:
    """Forget/retain statistics and importance scores of every unit, by hook.

    Build with :func:`pruning_scores`; turn into an intervention with :meth:`intervention`.
    """

    score: str
    forget_stats: dict[str, UnitStats]
    retain_stats: dict[str, UnitStats]
    scores: dict[str, Float[Tensor, " units"]]
    shapes: dict[str, tuple[int, ...]]
    fit_seconds: float = 0.0

    def rescored(self, score: Score, *, eps: float = 1e-6, seed: int = 0) -> PruningScores:
        """The same statistics under another score (no new forward pass).

        Example:
            >>> s = UnitStats.empty(3); s.update(torch.rand(10, 3))
            >>> ps = PruningScores("abs", {"h": s}, {"h": s}, {"h": torch.ones(3)}, {"h": (3,)})
            >>> ps.rescored("random").score
            'random'
        """
        if score not in SCORES:
            raise ValueError(f"Unknown score {score!r}; choose one of {SCORES}.")
        gen = torch.Generator().manual_seed(seed)
        scores = {n: _score(self.forget_stats[n], self.retain_stats[n], score, eps, gen)
                  for n in self.scores}
        return PruningScores(score, self.forget_stats, self.retain_stats, scores, self.shapes,
                             self.fit_seconds)

    @property
    def n_units(self) -> int:
        return sum(s.numel() for s in self.scores.values())

    def select(self, fraction: float | None = None, *, count: int | None = None,
               exclude: Mapping[str, Bool[Tensor, " units"]] | None = None,
               ) -> dict[str, Bool[Tensor, " units"]]:
        """Global top units across all hooks: a ``fraction`` of all units, or ``count`` units.

        Units marked in ``exclude`` (e.g. those already pruned) are chosen last. Ties are
        broken by a stable order (hook order, then unit index).
        """
        if (fraction is None) == (count is None):
            raise ValueError("Pass exactly one of fraction= or count=.")
        if fraction is not None:
            check_fraction(fraction)
            count = int(round(fraction * self.n_units))
        names = list(self.scores)
        exclude = exclude or {}
        flat = torch.cat([self.scores[n].masked_fill(exclude[n], float("-inf"))
                          if n in exclude else self.scores[n] for n in names])
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        if count:
            order = torch.sort(flat, descending=True, stable=True).indices[:count]
            chosen[order] = True
        out, start = {}, 0
        for n in names:
            k = self.scores[n].numel()
            out[n] = chosen[start : start + k]
            start += k
        return out

    def intervention(
        self, fraction: float | None = None, *, count: int | None = None,
        mode: Literal["zero", "mean"] = "zero", name: str | None = None,
        units: Mapping[str, Bool[Tensor, " units"]] | None = None,
    ) -> Intervention:
        """Prune the selected units through hooks (``"zero"`` or the retain ``"mean"``).

        The units are the top ``fraction`` / ``count`` by score, or exactly ``units`` (a mask
        per hook, as returned by :meth:`select`).
        """
        if mode not in ("zero", "mean"):
            raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
        if units is not None:
            if fraction is not None or count is not None:
                raise ValueError("Pass units= or fraction=/count=, not both.")
            selected = {n: units[n].bool() if n in units else torch.zeros_like(s, dtype=torch.bool)
                        for n, s in self.scores.items()}
        else:
            selected = self.select(fraction, count=count)
        hooks = []
        for n, sel in selected.items():
            if not sel.any():
                continue
            site = sel.reshape(self.shapes[n])
            if mode == "zero":
                value = torch.zeros(())
            else:
                value = self.retain_stats[n].mean.float().reshape(self.shapes[n])
            hooks.append((n, replace_hook(site, "all", lambda a, v=value: v.to(a.device))))
        total = sum(int(s.sum()) for s in selected.values())
        label = name or f"prune-{self.score}({total} units, {mode})"
        return Intervention(label, hooks, {
            "kind": "selective_pruning", "score": self.score, "mode": mode,
            "n_pruned": total, "fraction": total / max(self.n_units, 1),
            "fit_seconds": self.fit_seconds,
            "pruned": {n: torch.nonzero(s).flatten().tolist() for n, s in selected.items()
                       if s.any()},
        })


def pruning_scores(
    model: Any,
    forget: TokenDataset | Tensor,
    retain: TokenDataset | Tensor,
    *,
    score: Score = "abs",
    components: Components = "mlp",
    batch_size: int = 8,
    eps: float = 1e-6,
    seed: int = 0,
    fwd_hooks: Sequence[tuple[str, HookFn]] = (),
) -> PruningScores:
    """Collect forget/retain statistics and score every unit.

    Args:
        model: The model.
        forget: Forget data (fit split), tokens or a :class:`TokenDataset`.
        retain: Retain data (fit split).
        score: One of ``SCORES``.
        components: ``"mlp"`` neurons, ``"attn"`` head dimensions, or ``"both"``.
        batch_size: Sequences per forward pass.
        eps: Guard for the ratios.
        seed: Seed of the ``"random"`` score.
        fwd_hooks: Hooks in place while collecting (used by iterative pruning).

    Example:
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, "fit", seq_len=64, max_tokens=2000)
        >>> ps = pruning_scores(model, data["forget"], data["retain"])
        >>> ps.n_units == 2 * 512
        True
    """
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}; choose one of {SCORES}.")
    t0 = time.perf_counter()
    names = _hooks_for(model, components)
    fs = collect_statistics(model, forget, names, batch_size=batch_size, fwd_hooks=fwd_hooks)
    rs = collect_statistics(model, retain, names, batch_size=batch_size, fwd_hooks=fwd_hooks)
    gen = torch.Generator().manual_seed(seed)
    scores = {n: _score(fs[n], rs[n], score, eps, gen) for n in names}
    return PruningScores(score, fs, rs, scores, hook_shapes(model, names),
                         time.perf_counter() - t0)


def selective_pruning(
    model: Any,
    forget: TokenDataset | Tensor,
    retain: TokenDataset | Tensor,
    fraction: float,
    *,
    score: Score = "abs",
    mode: Literal["zero", "mean"] = "zero",
    components: Components = "mlp",
    steps: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    name: str | None = None,
    on_step: Callable[[int, Intervention], None] | None = None,
) -> Intervention:
    """Prune the globally top-scoring ``fraction`` of units, in one step or iteratively.

    With ``steps > 1``, ``fraction / steps`` of all units is pruned per step, and statistics
    are re-collected with the units pruned so far in place. ``on_step(step, intervention)``
    is called after each step with the units pruned so far (e.g. to evaluate every step, as
    taker's ``run_pruning`` does).

    Example:
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, "fit", seq_len=64, max_tokens=2000)
        >>> iv = selective_pruning(model, data["forget"], data["retain"], 0.05, steps=2)
        >>> iv.info["n_pruned"]
        51
    """
    check_fraction(fraction)
    check_positive_int(steps, "steps")
    t0 = time.perf_counter()
    current = Intervention("none")
    pruned: dict[str, Tensor] = {}
    ps = None
    total = None
    for step in range(1, steps + 1):
        ps = pruning_scores(model, forget, retain, score=score, components=components,
                            batch_size=batch_size, seed=seed + step - 1,
                            fwd_hooks=current.fwd_hooks)
        total = int(round(fraction * ps.n_units)) if total is None else total
        n_new = total * step // steps - sum(int(p.sum()) for p in pruned.values())
        new = ps.select(count=n_new, exclude=pruned)
        pruned = {n: new[n] | pruned.get(n, torch.zeros_like(new[n])) for n in new}
        current = ps.intervention(units=pruned, mode=mode)
        if on_step is not None:
            on_step(step, current)
    assert ps is not None
    current.name = name or f"prune-{score}({fraction:.1%}, {mode}" + (
        f", {steps} steps)" if steps > 1 else ")")
    current.info.update({"steps": steps, "fit_seconds": time.perf_counter() - t0})
    return current
