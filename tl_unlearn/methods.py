"""Interpretability methods the benchmark compares, as families of interventions.

A method is fitted once on the *fit* split (statistics, attributions, an SAE, a steering
vector) and returns a :class:`FittedMethod`: a function ``level -> Intervention``, the levels
to sweep, and the fit time. Methods:

================== =======================================================================
``prune-abs``      selective pruning of MLP neurons, ``abs`` score (forget/retain mean |x|)
``prune-freq``     selective pruning of MLP neurons, ``freq`` score (positive frequency)
``prune-random``   random MLP neurons, same counts: the baseline
``head-mean``      mean ablation (retain mean) of the heads most attributed to the forget task
``sae-features``   zero-ablation of the most forget-selective features of an SAE trained on
                   the fly with ``sae_lens`` on fit data
``actadd``         ActAdd steering with a prompt pair, swept over the coefficient
``eap``            the top edges of the model's graph by attribution patching (EAP) on
                   clean/corrupted forget pairs, removed (retain-fit means)
``eap-ig``         the same with EAP-IG scores (integrated gradients)
``patching``       the edges among the top nodes by exact activation patching
================== =======================================================================

The circuit-discovery methods need a forget task with corrupted prompts (``ioi``,
``greater_than``, ``induction``, or your ``PromptAnswers`` with ``corrupted``); their random
baseline removes random edges of the same count.

Each method is a :class:`MethodSpec` in :data:`METHODS` with a typed options class (a
frozen dataclass of :class:`Options`): ``BenchmarkConfig.options`` holds them under dotted
keys (``"sae.layer": 3``), and :func:`check_options` parses and checks every key, its type,
and (with a model) its layer, in this module, where the methods read them.

Head attribution is attribution patching: for each head, the first-order estimate of how
much the loss rises when its ``hook_z`` output is replaced by the retain mean,
``sum_pos (mean_z - z) . dL/dz``, on forget minus on retain, averaged over tokens.
"""

from __future__ import annotations

import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from tl_unlearn.circuits import component_intervention
from tl_unlearn.data import TokenDataset
from tl_unlearn.engine.forward import row_chunks, run_from_layer, unembed_residual
from tl_unlearn.interventions import (
    Intervention,
    PruningScores,
    actadd,
    pruning_scores,
    sae_feature_intervention,
)
from tl_unlearn.interventions.ablation import activation_means
from tl_unlearn.interventions.base import model_device
from tl_unlearn.interventions.sae import sae_feature_means, sae_quality, train_sae
from tl_unlearn.interventions.steering import random_steering, steering_matrix

__all__ = [
    "METHODS",
    "ActAddOptions",
    "FittedMethod",
    "HeadMeanOptions",
    "MethodContext",
    "EDGE_METHODS",
    "EdgeOptions",
    "MethodSpec",
    "Options",
    "PruningOptions",
    "SAEOptions",
    "check_options",
    "fit_method",
    "head_attribution",
    "option_keys",
]

DEFAULT_FRACTIONS = (0.005, 0.01, 0.02, 0.05)
_O = TypeVar("_O", bound="Options")


def option(key: str, default: Any, help: str) -> Any:
    """A field of an :class:`Options` class, read from ``options[key]`` (``{method}`` in
    ``key`` stands for the method's name)."""
    return field(default=default, metadata={"key": key, "help": help})


def _typed(key: str, value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (int, float, str, ``X | None``, ``tuple[float, ...]``), or a
    ValueError naming the option."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is tuple:
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"Option {key} must be a non-empty list of numbers, got {value!r}.")
        return tuple(float(v) for v in value)
    ok = {
        int: isinstance(value, int),
        float: isinstance(value, (int, float)),
        str: isinstance(value, str),
    }[kind] and not isinstance(value, bool)
    if not ok:
        what = {int: "an integer", float: "a number", str: "a string"}[kind]
        raise ValueError(f"Option {key} must be {what}, got {value!r}.")
    return kind(value)


