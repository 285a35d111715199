"""The install script's torch switch (TORCH=cpu|cuda|keep), by its dry run: which torch build
each asks pip for, and which build it then insists on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(torch: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TL_UNLEARN_INSTALL_DRY_RUN": "1"}
    env.pop("TORCH", None)
    if torch is not None:
        env["TORCH"] = torch
    return subprocess.run(
        ["bash", "scripts/install.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "torch, index, check",
    [
        (None, "https://download.pytorch.org/whl/cpu", "assert not torch.version.cuda"),
        ("cpu", "https://download.pytorch.org/whl/cpu", "assert not torch.version.cuda"),
        ("cuda", "https://download.pytorch.org/whl/cu128", "assert torch.version.cuda"),
    ],
)
def test_install_switch_asks_for_the_build_and_checks_it(torch, index, check):
    proc = dry_run(torch)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    torch_line = next(line for line in lines if "torch==" in line and "install" in line)
    assert index in torch_line
    # torch first, then the package pinned to the torch that is there
    assert lines.index(torch_line) < next(i for i, line in enumerate(lines) if "-e .[dev]" in line)
    assert any("constraints.txt" in line and "-e .[dev]" in line for line in lines)
    assert check in lines[-1]


def test_install_keep_installs_no_torch_and_a_bad_value_stops():
    proc = dry_run("keep")
    assert proc.returncode == 0
    assert not any("torch==" in line and "pip install" in line for line in proc.stdout.splitlines())
    bad = dry_run("rocm")
    assert bad.returncode == 2 and "TORCH=rocm" in bad.stderr
