"""The result protocol every tl_unlearn result type follows, in one place.

A result is a dataclass with

- ``label``: what it is about (a method, a comparison, a dataset);
- ``seconds``: the wall time it took to compute (0.0 when unknown, e.g. built by hand);
- ``to_dict()`` / ``from_dict()``: one JSON shape per type (plain dicts, lists and numbers);
- ``save(path)`` / ``load(path)``: that JSON, written atomically (never a half-written file);
- ``figure(kind=...)``: a Plotly figure, never shown (``kind`` picks among its pictures).

Simple results inherit ``to_dict``/``from_dict`` from :class:`Result`, which maps dataclass
fields to JSON and back (nested results, tuples and int-keyed dicts included); results with
nested structure override them.

Examples:
    >>> import tempfile, pathlib
    >>> from tl_unlearn.metrics.membership import MembershipInference
    >>> mia = MembershipInference("pruned", {"loss": 0.61}, 64, 64)
    >>> path = mia.save(pathlib.Path(tempfile.mkdtemp()) / "mia.json")
    >>> MembershipInference.load(path) == mia
    True
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tl_unlearn.core.files import save_json

__all__ = ["Result", "dataset_colour", "load_result", "result_types"]

#: One colour per dataset in every figure: forget red, retain blue, others in a fixed order.
DATASET_COLOURS = {"forget": "#d62728", "retain": "#1f77b4"}
#: Colours for everything else (other datasets, methods): never forget red or retain blue.
OTHER_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def dataset_colour(name: str) -> str:
    """The colour of dataset ``name`` in every tl_unlearn figure (stable across figures).

    Examples:
        >>> dataset_colour("forget"), dataset_colour("retain")
        ('#d62728', '#1f77b4')
    """
    if name in DATASET_COLOURS:
        return DATASET_COLOURS[name]
    return OTHER_COLOURS[sum(name.encode()) % len(OTHER_COLOURS)]


R = TypeVar("R", bound="Result")


class Result:
    """Mixin for result dataclasses: ``save``/``load`` and default ``to_dict``/``from_dict``.

    Subclasses are dataclasses with ``label: str`` and ``seconds: float`` fields, and a
    ``figure(kind=...)`` method. Every subclass is registered by class name, so
    :func:`load_result` can read any saved result back without knowing its type.
    """

    label: str
    seconds: float
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[Result]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Result._registry[cls.__name__] = cls

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (one shape per type)."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[R], d: typing.Mapping[str, Any]) -> R:
        """Rebuild a result from :meth:`to_dict`'s output (unknown keys are ignored)."""
        try:
            hints = typing.get_type_hints(cls)
        except (NameError, TypeError):  # annotations naming types imported for checking only
            hints = {}
        kwargs = {
            f.name: _from_json(d[f.name], hints.get(f.name, Any))
            for f in dataclasses.fields(cls)
            if f.init and f.name in d
        }
        return cls(**kwargs)

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically, with the type's name beside it."""
        return save_json(path, {"type": type(self).__name__, **self.to_dict()})

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a result written by :meth:`save` (or a bare :meth:`to_dict` JSON).

        Raises:
            TypeError: The file holds a result of another type.
        """
        data = json.loads(Path(path).read_text())
        saved = data.pop("type", cls.__name__) if isinstance(data, dict) else cls.__name__
        if saved != cls.__name__:
            raise TypeError(
                f"{path} holds a {saved}, not a {cls.__name__}; use "
                f"{saved}.load() or tl_unlearn.core.results.load_result()."
            )
        return cls.from_dict(data)

    def _check_kind(self, kind: str) -> None:
        if kind not in self.FIGURE_KINDS:
            raise ValueError(
                f"{type(self).__name__}.figure(kind={kind!r}): kind must be one "
                f"of {list(self.FIGURE_KINDS)}."
            )


_MORE_RESULT_MODULES = (
    "tl_unlearn.circuits.ground_truth",
    "tl_unlearn.benchmark.tier",
    "tl_unlearn.metrics.coverage",
    "tl_unlearn.metrics.depth",
)


def load_result(path: str | Path) -> Result:
    """Load any saved result by the type name :meth:`Result.save` wrote.

    Args:
        path: A JSON file written by ``save``.

    Returns:
        The result, of the type it was saved as.

    Examples:
        >>> from tl_unlearn import load_result
        >>> import tempfile, pathlib
        >>> from tl_unlearn.metrics.membership import MembershipInference
        >>> p = MembershipInference("x", {"loss": 0.5}, 64, 64).save(
        ...     pathlib.Path(tempfile.mkdtemp()) / "r.json")
        >>> type(load_result(p)).__name__
        'MembershipInference'
    """
    data = json.loads(Path(path).read_text())
    name = data.get("type") if isinstance(data, dict) else None
    if name not in Result._registry:  # result types of modules the root does not import
        import importlib

        for module in _MORE_RESULT_MODULES:
            importlib.import_module(module)
    if name not in Result._registry:
        raise ValueError(
            f"{path} does not name a tl_unlearn result type (got {name!r}); "
            f"known: {sorted(Result._registry)}."
        )
    return Result._registry[name].load(path)


def result_types() -> dict[str, type[Result]]:
    """Every registered result type by class name (import the package first)."""
    return dict(Result._registry)


def _to_json(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if hasattr(value, "tolist"):  # tensors and numpy arrays
        return value.tolist()
    return value


def _from_json(value: Any, hint: Any) -> Any:
    """Rebuild ``value`` to the annotated type ``hint`` (results, tuples, int keys)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            return _from_json(value, arg)
    if isinstance(hint, type) and issubclass(hint, Result):
        return hint.from_dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a plain part of a result
        hints = typing.get_type_hints(hint)
        return hint(
            **{
                f.name: _from_json(value[f.name], hints.get(f.name, Any))
                for f in dataclasses.fields(hint)
                if f.init and f.name in value
            }
        )
    if origin is dict and args:
        key_type, val_type = args
        return {
            (int(k) if key_type is int else k): _from_json(v, val_type) for k, v in value.items()
        }
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(v, args[0]) for v in value)
        return tuple(_from_json(v, a) for v, a in zip(value, args, strict=True))
    if origin is list and args:
        return [_from_json(v, args[0]) for v in value]
    return value
