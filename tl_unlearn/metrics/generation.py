"""Behaviour on generated text: what an intervention does to what the model writes.

:func:`generation_behaviour` generates continuations of a few prompts with the intervention
held (batched, KV cache on for a ``HookedTransformer``, seeded sampling or greedy) at each
level of a family (steering coefficients, ablation levels) and for the original model, then
measures, per continuation (definitions: ``docs/metrics.md``, "Generated text"):

- ``topic_frequency``: share of generated words in a topic word list (ActAdd's measure).
  Words are lower-cased alphabetic runs of the continuation (prompt excluded). Two lists ship
  with the package: ``"wedding"`` and ``"code"`` (:func:`topic_words`).
- ``fluency_perplexity``: perplexity of the continuation tokens under the *original* model,
  given the prompt (low = fluent by the original model's standard).
- ``repetition``: share of word 3-grams of a continuation that repeat an earlier 3-gram of it.
- ``distinct_2``: unique word 2-grams / all word 2-grams, within each continuation.
- ``forget_likeness``: mean per-token log-likelihood ratio ``log p_F(t) - log p_R(t)`` of the
  continuation tokens under add-one-smoothed unigram models fitted on the forget and retain
  fit splits (:class:`UnigramDomain`); > 0 means "looks like the forget domain". A unigram
  model is cheap and needs no second network; it sees vocabulary, not syntax.

Every metric is a ratio of sums over continuations and carries a two-stage bootstrap interval
(prompts, then samples within a prompt); differences against the original model are paired
(same prompts resampled for both).

ActAdd steering injects at the first prompt positions and skips ``seq_len == 1`` forward
passes, so with the KV cache the prompt is steered exactly once, as in the paper. Prompts are
batched only with prompts of the same token length, so no padding ever shifts those positions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_unlearn.core.checks import Hooks, check_hook_name, model_device
from tl_unlearn.core.results import Result
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.hooks import Intervention
from tl_unlearn.metrics.intervals import (
    Interval,
    error_bars,
    paired_difference_interval,
    ratio_interval,
    ratio_of_sums,
)

__all__ = [
    "GenerationBehaviour",
    "GenerationRun",
    "UnigramDomain",
    "NEUTRAL_PROMPTS",
    "generate_tokens",
    "generation_behaviour",
    "topic_words",
    "words",
]

NEUTRAL_PROMPTS = (
    "I went up to my friend and said",
    "Yesterday, my neighbour told me that",
    "The best thing about the weekend is",
    "She opened the letter and read",
    "Here is what happened last Tuesday:",
    "My favourite memory from last year is",
    "When I woke up this morning, I",
    "The most important thing to remember is",
    "He looked out of the window and",
    "Let me tell you about my family.",
    "We spent the afternoon",
    "The story begins in a small town where",
    "Last summer we decided to",
    "The letter from my cousin said that",
    "Everyone in the room turned when",
    "I have been thinking a lot about",
    "The bus was late again, so",
    "On the way home from school,",
    "The first thing you notice about the village is",
    "After dinner, we sat down and",
    "My grandfather always used to say that",
    "It was a quiet evening until",
    "The reason I called you today is",
    "At the end of the street there is",
    "Nobody expected that the meeting would",
    "The new teacher walked into the classroom and",
    "When the rain finally stopped, we",
    "I still remember the day when",
    "There is something I need to tell you:",
    "The train pulled into the station and",
    "Our plan for the holiday was simple:",
    "The old house on the hill",
    "As soon as I got to work,",
    "My sister called me last night because",
    "The market was busy that morning, and",
    "If you ever visit the coast, you should",
    "The children ran into the garden and",
    "It all started with a phone call from",
    "The first time I met him, he",
    "We packed our bags and",
    "This morning the news said that",
    "The shop on the corner has been",
    "I asked the waiter whether",
    "At the library last week, everyone",
    "The best advice I ever got was",
    "They arrived at the hotel late and",
    "Walking through the park, I saw",
    "Before the sun came up, she",
    "Every Sunday my parents",
    "The doctor looked at the results and",
    "When we reached the top of the hill,",
)
"""Neutral prompts (no topic). Settings are tuned on the first 4 and reported on the rest."""

# metric -> (numerator key, denominator key); fluency is exp() of its ratio
METRICS: dict[str, tuple[str, str]] = {
    "topic_frequency": ("topic_words", "words"),
    "fluency_perplexity": ("nll", "tokens"),
    "repetition": ("repeated_trigrams", "trigrams"),
    "distinct_2": ("distinct_bigrams", "bigrams"),
    "forget_likeness": ("domain_llr", "tokens"),
}
_EXP = {"fluency_perplexity"}
_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased alphabetic runs of ``text``.

    Examples:
        >>> words("The bride's vows, 2 times!")
        ['the', 'bride', 's', 'vows', 'times']
    """
    return _WORD.findall(text.lower())


