"""How many public names document their arguments and carry a runnable example.

Public names: the ``__all__`` of the package root and of its documented namespaces
(``tl_unlearn.interventions``, ``tl_unlearn.metrics``); ``--modules`` adds every module's
``__all__`` (helpers the API reference also shows). A function
(or a class's constructor) with parameters needs an ``Args:`` section; every function and class
needs an ``Examples:`` section (doctests run in the test suite).

    python scripts/dev/docstring_coverage.py [--list]
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import tl_unlearn


def public_objects(every_module: bool = False) -> dict[str, object]:
    out = {}
    modules = [
        tl_unlearn,
        importlib.import_module("tl_unlearn.interventions"),
        importlib.import_module("tl_unlearn.metrics"),
    ]
    if every_module:
        modules += [
            importlib.import_module(m.name)
            for m in pkgutil.walk_packages(tl_unlearn.__path__, "tl_unlearn.")
        ]
    for mod in modules:
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(
                "tl_unlearn"
            ):
                out.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return out


def needs_args(obj: object) -> bool:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    params = [
        p
        for p in sig.parameters.values()
        if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return bool(params)


def main() -> None:
    objs = public_objects("--modules" in sys.argv)
    no_args, no_example = [], []
    for name, obj in sorted(objs.items()):
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            doc += "\n" + (inspect.getdoc(obj.__init__) or "")
        if needs_args(obj) and "Args:" not in doc and "Attributes:" not in doc:
            no_args.append(name)
        if ">>>" not in doc:
            no_example.append(name)
    n = len(objs)
    print(
        f"public names: {n}; with Args (or Attributes): {n - len(no_args)}; "
        f"with an example: {n - len(no_example)}"
    )
    if "--list" in sys.argv:
        print("no Args:", *no_args, sep="\n  ")
        print("no example:", *no_example, sep="\n  ")


if __name__ == "__main__":
    main()
