"""Prompt→answer tasks: the data researchers make circuit claims about, scored on the answer.

A :class:`PromptAnswers` holds prompts, one answer per prompt (one or more tokens), optional
counterfactual answers (for the logit difference) and optional corrupted prompts (the usual
patching baseline). It is one side of a :class:`ForgetRetainTask`, like a
:class:`~tl_unlearn.data.datasets.TextDataset`: split into *fit* and *eval* examples by a hash of each
example's group (so several templates of one fact never straddle the split), and tokenized
into a :class:`~tl_unlearn.data.datasets.TokenDataset` whose scored positions are the answer tokens
(teacher forcing: ``[BOS] + prompt + answer``, right-padded; the logits at the last prompt
token predict the first answer token). Padding is handled here, never by the user.

Builtin tasks (offline, usable as ``make_task(forget="ioi")`` or ``--forget ioi``):

- ``ioi``: indirect object identification (Wang et al. 2022), names that are one token for
  the loaded tokenizer, the repeated subject as counterfactual, an ABC corruption;
- ``induction``: repeated random tokens, only the second copy scored;
- ``greater_than``: the years template of Hanna et al. 2023, answer a later year,
  counterfactual an earlier one (first tokens differ);
- ``facts``: capitals and official languages from a committed table, several templates each.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from tl_unlearn.core.checks import check_positive_int
from tl_unlearn.data.datasets import Split, TextDataset, TextSource, TokenDataset, split_of

__all__ = [
    "BUILTIN_TASKS",
    "ForgetRetainTask",
    "InductionTask",
    "PromptAnswers",
    "builtin_task",
    "facts_task",
    "greater_than_task",
    "induction_vocab",
    "ioi_task",
    "make_task",
]

FACTS_PATH = Path(__file__).parents[1] / "assets" / "facts.json"

IOI_NAMES = [
    "Mary",
    "John",
    "James",
    "Sarah",
    "David",
    "Paul",
    "Anna",
    "Michael",
    "Laura",
    "Kevin",
    "Lisa",
    "Mark",
    "Peter",
    "Daniel",
    "Rachel",
    "Chris",
    "Kate",
    "Jack",
    "Ryan",
    "Amy",
    "Sam",
    "Max",
    "Tom",
    "Tim",
    "Adam",
    "Eric",
    "Frank",
    "Grace",
    "Helen",
    "Henry",
    "Lucy",
    "Mike",
    "Alice",
    "Emma",
    "Ben",
    "Joe",
    "Susan",
    "Steve",
]
IOI_TEMPLATES = [
    "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [A] and [B] went to the [PLACE], [B] handed a [OBJECT] to",
    "After [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "Then, [A] and [B] had a long argument. Afterwards [B] said to",
    "While [A] and [B] were working at the [PLACE], [B] gave a [OBJECT] to",
    "Friends [A] and [B] found a [OBJECT] at the [PLACE]. [B] gave it to",
    "The [PLACE] [A] and [B] went to had a [OBJECT]. [B] gave it to",
    "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
]
IOI_PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "station", "park"]
IOI_OBJECTS = ["drink", "book", "ring", "kiss", "bone", "basketball", "computer", "necklace"]
GREATER_THAN_NOUNS = [
    "war",
    "dynasty",
    "expedition",
    "project",
    "strike",
    "drought",
    "siege",
    "reign",
    "campaign",
    "journey",
]
GREATER_THAN_TEMPLATE = "The {noun} lasted from the year {century}{start:02d} to the year {century}"


@dataclass
class PromptAnswers:
    """Prompt→answer examples, split into fit and eval parts.

    Attributes:
        name: Name used in results and errors.
        prompts: The prompts (text; BOS is added when tokenizing).
        answers: One answer per prompt, usually with a leading space (``" Mary"``).
        counterfactuals: Optional wrong answer per prompt (``" John"``) for the logit
            difference.
        corrupted: Optional corrupted prompt per example (same answer), e.g. IOI's ABC
            prompts: the baseline of the normalised logit difference.
        groups: Optional group per example for the fit/eval split (examples of one group land
            in the same split; default: the prompt).
        eval_fraction: Expected share of groups in the eval split.

    Examples:
        >>> from tl_unlearn import PromptAnswers
        >>> pa = PromptAnswers("capitals", ["The capital of France is"] * 1
        ...                    + [f"Fact {i} is" for i in range(20)], [" Paris"] + [" x"] * 20)
        >>> len(pa.examples("fit")) + len(pa.examples("eval"))
        21
    """

    name: str
    prompts: list[str]
    answers: list[str]
    counterfactuals: list[str] | None = None
    corrupted: list[str] | None = None
    groups: list[str] | None = None
    eval_fraction: float = 0.2
    _split: dict[str, list[int]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_corrupted(self) -> bool:
        """Whether each example has a corrupted partner (what counterfactual patching and
        edge circuits patch from)."""
        return self.corrupted is not None

    def __post_init__(self) -> None:
        self.prompts, self.answers = list(self.prompts), list(self.answers)
        n = len(self.prompts)
        if n == 0:
            raise ValueError(f"PromptAnswers {self.name!r} has no example.")
        for field_name in ("answers", "counterfactuals", "corrupted", "groups"):
            values = getattr(self, field_name)
            if values is None:
                continue
            values = list(values)
            setattr(self, field_name, values)
            if len(values) != n:
                raise ValueError(
                    f"PromptAnswers {self.name!r}: {len(values)} {field_name} for "
                    f"{n} prompts; give one per prompt."
                )
            bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
            if bad:
                raise TypeError(
                    f"PromptAnswers {self.name!r}: {field_name}[{bad[0]}] is "
                    f"{type(values[bad[0]]).__name__}, not a string."
                )
        bad = [i for i, p in enumerate(self.prompts) if not isinstance(p, str) or not p]
        if bad:
            raise ValueError(
                f"PromptAnswers {self.name!r}: prompt {bad[0]} "
                f"({self.prompts[bad[0]]!r}) is not a non-empty string."
            )
        bad = [i for i, a in enumerate(self.answers) if not a]
        if bad:
            raise ValueError(
                f"PromptAnswers {self.name!r}: answer {bad[0]} (for prompt "
                f"{self.prompts[bad[0]]!r}) is empty."
            )
        if self.counterfactuals is not None:
            same = [i for i, (a, c) in enumerate(zip(self.answers, self.counterfactuals)) if a == c]
            if same:
                i = same[0]
                raise ValueError(
                    f"PromptAnswers {self.name!r}: the counterfactual of example "
                    f"{i} equals its answer ({self.answers[i]!r}); a logit "
                    "difference against itself is 0 by construction."
                )
        if not 0.0 < self.eval_fraction <= 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1], got {self.eval_fraction}")
        keys = self.groups or self.prompts
        fit, ev = [], []
        if self.eval_fraction == 1.0:  # evaluate everything, fit nothing
            ev = list(range(len(keys)))
        else:
            for i, key in enumerate(keys):
                (ev if split_of(key, self.eval_fraction, "tl_unlearn") == "eval" else fit).append(i)
        if not ev or (self.eval_fraction < 1.0 and not fit):
            raise ValueError(
                f"PromptAnswers {self.name!r} has {len(set(keys))} distinct prompt(s) (or "
                f"groups): the split by hash put {len(fit)} in fit and {len(ev)} in eval, and "
                f"both need some; at eval_fraction={self.eval_fraction} that takes about "
                f"{math.ceil(3 / min(self.eval_fraction, 1 - self.eval_fraction))} distinct "
                "prompts. Add examples, or pass eval_fraction=1.0 to evaluate all of them "
                "(no fit split)."
            )
        self._split = {"fit": fit, "eval": ev}

    def __len__(self) -> int:
        return len(self.prompts)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_source(
        cls,
        source: Any,
        *,
        name: str | None = None,
        eval_fraction: float = 0.2,
        prompt_column: str = "prompt",
        answer_column: str = "answer",
        counterfactual_column: str = "counterfactual",
        corrupted_column: str = "corrupted",
    ) -> PromptAnswers:
        """Build from a ``datasets.Dataset``, a JSONL/CSV file, a list of ``(prompt, answer)``
        or ``(prompt, answer, counterfactual)`` tuples or of dicts, or a TransformerLens
        ``IOIDataset``.

        Examples:
            >>> pa = PromptAnswers.from_source([(f"Q{i}:", f" A{i}") for i in range(10)])
            >>> pa.answers[0]
            ' A0'
        """
        from transformer_lens.evals import IOIDataset

        if isinstance(source, IOIDataset):
            return cls.from_ioi_dataset(source, name=name or "ioi", eval_fraction=eval_fraction)
        cols = (prompt_column, answer_column, counterfactual_column, corrupted_column)
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise ValueError(
                    f"Prompt→answer source {str(source)!r} is not a file (JSONL or "
                    f"CSV) nor a builtin task ({sorted(BUILTIN_TASKS)})."
                )
            if path.suffix == ".csv":
                with path.open(newline="", encoding="utf-8") as fh:
                    records = list(csv.DictReader(fh))
            elif path.suffix in (".jsonl", ".json"):
                text = path.read_text(encoding="utf-8")
                records = (
                    json.loads(text)
                    if path.suffix == ".json"
                    else [json.loads(line) for line in text.splitlines() if line.strip()]
                )
            else:
                raise ValueError(f"{path.name}: prompt→answer files must be .jsonl, .json or .csv.")
            name = name or path.stem
        elif isinstance(source, datasets.Dataset):
            records = source.to_list()
            name = name or "dataset"
        else:
            records = list(source)
            if records and not isinstance(records[0], dict):
                records = [dict(zip(cols, r)) for r in records]
            name = name or "prompts"
        if not records:
            raise ValueError(f"Prompt→answer source {name!r} is empty.")
        missing = [c for c in cols[:2] if c not in records[0]]
        if missing:
            raise ValueError(
                f"Prompt→answer source {name!r} has no column {missing[0]!r}; its "
                f"columns are {sorted(records[0])}."
            )

        def column(c: str) -> list[str] | None:
            if not all(r.get(c) not in (None, "") for r in records):
                return None
            return [r[c] for r in records]

        return cls(
            name,
            column(prompt_column) or [r[prompt_column] for r in records],
            [r[answer_column] for r in records],
            column(counterfactual_column),
            column(corrupted_column),
            eval_fraction=eval_fraction,
        )

    @classmethod
    def from_ioi_dataset(
        cls, ds: Any, *, name: str = "ioi", eval_fraction: float = 0.2
    ) -> PromptAnswers:
        """From ``transformer_lens.evals.IOIDataset``: answer ``IO``, counterfactual ``S``."""
        prompts, answers, cfs = [], [], []
        for s in ds.samples:
            text, io = s["text"], s["IO"]
            prompts.append(text[: -len(io)] if text.endswith(io) else text)
            answers.append(io)
            cfs.append(s["S"])
        return cls(name, prompts, answers, cfs, eval_fraction=eval_fraction)

    # ------------------------------------------------------------------ splits
    def examples(self, split: Split) -> list[int]:
        if split not in ("fit", "eval"):
            raise ValueError(f"split must be 'fit' or 'eval', got {split!r}")
        return self._split[split]

    def texts(self, split: Split) -> list[str]:
        """Prompt + answer texts of a split (for text-based fitting and overlap checks)."""
        return [self.prompts[i] + self.answers[i] for i in self.examples(split)]

    @property
    def fit(self) -> list[str]:
        return self.texts("fit")

    @property
    def eval(self) -> list[str]:
        return self.texts("eval")

    # ------------------------------------------------------------------ tokens
    def tokenize(
        self,
        tokenizer: Any,
        split: Split = "eval",
        *,
        max_tokens: int | None = 20_000,
        max_examples: int | None = None,
        seed: int = 0,
        n_ctx: int | None = None,
        corrupted: bool = False,
        **_ignored: Any,
    ) -> TokenDataset:
        """Tokenize a split as ``[BOS] + prompt + answer`` rows with the answer scored.

        Prompt and answer are tokenized separately (the answer keeps its leading space), so
        the answer tokens are exactly ``tokenizer(answer)``. Examples are taken in a seeded
        random order up to ``max_tokens`` real tokens or ``max_examples`` examples.
        ``seq_len`` and other chunking options of text data are accepted and ignored (each
        row is one example).

        Args:
            tokenizer: A Hugging Face tokenizer (``model.tokenizer``).
            split: ``"fit"`` or ``"eval"``.
            max_tokens: Token budget (None: no budget).
            max_examples: Example budget (None: no budget).
            seed: Seed of the example order.
            n_ctx: The model's context; a longer example raises.
            corrupted: Use the corrupted prompts (same answers): the baseline data of the
                normalised logit difference.

        Raises:
            ValueError: Naming the example: an answer that tokenizes to nothing, a prompt
                longer than ``n_ctx``, a counterfactual whose first token equals the
                answer's, or no corrupted prompts when ``corrupted=True``.
        """
        if corrupted and self.corrupted is None:
            raise ValueError(f"PromptAnswers {self.name!r} has no corrupted prompts.")
        prompts = self.corrupted if corrupted else self.prompts
        bos = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
        order = list(self.examples(split))
        if not order:
            raise ValueError(
                f"PromptAnswers {self.name!r} has no {split} split "
                f"(eval_fraction={self.eval_fraction} puts every example in eval): "
                "fit on other data, or use eval_fraction < 1."
            )
        random.Random(seed).shuffle(order)
        rows, starts, cfs, total = [], [], [], 0
        for i in order:
            if max_examples is not None and len(rows) >= max_examples:
                break
            p_ids = [bos, *tokenizer(prompts[i], add_special_tokens=False)["input_ids"]]
            a_ids = tokenizer(self.answers[i], add_special_tokens=False)["input_ids"]
            if not a_ids:
                raise ValueError(
                    f"PromptAnswers {self.name!r}: answer {self.answers[i]!r} of "
                    f"prompt {prompts[i]!r} tokenizes to nothing."
                )
            if n_ctx is not None and len(p_ids) + len(a_ids) > n_ctx:
                raise ValueError(
                    f"PromptAnswers {self.name!r}: prompt {prompts[i][:60]!r} "
                    f"with its answer is {len(p_ids) + len(a_ids)} tokens; the "
                    f"model's context n_ctx is {n_ctx}."
                )
            if self.counterfactuals is not None:
                c_ids = tokenizer(self.counterfactuals[i], add_special_tokens=False)["input_ids"]
                if not c_ids or c_ids[0] == a_ids[0]:
                    raise ValueError(
                        f"PromptAnswers {self.name!r}: counterfactual "
                        f"{self.counterfactuals[i]!r} of prompt {prompts[i]!r} has the same "
                        f"first token as the answer {self.answers[i]!r} (or none), so the "
                        "logit difference is undefined."
                    )
            if max_tokens is not None and rows and total + len(p_ids) + len(a_ids) > max_tokens:
                break
            if self.counterfactuals is not None:
                cfs.append(c_ids[0])
            rows.append(p_ids + a_ids)
            starts.append(len(p_ids))
            total += len(rows[-1])
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        target = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, (row, start) in enumerate(zip(rows, starts)):
            tokens[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = True
            target[r, start : len(row)] = True
        return TokenDataset(
            self.name,
            tokens,
            mask,
            target,
            torch.tensor(starts),
            torch.tensor(cfs) if self.counterfactuals is not None else None,
        )


# ---------------------------------------------------------------------- builtin tasks
def _single_token_names(tokenizer: Any | None) -> list[str]:
    if tokenizer is None:
        return list(IOI_NAMES)
    names = [
        n for n in IOI_NAMES if len(tokenizer(" " + n, add_special_tokens=False)["input_ids"]) == 1
    ]
    if len(names) < 3:
        raise ValueError(
            "Fewer than 3 IOI names are single tokens for this tokenizer "
            f"({names}); pass names=... to ioi_task()."
        )
    return names


def ioi_task(
    tokenizer: Any | None = None,
    n: int = 600,
    *,
    seed: int = 0,
    names: Sequence[str] | None = None,
    name: str = "ioi",
) -> PromptAnswers:
    """Indirect object identification: ``"When Mary and John went to the store, John gave a
    drink to"`` → ``" Mary"``, counterfactual ``" John"``, corrupted (ABC) prompt with a third
    name in place of the repeated subject.

    Names are kept only if ``" " + name`` is one token for ``tokenizer`` (the IOI pitfall);
    examples are grouped by their name pair for the split.

    Examples:
        >>> pa = ioi_task(n=40)
        >>> pa.prompts[0].endswith(" to"), pa.answers[0] != pa.counterfactuals[0]
        (True, True)
    """
    pool = list(names) if names is not None else _single_token_names(tokenizer)
    rng = random.Random(seed)
    prompts, answers, cfs, corrupted, groups = [], [], [], [], []
    for _ in range(n):
        a, b, c = rng.sample(pool, 3)
        template = (
            rng.choice(IOI_TEMPLATES)
            .replace("[PLACE]", rng.choice(IOI_PLACES))
            .replace("[OBJECT]", rng.choice(IOI_OBJECTS))
        )
        if rng.random() < 0.5:  # ABBA and BABA orders
            template = template.replace("[A] and [B]", "[B] and [A]", 1)
        prompt = template.replace("[A]", a).replace("[B]", b)
        last = prompt.rfind(b)
        prompts.append(prompt)
        corrupted.append(prompt[:last] + c + prompt[last + len(b) :])
        answers.append(" " + a)
        cfs.append(" " + b)
        groups.append("|".join(sorted((a, b))))
    return PromptAnswers(name, prompts, answers, cfs, corrupted, groups)


def greater_than_task(n: int = 400, *, seed: int = 0, name: str = "greater_than") -> PromptAnswers:
    """Hanna et al.'s years template: ``"The war lasted from the year 1732 to the year 17"``.

    The start year's last two digits ``YY`` lie in 20..79. The answer is a later year in the
    next decade and the counterfactual an earlier one in the previous decade, so the two
    differ in their first token for digit-by-digit tokenizers too; the logit difference
    measures the preference for a later year (the task's usual probability difference needs
    every year to be one token, which many tokenizers do not give). The corrupted prompt uses
    start year ``01``.

    Examples:
        >>> pa = greater_than_task(n=3)
        >>> pa.prompts[0][-9:]
        'e year 17'
    """
    rng = random.Random(seed)
    prompts, answers, cfs, corrupted = [], [], [], []
    for _ in range(n):
        century, start = rng.choice([11, 12, 13, 14, 15, 16, 17, 18]), rng.randint(20, 79)
        noun = rng.choice(GREATER_THAN_NOUNS)
        prompts.append(GREATER_THAN_TEMPLATE.format(noun=noun, century=century, start=start))
        corrupted.append(GREATER_THAN_TEMPLATE.format(noun=noun, century=century, start=1))
        decade = start // 10
        answers.append(f"{(decade + 1) * 10 + rng.randint(0, 9):02d}")
        cfs.append(f"{(decade - 1) * 10 + rng.randint(0, 9):02d}")
    return PromptAnswers(name, prompts, answers, cfs, corrupted)


def facts_task(*, relations: Sequence[str] | None = None, name: str = "facts") -> PromptAnswers:
    """Factual recall from the committed table (capitals, official languages), several prompt
    templates per fact; the counterfactual is the answer of another fact with the same
    relation. Examples are grouped by fact, so a fact's templates share a split.

    Examples:
        >>> pa = facts_task(relations=["capital"])
        >>> pa.prompts[0], pa.answers[0]
        ('The capital of France is', ' Paris')
    """
    table = json.loads(FACTS_PATH.read_text(encoding="utf-8"))
    facts = [f for f in table["facts"] if relations is None or f[1] in relations]
    if not facts:
        raise ValueError(
            f"No fact has relation in {relations}; the table has "
            f"{sorted({f[1] for f in table['facts']})}."
        )
    prompts, answers, cfs, groups = [], [], [], []
    for k, (subject, relation, obj) in enumerate(facts):
        others = [f[2] for f in facts if f[1] == relation and f[2] != obj]
        cf = others[k % len(others)]
        for template in table["templates"][relation]:
            prompt = template.format(subject=subject)
            prompts.append(prompt[0].upper() + prompt[1:])
            answers.append(" " + obj)
            cfs.append(" " + cf)
            groups.append(f"{subject}|{relation}")
    return PromptAnswers(name, prompts, answers, cfs, None, groups)


def induction_vocab(tokenizer: Any, size: int | None = 1024) -> torch.Tensor:
    """The first ``size`` ordinary (non-special) token ids: in a BPE vocabulary these are
    the bytes and the earliest, most frequent merges. None: every ordinary id."""
    special = set(getattr(tokenizer, "all_special_ids", []))
    ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    return ids if size is None else ids[:size]


@dataclass
class InductionTask:
    """Repeated random tokens ``[BOS] + A + A``: only the second copy is scored.

    The first token of the second copy is not scored either (nothing earlier predicts it),
    so every scored token is predictable by induction alone. Random tokens are drawn from the
    first ``vocab_size`` ordinary (non-special) ids of the tokenizer (:func:`induction_vocab`;
    None: all of them); fit and eval use different seeds, so they never share a sequence.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> ds = InductionTask(half=10).tokenize(load_tiny_model().tokenizer, max_tokens=210)
        >>> len(ds), ds.n_predictions
        (10, 90)
    """

    name: str = "induction"
    half: int = 24
    vocab_size: int | None = 1024
    fit: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)

    @property
    def has_corrupted(self) -> bool:
        """Always: ``tokenize(..., corrupted=True)`` draws other tokens in the first copy."""
        return True

    def texts(self, split: Split) -> list[str]:
        return []

    def tokenize(
        self,
        tokenizer: Any,
        split: Split = "eval",
        *,
        max_tokens: int | None = 20_000,
        seed: int = 0,
        n_ctx: int | None = None,
        corrupted: bool = False,
        max_examples: int | None = None,
        **_ignored: Any,
    ) -> TokenDataset:
        """Rows of ``1 + 2 * half`` tokens up to ``max_tokens`` (at least one row; at most
        ``max_examples`` rows when given).

        With ``corrupted=True`` the same rows come with their first copy replaced by other
        random tokens (``[BOS] + B + A``, same length): the counterfactual partner of each row,
        where induction has nothing to copy from.
        """
        if split not in ("fit", "eval"):
            raise ValueError(f"split must be 'fit' or 'eval', got {split!r}")
        width = 1 + 2 * self.half
        if n_ctx is not None and width > n_ctx:
            raise ValueError(f"InductionTask rows are {width} tokens; n_ctx is {n_ctx}.")
        n = max(1, (max_tokens or 20_000) // width)
        if max_examples is not None:
            n = min(n, check_positive_int(max_examples, "max_examples"))
        vocab = induction_vocab(tokenizer, self.vocab_size)
        gen = torch.Generator().manual_seed(seed * 2 + (split == "eval"))
        half = vocab[torch.randint(len(vocab), (n, self.half), generator=gen)]
        bos = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        first = half
        if corrupted:  # other tokens in the first copy, drawn from the same vocabulary
            other = torch.Generator().manual_seed(seed * 2 + (split == "eval") + 1_000_003)
            first = vocab[torch.randint(len(vocab), (n, self.half), generator=other)]
            same = first == half
            while same.any():  # never the token the second copy repeats at that place
                first[same] = vocab[torch.randint(len(vocab), (int(same.sum()),), generator=other)]
                same = first == half
        tokens = torch.cat([torch.full((n, 1), bos), first, half], 1)
        target = torch.zeros_like(tokens, dtype=torch.bool)
        target[:, self.half + 2 :] = True
        return TokenDataset(self.name, tokens, torch.ones_like(target), target)


class _Deferred:
    """A builtin task whose examples depend on the tokenizer (IOI names)."""

    def __init__(self, name: str, build: Callable[[Any], PromptAnswers]) -> None:
        self.name, self._build = name, build
        self._plain = build(None)

    @property
    def has_corrupted(self) -> bool:
        """Whether the task's examples have corrupted partners."""
        return self._plain.has_corrupted

    def texts(self, split: Split) -> list[str]:
        return self._plain.texts(split)

    @property
    def fit(self) -> list[str]:
        return self._plain.fit

    @property
    def eval(self) -> list[str]:
        return self._plain.eval

    def tokenize(self, tokenizer: Any, split: Split = "eval", **kwargs: Any) -> TokenDataset:
        built = self._build(tokenizer)
        built.name = self.name
        return built.tokenize(tokenizer, split, **kwargs)


