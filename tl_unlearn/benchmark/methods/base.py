"""What every benchmark method shares: options (:class:`Options`), the context a method is
fitted in (:class:`MethodContext`) and a fitted method (:class:`FittedMethod`).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from tl_unlearn.core.checks import check_fraction
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.interventions import (
    Intervention,
    PruningScores,
    pruning_scores,
)

__all__ = ["FittedMethod", "MethodContext", "Options"]


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
        >>> from tl_unlearn.benchmark.methods.sae import SAEOptions
        >>> SAEOptions.read({"sae.layer": 3, "sae-features.levels": [0.01, 0.1]})
        SAEOptions(levels=(0.01, 0.1), layer=3, d_sae=1024, training_tokens=100000)
        >>> SAEOptions.read({"sae.layer": "3"})
        Traceback (most recent call last):
        ...
        ValueError: Option sae.layer must be an integer, got '3'.
    """

    method: ClassVar[str] = ""
    #: Whether ``levels`` are fractions of the components (each must lie in [0, 1]).
    fraction_levels: ClassVar[bool] = False

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
        keys = cls.keys(method)
        read = cls(
            **{
                name: _typed(key, options[key], hints[name])
                for key, name in keys.items()
                if key in options
            }
        )
        if "levels" in keys.values():
            key = next(k for k, name in keys.items() if name == "levels")
            read.check_levels(key)
        return read

    def check_levels(self, key: str) -> None:
        """Levels are a non-empty list of finite numbers, fractions in [0, 1] where
        :attr:`fraction_levels`; raise ValueError naming the option ``key``.

        Examples:
            >>> from tl_unlearn.benchmark.methods.pruning import PruningOptions
            >>> PruningOptions.read({"prune-abs.levels": [0.01, 1.5]}, "prune-abs")
            Traceback (most recent call last):
            ...
            ValueError: Option prune-abs.levels: each level must be a number in [0, 1], got 1.5.
        """
        levels = self.levels
        if not levels:
            raise ValueError(f"Option {key} must list at least one level.")
        for level in levels:
            if not math.isfinite(level):
                raise ValueError(f"Option {key}: each level must be finite, got {level!r}.")
            if self.fraction_levels:
                check_fraction(level, f"Option {key}: each level")

    def check_model(self, model: Any) -> None:
        """Checks that need the model (layers); raise ValueError saying what to fix."""


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
    ``edge_scores``: the scored :class:`~tl_unlearn.circuits.graph.Circuit` of an edge method.
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