def topic_words(name_or_words: str | Iterable[str]) -> frozenset[str]:
    """A committed topic list by name (``"wedding"``, ``"code"``) or the given words, lower-cased.

    Examples:
        >>> "bride" in topic_words("wedding"), sorted(topic_words(["Cat", "dog"]))
        (True, ['cat', 'dog'])
    """
    if isinstance(name_or_words, str):
        path = resources.files("tl_unlearn") / "assets" / "words" / f"{name_or_words}.txt"
        if not path.is_file():
            names = sorted(
                p.name[:-4]
                for p in (resources.files("tl_unlearn") / "assets" / "words").iterdir()
                if p.name.endswith(".txt")
            )
            raise ValueError(
                f"Unknown topic word list {name_or_words!r}; committed lists are "
                f"{names}, or pass a list of words."
            )
        lines = path.read_text(encoding="utf-8").splitlines()
        return frozenset(w.strip().lower() for w in lines if w.strip() and not w.startswith("#"))
    out = frozenset(str(w).strip().lower() for w in name_or_words)
    if not out or any(not w for w in out):
        raise ValueError("topic_words needs at least one non-empty word.")
    return out


def _ngram_counts(ws: Sequence[str], n: int) -> tuple[int, int, int]:
    """``(n-grams, repeats of an earlier n-gram, distinct n-grams)`` of one word list."""
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    distinct = len(set(grams))
    return len(grams), len(grams) - distinct, distinct


@dataclass
class UnigramDomain:
    """Add-one-smoothed unigram models of the forget and retain domains over token ids.

    ``score(t) = log p_F(t) - log p_R(t)``: positive for tokens more typical of the forget data.

    Attributes:
        log_ratio: ``[d_vocab]``, ``log p_F(t) - log p_R(t)`` per token id.

    Examples:
        >>> import torch
        >>> from tl_unlearn import TokenDataset
        >>> from tl_unlearn.metrics import UnigramDomain
        >>> f = TokenDataset("f", torch.tensor([[0, 1, 1, 1]]), torch.ones(1, 4, dtype=torch.bool))
        >>> r = TokenDataset("r", torch.tensor([[0, 2, 2, 2]]), torch.ones(1, 4, dtype=torch.bool))
        >>> dom = UnigramDomain.fit(f, r, d_vocab=3)
        >>> bool(dom.log_ratio[1] > 0 > dom.log_ratio[2])
        True
    """

    log_ratio: np.ndarray

    @classmethod
    def fit(cls, forget: TokenDataset, retain: TokenDataset, d_vocab: int) -> UnigramDomain:
        """Fit both unigram models on the real tokens (BOS excluded) of the two datasets."""

        def log_probs(ds: TokenDataset) -> np.ndarray:
            ids = ds.tokens[:, 1:][ds.attention_mask[:, 1:]]
            counts = torch.bincount(ids, minlength=d_vocab)[:d_vocab].double().numpy() + 1.0
            return np.log(counts / counts.sum())

        return cls(log_probs(forget) - log_probs(retain))