@dataclass(frozen=True)
class Options:
    """Typed options of one method (or of a run), read from dotted keys of a mapping.

    Subclasses are frozen dataclasses whose fields are made with :func:`option`.

    Examples:
        >>> SAEOptions.read({"sae.layer": 3, "sae-features.levels": [0.01, 0.1]})
        SAEOptions(levels=(0.01, 0.1), layer=3, d_sae=1024, training_tokens=100000)
        >>> SAEOptions.read({"sae.layer": "3"})
        Traceback (most recent call last):
        ...
        ValueError: Option sae.layer must be an integer, got '3'.
    """

    method: ClassVar[str] = ""

    @classmethod
    def keys(cls, method: str | None = None) -> dict[str, str]:
        """Option key -> field name."""
        name = cls.method if method is None else method
        return {f.metadata["key"].format(method=name): f.name for f in fields(cls)}

    @classmethod
    def read(cls: type[_O], options: Mapping[str, Any], method: str | None = None) -> _O:
        """The options of ``options`` that belong to this class, typed and checked (other
        keys are ignored; missing ones take their defaults)."""
        hints = typing.get_type_hints(cls)
        return cls(
            **{
                name: _typed(key, options[key], hints[name])
                for key, name in cls.keys(method).items()
                if key in options
            }
        )

    def check_model(self, model: Any) -> None:
        """Checks that need the model (layers); raise ValueError saying what to fix."""


@dataclass(frozen=True)
class PruningOptions(Options):
    """Options of ``prune-abs``, ``prune-freq`` and ``prune-random``."""

    levels: tuple[float, ...] = option(
        "{method}.levels", DEFAULT_FRACTIONS, "fractions of MLP neurons pruned"
    )


@dataclass(frozen=True)
class HeadMeanOptions(Options):
    """Options of ``head-mean``."""

    method: ClassVar[str] = "head-mean"
    levels: tuple[float, ...] = option(
        "{method}.levels", (0.01, 0.02, 0.05, 0.1), "fractions of heads mean-ablated"
    )
    attribution_seqs: int = option(
        "head-mean.attribution_seqs",
        16,
        "sequences per side the head attribution runs on "
        "(gradients cost about three forward passes)",
    )


@dataclass(frozen=True)
class SAEOptions(Options):
    """Options of ``sae-features``."""

    method: ClassVar[str] = "sae-features"
    levels: tuple[float, ...] = option(
        "{method}.levels", DEFAULT_FRACTIONS, "fractions of SAE features zero-ablated"
    )
    layer: int | None = option(
        "sae.layer", None, "layer whose resid_pre the SAE reads (default n_layers // 3)"
    )
    d_sae: int = option("sae.d_sae", 1024, "SAE width")
    training_tokens: int = option("sae.training_tokens", 100_000, "SAE training tokens")

    def check_model(self, model: Any) -> None:
        from tl_unlearn.interventions.base import check_hook_name, check_layer

        if self.layer is not None:
            check_layer(model, self.layer)
            check_hook_name(model, get_act_name("resid_pre", self.layer))


@dataclass(frozen=True)
class ActAddOptions(Options):
    """Options of ``actadd``."""

    method: ClassVar[str] = "actadd"
    levels: tuple[float, ...] = option(
        "{method}.levels", (1.0, 2.0, 4.0, 8.0), "ActAdd coefficients"
    )
    layer: int | None = option("actadd.layer", None, "layer steered (default min(6, n_layers - 1))")
    prompt_add: str = option("actadd.prompt_add", "The history of the city", "the + prompt")
    prompt_sub: str = option("actadd.prompt_sub", "import os\nimport sys", "the - prompt")

    def check_model(self, model: Any) -> None:
        from tl_unlearn.interventions.base import check_layer

        if self.layer is not None:
            check_layer(model, self.layer)


