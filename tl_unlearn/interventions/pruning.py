"""Selective pruning: rank units by forget-vs-retain activation statistics and prune the top.

Units are MLP neurons (``blocks.{l}.mlp.hook_post``) and/or attention head dimensions
(``blocks.{l}.attn.hook_z``, one unit per ``(head, d_head)`` entry). Statistics are streamed
over the real tokens of the forget and retain data, batch by batch, in float64 with the
parallel (Chan et al.) form of Welford's update: count, mean, variance, mean ``|x|``, mean
``sqrt|x|`` and the share of positive activations. No per-token Python loops.

Scores (forget over retain, ``eps`` guards division; see ``docs/metrics.md``, "Selective pruning"):

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

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import HookFn, check_fraction, check_positive_int
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.hooks import Intervention, hook_shapes, stream_activations
from tl_unlearn.interventions.ablation import replace_hook

__all__ = [
    "SCORES",
    "SCORE_STATISTICS",
    "STATISTICS",
    "PruningScores",
    "UnitStats",
    "collect_statistics",
    "pruning_scores",
    "selective_pruning",
]

Score = Literal["abs", "freq", "rms", "std", "sqrt", "mean_diff", "random"]
SCORES: tuple[str, ...] = ("abs", "freq", "rms", "std", "sqrt", "mean_diff", "random")
Components = Literal["mlp", "attn", "both"]


#: The statistics each score reads (``mode="mean"`` pruning also reads the retain ``mean``).
SCORE_STATISTICS: dict[str, tuple[str, ...]] = {
    "abs": ("mean_abs",),
    "freq": ("pos_freq",),
    "rms": ("mean", "m2"),
    "std": ("mean", "m2"),
    "sqrt": ("mean_sqrt",),
    "mean_diff": ("mean",),
    "random": ("mean",),
}
STATISTICS: tuple[str, ...] = ("mean", "m2", "mean_abs", "mean_sqrt", "pos_freq")


@dataclass
class UnitStats:
    """Streaming per-unit statistics (float64), merged batch by batch.

    ``empty(units, statistics)`` tracks only the named statistics (default: all); the others
    stay ``None``, and a score that needs one of them says so.

    Examples:
        >>> s = UnitStats.empty(2)
        >>> x = torch.randn(1000, 2, dtype=torch.float64)
        >>> s.update(x[:300]); s.update(x[300:])
        >>> torch.allclose(s.var, x.var(0, unbiased=False))
        True
        >>> UnitStats.empty(2, ["mean_abs"]).mean is None
        True
    """

    n: float
    mean: Float[Tensor, " units"] | None
    m2: Float[Tensor, " units"] | None
    mean_abs: Float[Tensor, " units"] | None
    mean_sqrt: Float[Tensor, " units"] | None
    pos_freq: Float[Tensor, " units"] | None

    @classmethod
    def empty(cls, units: int, statistics: Sequence[str] = STATISTICS) -> UnitStats:
        unknown = set(statistics) - set(STATISTICS)
        if unknown:
            raise ValueError(f"Unknown statistics {sorted(unknown)}; choose from {STATISTICS}.")
        wanted = set(statistics) | ({"mean"} if "m2" in statistics else set())
        return cls(
            0.0,
            *(torch.zeros(units, dtype=torch.float64) if k in wanted else None for k in STATISTICS),
        )

    @property
    def tracked(self) -> tuple[str, ...]:
        """The statistics this object holds."""
        return tuple(k for k in STATISTICS if getattr(self, k) is not None)

    def update(self, x: Float[Tensor, "n units"]) -> None:
        """Merge a batch of observations (rows) into the running statistics.

        Batch sums are accumulated in float64 straight from the input dtype (no float64 copy
        of the batch), then merged with Chan et al.'s parallel update in float64. The running
        tensors are updated in place: new ones on every batch, interleaved with the batch's
        large temporaries, fragment the heap (glibc keeps the holes: +0.7 GB on SmolLM2).
        """
        nb = x.shape[0]
        if nb == 0:
            return
        f64 = torch.float64
        n = self.n + nb
        w = nb / n
        if self.mean is not None:
            mb = x.sum(0, dtype=f64) / nb
            delta = mb - self.mean
            if self.m2 is not None:
                centered = x - mb.to(x.dtype)
                # two-pass centred sum of squares, corrected for the rounding of the centre
                m2b = centered.square().sum(0, dtype=f64) - centered.sum(0, dtype=f64) ** 2 / nb
                del centered
                self.m2.add_(m2b).add_(delta**2 * (self.n * nb / n))
            self.mean.add_(delta, alpha=w)
        if self.mean_abs is not None or self.mean_sqrt is not None:
            xa = x.abs()
            if self.mean_abs is not None:
                self.mean_abs.add_(xa.sum(0, dtype=f64).div_(nb).sub_(self.mean_abs), alpha=w)
            if self.mean_sqrt is not None:
                self.mean_sqrt.add_(
                    xa.sqrt_().sum(0, dtype=f64).div_(nb).sub_(self.mean_sqrt), alpha=w
                )
            del xa
        if self.pos_freq is not None:
            self.pos_freq.add_((x > 0).sum(0, dtype=f64).div_(nb).sub_(self.pos_freq), alpha=w)
        self.n = n

    def require(self, statistics: Sequence[str], what: str) -> None:
        """Raise a clear error if ``what`` needs statistics this object did not track."""
        missing = [k for k in statistics if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f"{what} needs the statistics {missing}, which were not collected "
                f"(these hold {list(self.tracked)}); collect them with "
                "pruning_scores(), which tracks all of them."
            )

    @property
    def var(self) -> Tensor:
        """Population variance."""
        self.require(("m2",), "The variance")
        assert self.m2 is not None
        return self.m2 / max(self.n, 1.0)

    @property
    def std(self) -> Tensor:
        return self.var.sqrt()

    @property
    def rms(self) -> Tensor:
        assert self.mean is not None
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
    statistics: Sequence[str] = STATISTICS,
) -> dict[str, UnitStats]:
    """Per-unit statistics at each hook over the real tokens of ``data``.

    ``fwd_hooks`` (e.g. pruning already applied) run before the statistics are read.
    ``statistics``: which of :data:`STATISTICS` to track (default: all).
    """
    stats = _empty_stats(model, hook_names, statistics)

    def read(name: str, acts: Tensor, mask: Tensor) -> None:
        _read_units(stats[name], acts, mask)

    n_batches = stream_activations(
        model, data, hook_names, read, batch_size=batch_size, fwd_hooks=fwd_hooks
    )
    if n_batches == 0 or not any(s.n for s in stats.values()):
        raise ValueError("collect_statistics() got an empty dataset.")
    return stats


def _empty_stats(
    model: Any, hook_names: Sequence[str], statistics: Sequence[str]
) -> dict[str, UnitStats]:
    shapes = hook_shapes(model, hook_names)
    return {n: UnitStats.empty(int(torch.tensor(shapes[n]).prod()), statistics) for n in hook_names}


def _read_units(
    stats: UnitStats, acts: Float[Tensor, "batch pos ..."], mask: Bool[Tensor, "batch pos"]
) -> None:
    n, pos = mask.shape
    length = int(mask[0].sum())
    if (
        (n == 1 or length == pos) and bool(mask[:, :length].all()) and int(mask.sum()) == n * length
    ):  # whole prefixes of one row, or whole rows:
        x = acts[:, :length]  # a view (an indexed copy of a 512-token row takes ~1 ms)
    else:
        x = acts[mask]
    stats.update(x.reshape(-1, math.prod(acts.shape[2:])).cpu())


def _score(f: UnitStats, r: UnitStats, score: Score, eps: float, gen: torch.Generator) -> Tensor:
    # (the statistics a score reads were checked by its caller: SCORE_STATISTICS)
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
        assert f.mean is not None
        return torch.rand(f.mean.shape, generator=gen, dtype=torch.float64)
    raise ValueError(f"Unknown score {score!r}; choose one of {SCORES}.")


@dataclass
class PruningScores:
    """Forget/retain statistics and importance scores of every unit, by hook.

    Build with :func:`pruning_scores`; turn into an intervention with :meth:`intervention`.

    Attributes:
        score: The score's name (``"abs"``, ``"freq"``, ``"random"``...).
        forget_stats: Per hook, the units' statistics on the forget data.
        retain_stats: The same on the retain data.
        scores: Per hook, one score per unit (higher: more forget-specific).
        shapes: Per hook, the shape of a unit index (``(d_mlp,)``, ``(n_heads, d_head)``).
        fit_seconds: Time to collect the statistics.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, pruning_scores
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "fit", seq_len=32, max_tokens=200)
        >>> scores = pruning_scores(m, d["forget"], d["retain"])
        >>> iv = scores.intervention(0.01)
        >>> iv.info["n_pruned"] == round(0.01 * 2 * m.cfg.d_mlp)
        True
    """

    score: str
    forget_stats: dict[str, UnitStats]
    retain_stats: dict[str, UnitStats]
    scores: dict[str, Float[Tensor, " units"]]
    shapes: dict[str, tuple[int, ...]]
    fit_seconds: float = 0.0

    def rescored(self, score: Score, *, eps: float = 1e-6, seed: int = 0) -> PruningScores:
        """The same statistics under another score (no new forward pass).

        Examples:
            >>> s = UnitStats.empty(3); s.update(torch.rand(10, 3))
            >>> ps = PruningScores("abs", {"h": s}, {"h": s}, {"h": torch.ones(3)}, {"h": (3,)})
            >>> ps.rescored("random").score
            'random'
        """
        if score not in SCORES:
            raise ValueError(f"Unknown score {score!r}; choose one of {SCORES}.")
        gen = torch.Generator().manual_seed(seed)
        for stats in (self.forget_stats, self.retain_stats):
            for s in stats.values():
                s.require(SCORE_STATISTICS[score], f"The {score!r} score")
        scores = {
            n: _score(self.forget_stats[n], self.retain_stats[n], score, eps, gen)
            for n in self.scores
        }
        return PruningScores(
            score, self.forget_stats, self.retain_stats, scores, self.shapes, self.fit_seconds
        )

    @property
    def n_units(self) -> int:
        return sum(s.numel() for s in self.scores.values())

    def select(
        self,
        fraction: float | None = None,
        *,
        count: int | None = None,
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
        flat = torch.cat(
            [
                self.scores[n].masked_fill(exclude[n], float("-inf"))
                if n in exclude
                else self.scores[n]
                for n in names
            ]
        )
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
        self,
        fraction: float | None = None,
        *,
        count: int | None = None,
        mode: Literal["zero", "mean"] = "zero",
        name: str | None = None,
        units: Mapping[str, Bool[Tensor, " units"]] | None = None,
    ) -> Intervention:
        """Prune the selected units through hooks (``"zero"`` or the retain ``"mean"``).

        The units are the top ``fraction`` / ``count`` by score, or exactly ``units`` (a mask
        per hook, as returned by :meth:`select`).
        """
        if mode not in ("zero", "mean"):
            raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
        if mode == "mean":
            for s in self.retain_stats.values():
                s.require(("mean",), "mode='mean' pruning")
        if units is not None:
            if fraction is not None or count is not None:
                raise ValueError("Pass units= or fraction=/count=, not both.")
            selected = {
                n: units[n].bool() if n in units else torch.zeros_like(s, dtype=torch.bool)
                for n, s in self.scores.items()
            }
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
        return Intervention(
            label,
            hooks,
            {
                "kind": "selective_pruning",
                "score": self.score,
                "mode": mode,
                "n_pruned": total,
                "fraction": total / max(self.n_units, 1),
                "fit_seconds": self.fit_seconds,
                "pruned": {
                    n: torch.nonzero(s).flatten().tolist() for n, s in selected.items() if s.any()
                },
            },
        )


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
    statistics: Sequence[str] = STATISTICS,
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
        statistics: Which of :data:`STATISTICS` to collect (default all, so that
            :meth:`PruningScores.rescored` can use any score; ``SCORE_STATISTICS[score]`` is
            enough for ``score`` alone).

    Examples:
        >>> from tl_unlearn import pruning_scores
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
    UnitStats.empty(0, statistics).require(SCORE_STATISTICS[score], f"The {score!r} score")
    fs = collect_statistics(
        model, forget, names, batch_size=batch_size, fwd_hooks=fwd_hooks, statistics=statistics
    )
    rs = collect_statistics(
        model, retain, names, batch_size=batch_size, fwd_hooks=fwd_hooks, statistics=statistics
    )
    return _scores_of(model, names, fs, rs, score, eps, seed, t0)


def _scores_of(
    model: Any,
    names: Sequence[str],
    fs: dict[str, UnitStats],
    rs: dict[str, UnitStats],
    score: Score,
    eps: float,
    seed: int,
    t0: float,
) -> PruningScores:
    gen = torch.Generator().manual_seed(seed)
    scores = {n: _score(fs[n], rs[n], score, eps, gen) for n in names}
    return PruningScores(score, fs, rs, scores, hook_shapes(model, names), time.perf_counter() - t0)


def _rows_within(fit: TokenDataset, ev: TokenDataset) -> bool:
    """Whether each row of ``fit`` is the start of the same row of ``ev`` (both padded on the
    right): a causal model's activations on ``fit``'s tokens are then those of ``ev``."""
    n = len(fit)
    if len(ev) < n or n == 0:
        return False
    fm, em = fit.attention_mask, ev.attention_mask[:n]

    def right_padded(m: Tensor) -> bool:
        return bool(torch.equal(m, torch.arange(m.shape[1]) < m.sum(1, keepdim=True)))

    lf, le = fm.sum(1), em.sum(1)
    if not (right_padded(fm) and right_padded(em)) or bool((le < lf).any()):
        return False
    w = int(lf.max())
    real = fm[:, :w]
    return bool(torch.equal(fit.tokens[:, :w][real], ev.tokens[:n, :w][real]))


def _evaluate_reading(
    model: Any,
    data: Mapping[str, TokenDataset],
    hooks: Intervention,
    read_from: Mapping[str, tuple[str, TokenDataset]],
    names: Sequence[str],
    statistics: Sequence[str],
    batch_size: int,
    options: Mapping[str, Any],
) -> tuple[Any, dict[str, dict[str, UnitStats]]]:
    """Evaluate ``hooks`` on ``data`` and, in the same passes, collect the statistics of each
    fit side: ``read_from[side] = (name of the evaluation dataset that holds its rows first,
    the fit dataset)``. Returns the evaluation and ``{side: {hook: UnitStats}}``."""
    from tl_unlearn.metrics.evaluation import evaluate_many

    stats = {side: _empty_stats(model, names, statistics) for side in read_from}
    by_name = {ev_name: (side, fit) for side, (ev_name, fit) in read_from.items()}

    def batch_hooks(name: str, first: int, view: TokenDataset) -> list[tuple[str, HookFn]]:
        if name not in by_name or first >= len(by_name[name][1]):
            return []
        side, fit = by_name[name]
        rows, width = min(len(view), len(fit) - first), view.tokens.shape[1]
        mask = torch.zeros(len(view), width, dtype=torch.bool)
        k = min(width, fit.attention_mask.shape[1])
        mask[:rows, :k] = fit.attention_mask[first : first + rows, :k]

        def read(acts: Tensor, hook: Any) -> None:
            _read_units(stats[side][hook.name], acts, mask.to(acts.device))

        return [(n, read) for n in names]

    evaluation = evaluate_many(
        model,
        data,
        [hooks],
        batch_size=batch_size,
        batch_hooks=batch_hooks if read_from else None,
        labels=[hooks.name],
        **options,
    )[0]
    return evaluation, stats


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
    evaluate_on: TokenDataset | Mapping[str, TokenDataset] | None = None,
    evaluate_options: Mapping[str, Any] | None = None,
) -> Intervention:
    """Prune the globally top-scoring ``fraction`` of units, in one step or iteratively.

    With ``steps > 1``, ``fraction / steps`` of all units is pruned per step, and statistics
    are re-collected with the units pruned so far in place. ``on_step(step, intervention)``
    is called after each step with the units pruned so far.

    With ``evaluate_on`` (datasets, e.g. ``{"forget": ..., "retain": ...}``) the model is
    evaluated before pruning and after every step, as taker's ``run_pruning`` does; the
    :class:`~tl_unlearn.metrics.evaluation.Evaluation` of each step (0: before pruning) is in
    ``intervention.info["evaluations"]``. Where an evaluation dataset starts with the same
    sequences as ``forget`` or ``retain`` (e.g. the same documents), that side's statistics
    for the next step are read in the evaluation's own forward passes instead of a pass of
    their own: 4 passes per side instead of 7 for 3 steps, with the same statistics.

    Only the statistics ``score`` (and ``mode="mean"``) reads are collected
    (``SCORE_STATISTICS``); use :func:`pruning_scores` to rescore one collection.

    Args:
        model: The model (never changed: the pruning is hooks).
        forget: Forget data (fit split).
        retain: Retain data (fit split).
        fraction: Share of all units to prune in total.
        score: One of ``SCORES``.
        mode: ``"zero"`` or the retain ``"mean"``.
        components: ``"mlp"`` neurons, ``"attn"`` head dimensions, or ``"both"``.
        steps: Pruning steps (statistics re-collected before each).
        batch_size: Sequences per forward pass.
        seed: Seed of the ``"random"`` score.
        name: The intervention's name.
        on_step: Called as ``on_step(step, intervention)`` after each step.
        evaluate_on: Datasets to evaluate on before pruning and after every step.
        evaluate_options: Passed to ``evaluate_many`` (``top_k``, ``skip_common``,
            ``metrics``, ``progress``).

    Examples:
        >>> from tl_unlearn import selective_pruning
        >>> from tl_unlearn import load_tiny_model, make_task
        >>> model = load_tiny_model()
        >>> data = make_task().tokenize(model.tokenizer, "fit", seq_len=64, max_tokens=2000)
        >>> iv = selective_pruning(model, data["forget"], data["retain"], 0.05, steps=2,
        ...                        evaluate_on=data, evaluate_options={"progress": False})
        >>> iv.info["n_pruned"], len(iv.info["evaluations"])
        (51, 3)
        >>> [round(e["forget"].accuracy[1], 2) for e in iv.info["evaluations"]]  # doctest: +SKIP
        [0.41, 0.31, 0.2]
    """
    from tl_unlearn.metrics.evaluation import check_data

    check_fraction(fraction)
    check_positive_int(steps, "steps")
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}; choose one of {SCORES}.")
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    options = dict(evaluate_options or {})
    unknown = set(options) - {"top_k", "skip_common", "metrics", "progress"}
    if unknown:
        raise ValueError(
            f"evaluate_options takes top_k, skip_common, metrics and progress, "
            f"not {sorted(unknown)}."
        )
    t0 = time.perf_counter()
    names = _hooks_for(model, components)
    statistics = (*SCORE_STATISTICS[score], *(("mean",) if mode == "mean" else ()))
    fit = {"forget": forget, "retain": retain}
    eval_data = None if evaluate_on is None else check_data(model, evaluate_on, batch_size)
    read_from: dict[str, tuple[str, TokenDataset]] = {}
    for side, ds in fit.items():
        for ev_name, ev in (eval_data or {}).items():
            if isinstance(ds, TokenDataset) and _rows_within(ds, ev):
                read_from[side] = (ev_name, ds)
                break
    evaluations = []
    current = Intervention("none")
    read: dict[str, dict[str, UnitStats]] = {}
    if eval_data is not None:
        ev, read = _evaluate_reading(
            model, eval_data, current, read_from, names, statistics, batch_size, options
        )
        evaluations.append(ev)
    pruned: dict[str, Tensor] = {}
    total = None
    for step in range(1, steps + 1):
        t1 = time.perf_counter()
        fs, rs = (
            read[side]
            if side in read
            else collect_statistics(
                model,
                fit[side],
                names,
                batch_size=batch_size,
                fwd_hooks=current.fwd_hooks,
                statistics=statistics,
            )
            for side in ("forget", "retain")
        )
        ps = _scores_of(model, names, fs, rs, score, 1e-6, seed + step - 1, t1)
        total = int(round(fraction * ps.n_units)) if total is None else total
        n_new = total * step // steps - sum(int(p.sum()) for p in pruned.values())
        new = ps.select(count=n_new, exclude=pruned)
        pruned = {n: new[n] | pruned.get(n, torch.zeros_like(new[n])) for n in new}
        current = ps.intervention(units=pruned, mode=mode)
        if eval_data is not None:
            ev, read = _evaluate_reading(
                model,
                eval_data,
                current,
                read_from if step < steps else {},
                names,
                statistics,
                batch_size,
                options,
            )
            evaluations.append(ev)
        if on_step is not None:
            on_step(step, current)
    current.name = name or f"prune-{score}({fraction:.1%}, {mode}" + (
        f", {steps} steps)" if steps > 1 else ")"
    )
    current.info.update({"steps": steps, "fit_seconds": time.perf_counter() - t0})
    if eval_data is not None:
        current.info["evaluations"] = evaluations
        current.info["statistics_read_in_evaluation"] = sorted(read_from)
    return current
