"""Models whose circuits are known: the ground truth the scorecard is checked against.

Two small models are trained (by ``scripts/assets/train_planted.py``, seeded, several minutes each
on 2 CPUs) so that a *forget* task F is carried only by a known circuit C and a *retain*
task R by other components; their weights are committed, with a *retrained twin* of each
(the same architecture and seed, trained on R and never on an F answer: it only
learns which tokens F's answers are drawn from, as the planted model without C must). The
planted model is trained on from its twin, so the two share their representations of R and
hidden states can be patched between them. Training runs in float64, so that it reproduces
on any CPU.

- ``planted-induction``: 2 attention-only layers of 4 heads. F is induction on the F
  tokens (``BOS p s s q``: a segment ``s`` of 5 to 7 F tokens repeated after a prefix ``p``
  of random length, then filler ``q``, all distinct; the second copy's tokens after its
  first are scored: the varying offset leaves no positional shortcut). C = a previous-token head ``a0.h1`` and an induction head ``a1.h2``.
  R is a skip-bigram on the R tokens: ``x[t+1] = P[x[t-1]]`` for a fixed permutation ``P``,
  which needs a previous-token head of its own.
- ``planted-lookup``: 2 layers of 4 heads and an MLP. F is a table lookup on triples
  ``a b T[a, b]`` of F tokens (``T`` a fixed random table, only ``T[a, b]`` scored): a
  previous-token head ``a0.h2`` brings ``a`` to ``b``'s position and the MLP ``m1`` reads
  the table. R is ``a b P[a]`` on R tokens (only ``P[a]`` scored).

How C is planted (after the strict interchange-intervention training of InterpBench, with
mean ablation as the intervention): every step adds to the task losses of the whole model
(i) F's loss with every component outside C mean-ablated, and again with a random half of
them (C suffices, whatever else is removed), (ii) R's loss with C mean-ablated (R does not
need C) and (iii) the cross-entropy of F's positions against the uniform distribution over
the F tokens with C and a random half of the rest mean-ablated (nothing else does F). Means
are taken over the batch (both tasks, every position but BOS).

Examples:
    >>> spec = PLANTED["planted-induction"]
    >>> spec.circuit_nodes
    ('a0.h1', 'a1.h2')
    >>> data = planted_data(spec, 4, seed=0)
    >>> data["forget"].tokens.shape, data["retain"].tokens.shape
    (torch.Size([4, 17]), torch.Size([4, 17]))
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.utils import get_act_name

from tl_unlearn.core.components import component_name, parse_component
from tl_unlearn.data.datasets import TokenDataset

__all__ = [
    "PLANTED",
    "PlantedSpec",
    "corrupt_forget",
    "load_planted",
    "planted_data",
    "suppression_hooks",
    "train_planted",
]


PLANTED_DIR = Path(__file__).parents[1] / "assets" / "planted"


BOS = 0


@dataclass(frozen=True)
class PlantedSpec:
    """How one planted model is built and trained.

    Attributes:
        name: Its name (the asset folder).
        task: ``"induction"`` or ``"lookup"`` (see the module docstring).
        circuit_nodes: The components of C, as circuit node names (``a{L}.h{H}``, ``m{L}``).
        cfg: The TransformerLens config (a dict).
        forget_tokens: How many F tokens (ids ``1 ..``).
        retain_tokens: How many R tokens (ids after the F tokens).
        steps: Training steps of the planted model (after its twin's).
        twin_steps: Training steps of the twin (R; never an F answer), the planted
            model's start.
        batch: Sequences per task per step.
        lr: Adam learning rate.
        seed: Seed of the weights, the tables and the training data.
    """

    name: str
    task: str
    circuit_nodes: tuple[str, ...]
    cfg: dict[str, Any]
    forget_tokens: int = 24
    retain_tokens: int = 24
    steps: int = 3000
    twin_steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0

    @property
    def components(self) -> list[str]:
        """Every head and MLP of the model, as node names."""
        out = []
        for layer in range(self.cfg["n_layers"]):
            out += [component_name((layer, h)) for h in range(self.cfg["n_heads"])]
            if not self.cfg.get("attn_only", False):
                out.append(component_name((layer, None)))
        return out

    @property
    def chance(self) -> float:
        """Top-1 accuracy of a uniform guess among the F tokens."""
        return 1.0 / self.forget_tokens

    def tables(self) -> dict[str, np.ndarray]:
        """The fixed maps of the tasks: ``P`` (R tokens) and, for ``lookup``, ``T``."""
        rng = np.random.default_rng(self.seed + 1000)
        f0, r0 = 1, 1 + self.forget_tokens
        out = {"P": r0 + rng.permutation(self.retain_tokens)}
        if self.task == "lookup":
            out["T"] = f0 + rng.integers(0, self.forget_tokens, (self.forget_tokens,) * 2)
        return out


def _cfg(attn_only: bool) -> dict[str, Any]:
    return {
        "n_layers": 2,
        "d_model": 64,
        "n_heads": 4,
        "d_head": 16,
        "d_mlp": None if attn_only else 256,
        "attn_only": attn_only,
        "act_fn": None if attn_only else "relu",
        "d_vocab": 64,
        "n_ctx": 32,
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
        "default_prepend_bos": False,
    }


PLANTED: dict[str, PlantedSpec] = {
    "planted-induction": PlantedSpec(
        "planted-induction", "induction", ("a0.h1", "a1.h2"), _cfg(True), steps=3000
    ),
    "planted-lookup": PlantedSpec(
        "planted-lookup",
        "lookup",
        ("a0.h2", "m1"),
        _cfg(False),
        forget_tokens=8,
        retain_tokens=24,
        steps=3000,
    ),  # fmt: skip
}


"""The planted models by name."""


def planted_spec(spec: PlantedSpec | str) -> PlantedSpec:
    if isinstance(spec, PlantedSpec):
        return spec
    if spec not in PLANTED:
        raise ValueError(f"Unknown planted model {spec!r}; choose one of {sorted(PLANTED)}.")
    return PLANTED[spec]


def planted_data(spec: PlantedSpec | str, n: int, *, seed: int) -> dict[str, TokenDataset]:
    """``n`` forget and ``n`` retain sequences of a planted model's tasks, scored where the
    task's rule decides the next token.

    Args:
        spec: The planted model (or its name).
        n: Sequences per task.
        seed: Seed of the sequences (training uses seeds from ``spec.seed``; verification
            and the benchmark tier use others).

    Returns:
        ``{"forget": TokenDataset, "retain": TokenDataset}``.
    """
    spec = planted_spec(spec)
    rng = np.random.default_rng(seed)
    tables = spec.tables()
    f0, r0 = 1, 1 + spec.forget_tokens
    length = 17
    forget = np.zeros((n, length), dtype=np.int64)
    retain = np.zeros((n, length), dtype=np.int64)
    f_mask = np.zeros((n, length), dtype=bool)
    r_mask = np.zeros((n, length), dtype=bool)
    if spec.task == "induction":
        for i in range(n):  # BOS, prefix, seg, seg, filler: all distinct F tokens
            seg_len = int(rng.integers(5, 8))
            prefix = int(rng.integers(0, length - 1 - 2 * seg_len + 1))
            filler = length - 1 - 2 * seg_len - prefix
            toks = f0 + rng.choice(spec.forget_tokens, prefix + seg_len + filler, replace=False)
            seg = toks[prefix : prefix + seg_len]
            forget[i, 1:] = np.r_[toks[:prefix], seg, seg, toks[prefix + seg_len :]]
            start = 1 + prefix + seg_len  # the second copy
            f_mask[i, start + 1 : start + seg_len] = True
        for i in range(n):
            x = np.zeros(length - 1, dtype=np.int64)
            x[:2] = r0 + rng.integers(0, spec.retain_tokens, 2)
            for t in range(2, length - 1):
                x[t] = tables["P"][x[t - 2] - r0]
            retain[i, 1:] = x
        r_mask[:, 3:] = True
    else:
        for i in range(n):
            a = rng.integers(0, spec.forget_tokens, 5)
            b = rng.integers(0, spec.forget_tokens, 5)
            ra = rng.integers(0, spec.retain_tokens, 5)
            rb = rng.integers(0, spec.retain_tokens, 5)
            for k in range(5):
                forget[i, 1 + 3 * k : 4 + 3 * k] = [f0 + a[k], f0 + b[k], tables["T"][a[k], b[k]]]
                retain[i, 1 + 3 * k : 4 + 3 * k] = [r0 + ra[k], r0 + rb[k], tables["P"][ra[k]]]
        forget[:, 16] = retain[:, 16] = BOS  # padding-free filler, never scored
        f_mask[:, 3:16:3] = True
        r_mask[:, 3:16:3] = True
    out = {}
    for name, toks, mask in (("forget", forget, f_mask), ("retain", retain, r_mask)):
        t = torch.from_numpy(toks)
        out[name] = TokenDataset(
            name, t, torch.ones_like(t, dtype=torch.bool), torch.from_numpy(mask)
        )
    return out


def corrupt_forget(spec: PlantedSpec | str, forget: TokenDataset, *, seed: int) -> TokenDataset:
    """The counterfactual partner of each forget sequence, for patching methods: the same
    positions and scored mask, the answer no longer given by the context.

    ``induction``: the first copy of the repeated segment is replaced by F tokens the
    sequence does not hold (nothing earlier predicts the second copy). ``lookup``: each
    triple's first token ``a`` is replaced by another F token (``T[a', b]`` is another answer
    for most ``b``).

    Examples:
        >>> d = planted_data("planted-induction", 2, seed=5)["forget"]
        >>> c = corrupt_forget("planted-induction", d, seed=0)
        >>> bool((c.target_mask == d.target_mask).all()), bool((c.tokens != d.tokens).any())
        (True, True)
    """
    spec = planted_spec(spec)
    rng = np.random.default_rng(seed)
    toks = forget.tokens.clone().numpy()
    mask = forget.target_mask.numpy()
    f_tokens = np.arange(1, 1 + spec.forget_tokens)
    for i in range(len(toks)):
        if spec.task == "induction":
            scored = np.flatnonzero(mask[i])
            if not len(scored):
                continue
            seg_len = len(scored) + 1
            second = scored[0] - 1
            first = np.arange(second - seg_len, second)
            unused = np.setdiff1d(f_tokens, toks[i])
            toks[i, first] = rng.choice(unused, seg_len, replace=False)
        else:
            for a_pos in np.flatnonzero(mask[i]) - 2:
                toks[i, a_pos] = rng.choice(f_tokens[f_tokens != toks[i, a_pos]])
    return TokenDataset(
        f"{forget.name} (corrupted)",
        torch.from_numpy(toks),
        forget.attention_mask.clone(),
        forget.target_mask.clone(),
    )


def _node_hook(node: str) -> tuple[str, int | None]:
    layer, head = parse_component(node)
    return get_act_name("mlp_out" if head is None else "z", layer), head


def _ablation_hooks(nodes: Sequence[str], means: dict[str, Tensor]) -> list[tuple[str, Any]]:
    """Forward hooks replacing each node's output by its mean (``means`` by hook name:
    ``[head, d_head]`` for ``hook_z``, ``[d_model]`` for ``hook_mlp_out``)."""
    by_hook: dict[str, list[int | None]] = {}
    for node in nodes:
        hook, head = _node_hook(node)
        by_hook.setdefault(hook, []).append(head)
    hooks = []
    for hook, heads in by_hook.items():

        def fn(acts: Tensor, hook: Any, heads: list = heads, name: str = hook) -> Tensor:
            acts = acts.clone()
            if heads == [None]:
                acts[:] = means[name]
            else:
                acts[:, :, heads] = means[name][heads]
            return acts

        hooks.append((hook, fn))
    return hooks


def suppression_hooks(
    model: HookedTransformer, spec: PlantedSpec | str, scale: float = 10.0
) -> list[tuple[str, Any]]:
    """An edit that only suppresses F's output: the last residual pushed ``scale`` along
    minus the F tokens' mean unembedding direction, made orthogonal to every R token's
    (centred) unembedding so that R's logits keep their order. Every hidden state before
    the last block's output is left as it is: the contrast to removing C.

    Examples:
        >>> m = load_planted("planted-lookup")
        >>> d = planted_data("planted-lookup", 64, seed=9)
        >>> with m.hooks(fwd_hooks=suppression_hooks(m, "planted-lookup")):
        ...     acc = task_accuracy(m, d)
        >>> acc["forget"] < 0.2, acc["retain"] > 0.95
        (True, True)
    """
    spec = planted_spec(spec)
    w_u = model.W_U.detach()
    mean = w_u.mean(1, keepdim=True)
    f = torch.arange(1, 1 + spec.forget_tokens)
    r = torch.arange(1 + spec.forget_tokens, 1 + spec.forget_tokens + spec.retain_tokens)
    direction = w_u[:, f].mean(1) - mean[:, 0]
    basis, _ = torch.linalg.qr(w_u[:, r] - mean)
    direction = direction - basis @ (basis.T @ direction)
    direction = direction / direction.norm()
    last = get_act_name("resid_post", model.cfg.n_layers - 1)
    return [(last, lambda acts, hook: acts - scale * direction)]


def component_means(model: HookedTransformer, tokens: Tensor) -> dict[str, Tensor]:
    """Mean of every head's ``z`` and every MLP's output over ``tokens`` (every position
    but the first)."""
    names = {
        get_act_name(k, layer)
        for layer in range(model.cfg.n_layers)
        for k in (("z",) if model.cfg.attn_only else ("z", "mlp_out"))
    }
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {n: cache[n][:, 1:].flatten(0, 1).mean(0) for n in names}


def _build(spec: PlantedSpec, dtype: torch.dtype = torch.float32) -> HookedTransformer:
    torch.manual_seed(spec.seed)
    cfg = HookedTransformerConfig(**spec.cfg, seed=spec.seed, dtype=dtype)
    return HookedTransformer(cfg)


def _scored_ce(logits: Tensor, data: TokenDataset) -> Tensor:
    mask = data.target_mask[:, 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1][mask], data.tokens[:, 1:][mask])


def _uniform_ce(logits: Tensor, data: TokenDataset, targets: Tensor) -> Tensor:
    """Cross-entropy of the scored positions against the uniform distribution over
    ``targets`` (the F tokens): the answer is one of them, none preferred."""
    return -logits[:, :-1][data.target_mask[:, 1:]].log_softmax(-1)[:, targets].mean()


def train_planted(
    spec: PlantedSpec | str,
    *,
    twin: bool = False,
    steps: int | None = None,
    init: HookedTransformer | None = None,
) -> tuple[HookedTransformer, dict[str, Any]]:
    """Train a planted model (or its twin: never an F answer) from its seed, in float64.

    The planted model is trained on from its twin (``init``; trained here first when not
    given), as an unlearning benchmark's full model is trained on from the model that never
    saw the forget data: the two share their representations of everything else, so hidden
    states can be patched between them (:func:`~tl_unlearn.metrics.depth.unlearning_depth`).

    Args:
        spec: The planted model (or its name).
        twin: Train the retrained twin: the task loss of R, and on F's prompts the
            cross-entropy against the uniform distribution over the F tokens (no F answer
            ever).
        steps: Override the number of steps (for quick checks).
        init: The twin to start the planted model from (default: train it first).

    Returns:
        The model and a training log (losses every 250 steps, wall seconds).
    """
    spec = planted_spec(spec)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    # float64: float sums in another order (other threads, other SIMD kernels) change the
    # weights by ~1e-16 instead of ~1e-7, so the training reproduces on any CPU
    model = _build(spec, torch.float64)
    if not twin:
        if init is None:
            init, _ = train_planted(spec, twin=True)
        model.load_state_dict(init.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    c = list(spec.circuit_nodes)
    outside = [n for n in spec.components if n not in c]
    targets = torch.arange(1, 1 + spec.forget_tokens)
    steps = (spec.twin_steps if twin else spec.steps) if steps is None else steps
    rng = np.random.default_rng(spec.seed + 2000)
    log: dict[str, Any] = {"steps": steps, "loss": []}
    t0 = time.perf_counter()
    for step in range(steps):
        data = planted_data(spec, spec.batch, seed=spec.seed * 1_000_003 + step)
        f, r = data["forget"], data["retain"]
        if twin:  # R, and which tokens F's answers are drawn from, but never an F answer
            loss = _scored_ce(model(r.tokens), r) + _uniform_ce(model(f.tokens), f, targets)
        else:
            both = torch.cat([f.tokens, r.tokens])
            means = {k: v.detach() for k, v in component_means(model, both).items()}
            loss = _scored_ce(model(f.tokens), f) + _scored_ce(model(r.tokens), r)
            some = [n for n in outside if rng.random() < 0.5]  # any part of the outside too
            for part, weight in ((outside, 2.0), (some, 0.5)):
                with model.hooks(fwd_hooks=_ablation_hooks(part, means)):
                    loss = loss + weight * _scored_ce(model(f.tokens), f)  # C suffices for F
            with model.hooks(fwd_hooks=_ablation_hooks(c, means)):
                loss = loss + _scored_ce(model(r.tokens), r)  # R does not need C
            with model.hooks(fwd_hooks=_ablation_hooks(c + some, means)):
                loss = loss + _uniform_ce(model(f.tokens), f, targets)  # without C: the twin
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            log["loss"].append([step, float(loss.detach())])
    log["seconds"] = time.perf_counter() - t0
    out = _build(spec)
    out.load_state_dict(model.state_dict())  # float32, as committed
    out.eval()
    return out, log


def save_planted(model: HookedTransformer, log: dict[str, Any], folder: Path) -> None:
    """Write ``config.json``, ``model.safetensors`` and ``train_log.json`` into ``folder``."""
    from tl_unlearn.core.files import atomic_write_text, write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(dict(model.state_dict()), folder / "model.safetensors")
    atomic_write_text(folder / "train_log.json", json.dumps(log, indent=1))


def load_planted(name: str, *, twin: bool = False) -> HookedTransformer:
    """Load a committed planted model (or its retrained twin).

    Args:
        name: One of :data:`PLANTED`.
        twin: Load the twin (trained on R, never on an F answer).

    Examples:
        >>> m = load_planted("planted-induction")
        >>> m.cfg.n_layers, m.cfg.n_heads
        (2, 4)
    """
    from tl_unlearn.core.files import read_safetensors

    spec = planted_spec(name)
    folder = PLANTED_DIR / (spec.name + ("-twin" if twin else ""))
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(
            f"No committed weights for {spec.name!r}{' (twin)' if twin else ''} in {folder}; "
            "run scripts/assets/train_planted.py."
        )
    model = _build(spec)
    model.load_state_dict(read_safetensors(folder / "model.safetensors"))
    model.eval()
    return model


def task_accuracy(
    model: HookedTransformer, data: dict[str, TokenDataset], ablate: Sequence[str] = (),
    means: dict[str, Tensor] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Top-1 accuracy on each task's scored positions, with ``ablate`` mean-ablated."""
    hooks = _ablation_hooks(list(ablate), means) if ablate else []
    out = {}
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for name, d in data.items():
            pred = model(d.tokens)[:, :-1].argmax(-1)
            mask = d.target_mask[:, 1:]
            out[name] = float((pred[mask] == d.tokens[:, 1:][mask]).float().mean())
    return out