@dataclass(frozen=True)
class EdgeOptions(Options):
    """Options of the circuit-discovery methods ``eap``, ``eap-ig`` and ``patching``."""

    levels: tuple[float, ...] = option(
        "{method}.levels",
        (0.001, 0.002, 0.005, 0.01),
        "fractions of the graph's edges removed (mean-ablated)",
    )
    attribution_examples: int = option(
        "{method}.attribution_examples", 16, "clean/corrupted fit pairs the scores are computed on"
    )
    steps: int = option("eap-ig.steps", 5, "integrated-gradient steps of eap-ig")


@dataclass
class FittedMethod:
    """A fitted method: the intervention at each level, the levels, and the cost of fitting.

    ``baseline(level, seed)`` builds a random intervention of the same kind and size (random
    neurons, heads, SAE features, or a random steering matrix of the same norms): the control
    a claim about the chosen units is tested against. None for a method that is itself
    random (``prune-random``).

    ``node_scores``: how strongly the method ranks each model component (``"a1.h2"``,
    ``"m0"``; higher: removed first), for methods whose units belong to components (heads,
    neurons, edges); None for residual-stream methods (SAE features, steering).
    ``edge_scores``: the scored :class:`~tl_unlearn.edges.Circuit` of an edge method.
    ``nodes_at(level)`` / ``edges_at(level)``: the components (edges) the intervention at
    ``level`` touches. All four are what the ground-truth tier scores against a planted
    circuit.
    """

    name: str
    family: Callable[[float], Intervention]
    levels: list[float]
    level_name: str
    fit_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    baseline: Callable[[float, int], Intervention] | None = None
    baseline_label: str = ""
    node_scores: dict[str, float] | None = None
    edge_scores: Any = None
    nodes_at: Callable[[float], list[str]] | None = None
    edges_at: Callable[[float], list[str]] | None = None


@dataclass
class MethodContext:
    """What methods are fitted with; holds work shared between methods (pruning statistics).

    ``forget_fit_corrupted``: the corrupted partner of each forget fit row (prompt→answer
    tasks with corrupted prompts), which the circuit-discovery methods patch from.
    ``sae_data``: the token data ``sae-features`` trains its SAE on (default: the two fit
    sets); give it as many *distinct* tokens as ``sae.training_tokens``, so the SAE sees no
    sequence twice. ``check_data``: sequences the SAE's reconstruction quality is measured on
    (data it was not trained on; default: none, quality not measured).
    """

    model: Any
    forget_fit: TokenDataset
    retain_fit: TokenDataset
    batch_size: int = 8
    forget_fit_corrupted: TokenDataset | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    sae_data: Sequence[TokenDataset] | None = None
    check_data: dict[str, TokenDataset] | None = None
    _shared: dict[str, Any] = field(default_factory=dict)

    def pruning_stats(self) -> PruningScores:
        if "pruning" not in self._shared:
            self._shared["pruning"] = pruning_scores(
                self.model,
                self.forget_fit,
                self.retain_fit,
                batch_size=self.batch_size,
                seed=self.seed,
            )
        return self._shared["pruning"]


def _pruning(score: str) -> Callable[[MethodContext, PruningOptions], FittedMethod]:
    def fit(ctx: MethodContext, opts: PruningOptions) -> FittedMethod:
        t0 = time.perf_counter()
        # the shared statistics pass is charged to the first pruning method that needs it
        ps = ctx.pruning_stats().rescored(score, seed=ctx.seed)
        seconds = time.perf_counter() - t0
        name = f"prune-{score}"

        def baseline(fraction: float, seed: int) -> Intervention:
            return (
                ctx.pruning_stats()
                .rescored("random", seed=seed)
                .intervention(fraction, name=f"random neurons@{fraction:g} (seed {seed})")
            )

        return FittedMethod(
            name,
            lambda f: ps.intervention(f, name=f"{name}@{f:g}"),
            list(opts.levels),
            "fraction of MLP neurons",
            seconds,
            {"n_units": ps.n_units},
            None if score == "random" else baseline,
            "random MLP neurons",
            node_scores=_unit_node_scores(ps),
            nodes_at=lambda f: _unit_nodes(ps, ps.select(f)),
        )

    return fit


