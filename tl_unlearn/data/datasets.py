"""Forget/retain data: text sources, deterministic fit/eval splits, token chunks and batches.

A :class:`ForgetRetainTask` holds two :class:`TextDataset` objects, ``forget`` and ``retain``,
each split into a *fit* part (for computing means, importance scores, steering vectors, SAE
training) and an *eval* part (for metrics). Splits are made per document from a hash of the
document's text, so they are deterministic, independent of document order, and identical texts
always land in the same split: no text is in both.

:meth:`TextDataset.tokenize` turns a split into a :class:`TokenDataset` of fixed-length chunks
(``[BOS] + up to seq_len - 1 tokens``; chunks never span two documents; the last chunk of a
document is right-padded and masked), up to a token budget, in a seeded random document order.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_unlearn.data.corpora import BUILTIN_CORPORA, load_corpus

__all__ = [
    "TextDataset",
    "TextSource",
    "TokenDataset",
    "predicted_positions",
    "require_forget_retain",
    "split_of",
]

Split = Literal["fit", "eval"]
TextSource = str | Path | Sequence[str] | datasets.Dataset
"""A builtin corpus name, a .txt/.json/.jsonl file or directory, a list of strings, or a Dataset."""


def split_of(text: str, eval_fraction: float, salt: str) -> Split:
    digest = hashlib.sha256((salt + "\x00" + text).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if u < eval_fraction else "fit"


def _read_file(path: Path, text_column: str) -> list[str]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line)[text_column] for line in fh if line.strip()]
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data[text_column]
        return [d[text_column] if isinstance(d, dict) else d for d in data]
    return [path.read_text(encoding="utf-8")]


def _read_source(source: TextSource, text_column: str) -> tuple[str, list[str]]:
    """Return ``(name, documents)`` for any supported source."""
    if isinstance(source, datasets.Dataset):
        if text_column not in source.column_names:
            raise ValueError(
                f"Dataset has no column {text_column!r}; its columns are {source.column_names}. "
                "Pass text_column=..."
            )
        return "dataset", list(source[text_column])
    if isinstance(source, str) and source in BUILTIN_CORPORA:
        return source, load_corpus(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ValueError(
                f"Text source {str(source)!r} is neither a builtin corpus "
                f"({sorted(BUILTIN_CORPORA)}) nor an existing file or directory."
            )
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in {".txt", ".json", ".jsonl"})
            docs = [d for f in files for d in _read_file(f, text_column)]
        else:
            docs = _read_file(path, text_column)
        return path.name, docs
    docs = list(source)
    if not all(isinstance(d, str) for d in docs):
        raise TypeError("A list source must contain only strings.")
    return "texts", docs


def predicted_positions(mask: Bool[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos_minus_1"]:
    """Positions whose next token is predicted: a real token followed by a real token.

    Aligned with ``logits[:, :-1]`` / ``tokens[:, 1:]`` (the last column is dropped).

    Examples:
        >>> predicted_positions(torch.tensor([[True, True, False]]))
        tensor([[ True, False]])
    """
    return mask[:, :-1] & mask[:, 1:]


def require_forget_retain(names: Iterable[str], what: str) -> None:
    """Raise a ValueError naming what lacks a ``"forget"`` or ``"retain"`` dataset.

    Examples:
        >>> require_forget_retain(["forget"], "f()")
        Traceback (most recent call last):
        ...
        ValueError: f() needs datasets ['retain']; got ['forget'].
    """
    if isinstance(names, (str, bytes, Tensor)) or not isinstance(names, Iterable):
        raise TypeError(
            f"{what} needs a mapping of datasets with 'forget' and 'retain' (e.g. "
            f"task.tokenize(...)), got {type(names).__name__}."
        )
    names = sorted(names)
    missing = {"forget", "retain"} - set(names)
    if missing:
        raise ValueError(f"{what} needs datasets {sorted(missing)}; got {names}.")


@dataclass
class TokenDataset:
    """Fixed-length token chunks with an attention mask, ready for TransformerLens.

    Plain text chunks score every predicted position. A *scored-positions mask*
    (``target_mask``) restricts scoring to some target tokens (e.g. the second copy of a
    repeated sequence); a prompt→answer dataset (from :class:`~tl_unlearn.data.tasks.PromptAnswers`)
    also records where each answer starts and, optionally, each counterfactual's first token.

    Attributes:
        name: Name of the dataset (e.g. ``"forget"``).
        tokens: Token ids, BOS first, right-padded.
        attention_mask: True at real tokens, False at padding.
        target_mask: True at the *target* tokens that are scored (aligned with ``tokens``; the
            logits at position ``t - 1`` predict ``tokens[:, t]``). None scores every
            predicted position.
        answer_start: Per row, the index of the first answer token (the prompt is
            ``tokens[row, :answer_start]``); None for plain text.
        counterfactual: Per row, the first token of the counterfactual answer (for the logit
            difference); None when there is none.
        document: Per row, the index of the source document it was cut from (text data made
            by :meth:`TextDataset.tokenize`); None when unknown.

    Examples:
        >>> from tl_unlearn import TokenDataset
        >>> import torch
        >>> t = torch.tensor([[0, 5, 6, 5, 6]])
        >>> ds = TokenDataset("rep", t, t >= 0, target_mask=torch.tensor([[0, 0, 0, 0, 1]]).bool())
        >>> ds.n_predictions
        1
    """

    name: str
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Bool[Tensor, "batch pos"]
    target_mask: Bool[Tensor, "batch pos"] | None = None
    answer_start: Int[Tensor, " batch"] | None = None
    counterfactual: Int[Tensor, " batch"] | None = None
    document: Int[Tensor, " batch"] | None = None

    def __post_init__(self) -> None:
        if self.tokens.shape != self.attention_mask.shape:
            raise ValueError(
                f"tokens {tuple(self.tokens.shape)} and attention_mask "
                f"{tuple(self.attention_mask.shape)} must have the same shape"
            )
        if self.tokens.ndim != 2 or self.tokens.shape[0] == 0:
            raise ValueError(f"TokenDataset {self.name!r} is empty.")
        if self.target_mask is not None:
            if self.target_mask.shape != self.tokens.shape:
                raise ValueError(
                    f"TokenDataset {self.name!r}: target_mask has shape "
                    f"{tuple(self.target_mask.shape)}, tokens "
                    f"{tuple(self.tokens.shape)}."
                )
            self.target_mask = self.target_mask.bool() & self.attention_mask.bool()
            self.target_mask[:, 0] = False  # BOS is never predicted
        for field_name in ("answer_start", "counterfactual", "document"):
            value = getattr(self, field_name)
            if value is not None and tuple(value.shape) != (len(self.tokens),):
                raise ValueError(
                    f"TokenDataset {self.name!r}: {field_name} has shape "
                    f"{tuple(value.shape)}; expected ({len(self.tokens)},)."
                )
        if self.answer_start is not None and self.target_mask is None:
            raise ValueError(f"TokenDataset {self.name!r}: answer_start needs a target_mask.")
        if self.counterfactual is not None and self.answer_start is None:
            raise ValueError(f"TokenDataset {self.name!r}: counterfactual needs answer_start.")
        if self.tokens.dtype.is_floating_point or self.tokens.dtype == torch.bool:
            raise TypeError(
                f"TokenDataset {self.name!r}: tokens must be integer ids, got dtype "
                f"{self.tokens.dtype}."
            )
        if self.attention_mask.dtype != torch.bool:
            self.attention_mask = self.attention_mask.bool()
        empty_rows = (~self.attention_mask.any(1)).nonzero().flatten()
        if len(empty_rows):
            raise ValueError(
                f"TokenDataset {self.name!r}: attention_mask has no True entry in "
                + (
                    "any row"
                    if len(empty_rows) == len(self.tokens)
                    else f"row {int(empty_rows[0])}"
                )
                + " (True marks real tokens, False padding): every row needs at least BOS."
            )
        neg = self.tokens[self.attention_mask] < 0
        if neg.any():
            raise ValueError(
                f"TokenDataset {self.name!r} has negative token id "
                f"{int(self.tokens[self.attention_mask][neg][0])} at a real "
                "position (e.g. -100 label padding): use the tokenizer's ids."
            )
        # right padding only: once a row's mask is False it stays False
        starts_late = (~self.attention_mask[:, :-1] & self.attention_mask[:, 1:]).any(1)
        if starts_late.any():
            row = int(starts_late.nonzero()[0])
            raise ValueError(
                f"TokenDataset {self.name!r} row {row} is left-padded (its mask "
                "has padding before real tokens). tl_unlearn expects BOS first and "
                "right padding: re-tokenize with padding_side='right'."
            )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_tokens(self) -> int:
        """Number of real (non-padding) tokens."""
        return int(self.attention_mask.sum())

    @property
    def n_predictions(self) -> int:
        """Number of scored positions (every position with a next token, for plain text)."""
        if self.target_mask is not None:
            return int(self.target_mask[:, 1:].sum())
        return int(self.attention_mask[:, 1:].sum())

    @property
    def n_documents(self) -> int | None:
        """Distinct source documents (None when the rows do not record them)."""
        return None if self.document is None else int(torch.unique(self.document).numel())

    @property
    def has_answers(self) -> bool:
        """True for prompt→answer data (answer metrics are computed)."""
        return self.answer_start is not None

    def rows(self, index: slice | Tensor) -> TokenDataset:
        """The rows ``index`` with every per-row field (a view for slices)."""

        def take(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return TokenDataset(
            self.name,
            self.tokens[index],
            self.attention_mask[index],
            take(self.target_mask),
            take(self.answer_start),
            take(self.counterfactual),
            take(self.document),
        )

    def head(self, n: int) -> TokenDataset:
        """The first ``n`` sequences (a view, no copy)."""
        return self.rows(slice(0, n))

    def views(self, batch_size: int = 8) -> Iterator[TokenDataset]:
        """Yield batches as :class:`TokenDataset` objects, padding columns trimmed.

        These are the ``batch`` a user metric receives (``metric(logits, batch)``).

        Examples:
            >>> ds = TokenDataset("x", torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.bool))
            >>> [len(b) for b in ds.views(2)]
            [2, 1]
        """
        from tl_unlearn.core.checks import check_positive_int  # (import cycle)

        check_positive_int(batch_size, "batch_size")
        for start in range(0, len(self), batch_size):
            rows = self.rows(slice(start, start + batch_size))
            width = int(rows.attention_mask.sum(1).max())
            yield TokenDataset(
                rows.name,
                rows.tokens[:, :width],
                rows.attention_mask[:, :width],
                None if rows.target_mask is None else rows.target_mask[:, :width],
                rows.answer_start,
                rows.counterfactual,
                rows.document,
            )

    def scored_positions(self) -> Bool[Tensor, "batch pos_minus_1"]:
        """Positions whose logits are scored, aligned with ``logits[:, :-1]``."""
        valid = predicted_positions(self.attention_mask)
        if self.target_mask is not None:
            valid = valid & self.target_mask[:, 1:]
        return valid

    def answer_logits(
        self, logits: Float[Tensor, "batch pos d_vocab"]
    ) -> Float[Tensor, "batch d_vocab"]:
        """Logits at each row's last prompt position (the ones that predict the answer).

        Use this instead of ``logits[:, -1]`` in a metric: prompts have different lengths and
        the answer is appended, so the last column is not the prediction of the answer.
        """
        if self.answer_start is None:
            raise ValueError(f"TokenDataset {self.name!r} has no answers (plain text).")
        rows = torch.arange(len(self.tokens), device=logits.device)
        return logits[rows, self.answer_start.to(logits.device) - 1]

    @property
    def answers(self) -> Int[Tensor, " batch"]:
        """First answer token per row."""
        if self.answer_start is None:
            raise ValueError(f"TokenDataset {self.name!r} has no answers (plain text).")
        return self.tokens.gather(1, self.answer_start[:, None]).squeeze(1)

    def batches(
        self, batch_size: int = 8
    ) -> Iterator[tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]]:
        """Yield ``(tokens, attention_mask)`` batches in order; padding columns are trimmed.

        Examples:
            >>> ds = TokenDataset("x", torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.bool))
            >>> [t.shape[0] for t, _ in ds.batches(2)]
            [2, 1]
        """
        from tl_unlearn.core.checks import check_positive_int  # (import cycle)

        check_positive_int(batch_size, "batch_size")
        for start in range(0, len(self), batch_size):
            mask = self.attention_mask[start : start + batch_size]
            width = int(mask.sum(1).max())
            yield self.tokens[start : start + batch_size, :width], mask[:, :width]

    def to_dataset(self) -> datasets.Dataset:
        """Convert to a ``datasets.Dataset`` with ``input_ids`` and ``attention_mask`` columns."""
        return datasets.Dataset.from_dict(
            {"input_ids": self.tokens.tolist(), "attention_mask": self.attention_mask.tolist()}
        )


@dataclass
class TextDataset:
    """Documents of one side of a task (forget or retain), split into fit and eval parts.

    Build it with :meth:`from_source`. ``fit`` and ``eval`` are disjoint and deterministic.

    Attributes:
        name: ``"forget"``, ``"retain"`` or the name of an extra set.
        fit: Documents for fitting interventions.
        eval: Documents for the reported numbers.
        source: Where the documents came from (a corpus name, a path).

    Examples:
        >>> from tl_unlearn import TextDataset
        >>> ds = TextDataset.from_source([f"doc {i}" for i in range(20)], name="forget")
        >>> len(ds.fit) + len(ds.eval), set(ds.fit) & set(ds.eval)
        (20, set())
    """

    name: str
    fit: list[str]
    eval: list[str]
    source: str = ""

    @property
    def has_corrupted(self) -> bool:
        """Never: documents have no corrupted partners (a task of prompts can)."""
        return False

    @classmethod
    def from_source(
        cls,
        source: TextSource,
        *,
        name: str | None = None,
        eval_fraction: float = 0.2,
        text_column: str = "text",
        min_chars: int = 1,
    ) -> TextDataset:
        """Read documents from any source and split them into fit/eval parts.

        Args:
            source: A builtin corpus name (``"python_code"``, ``"wikipedia"``,
                ``"shakespeare"``, ``"kjv"``), a path to a ``.txt`` file (one document), a
                ``.json``/``.jsonl`` file (records with ``text_column``) or a directory of
                those, a list of strings, or a ``datasets.Dataset``.
            name: Name used in errors and results (defaults to the source's name).
            eval_fraction: Expected share of documents in the eval split, in (0, 1).
            text_column: Column/field holding the text for datasets and JSON.
            min_chars: Documents shorter than this (after stripping) are dropped.

        Raises:
            ValueError: If the source has no usable documents, or either split ends empty.

        Examples:
            >>> ds = TextDataset.from_source(["a b c"] * 3 + [f"doc {i}" for i in range(20)])
            >>> set(ds.fit) & set(ds.eval)
            set()
        """
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        src_name, docs = _read_source(source, text_column)
        name = name or src_name
        unique = list(dict.fromkeys(d for d in docs if len(d.strip()) >= min_chars))
        if not unique:
            raise ValueError(f"Text source {name!r} has no non-empty documents.")
        fit, ev = [], []
        for doc in unique:
            (ev if split_of(doc, eval_fraction, "tl_unlearn") == "eval" else fit).append(doc)
        if not fit or not ev:
            raise ValueError(
                f"Text source {name!r} has {len(unique)} distinct document(s): too few to make "
                f"both a fit and an eval split (got {len(fit)} fit, {len(ev)} eval). "
                "Add documents or change eval_fraction."
            )
        return cls(name=name, fit=fit, eval=ev, source=str(src_name))

    def texts(self, split: Split) -> list[str]:
        if split not in ("fit", "eval"):
            raise ValueError(f"split must be 'fit' or 'eval', got {split!r}")
        return self.fit if split == "fit" else self.eval

    def tokenize(
        self,
        tokenizer: Any,
        split: Split = "eval",
        *,
        seq_len: int = 128,
        max_tokens: int | None = 20_000,
        seed: int = 0,
        n_ctx: int | None = None,
        min_chunk_tokens: int = 8,
        spread: bool = True,
    ) -> TokenDataset:
        """Tokenize one split into ``[BOS] + text`` chunks of length ``seq_len``.

        Documents are visited in a seeded random order and tokenized lazily until
        ``max_tokens`` real tokens are collected, so a small budget is cheap even on a large
        corpus. Chunks never span documents; a document's last chunk is right-padded and
        masked (dropped if shorter than ``min_chunk_tokens``). Each row records its document
        (``TokenDataset.document``).

        With ``spread`` (default) the budget is spread over as many documents as it allows:
        one chunk (a seeded random one) of every document before a second chunk of any, so
        sequences are as independent as the corpus permits (an interval over sequences
        assumes so). Without it, each document's chunks are taken in order, all of them,
        before the next document.

        Args:
            tokenizer: A Hugging Face tokenizer (``model.tokenizer``).
            split: ``"fit"`` or ``"eval"``.
            seq_len: Chunk length including BOS.
            max_tokens: Token budget (real tokens, BOS included); None for everything.
            seed: Seed of the document order.
            n_ctx: The model's context length; ``seq_len`` above it raises.
            min_chunk_tokens: Shortest chunk kept.
            spread: Round-robin over documents (see above).

        Raises:
            ValueError: If ``seq_len`` exceeds ``n_ctx`` or the split yields no chunk.
        """
        if n_ctx is not None and seq_len > n_ctx:
            raise ValueError(f"seq_len={seq_len} is longer than the model's context n_ctx={n_ctx}.")
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        bos = tokenizer.bos_token_id
        if bos is None:
            bos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
        body = seq_len - 1
        texts = self.texts(split)
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        rows: list[list[int]] = []
        docs: list[int] = []
        total = 0

        def chunks_of(i: int) -> list[list[int]]:
            ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
            out = [ids[s : s + body] for s in range(0, len(ids), body)]
            out = [c for c in out if len(c) + 1 >= min_chunk_tokens]
            if spread:  # a seeded random order of the document's chunks
                random.Random(f"{seed}/{i}").shuffle(out)
            return out

        def take(chunk: list[int], i: int) -> bool:
            """Add a chunk (cut to the budget); True when the budget is spent."""
            nonlocal total
            if max_tokens is not None:
                chunk = chunk[: max(0, max_tokens - total - 1)]
                if len(chunk) + 1 < min(min_chunk_tokens, 2):
                    return True
            rows.append([bos, *chunk])
            docs.append(i)
            total += len(chunk) + 1
            return max_tokens is not None and total >= max_tokens

        if spread:
            # round robin: one chunk of every document before a second chunk of any
            tokenized: dict[int, list[list[int]]] = {}
            done, depth = False, 0
            while not done:
                added = False
                for i in order:
                    if i not in tokenized:
                        tokenized[i] = chunks_of(i)
                    if depth < len(tokenized[i]):
                        added = True
                        if take(tokenized[i][depth], i):
                            done = True
                            break
                depth += 1
                done = done or not added
        else:
            for i in order:
                if any(take(c, i) for c in chunks_of(i)):
                    break
        if not rows:
            raise ValueError(
                f"The {split} split of {self.name!r} yields no chunk of at least "
                f"{min_chunk_tokens} tokens: the data is empty or too short."
            )
        tokens = torch.full((len(rows), seq_len), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), seq_len), dtype=torch.bool)
        for r, row in enumerate(rows):
            tokens[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = True
        return TokenDataset(
            name=self.name, tokens=tokens, attention_mask=mask, document=torch.tensor(docs)
        )
