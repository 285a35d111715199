"""Test helpers: open an HTML file in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
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
    path: str | Path, *, screenshot: str | Path | None = None, width: int = 1300,
    height: int = 9000, budget_ms: int = 20_000, timeout: float = 180.0,
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
        base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                             timeout=timeout)
        if dom.returncode != 0 or not dom.stdout:
            raise RuntimeError(f"Chromium failed ({dom.returncode}): {dom.stderr[-500:]}")
        shot = None
        if screenshot is not None:
            shot = str(Path(screenshot).resolve())
            subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True,
                           timeout=timeout, check=True)
    # split the DOM at each figure container and look for the rendered svg inside it
    chunks = re.split(r'<div id="fig\d+" class="plotly-graph-div', dom.stdout)[1:]
    drawn = sum(1 for c in chunks if 'class="main-svg"' in c.split("<h2>")[0])
    return {"figures": len(chunks), "drawn": drawn, "screenshot": shot}
