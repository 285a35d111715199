"""Write ``docs/index.md`` from ``README.md``: one source for the front page of both.

The README's links into ``docs/`` become links inside the site, and two lines that only make
sense on GitHub are swapped for their site versions. ``tests/test_docs.py`` fails when the two
drift apart; run this after editing the README.

    python scripts/dev/sync_docs_index.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWAPS = {
    "The docs site is built with `mkdocs build` (MkDocs Material; `mkdocs serve` to browse it):": "Start with the guide:",
    "MIT (see `LICENSE`); changes are listed in `CHANGELOG.md`.": "MIT; changes are listed in the [changelog](changelog.md).",
}


def docs_index(readme: str) -> str:
    """The docs front page made from the README's text."""
    text = readme.replace("(docs/", "(").replace(
        "(notebooks/quickstart.ipynb)", "(quickstart.ipynb)"
    )
    for old, new in SWAPS.items():
        text = text.replace(old, new)
    return (
        "<!-- written by scripts/dev/sync_docs_index.py from README.md: edit the README -->\n"
        + text
    )


def main() -> None:
    (ROOT / "docs" / "index.md").write_text(docs_index((ROOT / "README.md").read_text()))


if __name__ == "__main__":
    main()