BUILTIN_TASKS: dict[str, Callable[[], Any]] = {
    "ioi": lambda: _Deferred("ioi", lambda tok: ioi_task(tok)),
    "induction": InductionTask,
    "greater_than": greater_than_task,
    "facts": facts_task,
}


def builtin_task(name: str) -> Any:
    """A builtin task by name (``ioi``, ``induction``, ``greater_than``, ``facts``)."""
    if name not in BUILTIN_TASKS:
        raise ValueError(f"Unknown task {name!r}; builtin tasks are {sorted(BUILTIN_TASKS)}.")
    return BUILTIN_TASKS[name]()


@dataclass
class ForgetRetainTask:
    """A forget set and a retain set, each with fit and eval splits.

    Attributes:
        forget: The forget side (a :class:`~tl_unlearn.data.datasets.TextDataset`, a
            :class:`PromptAnswers` or an :class:`InductionTask`).
        retain: The retain side.
        extra: More retain-like sets by name, evaluated beside the retain set.

    Examples:
        >>> from tl_unlearn import make_task
        >>> task = make_task(forget=["def f(x):\\n    return x"] * 1 + [f"x = {i}" for i in range(30)],
        ...                  retain=[f"The cat number {i} sat." for i in range(30)])
        >>> task.forget.name, task.retain.name
        ('forget', 'retain')
    """

    forget: TextDataset
    retain: TextDataset
    extra: dict[str, TextDataset] = field(default_factory=dict)

    def datasets(self) -> dict[str, TextDataset]:
        """All text datasets by name: forget, retain, then any extra retain sets."""
        return {"forget": self.forget, "retain": self.retain, **self.extra}

    def tokenize(
        self, tokenizer: Any, split: Split = "eval", **kwargs: Any
    ) -> dict[str, TokenDataset]:
        """Tokenize every dataset of the task; keyword arguments go to :meth:`TextDataset.tokenize`."""
        return {k: v.tokenize(tokenizer, split, **kwargs) for k, v in self.datasets().items()}