def _by_component(ps: PruningScores, per_hook: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-unit values of each hook grouped by the component holding the units: ``m{L}``
    for an MLP's neurons, ``a{L}.h{H}`` for a head's."""
    out: dict[str, Tensor] = {}
    for hook, values in per_hook.items():
        layer = int(hook.split(".")[1])
        units = values.reshape(ps.shapes[hook])
        if units.ndim == 1:
            out[f"m{layer}"] = units
        else:
            out.update({f"a{layer}.h{h}": row for h, row in enumerate(units)})
    return out


def _unit_nodes(ps: PruningScores, selected: Mapping[str, Tensor]) -> list[str]:
    """The components holding at least one selected unit."""
    return [node for node, mask in _by_component(ps, selected).items() if bool(mask.any())]


def _unit_node_scores(ps: PruningScores) -> dict[str, float]:
    """Each component's score: the best score among its units (the one selective pruning
    would remove first)."""
    return {
        node: float(units.float().nan_to_num(nan=-torch.inf).max())
        for node, units in _by_component(ps, ps.scores).items()
    }


def head_attribution(
    model: Any,
    forget: TokenDataset,
    retain: TokenDataset,
    *,
    batch_size: int = 8,
    reference: dict[str, Tensor] | None = None,
) -> Float[Tensor, "layer head_index"]:
    """Attribution-patching score per head: forget minus retain first-order loss increase.

    ``score[l, h] = A_F[l, h] - A_R[l, h]`` with
    ``A_D[l, h] = mean over D's tokens of (mean_z[l, h] - z[l, h]) . dL/dz[l, h]``, where
    ``mean_z`` is the pooled mean of ``hook_z`` on the retain data (or ``reference``). The
    loss is taken at each dataset's scored positions (every next-token prediction of a text,
    the answers of a prompt→answer task).

    The backward pass runs one block at a time (from residuals cached without a graph), so
    memory holds the autograd graph of a single block, never of the whole model: a whole
    graph also keeps TransformerLens's per-forward contiguous weight copies of every layer
    (about the size of the model). The price is a second forward pass through each block.
    """
    names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    means = reference or activation_means(model, retain, names, batch_size=batch_size)
    device = model_device(model)
    n_layers = model.cfg.n_layers
    resid_names = [get_act_name("resid_pre", l) for l in range(n_layers)]
    final_name = get_act_name("resid_post", n_layers - 1)
    # Gradients with respect to the activations only: the parameters are frozen for the
    # duration (restored after), so autograd keeps no weight gradient.
    frozen = [p for p in model.parameters() if p.requires_grad]

    def loss_grad(final: Tensor, tokens: Tensor, valid: Tensor) -> Tensor:
        """d(summed next-token loss at ``valid``)/d(final residual), a few rows at a time."""
        grad = torch.empty_like(final)
        for rows in row_chunks(len(final), final.shape[1], model.cfg.d_vocab):
            x = final[rows].detach().requires_grad_()
            with torch.enable_grad():
                normed = model.ln_final(x) if model.cfg.normalization_type is not None else x
                logits = unembed_residual(model, normed)[:, :-1]
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(),
                    tokens[rows, 1:].reshape(-1),
                    reduction="none",
                )
                (grad[rows],) = torch.autograd.grad(nll[valid[rows].reshape(-1)].sum(), x)
        return grad

    def attribution(data: TokenDataset) -> Tensor:
        total = torch.zeros(n_layers, model.cfg.n_heads, dtype=torch.float64)
        count = 0
        store: dict[str, Tensor] = {}

        def keep(acts: Tensor, hook: Any) -> None:
            store[hook.name] = acts

        for start in range(0, len(data), batch_size):
            batch = data.rows(slice(start, start + batch_size))
            tokens, mask = batch.tokens.to(device), batch.attention_mask.to(device)
            valid = batch.scored_positions().to(device)  # a task's answers only, if it has some
            with torch.no_grad():
                _, cache = model.run_with_cache(
                    tokens, names_filter=[*resid_names, final_name], return_type=None
                )
            grad = loss_grad(cache[final_name], tokens, valid)
            pos_mask = mask.unsqueeze(-1).unsqueeze(-1)
            for l in reversed(range(n_layers)):
                x = cache[resid_names[l]].detach().requires_grad_()
                with model.hooks(fwd_hooks=[(names[l], keep)]), torch.enable_grad():
                    out = run_from_layer(model, x, l, l + 1, tokens)
                    g_z, grad = torch.autograd.grad(out, [store[names[l]], x], grad)
                z = store.pop(names[l]).detach()
                delta = ((means[names[l]].to(z.device) - z) * g_z * pos_mask).sum((0, 1, 3))
                total[l] += delta.double().cpu()
                del out, x
            count += int(valid.sum())
            del cache, grad
        return total / max(count, 1)

    try:
        for p in frozen:
            p.requires_grad_(False)
        return attribution(forget) - attribution(retain)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _head_mean(ctx: MethodContext, opts: HeadMeanOptions) -> FittedMethod:
    t0 = time.perf_counter()
    model = ctx.model
    names = [get_act_name("z", l) for l in range(model.cfg.n_layers)]
    means = activation_means(model, ctx.retain_fit, names, batch_size=ctx.batch_size)
    # gradients cost ~3 forward passes: attribute on a few sequences per side
    n = opts.attribution_seqs
    scores = head_attribution(
        model,
        ctx.forget_fit.head(n),
        ctx.retain_fit.head(n),
        batch_size=ctx.batch_size,
        reference=means,
    )
    order = torch.argsort(scores.flatten(), descending=True, stable=True)
    n_heads = model.cfg.n_heads
    ranked = [(int(i) // n_heads, int(i) % n_heads) for i in order]
    total = len(ranked)

    def family(fraction: float) -> Intervention:
        k = max(1, round(fraction * total))
        iv = component_intervention(
            model, ranked[:k], "mean", means=means, name=f"head-mean@{fraction:g}"
        )
        iv.info["heads"] = [f"L{l}H{h}" for l, h in ranked[:k]]
        return iv

    def baseline(fraction: float, seed: int) -> Intervention:
        k = max(1, round(fraction * total))
        pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]
        heads = [(int(i) // n_heads, int(i) % n_heads) for i in pick]
        return component_intervention(
            model, heads, "mean", means=means, name=f"random heads@{fraction:g} (seed {seed})"
        )

    return FittedMethod(
        "head-mean",
        family,
        list(opts.levels),
        "fraction of heads",
        time.perf_counter() - t0,
        {
            "top_heads": [f"L{l}H{h}" for l, h in ranked[:10]],
            "top_scores": scores.flatten()[order[:10]].tolist(),
        },
        baseline,
        "random heads, mean-ablated",
        node_scores={
            f"a{l}.h{h}": float(scores[l, h])
            for l in range(model.cfg.n_layers)
            for h in range(n_heads)
        },
        nodes_at=lambda f: [f"a{l}.h{h}" for l, h in ranked[: max(1, round(f * total))]],
    )


def _sae_features(ctx: MethodContext, opts: SAEOptions) -> FittedMethod:
    t0 = time.perf_counter()
    model = ctx.model
    layer = max(1, model.cfg.n_layers // 3) if opts.layer is None else opts.layer
    hook = get_act_name("resid_pre", layer)
    train_data = list(ctx.sae_data or [ctx.forget_fit, ctx.retain_fit])
    sae = train_sae(
        model,
        train_data,
        hook,
        d_sae=opts.d_sae,
        training_tokens=opts.training_tokens,
        seed=ctx.seed,
    )
    sae.eval()
    quality = {"training_tokens_distinct": int(sum(d.n_tokens for d in train_data))} | (
        sae_quality(model, sae, hook, ctx.check_data, ctx.batch_size) if ctx.check_data else {}
    )
    f_mean = sae_feature_means(model, sae, hook, ctx.forget_fit, ctx.batch_size)
    r_mean = sae_feature_means(model, sae, hook, ctx.retain_fit, ctx.batch_size)
    score = f_mean / (r_mean + 1e-6)
    score[f_mean == 0] = -1.0  # dead on forget: never selected first
    order = torch.argsort(score, descending=True, stable=True).tolist()
    d_sae = len(order)

    def family(fraction: float) -> Intervention:
        k = max(1, round(fraction * d_sae))
        return sae_feature_intervention(
            model, sae, order[:k], "zero", name=f"sae-features@{fraction:g}"
        )

    # the control: as many features drawn at random among those alive on the fit data
    alive = torch.nonzero((f_mean + r_mean) > 0).flatten()
    alive = alive if len(alive) else torch.arange(d_sae)

    def baseline(fraction: float, seed: int) -> Intervention:
        k = min(len(alive), max(1, round(fraction * d_sae)))
        pick = alive[torch.randperm(len(alive), generator=torch.Generator().manual_seed(seed))[:k]]
        return sae_feature_intervention(
            model,
            sae,
            pick.tolist(),
            "zero",
            name=f"random SAE features@{fraction:g} (seed {seed})",
        )

    return FittedMethod(
        "sae-features",
        family,
        list(opts.levels),
        "fraction of SAE features",
        time.perf_counter() - t0,
        {
            "hook": hook,
            "d_sae": d_sae,
            "alive_on_forget": int((f_mean > 0).sum()),
            "alive_on_fit": int(len(alive)),
            **quality,
        },
        baseline,
        "random SAE features alive on the fit data",
    )


def _actadd(ctx: MethodContext, opts: ActAddOptions) -> FittedMethod:
    layer = min(6, ctx.model.cfg.n_layers - 1) if opts.layer is None else opts.layer
    return actadd_method(ctx.model, opts.prompt_add, opts.prompt_sub, layer, opts.levels)


def actadd_method(
    model: Any, plus: Any, minus: Any, layer: int, levels: Sequence[float]
) -> FittedMethod:
    """The ``actadd`` method for a prompt pair (text, or token ids for a model without a
    tokenizer), swept over ``levels`` (coefficients), with its random-steering control."""
    t0 = time.perf_counter()
    pad = None if getattr(model, "tokenizer", None) is not None else 0
    unit = actadd(
        model, plus, minus, layer, 1.0, pad_token_id=pad
    )  # validates the layer now, before sweeping

    def family(coeff: float) -> Intervention:
        return actadd(model, plus, minus, layer, coeff, pad_token_id=pad, name=f"actadd@{coeff:g}")

    steer = steering_matrix(model, plus, minus, layer, 1.0, pad_token_id=pad)

    def baseline(coeff: float, seed: int) -> Intervention:
        return random_steering(
            model, layer, coeff * steer, seed=seed, name=f"random steering@{coeff:g} (seed {seed})"
        )

    return FittedMethod(
        "actadd",
        family,
        list(levels),
        "ActAdd coefficient",
        time.perf_counter() - t0,
        {
            "layer": layer,
            "prompt_add": plus if isinstance(plus, str) else torch.as_tensor(plus).tolist(),
            "prompt_sub": minus if isinstance(minus, str) else torch.as_tensor(minus).tolist(),
            "n_positions": unit.info["n_positions"],
        },
        baseline,
        "random steering matrix, same norms",
    )


#: Methods that find an edge circuit by counterfactual patching (they need paired data).
EDGE_METHODS = ("eap", "eap-ig", "patching")


def _edge_method(kind: str) -> Callable[[MethodContext, EdgeOptions], FittedMethod]:
    """``eap`` / ``eap-ig`` / ``patching``: score every edge on clean/corrupted fit pairs,
    then remove the top edges (their retain-fit means replace what the child reads)."""

    def fit(ctx: MethodContext, opts: EdgeOptions) -> FittedMethod:
        from tl_unlearn.attribution import activation_patching, edge_attribution
        from tl_unlearn.edges import Circuit, edge_ablation, prepare_edge_values
        from tl_unlearn.faithfulness import random_scores

        if ctx.forget_fit_corrupted is None:
            raise ValueError(
                f"Method {kind!r} needs a forget task with corrupted prompts "
                "(ioi, greater_than, induction, or PromptAnswers with corrupted=)."
            )
        t0 = time.perf_counter()
        model, n = ctx.model, opts.attribution_examples
        clean, corrupted = ctx.forget_fit.head(n), ctx.forget_fit_corrupted.head(n)
        metric = _patch_metric(clean)
        if kind == "patching":
            scores = activation_patching(
                model, clean, corrupted, metric, batch_size=ctx.batch_size
            ).edge_scores(model.cfg.d_model)
        else:
            scores = edge_attribution(
                model,
                clean,
                corrupted,
                metric,
                method=kind,
                steps=opts.steps,
                batch_size=ctx.batch_size,
            )
        prepared = prepare_edge_values(
            model, "mean", reference=ctx.retain_fit, batch_size=ctx.batch_size
        )
        total = Circuit.of_model(model).n_real_edges

        def remove(circuit: Any, label: str) -> Intervention:
            iv = edge_ablation(
                model, circuit, "mean", ablate="inside", prepared=prepared, name=label
            )
            iv.info["edges"] = circuit.edges[:20]
            return iv

        def count(fraction: float) -> int:
            return max(1, round(fraction * total))

        def family(fraction: float) -> Intervention:
            return remove(scores.top(count(fraction)), f"{kind}@{fraction:g}")

        def baseline(fraction: float, seed: int) -> Intervention:
            return remove(
                random_scores(scores, seed).top(count(fraction)),
                f"random edges@{fraction:g} (seed {seed})",
            )

        top = scores.top(10)
        return FittedMethod(
            kind,
            family,
            list(opts.levels),
            "fraction of edges removed",
            time.perf_counter() - t0,
            {"top_edges": top.edges, "n_real_edges": total, "attribution_examples": len(clean)},
            baseline,
            "random edges, mean-ablated",
            node_scores=edge_node_scores(scores),
            edge_scores=scores,
            nodes_at=lambda f: [
                n for n in scores.top(count(f)).nodes if n not in ("input", "logits")
            ],
            edges_at=lambda f: scores.top(count(f)).edges,
        )

    return fit


def edge_node_scores(circuit: Any) -> dict[str, float]:
    """Each node's score from a scored circuit: the largest ``|score|`` of an edge into or
    out of it (``input`` and ``logits`` left out).

    Examples:
        >>> import numpy as np
        >>> from tl_unlearn import Circuit
        >>> c = Circuit.empty(1, 2)
        >>> c.scores = np.zeros(c.in_graph.shape); c.scores[1, -1] = -3.0  # a0.h0->logits
        >>> edge_node_scores(c)["a0.h0"], edge_node_scores(c)["a0.h1"]
        (3.0, 0.0)
    """
    real = circuit.real_edges()
    values = np.where(real, np.abs(circuit.scores), 0.0)
    out = dict(zip(circuit.parent_names, values.max(1)))
    for j, child in enumerate(circuit.child_names):
        node = child.split("<")[0]
        if node != "logits":
            out[node] = max(out.get(node, 0.0), float(values[:, j].max()))
    out.pop("input", None)
    return {k: float(v) for k, v in out.items()}


def _patch_metric(data: TokenDataset) -> Callable[[Tensor, TokenDataset], Tensor]:
    """The patching metric of a forget set: the answer logit difference where there are
    counterfactual answers, else the scored tokens' mean log-probability."""
    from tl_unlearn.attribution import answer_logit_diff, scored_logprob

    return answer_logit_diff if data.counterfactual is not None else scored_logprob


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its fit function and its typed options.

    Attributes:
        name: The name a config selects it by.
        fit: ``fit(ctx, options) -> FittedMethod``.
        options: Its :class:`Options` class.
        summary: One line on what it removes.
    """

    name: str
    fit: Callable[[MethodContext, Any], FittedMethod]
    options: type[Options]
    summary: str

    def read_options(self, options: Mapping[str, Any]) -> Options:
        """This method's options in ``options``, typed and checked."""
        return self.options.read(options, self.name)


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "prune-abs",
            _pruning("abs"),
            PruningOptions,
            "selective pruning of MLP neurons, abs score",
        ),
        MethodSpec(
            "prune-freq",
            _pruning("freq"),
            PruningOptions,
            "selective pruning of MLP neurons, freq score",
        ),
        MethodSpec(
            "prune-random", _pruning("random"), PruningOptions, "random MLP neurons, same counts"
        ),
        MethodSpec(
            "head-mean",
            _head_mean,
            HeadMeanOptions,
            "mean ablation of the heads most attributed to the forget task",
        ),
        MethodSpec(
            "sae-features",
            _sae_features,
            SAEOptions,
            "zero-ablation of the most forget-selective features of an SAE",
        ),
        MethodSpec("actadd", _actadd, ActAddOptions, "ActAdd steering, swept over the coefficient"),
        MethodSpec(
            "eap",
            _edge_method("eap"),
            EdgeOptions,
            "the top edges by attribution patching (EAP), mean-ablated",
        ),
        MethodSpec(
            "eap-ig",
            _edge_method("eap-ig"),
            EdgeOptions,
            "the top edges by EAP with integrated gradients, mean-ablated",
        ),
        MethodSpec(
            "patching",
            _edge_method("patching"),
            EdgeOptions,
            "the edges among the top nodes by activation patching, mean-ablated",
        ),
    )
}