@torch.inference_mode()
def generate_tokens(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    hooks: Iterable[tuple[Any, Any]] = (),
    *,
    max_new_tokens: int = 32,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_kv_cache: bool | None = None,
) -> Int[Tensor, "batch new"]:
    """Generate ``max_new_tokens`` tokens after unpadded prompts of equal length, hooks held.

    With a ``HookedTransformer`` the KV cache is used (the prompt is run once, then one token
    per step); other models (a ``TransformerBridge``) re-run the whole sequence each step.

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> model = load_tiny_model()
        >>> generate_tokens(model, model.to_tokens("def f(x):"), max_new_tokens=4, greedy=True).shape
        torch.Size([1, 4])
    """
    from transformer_lens import HookedTransformer

    from tl_unlearn.engine.tl_patches import TransformerLensKeyValueCache

    if use_kv_cache is None:
        use_kv_cache = isinstance(model, HookedTransformer)
    device = model_device(model)
    tokens = tokens.to(device)
    cache = (
        TransformerLensKeyValueCache.init_cache(model.cfg, device, tokens.shape[0])
        if use_kv_cache
        else None
    )
    out = []
    with model.hooks(fwd_hooks=list(hooks)):
        logits = model(tokens, past_kv_cache=cache, return_type="logits")[:, -1]
        seq = tokens
        for step in range(max_new_tokens):
            logits = logits.float()
            if greedy:
                nxt = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(device)
            out.append(nxt)
            if step == max_new_tokens - 1:
                break
            if use_kv_cache:
                logits = model(nxt[:, None], past_kv_cache=cache, return_type="logits")[:, -1]
            else:
                seq = torch.cat([seq, nxt[:, None]], dim=1)
                logits = model(seq, return_type="logits")[:, -1]
    return torch.stack(out, dim=1)


