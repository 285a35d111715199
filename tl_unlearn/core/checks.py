"""Argument checks every layer shares (each raises a ValueError naming the bad thing), and
the type aliases of hooks and positions.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["HookFn", "Hooks", "check_hook_name"]


def model_device(model: Any) -> str | torch.device:
    """The device inputs of ``model`` go to (``model.cfg.device``, or CPU when unset)."""
    return getattr(model.cfg, "device", None) or "cpu"


HookFn = Callable[[Tensor, Any], Tensor | None]


#: Any hook list TransformerLens takes: an :class:`Intervention` or ``[(hook_name, fn), ...]``
#: (the one hook-list type of the package).
Hooks = Sequence[tuple[Any, Any]]


Positions = str | int | Sequence[int] | Tensor | None


def check_hook_name(model: Any, name: str) -> str:
    """Return ``name`` if the model has that hook point, else raise with the closest names.

    Works with HookedTransformer, HookedSAETransformer and TransformerBridge (whose
    ``hook_dict`` includes the TransformerLens-style aliases such as ``blocks.0.attn.hook_z``).
    """
    hook_dict = model.hook_dict
    if name in hook_dict:
        return name
    close = difflib.get_close_matches(name, list(hook_dict), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"Unknown hook name {name!r} for this model.{hint}")


def as_index(value: Any, what: str) -> int:
    """``value`` as an int if it is integral (an int, a whole float, an integer tensor item).

    Raises:
        TypeError: For a non-integral value (1.5 is not head 1), a bool or a non-number.

    Examples:
        >>> as_index(2.0, "head"), as_index(torch.tensor(3), "head")
        (2, 3)
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not float(value).is_integer()
    ):
        raise TypeError(f"{what} index must be an integer, got {value!r}.")
    return int(value)


def check_fraction(value: Any, what: str = "fraction") -> float:
    """``value`` as a float in [0, 1], else a ValueError naming it.

    Examples:
        >>> check_fraction(1.5)
        Traceback (most recent call last):
        ...
        ValueError: fraction must be a number in [0, 1], got 1.5.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not ok:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}.")
    return float(value)


def renamed_keywords(**renames: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Keep old keyword names of a function working for one release, with a
    DeprecationWarning that names the new one (``renamed_keywords(old="new")``).

    Examples:
        >>> @renamed_keywords(intervention="hooks")
        ... def f(model, hooks=()):
        ...     return hooks
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     f(None, intervention=[1]), str(w[0].message)
        ([1], 'f(intervention=...) is now f(hooks=...); the old name goes in the next release.')
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old}= and {new}=.")
                    warnings.warn(
                        f"{fn.__name__}({old}=...) is now {fn.__name__}({new}=...); the old "
                        "name goes in the next release.",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap


def check_positive_int(value: Any, what: str) -> int:
    """``value`` if it is an int >= 1 (a bool is not one), else a ValueError naming ``what``:
    the one positive-integer check of the package.

    Examples:
        >>> check_positive_int(0, "shards")
        Traceback (most recent call last):
        ...
        ValueError: shards must be a positive integer, got 0.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return value


def check_layer(model: Any, layer: int) -> int:
    n = model.cfg.n_layers
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n:
        raise ValueError(f"Layer {layer!r} is out of range: the model has layers 0..{n - 1}.")
    return layer


def check_indices(indices: Sequence[int] | Tensor, size: int, what: str) -> list[int]:
    """Validate indices into an axis of ``size`` elements (no negatives, no duplicates kept)."""
    idx = [
        as_index(i, what) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)
    ]
    bad = [i for i in idx if not 0 <= i < size]
    if bad:
        raise ValueError(f"{what} index {bad[0]} is out of range: valid indices are 0..{size - 1}.")
    return sorted(set(idx))


def check_positive_ints(owner: Any, *names: str, **values: Any) -> None:
    """:func:`check_positive_int` on each of ``owner``'s attributes ``names`` (or of
    ``values``) in order: the first that is not a positive integer is named.

    Examples:
        >>> check_positive_ints(None, shards=0)
        Traceback (most recent call last):
        ...
        ValueError: shards must be a positive integer, got 0.
    """
    for name, value in [*((n, getattr(owner, n)) for n in names), *values.items()]:
        check_positive_int(value, name)