def _side(source: Any, name: str, kw: dict[str, Any]) -> Any:
    """One side of a task: a builtin or given prompt→answer task, else text documents."""
    if isinstance(source, str) and source in BUILTIN_TASKS:
        source = builtin_task(source)
    if isinstance(source, PromptAnswers):
        return dataclasses.replace(source, name=name)
    if hasattr(source, "tokenize") and hasattr(source, "texts"):  # induction, deferred IOI
        source = copy.copy(source)
        source.name = name
        return source
    return TextDataset.from_source(source, name=name, **kw)


def make_task(
    forget: TextSource = "python_code",
    retain: TextSource = "wikipedia",
    *,
    extra_retain: dict[str, TextSource] | None = None,
    eval_fraction: float = 0.2,
    text_column: str = "text",
) -> ForgetRetainTask:
    """Build a forget/retain task from any text sources.

    Args:
        forget: What the intervention should make the model worse at (default: Python code):
            any text source, a builtin prompt→answer task (``"ioi"``, ``"induction"``,
            ``"greater_than"``, ``"facts"``) or a :class:`~tl_unlearn.data.tasks.PromptAnswers`.
        retain: What the model should stay good at (default: English Wikipedia prose); the
            same kinds of source.
        extra_retain: More retain sets by name (e.g. ``{"shakespeare": "shakespeare"}``).
        eval_fraction: Share of documents held out for evaluation.
        text_column: Text column for datasets / JSON sources.

    Returns:
        The task, with deterministic, disjoint fit/eval splits.

    Examples:
        >>> from tl_unlearn import make_task
        >>> task = make_task("python_code", "kjv")
        >>> len(task.forget.fit) > len(task.forget.eval) > 0
        True
    """
    kw = dict(eval_fraction=eval_fraction, text_column=text_column)
    extra = {k: _side(v, k, kw) for k, v in (extra_retain or {}).items()}
    task = ForgetRetainTask(
        forget=_side(forget, "forget", kw), retain=_side(retain, "retain", kw), extra=extra
    )
    forget_docs = set(task.forget.fit) | set(task.forget.eval)
    for name, ds in task.datasets().items():
        if name == "forget":
            continue
        shared = forget_docs & (set(ds.fit) | set(ds.eval))
        if shared:
            raise ValueError(
                f"The forget and {name} sets share {len(shared)} document(s) (e.g. "
                f"{next(iter(shared))[:60]!r}): a text cannot be both forgotten and retained. "
                "Remove the overlap."
            )
    return task
