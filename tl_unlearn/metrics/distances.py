"""Output and activation distances between two runs, and ZRF.

A *run* is a model plus optional forward hooks (an intervention): the original model M0, the
intervened model Mu (same model, intervention hooks), a retrained model Mr, or a randomly
initialised twin Mrand (:func:`random_twin`).

- :func:`js_divergence`: Jensen-Shannon divergence per position from two logit tensors,
  computed in log space (``log_softmax`` and ``logsumexp`` for the mixture), natural log,
  bounded by ``ln 2``. ``JS(p, q) = 0.5 KL(p || m) + 0.5 KL(q || m)``, ``m = (p + q) / 2``.
  (Not ``F.kl_div(log p, m)``: that is ``KL(m || p)`` and its default reduction divides by the
  vocabulary size.)
- :func:`output_distances`: mean JS and mean ``||p_a - p_b||_2`` over predicted positions.
- :func:`zrf_score`: ``1 - mean JS(Mu, Mrand) / ln 2`` over forget positions.
- :func:`activation_distances`: per hook, mean over positions of the L2 distance and cosine
  similarity of the activations of two runs, read from ``ActivationCache``s made with a
  ``names_filter``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import Hooks, check_positive_int, model_device
from tl_unlearn.core.results import Result, dataset_colour
from tl_unlearn.data.datasets import TokenDataset, predicted_positions
from tl_unlearn.engine.forward import final_residual, row_chunks, unembed_residual
from tl_unlearn.metrics.evaluation import check_data

_BLOCK_BYTES = 8 << 20  # float32 logits of the positions one distance block takes

__all__ = [
    "ActivationDistances",
    "OutputDistances",
    "activation_distances",
    "completeness",
    "js_divergence",
    "output_distances",
    "output_distances_many",
    "random_tokens",
    "random_twin",
    "zrf_score",
    "zrf_scores",
]

LN2 = math.log(2.0)


def js_divergence(
    logits_p: Float[Tensor, "... d_vocab"],
    logits_q: Float[Tensor, "... d_vocab"],
    dtype: torch.dtype = torch.float64,
) -> Float[Tensor, "..."]:
    """Jensen-Shannon divergence (nats) between the softmax distributions of two logit tensors.

    ``dtype`` is the precision of the computation: float64 (default) agrees with scipy to
    1e-8; float32 (used when streaming large vocabularies) to about 1e-6 and is 2-3x faster.

    Args:
        logits_p: Logits of the first distribution (any leading shape).
        logits_q: Logits of the second, the same shape.
        dtype: The precision of the computation.

    Returns:
        JS per position (the leading shape), in ``[0, ln 2]``.

    Examples:
        >>> import math
        >>> from tl_unlearn.metrics import js_divergence
        >>> import torch
        >>> a = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(js_divergence(a, a))
        0.0
        >>> big = torch.tensor([[50.0, -50.0]]); float(js_divergence(big, -big)) <= math.log(2)
        True
    """
    lp = torch.log_softmax(logits_p.to(dtype), dim=-1)
    lq = torch.log_softmax(logits_q.to(dtype), dim=-1)
    return _js_from_log_probs(lp, lq)


def _js_from_log_probs(
    lp: Tensor, lq: Tensor, p: Tensor | None = None, q: Tensor | None = None
) -> Tensor:
    """JS from log-probabilities: ``0.5 sum p log p + 0.5 sum q log q - sum m log m`` with
    ``m = (p + q) / 2`` (``xlogy``: 0 log 0 = 0), a few passes over the vocabulary."""
    p = lp.exp() if p is None else p
    q = lq.exp() if q is None else q
    m = 0.5 * (p + q)
    neg_entropy = 0.5 * ((p * lp).sum(-1) + (q * lq).sum(-1))
    return (neg_entropy - torch.special.xlogy(m, m).sum(-1)).clamp(min=0.0, max=LN2)


@dataclass
class OutputDistances(Result):
    """Mean output distances between two runs on one dataset.

    Attributes:
        label: The dataset's name.
        n_positions: Predicted positions averaged over.
        js: Mean Jensen-Shannon divergence (nats, at most ``ln 2``).
        prob_l2: Mean L2 distance of the next-token probability vectors.
        seconds: Wall time.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import output_distances
        >>> od = output_distances(m, d["forget"], zero_ablation(m, heads=[(0, 1)]))
        >>> 0 <= od.js <= 0.6932
        True
    """

    label: str
    n_positions: int
    js: float
    prob_l2: float
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("distances",)

    def figure(self, kind: str = "distances") -> go.Figure:
        """``kind="distances"``: normalised JS and probability L2, as bars."""
        self._check_kind(kind)
        fig = go.Figure(
            go.Bar(x=["JS / ln 2", "probability L2"], y=[self.js_normalised, self.prob_l2])
        )
        fig.update_layout(
            title=f"Output distances on {self.label} ({self.n_positions} positions)",
            template="plotly_white",
        )
        return fig

    @property
    def js_normalised(self) -> float:
        """JS divided by ``ln 2`` (in [0, 1])."""
        return self.js / LN2


def _paired_chunks(
    model_a: Any, hooks_a: Hooks, model_b: Any, hooks_b: Hooks, tokens: Tensor
) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """``(rows, logits_a, logits_b)`` of two runs on the same tokens, a few rows at a time.

    HookedTransformers run to their final residuals, which are unembedded at most 64 MB of
    logits at a time; any other model (a ``TransformerBridge``) gives its whole logits.
    """
    from transformer_lens import HookedTransformer

    device = model_device(model_a)
    tokens = tokens.to(device)
    if isinstance(model_a, HookedTransformer) and isinstance(model_b, HookedTransformer):
        fa = final_residual(model_a, tokens, hooks_a)
        fb = final_residual(model_b, tokens.to(model_device(model_b)), hooks_b)
        for rows in row_chunks(len(tokens), tokens.shape[1], model_a.cfg.d_vocab):
            yield (
                rows,
                unembed_residual(model_a, fa[rows]),
                unembed_residual(model_b, fb[rows]).to(device),
            )
        return
    with model_a.hooks(fwd_hooks=list(hooks_a)):
        la = model_a(tokens, return_type="logits")
    with model_b.hooks(fwd_hooks=list(hooks_b)):
        lb = model_b(tokens.to(model_device(model_b)), return_type="logits")
    yield slice(0, len(tokens)), la, lb.to(device)


@torch.inference_mode()
def output_distances(
    model_a: Any,
    data: TokenDataset,
    hooks_a: Hooks = (),
    *,
    model_b: Any | None = None,
    hooks_b: Hooks = (),
    batch_size: int = 8,
    progress: bool = False,
) -> OutputDistances:
    """Mean JS divergence and L2 distance of next-token distributions of two runs.

    Run A is ``model_a`` under ``hooks_a``; run B is ``model_b`` (default: ``model_a``) under
    ``hooks_b``. Streamed batch by batch, and within a batch a few rows of logits at a time
    (at most 64 MB per run: the whole batch's logits of a 49k vocabulary are never held);
    averaged over predicted positions.

    Args:
        model_a: The first model.
        data: Token data.
        hooks_a: The intervention of run a.
        model_b: The second model (default: ``model_a``).
        hooks_b: The intervention of run b (default: none, the original).
        batch_size: Sequences per forward pass.
        progress: Show a progress bar.

    Returns:
        :class:`OutputDistances` (``js``, ``l2``, per-sequence values).

    Examples:
        >>> from tl_unlearn.metrics import output_distances
        >>> from tl_unlearn.metrics import random_tokens
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); d = random_tokens(m, n=2, seq_len=8)
        >>> output_distances(m, d).js < 1e-6  # a run against itself
        True
    """
    check_data(model_a, data, batch_size)
    t0 = time.perf_counter()
    model_b = model_a if model_b is None else model_b
    sums = torch.zeros(3, dtype=torch.float64)
    for tokens, mask in tqdm(list(data.batches(batch_size)), disable=not progress, leave=False):
        valid = predicted_positions(mask)
        for rows, la, lb in _paired_chunks(model_a, hooks_a, model_b, hooks_b, tokens):
            sums += _distance_sums(la, lb, valid[rows])
    return _distances(data, sums, time.perf_counter() - t0)


def _distance_sums(la: Tensor, lb: Tensor, valid: Tensor) -> Tensor:
    """``[positions, sum of JS, sum of L2]`` over the ``valid`` predicted positions, a block
    of positions at a time (the log-probabilities, probabilities and their mixture of a block
    take a few MB, not several copies of all the logits given)."""
    v = valid.to(la.device)
    sums = torch.zeros(3, dtype=torch.float64)
    sums[0] = float(v.sum())
    block = max(1, _BLOCK_BYTES // (4 * la.shape[-1]))
    for r in range(la.shape[0]):
        rows_a, rows_b = la[r, :-1][v[r]], lb[r, :-1][v[r]]  # only the predicted positions
        for i in range(0, len(rows_a), block):
            lp = rows_a[i : i + block].float().log_softmax(-1)
            lq = rows_b[i : i + block].float().log_softmax(-1)
            p, q = lp.exp(), lq.exp()
            sums[1] += _js_from_log_probs(lp, lq, p, q).double().sum().cpu()
            sums[2] += (p - q).norm(dim=-1).double().sum().cpu()
    return sums


def _sums_against_reference(
    model: Any,
    batches: Sequence[tuple[Tensor, Tensor]],
    interventions: Sequence[Hooks],
    reference_finals: Iterable[Tensor],
    reference_logits: Callable[[Tensor], Tensor],
) -> list[Tensor]:
    """:func:`_distance_sums` of each intervention on ``model`` against a reference run, per
    intervention: ``reference_finals`` are the reference's final residuals of ``batches`` (in
    their order), made into logits by ``reference_logits`` a few rows at a time (again for
    each intervention, rather than holding a batch's logits)."""
    sums = [torch.zeros(3, dtype=torch.float64) for _ in interventions]
    for (tokens, mask), reference in zip(batches, reference_finals):
        valid = predicted_positions(mask)
        for i, hooks in enumerate(interventions):
            final = final_residual(model, tokens, list(hooks))
            for rows in row_chunks(len(tokens), tokens.shape[1], model.cfg.d_vocab):
                sums[i] += _distance_sums(
                    unembed_residual(model, final[rows]),
                    reference_logits(reference[rows]),
                    valid[rows],
                )
    return sums


def _distances(data: TokenDataset, sums: Tensor, seconds: float) -> OutputDistances:
    n = float(sums[0])
    if n == 0:
        raise ValueError(f"Dataset {data.name!r} has no predicted position.")
    return OutputDistances(data.name, int(n), float(sums[1]) / n, float(sums[2]) / n, seconds)


@torch.inference_mode()
def output_distances_many(
    model: Any,
    data: TokenDataset,
    interventions: Sequence[Hooks],
    *,
    batch_size: int = 8,
) -> list[OutputDistances]:
    """:func:`output_distances` of each intervention from the original model, in one pass:
    the original's final residual is computed once per batch and shared (a
    ``HookedTransformer``; any other model runs the original once per intervention).

    Examples:
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.interventions import zero_ablation
        >>> m = load_tiny_model(); d = random_tokens(m, n=2, seq_len=8)
        >>> iv = zero_ablation(m, heads=[(1, 0)])
        >>> many = output_distances_many(m, d, [iv, []])
        >>> abs(many[0].js - output_distances(m, d, iv).js) < 1e-9, many[1].js < 1e-6
        (True, True)
    """
    from transformer_lens import HookedTransformer

    check_data(model, data, batch_size)
    t0 = time.perf_counter()
    if not isinstance(model, HookedTransformer):
        return [
            output_distances(model, data, list(h), batch_size=batch_size) for h in interventions
        ]
    device = model_device(model)
    batches = [(tokens.to(device), mask) for tokens, mask in data.batches(batch_size)]
    originals = (final_residual(model, tokens) for tokens, _ in batches)  # one batch at a time
    sums = _sums_against_reference(
        model, batches, interventions, originals, lambda normed: unembed_residual(model, normed)
    )
    seconds = (time.perf_counter() - t0) / max(1, len(sums))  # shared passes, split evenly
    return [_distances(data, s, seconds) for s in sums]


def zrf_score(
    model: Any,
    data: TokenDataset,
    hooks: Hooks = (),
    *,
    random_model: Any | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> float:
    """Zero Retrain Forgetting: ``1 - mean_i JS(Mu(x_i), Mrand(x_i)) / ln 2`` over ``data``.

    Near 1: the intervened model looks like a random model on the forget set. Compute it with
    ``hooks=()`` too, for the original model's baseline. :func:`zrf_scores` scores several
    interventions with one run of the random model.

    Args:
        model: The model (Mu is ``model`` under ``hooks``).
        data: Forget data.
        hooks: The intervention.
        random_model: The incompetent teacher Mrand (default: a :func:`random_twin` in
            bfloat16, see :func:`zrf_scores`).
        seed: Seed of the random twin when it is built here.
        batch_size: Sequences per forward pass.

    Examples:
        >>> from tl_unlearn.metrics import random_tokens
        >>> from tl_unlearn.metrics import zrf_score
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); d = random_tokens(m, n=2, seq_len=8)
        >>> 0.0 <= zrf_score(m, d) <= 1.0
        True
    """
    return zrf_scores(
        model, data, [hooks], random_model=random_model, seed=seed, batch_size=batch_size
    )[0]


@torch.inference_mode()
def zrf_scores(
    model: Any,
    data: TokenDataset,
    interventions: Sequence[Hooks],
    *,
    random_model: Any | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> list[float]:
    """:func:`zrf_score` of each intervention, with one run of the random model.

    The twin built here when ``random_model`` is None is a :func:`random_twin` in bfloat16:
    half the memory of a float32 copy (a second SmolLM2 is 0.65 GB in float32), and a random
    model's outputs whatever their precision (its logits to about 3 significant digits; ZRF
    moves by about 1e-4 against a float32 twin). With a ``HookedTransformer`` the random
    model's final residuals on ``data`` are computed first; a twin built here is then let go
    but for its unembedding, so that its blocks are not held while the interventions run.

    Args:
        model: The original model.
        data: Forget data.
        interventions: The interventions to score.
        random_model: The random twin (default: a bfloat16 :func:`random_twin`, made and let go).
        seed: Seed of the twin.
        batch_size: Sequences per forward pass.

    Returns:
        One ZRF per intervention, in [0, 1].

    Examples:
        >>> from tl_unlearn.metrics import zrf_score
        >>> from tl_unlearn.metrics import random_tokens
        >>> from tl_unlearn.metrics import zrf_scores
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.interventions import zero_ablation
        >>> m = load_tiny_model(); d = random_tokens(m, n=2, seq_len=8)
        >>> a, b = zrf_scores(m, d, [[], zero_ablation(m, heads=[(1, 0)])])
        >>> abs(a - zrf_score(m, d)) < 1e-12
        True
    """
    from transformer_lens import HookedTransformer

    from tl_unlearn.engine.tl_patches import apply_softcap

    check_data(model, data, batch_size)
    twin = (
        random_model
        if random_model is not None
        else random_twin(model, seed=seed, dtype=torch.bfloat16)
    )
    if not (isinstance(model, HookedTransformer) and isinstance(twin, HookedTransformer)):
        return [
            1.0
            - output_distances(
                model, data, list(h), model_b=twin, batch_size=batch_size
            ).js_normalised
            for h in interventions
        ]
    device = model_device(model)
    batches = [(tokens.to(device), mask) for tokens, mask in data.batches(batch_size)]
    twin_final = [final_residual(twin, tokens.to(model_device(twin))) for tokens, _ in batches]
    twin_unembed, cap = twin.unembed, twin.cfg.output_logits_soft_cap
    del twin  # one built here is freed but for its unembedding
    sums = _sums_against_reference(
        model,
        batches,
        interventions,
        twin_final,
        lambda normed: apply_softcap(twin_unembed(normed), cap).to(device, torch.float32),
    )
    return [1.0 - _distances(data, s, 0.0).js_normalised for s in sums]


def random_twin(model: Any, seed: int = 0, dtype: torch.dtype | None = None) -> Any:
    """A randomly initialised model with the same config and tokenizer (in ``dtype``; default:
    the model's).

    A ``HookedTransformer`` is rebuilt from its config with TransformerLens's own
    initialisation; any other model (a ``TransformerBridge``) is copied and re-initialised the
    way Hugging Face initialises GPT-2/Llama models: matrices N(0, 0.02), norm weights 1,
    biases 0.

    Args:
        model: The model whose config and tokenizer are copied (never its weights).
        seed: Seed of the initialisation.
        dtype: Its dtype (default: the model's).

    Returns:
        A new ``HookedTransformer``.

    Examples:
        >>> import torch
        >>> from tl_unlearn.metrics import random_twin
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); r = random_twin(m)
        >>> r.cfg.n_layers == m.cfg.n_layers and not torch.equal(r.W_E, m.W_E)
        True
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if not isinstance(model, HookedTransformer):
        import copy

        twin = copy.deepcopy(model)
        if dtype is not None:
            twin.to(dtype)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in twin.named_parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
                elif "norm" in name.lower() or ".ln" in name.lower():
                    p.fill_(1.0)
                else:
                    p.zero_()
        twin.eval()
        return twin
    cfg = HookedTransformerConfig(
        **{
            **model.cfg.to_dict(),
            "seed": seed,
            "init_weights": True,
            **({} if dtype is None else {"dtype": dtype}),
        }
    )
    twin = HookedTransformer(cfg, tokenizer=model.tokenizer, move_to_device=False)
    twin.to(model.cfg.device, print_details=False)
    twin.eval()
    return twin


def random_tokens(model: Any, n: int = 16, seq_len: int = 64, seed: int = 0) -> TokenDataset:
    """Uniformly random token sequences (BOS first): a control input for distances.

    Args:
        model: The model (its vocabulary and BOS).
        n: Sequences.
        seq_len: Tokens per sequence, BOS included.
        seed: Seed.

    Returns:
        A :class:`~tl_unlearn.data.datasets.TokenDataset` named ``"random"``.

    Examples:
        >>> from tl_unlearn.metrics import random_tokens
        >>> from tl_unlearn import load_tiny_model
        >>> random_tokens(load_tiny_model(), n=2, seq_len=5).tokens.shape
        torch.Size([2, 5])
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(model.cfg.d_vocab, (n, seq_len), generator=gen)
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    if bos is not None:
        tokens[:, 0] = bos
    return TokenDataset("random", tokens, torch.ones_like(tokens, dtype=torch.bool))


@dataclass
class ActivationDistances(Result):
    """Per-hook activation distances between two runs on several datasets.

    Attributes:
        label: What is compared (e.g. ``"original vs pruned"``).
        l2: ``{dataset: {hook: mean L2 distance}}``.
        cosine: ``{dataset: {hook: mean cosine similarity}}``.
        norm: ``{dataset: {hook: mean L2 norm of run A's activation}}`` (for scale).
        seconds: Wall time.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import activation_distances
        >>> ad = activation_distances(m, d["forget"], None, zero_ablation(m, heads=[(0, 1)]))
        >>> type(ad).from_dict(ad.to_dict()).to_dataframe().shape == ad.to_dataframe().shape
        True
    """

    label: str
    l2: dict[str, dict[str, float]]
    cosine: dict[str, dict[str, float]]
    norm: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("l2", "relative_l2", "cosine")

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = [
            {
                "dataset": d,
                "hook": h,
                "l2": v,
                "cosine": self.cosine[d][h],
                "relative_l2": v / self.norm[d][h] if self.norm.get(d, {}).get(h) else None,
            }
            for d, per in self.l2.items()
            for h, v in per.items()
        ]
        return pd.DataFrame(rows)

    def figure(self, kind: str = "l2") -> go.Figure:
        """Per hook, one line per dataset: ``kind="l2"`` mean L2 distance, ``"relative_l2"``
        L2 relative to run A's activation norm, ``"cosine"`` mean cosine similarity."""
        self._check_kind(kind)
        fig = go.Figure()
        for ds, per in self.l2.items():
            hooks = list(per)
            if kind == "cosine":
                y = [self.cosine[ds][h] for h in hooks]
            elif kind == "relative_l2":
                y = [per[h] / self.norm[ds][h] if self.norm[ds][h] else float("nan") for h in hooks]
            else:
                y = [per[h] for h in hooks]
            fig.add_trace(
                go.Scatter(
                    x=hooks, y=y, mode="lines+markers", name=ds, line={"color": dataset_colour(ds)}
                )
            )
        fig.update_layout(
            title=f"Activation distance: {self.label}",
            xaxis_title="hook",
            yaxis_title={
                "l2": "mean L2 distance",
                "relative_l2": "relative L2",
                "cosine": "cosine similarity",
            }[kind],
            template="plotly_white",
        )
        return fig


@torch.inference_mode()
def activation_distances(
    model_a: Any,
    data: TokenDataset | Mapping[str, TokenDataset],
    hook_names: Sequence[str] | None = None,
    hooks_a: Hooks = (),
    *,
    model_b: Any | None = None,
    hooks_b: Hooks = (),
    batch_size: int = 8,
    label: str = "",
) -> ActivationDistances:
    """L2 distance and cosine similarity of activations of two runs, per hook, per dataset.

    Args:
        model_a: Model of run A (e.g. the original).
        data: One dataset or ``{name: dataset}`` (forget, retain, :func:`random_tokens`).
        hook_names: Hooks to compare (default: ``blocks.{l}.hook_resid_post`` for every layer).
        hooks_a: The intervention of run a.
        hooks_b: The intervention of run b.
        model_b: Model of run B (default: ``model_a``; e.g. :func:`random_twin`).

    Returns:
        :class:`ActivationDistances` (per hook: L2, cosine, norms).

    Examples:
        >>> from tl_unlearn.metrics import activation_distances
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> ad = activation_distances(m, d, ["blocks.0.hook_resid_post"], zero_ablation(m, heads=[(0, 1)]))
        >>> ad.to_dataframe().shape[0] >= 1
        True
    """
    from tl_unlearn.core.checks import check_hook_name

    t0 = time.perf_counter()
    model_b = model_a if model_b is None else model_b
    data = check_data(model_a, data, batch_size)
    names = list(hook_names or [get_act_name("resid_post", l) for l in range(model_a.cfg.n_layers)])
    for n in names:
        check_hook_name(model_a, n)
        check_hook_name(model_b, n)
    l2: dict[str, dict[str, float]] = {}
    cos: dict[str, dict[str, float]] = {}
    norm: dict[str, dict[str, float]] = {}
    for ds_name, ds in data.items():
        sums = torch.zeros(len(names), 3, dtype=torch.float64)
        count = 0
        for tokens, mask in ds.batches(batch_size):
            with model_a.hooks(fwd_hooks=list(hooks_a)):
                _, ca = model_a.run_with_cache(tokens, names_filter=names, return_type=None)
            with model_b.hooks(fwd_hooks=list(hooks_b)):
                _, cb = model_b.run_with_cache(tokens, names_filter=names, return_type=None)
            for i, n in enumerate(names):
                a = ca[n][mask].flatten(1).double()
                b = cb[n][mask].flatten(1).double()
                sums[i, 0] += (a - b).norm(dim=-1).sum()
                sums[i, 1] += torch.nn.functional.cosine_similarity(a, b, dim=-1).sum()
                sums[i, 2] += a.norm(dim=-1).sum()
            count += int(mask.sum())
        if count == 0:
            raise ValueError(f"Dataset {ds_name!r} is empty.")
        l2[ds_name] = {n: float(sums[i, 0]) / count for i, n in enumerate(names)}
        cos[ds_name] = {n: float(sums[i, 1]) / count for i, n in enumerate(names)}
        norm[ds_name] = {n: float(sums[i, 2]) / count for i, n in enumerate(names)}
    return ActivationDistances(label, l2, cos, norm, time.perf_counter() - t0)


@torch.inference_mode()
def completeness(
    model: Any,
    data: TokenDataset,
    hooks: Hooks = (),
    retrained_model: Any = None,
    *,
    k: int = 10,
    batch_size: int = 8,
) -> float:
    """Mean over forget positions of ``Jaccard(topk(Mu), topk(Mr))``; 1 = same top-k as Mr.

    Args:
        model: The original model (Mu is it with ``hooks``).
        data: Forget data.
        hooks: The intervention.
        retrained_model: Mr, a model trained without the forget data (required; the order
            ``(model, data, retrained_model, hooks)`` of 0.1 still works, with a
            DeprecationWarning, until the next release).
        k: Size of the top-k sets compared.
        batch_size: Sequences per forward pass.

    Returns:
        The mean Jaccard overlap, in [0, 1].

    Examples:
        >>> from tl_unlearn.metrics import completeness
        >>> from tl_unlearn.metrics import random_tokens
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model(); d = random_tokens(m, n=2, seq_len=8)
        >>> completeness(m, d, retrained_model=m)
        1.0
    """
    if hasattr(hooks, "cfg"):  # a model where the hooks go: the argument order of 0.1
        warnings.warn(
            "completeness(model, data, retrained_model, hooks) is now completeness(model, "
            "data, hooks, retrained_model=...); the old order goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        hooks, retrained_model = (() if retrained_model is None else retrained_model), hooks
    if retrained_model is None:
        raise TypeError("completeness() needs retrained_model=, the model trained without F.")
    check_positive_int(k, "k")
    check_data(model, data, batch_size)
    total, n = 0.0, 0
    for tokens, mask in data.batches(batch_size):
        valid = predicted_positions(mask)
        for rows, la, lb in _paired_chunks(model, hooks, retrained_model, (), tokens):
            v = valid[rows].to(la.device)
            ta = la[:, :-1][v].topk(k, dim=-1).indices
            tb = lb[:, :-1][v].topk(k, dim=-1).indices
            inter = (ta.unsqueeze(-1) == tb.unsqueeze(-2)).any(-1).sum(-1).double()
            total += float((inter / (2 * k - inter)).sum())
            n += int(v.sum())
    if n == 0:
        raise ValueError(f"Dataset {data.name!r} has no predicted position.")
    return total / n
