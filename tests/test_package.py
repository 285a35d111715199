"""The package as a whole: its import graph has no cycle (lazy imports included), and the
quickstart path is importable from the root."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tl_unlearn

PACKAGE = Path(tl_unlearn.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the tl_unlearn modules it imports anywhere (function-level imports too),
    leaving out a module's own parent packages (re-export ``__init__`` files)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in mods and t != m and not m.startswith(t + "."):
                    graph[m].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    # the graph sees real imports
    assert "tl_unlearn.benchmark.result" in graph["tl_unlearn.benchmark.report"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    # the check can fail: a result that imported the report back would be a cycle
    graph["tl_unlearn.benchmark.result"].add("tl_unlearn.benchmark.report")
    assert find_cycle(graph) is not None


def test_quickstart_path_from_the_root():
    for name in tl_unlearn.__all__:
        assert getattr(tl_unlearn, name) is not None, name
    from tl_unlearn.benchmark.runner import run_benchmark
    from tl_unlearn.interventions import zero_ablation

    assert tl_unlearn.zero_ablation is zero_ablation and tl_unlearn.run_benchmark is run_benchmark


ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def page_section(title: str) -> str:
    page = ARCHITECTURE.read_text()
    return page.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def page_layers() -> list[list[str]]:
    """The packages of each layer, bottom first, as the architecture page lists them."""
    layers = []
    for line in page_section("Layers").splitlines():
        m = re.match(r"^\d+\. (.*?):", line)
        if m:
            layers.append(re.findall(r"`(tl_unlearn\.\w+)`", m.group(1)))
    return layers


def layer_of(module: str, layers: list[list[str]]) -> int:
    for i, packages in enumerate(layers):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return i
    raise AssertionError(f"{module} is in no layer of the architecture page")


def upward_imports(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Every import of a module from a layer above its own (the root package re-exports)."""
    return [
        f"{m} -> {t}"
        for m, targets in sorted(graph.items())
        if m != "tl_unlearn"
        for t in sorted(targets)
        if t != "tl_unlearn" and layer_of(t, layers) > layer_of(m, layers)
    ]


def private_imports() -> list[str]:
    """``from tl_unlearn.x import _name``: another module's private name."""
    out = []
    for m, f in _modules().items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tl_unlearn"):
                out += [f"{m}: {node.module}.{a.name}" for a in node.names if a.name[0] == "_"]
    return out


def test_imports_go_one_way_down_the_layers_of_the_architecture_page():
    layers = page_layers()
    assert [p for layer in layers for p in layer][:3] == [
        "tl_unlearn.core",
        "tl_unlearn.data",
        "tl_unlearn.engine",
    ]
    graph = import_graph()
    assert upward_imports(graph, layers) == []
    assert private_imports() == []
    # the check can fail: an argument check that imported the benchmark would go up 8 layers
    graph["tl_unlearn.core.checks"].add("tl_unlearn.benchmark.runner")
    assert upward_imports(graph, layers) == [
        "tl_unlearn.core.checks -> tl_unlearn.benchmark.runner"
    ]
    # core imports nothing of tl_unlearn outside core
    assert not [
        t
        for m, ts in import_graph().items()
        if m.startswith("tl_unlearn.core")
        for t in ts
        if not t.startswith("tl_unlearn.core")
    ]


def test_architecture_page_and_tree_are_equal():
    """The module map of the docs' architecture page names every module of the tree, each in
    its package's row, and no module that is not there."""
    import pkgutil

    table = page_section("Module map")
    rows = {}
    for line in table.splitlines()[2:]:
        cells = line.split(" | ")
        if len(cells) >= 2:
            for package in re.findall(r"`(tl_unlearn[\w.]*)`", cells[0]):
                rows[package] = cells[1]
    modules = {m.name for m in pkgutil.walk_packages(tl_unlearn.__path__, "tl_unlearn.")}
    missing = []
    for name in sorted(modules):
        parent, short = name.rsplit(".", 1)
        if name in rows or f"`{short}`" in rows.get(parent, ""):
            continue
        missing.append(name)
    assert not missing, f"modules the architecture page does not name: {missing}"
    # and no module that is not there: outside parentheses, a package's row names modules
    extra = []
    for package, text in rows.items():
        depth, kept = 0, []
        for ch in text:
            depth += ch == "("
            kept.append(ch if depth == 0 else " ")
            depth -= ch == ")"
        for short in re.findall(r"`([a-z_]+)`", "".join(kept)):
            if f"{package}.{short}" not in modules:
                extra.append(f"{package}.{short}")
    assert not extra, f"modules the architecture page names that the tree lacks: {extra}"


def test_every_public_name_documents_its_arguments_and_has_an_example():
    """The root API and the documented namespaces: Args (or Attributes) and a doctest each
    (``scripts/dev/docstring_coverage.py`` prints the same count, and ``--modules`` for all)."""
    import importlib.util
    import inspect
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "dev" / "docstring_coverage.py"
    spec = importlib.util.spec_from_file_location("docstring_coverage", path)
    cov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cov)
    objs = cov.public_objects()
    assert len(objs) >= 80
    for name, obj in objs.items():
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            doc += "\n" + (inspect.getdoc(obj.__init__) or "")
        if cov.needs_args(obj):
            assert "Args:" in doc or "Attributes:" in doc, f"{name} has no Args section"
        assert ">>>" in doc, f"{name} has no example"


def test_ruff_check_and_format():
    """``ruff check`` and ``ruff format --check`` pass on the package, tests and scripts."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "tl_unlearn", "tests", "scripts"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout[-3000:]}"


def test_docstring_examples_import_what_they_use():
    """Every example of the public API names only what it imports or defines itself (a
    doctest sees its module's globals, so it would pass without the import a reader needs)."""
    import ast
    import builtins
    import doctest
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "dev" / "docstring_coverage.py"
    spec = importlib.util.spec_from_file_location("docstring_coverage", path)
    cov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cov)
    parser = doctest.DocTestParser()
    undefined = {}
    for name, obj in cov.public_objects().items():
        code = "\n".join(ex.source for ex in parser.get_examples(obj.__doc__ or ""))
        tree = ast.parse(code)
        stored = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                stored.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                stored |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
                stored |= {a.arg for a in node.args.args}
                if isinstance(node, ast.FunctionDef):
                    stored.add(node.name)
        loads = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        if loads - stored:
            undefined[name] = sorted(loads - stored)
    assert not undefined, undefined


def test_the_flat_module_paths_of_0_1_still_import_with_a_warning():
    """User code that imported a moved module keeps working for one release."""
    import importlib
    import sys

    import pytest

    for old, new in tl_unlearn.MOVED_MODULES.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new[0]):
            module = importlib.import_module(old)
        for target in new:
            public = getattr(importlib.import_module(target), "__all__", [])
            assert all(getattr(module, name) is not None for name in public), (old, target)
        assert not (PACKAGE / (old.replace("tl_unlearn.", "").replace(".", "/") + ".py")).exists()
    assert tl_unlearn.Circuit is importlib.import_module("tl_unlearn.edges").Circuit
    assert "BenchmarkConfig" in vars(importlib.import_module("tl_unlearn.runs"))
