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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from tl_unlearn.benchmark.methods.actadd import ActAddOptions, fit_actadd
from tl_unlearn.benchmark.methods.base import FittedMethod, MethodContext, Options
from tl_unlearn.benchmark.methods.edges import EdgeOptions, edge_method
from tl_unlearn.benchmark.methods.head_mean import HeadMeanOptions, fit_head_mean
from tl_unlearn.benchmark.methods.pruning import PruningOptions, pruning_method
from tl_unlearn.benchmark.methods.sae import SAEOptions, fit_sae_features

__all__ = ["METHODS", "MethodSpec", "check_options", "fit_method", "option_keys"]


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
            pruning_method("abs"),
            PruningOptions,
            "selective pruning of MLP neurons, abs score",
        ),
        MethodSpec(
            "prune-freq",
            pruning_method("freq"),
            PruningOptions,
            "selective pruning of MLP neurons, freq score",
        ),
        MethodSpec(
            "prune-random",
            pruning_method("random"),
            PruningOptions,
            "random MLP neurons, same counts",
        ),
        MethodSpec(
            "head-mean",
            fit_head_mean,
            HeadMeanOptions,
            "mean ablation of the heads most attributed to the forget task",
        ),
        MethodSpec(
            "sae-features",
            fit_sae_features,
            SAEOptions,
            "zero-ablation of the most forget-selective features of an SAE",
        ),
        MethodSpec(
            "actadd", fit_actadd, ActAddOptions, "ActAdd steering, swept over the coefficient"
        ),
        MethodSpec(
            "eap",
            edge_method("eap"),
            EdgeOptions,
            "the top edges by attribution patching (EAP), mean-ablated",
        ),
        MethodSpec(
            "eap-ig",
            edge_method("eap-ig"),
            EdgeOptions,
            "the top edges by EAP with integrated gradients, mean-ablated",
        ),
        MethodSpec(
            "patching",
            edge_method("patching"),
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