def option_keys(*extra: type[Options]) -> dict[str, str]:
    """Every method option key (and those of ``extra`` classes) -> its help text."""
    out = {}
    for cls, method in [
        *((s.options, s.name) for s in METHODS.values()),
        *((c, None) for c in extra),
    ]:
        help_of = {f.name: f.metadata["help"] for f in fields(cls)}
        out.update({key: help_of[name] for key, name in cls.keys(method).items()})
    return out


def check_options(options: Mapping[str, Any], *extra: type[Options], model: Any = None) -> None:
    """Check every key of ``options`` (method options, and those of the ``extra`` classes):
    known, of its type, and, with a ``model``, valid for it. Raises ValueError naming the
    bad option.

    Examples:
        >>> check_options({"sae.layr": 3})
        Traceback (most recent call last):
        ...
        ValueError: Unknown option(s) ['sae.layr']; did you mean 'sae.layer'? ...
    """
    import difflib

    known = option_keys(*extra)
    unknown = sorted(set(options) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"Unknown option(s) {unknown}; {hint}valid options: {sorted(known)}.")
    parsed = [spec.read_options(options) for spec in METHODS.values()]
    parsed += [cls.read(options) for cls in extra]
    if model is not None:
        for opts in parsed:
            opts.check_model(model)


def fit_method(name: str, ctx: MethodContext) -> FittedMethod:
    """Fit one method by name (see :data:`METHODS`) with its options from ``ctx.options``."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; choose from {sorted(METHODS)}.")
    spec = METHODS[name]
    return spec.fit(ctx, spec.read_options(ctx.options))
