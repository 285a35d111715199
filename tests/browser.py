"""Test helpers: open an HTML file in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def check_html_in_browser(
    path: str | Path,
    *,
    screenshot: str | Path | None = None,
    width: int = 1300,
    height: int = 9000,
    budget_ms: int = 20_000,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Open an HTML file in headless Chromium; count plotly figures and the drawn ones.

    A figure counts as drawn when its ``plotly-graph-div`` holds a rendered ``main-svg``
    after scripts ran (``--dump-dom`` with a virtual time budget). Optionally saves a PNG
    screenshot.

    Returns:
        ``{"figures": n, "drawn": k, "screenshot": path or None}``.

    Raises:
        RuntimeError: If no Chromium is installed or it fails.
    """
    import re
    import subprocess

    browser = find_chromium()
    if browser is None:
        raise RuntimeError("No Chromium found (apt-get install chromium).")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        base = [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={width},{height}",
        ]
        dom = subprocess.run(
            [*base, "--dump-dom", url], capture_output=True, text=True, timeout=timeout
        )
        if dom.returncode != 0 or not dom.stdout:
            raise RuntimeError(f"Chromium failed ({dom.returncode}): {dom.stderr[-500:]}")
        shot = None
        if screenshot is not None:
            shot = str(Path(screenshot).resolve())
            subprocess.run(
                [*base, f"--screenshot={shot}", url],
                capture_output=True,
                timeout=timeout,
                check=True,
            )
    # split the DOM at each figure container and look for the rendered svg inside it
    chunks = re.split(r'<div id="fig\d+" class="plotly-graph-div', dom.stdout)[1:]
    drawn = sum(1 for c in chunks if 'class="main-svg"' in c.split("<h2>")[0])
    return {"figures": len(chunks), "drawn": drawn, "screenshot": shot}


def require_browser_stack(*modules: str) -> str:
    """Chromium's path, after checking ``modules`` import; skips the test when something is
    missing, or fails when ``TL_UNLEARN_REQUIRE_CHROMIUM`` is set (CI)."""
    import importlib.util
    import os

    import pytest

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    chromium = find_chromium()
    if chromium is None:
        missing.append("chromium")
    if missing:
        if os.environ.get("TL_UNLEARN_REQUIRE_CHROMIUM"):
            pytest.fail(f"{missing} required here (TL_UNLEARN_REQUIRE_CHROMIUM) but not found")
        pytest.skip(f"not installed: {missing}")
    return chromium


@contextlib.contextmanager
def jupyterlab_server(root: Path, log: Path, timeout: float = 90.0) -> Iterator[tuple[str, str]]:
    """Run JupyterLab on a free localhost port serving ``root``; yield its base URL with the
    token (``http://127.0.0.1:PORT/lab/tree/{path}?token=...`` opens a notebook). The app is
    exposed as ``window.jupyterapp`` so a test can run its commands."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "tl-unlearn-test"
    jupyter = Path(sys.executable).parent / "jupyter"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(jupyter),
                "lab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            t0 = time.time()
            while True:
                try:
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2
                    )
                    break
                except OSError as exc:
                    if proc.poll() is not None or time.time() - t0 > timeout:
                        raise RuntimeError(
                            f"JupyterLab did not start: {log.read_text()[-2000:]}"
                        ) from exc
                    time.sleep(0.5)
            yield f"http://127.0.0.1:{port}", token
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