@dataclass
class GenerationRun:
    """Continuations generated under one intervention (one level), with per-continuation counts.

    Attributes:
        label: Name of the intervention (``"original"`` for the unmodified model).
        level: Level of the family (None for the original model).
        continuations: Generated text, ``[prompt][sample]``.
        counts: Per-continuation counts, ``[prompt][sample]`` each, keyed as in ``METRICS``.
        seconds: Wall time of generation and scoring.
    """

    label: str
    level: float | None
    continuations: list[list[str]]
    counts: dict[str, list[list[float]]]
    seconds: float = 0.0

    def array(self, key: str) -> np.ndarray:
        return np.asarray(self.counts[key], dtype=float)

    def value(self, metric: str) -> float:
        num, den = METRICS[metric]
        v = ratio_of_sums(self.array(num), self.array(den))
        return float(np.exp(v)) if metric in _EXP else v

    def interval(
        self, metric: str, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
    ) -> Interval:
        num, den = METRICS[metric]
        lo, hi = ratio_interval(
            self.array(num), self.array(den), n_boot=n_boot, seed=seed, confidence=confidence
        )
        if metric in _EXP:
            lo, hi = float(np.exp(lo)), float(np.exp(hi))
        return Interval(self.value(metric), lo, hi, confidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "level": self.level,
            "continuations": self.continuations,
            "counts": self.counts,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationRun:
        return cls(
            d["label"],
            d["level"],
            [list(c) for c in d["continuations"]],
            {k: [list(map(float, r)) for r in v] for k, v in d["counts"].items()},
            float(d.get("seconds", 0.0)),
        )


@dataclass
class GenerationBehaviour(Result):
    """Generation metrics of a family of interventions at several levels vs the original model.

    Attributes:
        label: Name of the family (e.g. ``"actadd"``).
        prompts: The prompts (each continued ``n_samples`` times).
        original: The unmodified model's continuations.
        runs: One :class:`GenerationRun` per level, in order.
        level_name: Axis label of the levels.
        settings: Generation settings (tokens, samples, temperature, seed, topic list, ...).
        seconds: Wall time of the whole measurement.
        n_boot: Bootstrap replicates of every interval.
        confidence: Nominal coverage of every interval.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn import actadd
        >>> from tl_unlearn.metrics import generation_behaviour
        >>> gb = generation_behaviour(m, ["x =", "The"], lambda c: actadd(m, "def", "The", layer=1,
        ...                           coeff=c), [2.0], max_new_tokens=4, n_samples=1, seed=0)
        >>> gb.to_dataframe().shape[0] >= 1
        True
    """

    label: str
    prompts: list[str]
    original: GenerationRun
    runs: list[GenerationRun]
    level_name: str = "level"
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    n_boot: int = 1000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("GenerationBehaviour needs at least one run besides the original.")
        shape = (len(self.prompts), len(self.original.continuations[0]))
        for run in [self.original, *self.runs]:
            got = (len(run.continuations), len(run.continuations[0]))
            if got != shape:
                raise ValueError(
                    f"Run {run.label!r} has {got[0]} x {got[1]} continuations; "
                    f"expected {shape[0]} prompts x {shape[1]} samples."
                )

    @property
    def metrics(self) -> list[str]:
        """Metrics this result has counts for (topic and domain metrics are optional)."""
        return [m for m, (num, _) in METRICS.items() if num in self.original.counts]

    @property
    def levels(self) -> list[float | None]:
        return [r.level for r in self.runs]

    def interval(self, metric: str, run: GenerationRun | None = None) -> Interval:
        """The metric of ``run`` (default: the original model) with its bootstrap interval."""
        self._check_metric(metric)
        return (run or self.original).interval(
            metric, n_boot=self.n_boot, confidence=self.confidence
        )

    def difference(self, metric: str, run: GenerationRun) -> Interval:
        """``metric(run) - metric(original)`` with a paired interval (same prompts resampled).

        For ``fluency_perplexity`` it is the *ratio* ``ppl(run) / ppl(original)``: the exp of
        the paired difference of mean token NLL (1 = no change).
        """
        self._check_metric(metric)
        num, den = METRICS[metric]
        lo, hi = paired_difference_interval(
            run.array(num),
            run.array(den),
            self.original.array(num),
            self.original.array(den),
            n_boot=self.n_boot,
            confidence=self.confidence,
        )
        if metric in _EXP:
            value = run.value(metric) / self.original.value(metric)
            lo, hi = float(np.exp(lo)), float(np.exp(hi))
        else:
            value = run.value(metric) - self.original.value(metric)
        return Interval(value, lo, hi, self.confidence)

    def _check_metric(self, metric: str) -> None:
        if metric not in self.metrics:
            raise ValueError(
                f"Unknown or unmeasured metric {metric!r}; this result has {self.metrics}."
            )

    def to_dataframe(self) -> Any:
        """One row per run (original first) and metric: value, interval, paired difference."""
        import pandas as pd

        rows = []
        for run in [self.original, *self.runs]:
            for m in self.metrics:
                iv = self.interval(m, run)
                row = {
                    "label": run.label,
                    self.level_name: run.level,
                    "metric": m,
                    "value": iv.value,
                    "low": iv.low,
                    "high": iv.high,
                }
                if run is not self.original:
                    d = self.difference(m, run)
                    row.update(diff=d.value, diff_low=d.low, diff_high=d.high)
                rows.append(row)
        return pd.DataFrame(rows)

    def samples(self, n_prompts: int = 3) -> list[dict[str, Any]]:
        """A few continuations per run: ``{"label", "level", "prompt", "continuation"}`` rows."""
        rows = []
        for run in [self.original, *self.runs]:
            for p in range(min(n_prompts, len(self.prompts))):
                rows.append(
                    {
                        "label": run.label,
                        "level": run.level,
                        "prompt": self.prompts[p],
                        "continuation": run.continuations[p][0],
                    }
                )
        return rows

    def samples_html(self, n_prompts: int = 3) -> str:
        """The :meth:`samples` table as escaped HTML."""
        import html

        head = "<tr><th>intervention</th><th>prompt</th><th>continuation</th></tr>"
        body = "".join(
            f"<tr><td>{html.escape(r['label'])}</td><td>{html.escape(r['prompt'])}</td>"
            f"<td style='text-align:left;white-space:pre-wrap'>{html.escape(r['continuation'])}"
            "</td></tr>"
            for r in self.samples(n_prompts)
        )
        return f"<table>{head}{body}</table>"

    def figure(self, kind: str = "topic_frequency") -> go.Figure:
        """One metric (``kind``) against the level, with interval bars; the original model is
        the dashed reference line with its interval as a band."""
        self._check_metric(kind)
        ivs = [self.interval(kind, r) for r in self.runs]
        base = self.interval(kind)
        x = [r.level if r.level is not None else i for i, r in enumerate(self.runs)]
        fig = go.Figure()
        fig.add_trace(
            go.Scatter(
                x=[min(x), max(x)],
                y=[base.high, base.high],
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[min(x), max(x)],
                y=[base.low, base.low],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor="rgba(120,120,120,0.2)",
                name="original (95% band)",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[min(x), max(x)],
                y=[base.value, base.value],
                mode="lines",
                line={"dash": "dash", "color": "#555"},
                name="original",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[i.value for i in ivs],
                mode="lines+markers",
                name=self.label,
                line={"color": "#d62728"},
                error_y=error_bars(ivs),
            )
        )
        fig.update_layout(
            title=f"Generated text: {kind} ({self.label})",
            xaxis_title=self.level_name,
            yaxis_title=kind,
            template="plotly_white",
        )
        return fig

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "prompts": self.prompts,
            "original": self.original.to_dict(),
            "runs": [r.to_dict() for r in self.runs],
            "level_name": self.level_name,
            "settings": self.settings,
            "seconds": self.seconds,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationBehaviour:
        return cls(
            d["label"],
            list(d["prompts"]),
            GenerationRun.from_dict(d["original"]),
            [GenerationRun.from_dict(r) for r in d["runs"]],
            d.get("level_name", "level"),
            dict(d.get("settings", {})),
            float(d.get("seconds", 0.0)),
            int(d.get("n_boot", 1000)),
            float(d.get("confidence", 0.95)),
        )


def _prompt_tokens(model: Any, prompts: Sequence[str]) -> list[Tensor]:
    return [model.to_tokens(p, prepend_bos=True)[0].cpu() for p in prompts]


@torch.inference_mode()
def _run(
    model: Any,
    prompt_toks: list[Tensor],
    hooks: list[tuple[Any, Any]],
    label: str,
    level: float | None,
    *,
    n_samples: int,
    gen_kw: dict[str, Any],
    seed: int,
    batch_size: int,
    topic: frozenset[str] | None,
    domain: UnigramDomain | None,
    stop_ids: set[int],
) -> GenerationRun:
    t0 = time.perf_counter()
    n_prompts = len(prompt_toks)
    generator = torch.Generator().manual_seed(seed)
    rows = [(p, s) for p in range(n_prompts) for s in range(n_samples)]
    by_len: dict[int, list[tuple[int, int]]] = {}
    for p, s in rows:
        by_len.setdefault(len(prompt_toks[p]), []).append((p, s))
    keys = (
        "words",
        "topic_words",
        "nll",
        "tokens",
        "trigrams",
        "repeated_trigrams",
        "bigrams",
        "distinct_bigrams",
        "domain_llr",
    )
    counts = {k: [[0.0] * n_samples for _ in range(n_prompts)] for k in keys}
    texts = [[""] * n_samples for _ in range(n_prompts)]
    device = model_device(model)
    for length in sorted(by_len):
        group = by_len[length]
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            prompts = torch.stack([prompt_toks[p] for p, _ in chunk])
            new = generate_tokens(model, prompts, hooks, generator=generator, **gen_kw).cpu()
            # keep tokens up to (not including) the first stop token
            keep = torch.ones_like(new, dtype=torch.bool)
            if stop_ids:
                stop = torch.isin(new, torch.tensor(sorted(stop_ids)))
                keep = stop.long().cumsum(1) == 0
            # fluency: NLL of the kept continuation under the original model (no hooks)
            full = torch.cat([prompts, new], dim=1).to(device)
            logp = torch.log_softmax(
                model(full, return_type="logits")[:, length - 1 : -1].float(), dim=-1
            ).cpu()
            nll = -logp.gather(-1, new.unsqueeze(-1))[..., 0]
            for i, (p, s) in enumerate(chunk):
                ids = new[i][keep[i]]
                text = model.tokenizer.decode(ids.tolist())
                ws = words(text)
                n3, rep3, _ = _ngram_counts(ws, 3)
                n2, _, dist2 = _ngram_counts(ws, 2)
                c = {
                    "words": len(ws),
                    "nll": float(nll[i][keep[i]].sum()),
                    "tokens": int(keep[i].sum()),
                    "trigrams": n3,
                    "repeated_trigrams": rep3,
                    "bigrams": n2,
                    "distinct_bigrams": dist2,
                    "topic_words": sum(w in topic for w in ws) if topic else 0,
                    "domain_llr": float(domain.log_ratio[ids.numpy()].sum()) if domain else 0,
                }
                for k, v in c.items():
                    counts[k][p][s] = float(v)
                texts[p][s] = text
    if topic is None:
        counts.pop("topic_words")
    if domain is None:
        counts.pop("domain_llr")
    return GenerationRun(label, level, texts, counts, time.perf_counter() - t0)


def generation_behaviour(
    model: Any,
    prompts: Sequence[str],
    interventions: Intervention | Callable[[float], Intervention] | Hooks,
    levels: Sequence[float] | None = None,
    *,
    topic: str | Iterable[str] | None = "wedding",
    domain: UnigramDomain | None = None,
    max_new_tokens: int = 32,
    n_samples: int = 4,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    stop_at_eos: bool = True,
    n_boot: int = 1000,
    confidence: float = 0.95,
    label: str | None = None,
    level_name: str = "level",
    progress: bool = True,
) -> GenerationBehaviour:
    """Generate continuations with and without an intervention and measure how they differ.

    Args:
        model: A ``HookedTransformer`` (KV-cached) or any TL model with ``hooks()``.
        prompts: Prompts to continue (each ``n_samples`` times; BOS is prepended).
        interventions: A family ``level -> Intervention`` (with ``levels``), or one
            intervention / hook list (without ``levels``).
        levels: Levels of the family (steering coefficients, fractions removed...).
        topic: Committed topic list name (``"wedding"``, ``"code"``), a list of words, or None.
        domain: A fitted :class:`UnigramDomain` for ``forget_likeness`` (None: not measured).
        max_new_tokens: Token budget per continuation.
        n_samples: Continuations per prompt (1 when ``greedy``).
        greedy: Argmax decoding instead of sampling.
        temperature: Sampling temperature (> 0).
        top_k: Sample only among the ``top_k`` most likely tokens (None: all).
        seed: Seed of the sampling; every run uses the same seed, so runs differ only by the
            intervention.
        batch_size: Continuations generated together (prompts of equal token length only).
        stop_at_eos: Cut each continuation at the first end-of-sequence token.
        n_boot: Bootstrap replicates of the intervals.
        confidence: Nominal coverage of the intervals.
        label: Name of the result (default: the first intervention's name).
        level_name: Axis label of the levels.
        progress: Progress bar over the runs.

    Returns:
        A :class:`GenerationBehaviour` (``.to_dataframe()``, ``.figure(kind=...)``).

    Raises:
        ValueError: On bad settings, before any generation.

    Examples:
        >>> from tl_unlearn.metrics import generation_behaviour
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.interventions import actadd
        >>> model = load_tiny_model()
        >>> gb = generation_behaviour(model, ["The cat", "I think"],
        ...                           lambda c: actadd(model, "def", "The", layer=1, coeff=c),
        ...                           [2.0, 8.0], topic="code", max_new_tokens=8, n_samples=2,
        ...                           n_boot=100, progress=False)
        >>> [r.level for r in gb.runs], sorted(gb.metrics)[:2]
        ([2.0, 8.0], ['distinct_2', 'fluency_perplexity'])
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(
            "prompts must be a non-empty list of strings, got "
            f"{type(prompts).__name__}{'' if prompts else ' (empty)'}."
        )
    if not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("Every prompt must be a non-empty string.")
    for name, value, minimum in (
        ("max_new_tokens", max_new_tokens, 1),
        ("n_samples", n_samples, 1),
        ("batch_size", batch_size, 1),
        ("n_boot", n_boot, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= model.cfg.d_vocab):
        raise ValueError(
            f"top_k must be None or an integer in 1..{model.cfg.d_vocab}, got {top_k!r}."
        )
    if greedy and n_samples != 1:
        n_samples = 1  # greedy continuations of one prompt are all the same
    topic_set = topic_words(topic) if topic is not None else None
    if domain is not None and len(domain.log_ratio) < model.cfg.d_vocab:
        raise ValueError(
            f"domain covers {len(domain.log_ratio)} token ids; the model's "
            f"vocabulary has {model.cfg.d_vocab}."
        )
    prompt_toks = _prompt_tokens(model, prompts)
    longest = max(len(t) for t in prompt_toks)
    if longest + max_new_tokens > model.cfg.n_ctx:
        raise ValueError(
            f"A prompt of {longest} tokens plus max_new_tokens={max_new_tokens} "
            f"exceeds the model's context n_ctx={model.cfg.n_ctx}."
        )
    if callable(interventions) and not isinstance(interventions, Intervention):
        if levels is None or len(levels) == 0:
            raise ValueError("A family of interventions needs levels=[...].")
        family = interventions
        hook_sets = [(float(lv), family(float(lv))) for lv in levels]
    else:
        if levels is not None:
            raise ValueError(
                "levels= only applies to a family (a function level -> "
                "intervention); got a single intervention."
            )
        iv = (
            interventions
            if isinstance(interventions, Intervention)
            else Intervention("hooks", list(interventions))
        )
        hook_sets = [(None, iv)]
    for _, iv in hook_sets:
        for hook_name, _fn in iv:
            check_hook_name(model, hook_name)
    label = label or hook_sets[0][1].name
    stop_ids = set()
    if stop_at_eos and model.tokenizer.eos_token_id is not None:
        stop_ids.add(int(model.tokenizer.eos_token_id))
    gen_kw = {
        "max_new_tokens": max_new_tokens,
        "greedy": greedy,
        "temperature": temperature,
        "top_k": top_k,
    }
    kw = dict(
        n_samples=n_samples,
        gen_kw=gen_kw,
        seed=seed,
        batch_size=batch_size,
        topic=topic_set,
        domain=domain,
        stop_ids=stop_ids,
    )
    t0 = time.perf_counter()
    bar = tqdm(total=len(hook_sets) + 1, desc="generate", disable=not progress, leave=False)
    original = _run(model, prompt_toks, [], "original", None, **kw)
    bar.update(1)
    runs = []
    for level, iv in hook_sets:
        runs.append(_run(model, prompt_toks, list(iv), iv.name, level, **kw))
        bar.update(1)
    bar.close()
    settings = {
        "max_new_tokens": max_new_tokens,
        "n_samples": n_samples,
        "greedy": greedy,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
        "topic": topic if isinstance(topic, str) or topic is None else "custom",
        "domain": domain is not None,
        "stop_at_eos": stop_at_eos,
    }
    return GenerationBehaviour(
        label,
        list(prompts),
        original,
        runs,
        level_name,
        settings,
        time.perf_counter() - t0,
        n_boot,
        confidence,
    )
