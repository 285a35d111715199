"""The documentation as a user meets it.

- Every ```python block of the README and of the docs pages runs as written, on its own, in a
  fresh interpreter (so it imports what it uses and builds its own data), within a budget.
  A block preceded by ``<!-- smollm2 -->`` uses the real model and is marked ``smollm2``.
- ``mkdocs build --strict`` passes (a broken link or API reference fails it).
- The README stays short.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docs/index.md is the README (written from it), so its blocks run once, from the README
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "index.md"),
]
BLOCK = re.compile(r"(<!-- *(?P<mark>[a-z0-9 :]+?) *-->\s*\n)?```python\n(?P<code>.*?)```", re.S)
#: Seconds a block may take on 2 CPU cores (a SmolLM2 block: loading the model included).
BUDGET = {"tiny": 60, "smollm2": 120}


def code_blocks() -> list:
    params = []
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start("code")].count("\n") + 1
            mark = (m.group("mark") or "").strip()
            marks = [pytest.mark.smollm2] if mark == "smollm2" else []
            params.append(
                pytest.param(
                    m.group("code"),
                    mark or "tiny",
                    id=f"{page.relative_to(ROOT)}:{line}",
                    marks=marks,
                )
            )
    return params


BLOCKS = code_blocks()


def test_the_pages_have_code_blocks():
    assert len(BLOCKS) >= 15


@pytest.mark.parametrize("code, kind", BLOCKS)
def test_code_block_runs_as_written(code, kind, tmp_path):
    budget = BUDGET["smollm2" if kind == "smollm2" else "tiny"]
    env = {
        **os.environ,
        "PYTHONWARNINGS": "error::DeprecationWarning:tl_unlearn",
        "TQDM_DISABLE": "1",
        "MPLBACKEND": "Agg",
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=budget * 3,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"the block failed:\n{proc.stderr[-3000:]}"
    assert seconds < budget, f"the block took {seconds:.0f} s (budget {budget} s)"
    print(f"{seconds:.1f} s")


def test_docs_build_strict(tmp_path):
    """``mkdocs build --strict``: every page, link, notebook and API reference resolves."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
    assert (tmp_path / "site" / "quickstart" / "index.html").exists()


def test_readme_is_short_and_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "bash scripts/install.sh && .venv/bin/tl-unlearn run" in text
    assert "bash scripts/install.sh && .venv/bin/python -m pytest" in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "no dates in the README"
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "no commit hashes in the README"


def test_no_docstring_or_page_cites_a_path_outside_the_repository():
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*ROOT.joinpath("tl_unlearn").rglob("*.py"), *PAGES]
        if "shared/" in p.read_text()
    ]
    assert not offenders


def test_docs_front_page_is_the_readme():
    """``docs/index.md`` is written from the README by ``scripts/dev/sync_docs_index.py``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sync_docs_index", ROOT / "scripts" / "dev" / "sync_docs_index.py"
    )
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    expected = sync.docs_index((ROOT / "README.md").read_text())
    assert (ROOT / "docs" / "index.md").read_text() == expected, (
        "docs/index.md is out of date: run python scripts/dev/sync_docs_index.py"
    )
