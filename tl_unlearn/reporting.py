"""Writing results safely: atomic text/JSON writes and standalone HTML for figures."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "check_html_in_browser", "figure_html", "find_chromium", "save_json"]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename.

    A crash or error while writing never leaves a half-written file at ``path``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
        >>> atomic_write_text(p, "{}").read_text()
        '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (non-JSON values via ``str``)."""
    return atomic_write_text(path, json.dumps(data, indent=1, default=str))


def figure_html(fig: Any, *, full_html: bool = False, include_plotlyjs: Any = False) -> str:
    """HTML of a plotly figure (a ``<div>`` by default, for embedding in a report)."""
    return fig.to_html(full_html=full_html, include_plotlyjs=include_plotlyjs)


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
