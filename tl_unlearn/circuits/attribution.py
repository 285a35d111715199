"""Circuit discovery by counterfactual patching: exact activation patching per node,
attribution patching per edge (EAP) and EAP with integrated gradients (EAP-IG).

All three compare each clean example with its corrupted partner (same length, see
:func:`~tl_unlearn.interventions.counterfactual.counterfactual_pair`) under a metric
``metric(logits, batch) -> one value per example`` (default: the logit difference
answer - counterfactual at the answer position). Scores estimate
``mean metric(patched) - mean metric(clean)``:

- :func:`activation_patching`: exact, one forward pass per node and batch: node ``n``'s
  output (a head's ``hook_z``, an MLP's ``hook_mlp_out``) is taken from the corrupted run.
- :func:`edge_attribution` with ``method="eap"``: the first-order estimate of patching edge
  ``p -> c``: ``(out_p(corrupted) - out_p(clean)) . d metric / d in_c``, summed over
  positions and averaged over examples; one corrupted forward and one clean
  forward+backward pass per batch.
- ``method="eap-ig"``: the same difference times the gradient averaged over ``steps`` inputs
  interpolated between the corrupted and the clean embeddings, ``alpha = k / steps``:
  ``ig_points="left"`` (the default) takes ``k = 0..steps-1``, as EAP-IG's reference code
  and so the MIB leaderboard do (a left Riemann sum, from the corrupted input);
  ``ig_points="right"`` takes ``k = 1..steps`` (a right Riemann sum, to the clean input:
  one step is EAP). The two differ by O(1/steps).

Edge scores come back as a :class:`~tl_unlearn.circuits.graph.Circuit` holding ``scores``; node scores
as :class:`NodeScores`, which also turns them into an edge ranking.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from tl_unlearn.circuits.graph import Circuit, parent_hooks
from tl_unlearn.core.checks import check_indices, check_positive_int, model_device
from tl_unlearn.core.components import component_name
from tl_unlearn.core.results import Result
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.scoring import answer_logit_diff
from tl_unlearn.engine.tl_patches import edge_flags
from tl_unlearn.interventions.counterfactual import EMBED_HOOK, as_token_dataset, check_pairs

__all__ = ["NodeScores", "activation_patching", "edge_attribution"]


PatchMetric = Callable[[Tensor, TokenDataset], Tensor]


def paired_datasets(clean: Any, corrupted: Any) -> tuple[TokenDataset, TokenDataset]:
    clean_ds, corrupted_ds = (
        as_token_dataset(clean, "clean"),
        as_token_dataset(corrupted, "corrupted"),
    )
    check_pairs(clean_ds, corrupted_ds)
    return clean_ds, corrupted_ds


def per_example_metric(metric: PatchMetric, logits: Tensor, batch: TokenDataset) -> Tensor:
    values = metric(logits, batch)
    if not isinstance(values, Tensor) or values.shape != (len(batch),):
        raise ValueError(
            f"The metric must return one value per example (shape "
            f"({len(batch)},)); got {getattr(values, 'shape', type(values))}."
        )
    return values


@dataclass
class NodeScores(Result):
    """Per-node patching scores: the mean metric with the node patched minus the clean mean.

    Attributes:
        nodes: Node names (``a{L}.h{H}``, ``m{L}``).
        scores: ``mean metric(patched) - mean metric(clean)`` per node.
        patched: Per node, the metric of every example with that node patched.
        clean: The clean metric per example.
        n_layers, n_heads: Model shape.
        label, seconds, info: As every result.

    Examples:
        >>> import numpy as np
        >>> from tl_unlearn import NodeScores
        >>> s = NodeScores(["a0.h0", "m0"], np.array([-1.0, 0.5]), np.zeros((2, 3)),
        ...                np.ones(3), 1, 1)
        >>> s.ranked()
        ['a0.h0', 'm0']
    """

    nodes: list[str]
    scores: np.ndarray
    patched: np.ndarray
    clean: np.ndarray
    n_layers: int
    n_heads: int
    label: str = "activation patching"
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("heads",)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.patched = np.asarray(self.patched, dtype=np.float64)
        self.clean = np.asarray(self.clean, dtype=np.float64)
        if len(self.scores) != len(self.nodes) or len(self.patched) != len(self.nodes):
            raise ValueError("one score and one row of patched values per node are needed")

    def ranked(self) -> list[str]:
        """Nodes by ``|score|``, largest first."""
        return [self.nodes[i] for i in np.argsort(-np.abs(self.scores), kind="stable")]

    def head_grid(self, values: np.ndarray | None = None) -> np.ndarray:
        """``[layer, head]`` grid of ``values`` (default: the mean patched metric)."""
        values = self.patched.mean(1) if values is None else np.asarray(values)
        grid = np.full((self.n_layers, self.n_heads), np.nan)
        for name, v in zip(self.nodes, values):
            if name.startswith("a"):
                layer, head = name[1:].split(".h")
                grid[int(layer), int(head)] = v
        return grid

    def edge_scores(self, d_model: int = 0) -> Circuit:
        """An edge ranking from the node ranking: edge ``p -> c`` scores
        ``min(|score_p|, |score_c|)`` (``input`` and ``logits`` count as infinite), so the
        top edges are those among the top nodes."""
        c = Circuit.empty(self.n_layers, self.n_heads, d_model=d_model, label=self.label)
        node_score = dict(zip(self.nodes, np.abs(self.scores)))
        node_score.update(input=np.inf, logits=np.inf)
        parent = np.array([node_score.get(n, 0.0) for n in c.parent_names])
        child = np.array([node_score.get(n.split("<")[0], 0.0) for n in c.child_names])
        scores = np.minimum(parent[:, None], child[None, :])
        scores = np.where(np.isinf(scores), np.finfo(np.float64).max, scores)
        c.scores = np.where(c.real_edges(), scores, 0.0)
        return c

    def figure(self, kind: Literal["heads"] = "heads") -> go.Figure:
        """Layer x head heatmap of the score (patched - clean mean metric)."""
        self._check_kind(kind)
        grid = self.head_grid(self.scores)
        fig = go.Figure(
            go.Heatmap(z=grid, colorscale="RdBu", zmid=0, colorbar={"title": "patched - clean"})
        )
        fig.update_layout(
            title=f"{self.label}: metric change per head",
            xaxis_title="head",
            yaxis_title="layer",
            template="plotly_white",
        )
        return fig


@torch.no_grad()
def activation_patching(
    model: Any,
    clean: TokenDataset | Tensor,
    corrupted: TokenDataset | Tensor,
    metric: PatchMetric = answer_logit_diff,
    *,
    batch_size: int = 8,
    include_mlp: bool = True,
    rows_per_pass: int = 64,
    progress: bool = False,
) -> NodeScores:
    """Exact activation patching of every head (``hook_z``) and MLP (``hook_mlp_out``), all
    positions: the clean run with one node's output taken from the corrupted run.

    Args:
        model: A HookedTransformer.
        clean: Paired data (row ``i`` with row ``i``, equal lengths).
        corrupted: As ``clean``.
        metric: ``metric(logits, batch)``, one value per example.
        batch_size: Examples per forward pass.
        include_mlp: Patch MLP outputs too (else heads only).
        rows_per_pass: Rows of one forward pass: the batch is repeated once per node, up
            to this many rows, each copy with its own node patched.
        progress: Show a progress bar.

    Returns:
        :class:`NodeScores`; ``head_grid()`` is TransformerLens's
        ``get_act_patch_attn_head_out_all_pos`` with the roles of clean and corrupted swapped.

    Examples:
        >>> from tl_unlearn import activation_patching
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.interventions.counterfactual import counterfactual_pair
        >>> from tl_unlearn.data.tasks import ioi_task
        >>> m = load_tiny_model()
        >>> clean, corrupted = counterfactual_pair(ioi_task(m.tokenizer, n=20), m.tokenizer,
        ...                                        max_examples=4)
        >>> activation_patching(m, clean, corrupted).head_grid().shape
        (2, 4)
    """
    t0 = time.perf_counter()
    clean_ds, corrupted_ds = paired_datasets(clean, corrupted)
    check_positive_int(batch_size, "batch_size")
    cfg = model.cfg
    nodes: list[tuple[str, str, int | None]] = []
    for layer in range(cfg.n_layers):
        nodes += [
            (component_name((layer, h)), get_act_name("z", layer), h) for h in range(cfg.n_heads)
        ]
        if include_mlp:
            nodes.append((component_name((layer, None)), get_act_name("mlp_out", layer), None))
    device = model_device(model)
    names = sorted({hook for _, hook, _ in nodes})
    patched = np.zeros((len(nodes), len(clean_ds)))
    clean_values = np.zeros(len(clean_ds))
    start = 0
    batches = list(zip(clean_ds.views(batch_size), corrupted_ds.views(batch_size)))
    bar = tqdm(total=len(batches) * len(nodes), desc="activation patching", disable=not progress)
    for view, corrupt_view in batches:
        rows = slice(start, start + len(view))
        tokens = view.tokens.to(device)
        _, cache = model.run_with_cache(corrupt_view.tokens.to(device), names_filter=names)
        clean_values[rows] = per_example_metric(metric, model(tokens), view).double().cpu().numpy()
        # several nodes per pass: the batch repeated once per node, each copy patching one
        per_pass = max(1, rows_per_pass // len(view))
        for first in range(0, len(nodes), per_pass):
            group = nodes[first : first + per_pass]
            hooks = _patch_hooks(group, cache, len(view))
            logits = model.run_with_hooks(tokens.repeat(len(group), 1), fwd_hooks=hooks)
            for j in range(len(group)):
                part = logits[j * len(view) : (j + 1) * len(view)]
                patched[first + j, rows] = (
                    per_example_metric(metric, part, view).double().cpu().numpy()
                )
            bar.update(len(group))
        start += len(view)
    bar.close()
    return NodeScores(
        [n for n, _, _ in nodes],
        patched.mean(1) - clean_values.mean(),
        patched,
        clean_values,
        cfg.n_layers,
        cfg.n_heads,
        seconds=time.perf_counter() - t0,
        info={"n_examples": len(clean_ds), "metric": getattr(metric, "__name__", "metric")},
    )


def _patch_hooks(
    group: list[tuple[str, str, int | None]], cache: Any, n: int
) -> list[tuple[str, Any]]:
    """Hooks patching node ``j`` of ``group`` in rows ``j * n .. (j + 1) * n`` of a batch
    repeated ``len(group)`` times, from the corrupted ``cache``."""
    by_hook: dict[str, list[tuple[int, int | None]]] = {}
    for j, (_, hook_name, head) in enumerate(group):
        by_hook.setdefault(hook_name, []).append((j, head))

    def patch(hook_name: str, targets: list[tuple[int, int | None]]) -> Any:
        source = cache[hook_name]

        def hook(acts: Tensor, hook: Any) -> Tensor:
            out = acts.clone()
            for j, head in targets:
                rows = slice(j * n, (j + 1) * n)
                if head is None:
                    out[rows] = source
                else:
                    out[rows, :, head] = source[:, :, head]
            return out

        return hook

    return [(name, patch(name, targets)) for name, targets in by_hook.items()]


IG_POINTS = ("left", "right")
"""EAP-IG's interpolation conventions (see :func:`edge_attribution`)."""


def check_ig_points(value: Any, what: str = "ig_points") -> str:
    """``value`` if it names one of :data:`IG_POINTS`, else a ValueError naming ``what``."""
    if value not in IG_POINTS:
        raise ValueError(f"{what} must be 'left' or 'right', got {value!r}.")
    return value


def edge_attribution(
    model: Any,
    clean: TokenDataset | Tensor,
    corrupted: TokenDataset | Tensor,
    metric: PatchMetric = answer_logit_diff,
    *,
    method: Literal["eap", "eap-ig"] = "eap",
    steps: int = 5,
    batch_size: int = 8,
    progress: bool = False,
    rows: Sequence[int] | None = None,
    ig_points: Literal["left", "right"] = "left",
) -> Circuit:
    """Edge attribution scores (EAP or EAP-IG) of every edge of the model's graph.

    Args:
        model: A HookedTransformer (sequential attention then MLP blocks).
        clean: Paired data (row ``i`` with row ``i``, equal lengths).
        corrupted: As ``clean``.
        metric: ``metric(logits, batch)``, one differentiable value per example.
        method: ``"eap"`` or ``"eap-ig"`` (integrated gradients over the input embeddings).
        steps: Integration steps of EAP-IG (with ``ig_points="right"``, 1 gives EAP).
        batch_size: Examples per pass.
        progress: Show a progress bar.
        rows: Attribute these pairs only, each weighted as one of all the pairs: the
            scores of disjoint ``rows`` covering every pair sum to the scores of all of
            them (a shard of an attribution sweep).
        ig_points: EAP-IG's interpolation points ``alpha = k / steps``: ``"left"``,
            ``k = 0..steps-1`` (EAP-IG's reference code, MIB; the default), or ``"right"``,
            ``k = 1..steps`` (one step equals EAP).

    Returns:
        An empty :class:`~tl_unlearn.circuits.graph.Circuit` of the model holding the ``scores``
        (``.top(n)`` makes the circuit of the ``n`` best edges).

    Raises:
        ValueError: Unpaired data, an unknown method or a metric of the wrong shape.

    Examples:
        >>> from tl_unlearn import edge_attribution
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.interventions.counterfactual import counterfactual_pair
        >>> from tl_unlearn.data.tasks import ioi_task
        >>> m = load_tiny_model()
        >>> clean, corrupted = counterfactual_pair(ioi_task(m.tokenizer, n=20), m.tokenizer,
        ...                                        max_examples=4)
        >>> scores = edge_attribution(m, clean, corrupted)
        >>> scores.top(10).n_edges
        10
    """
    if method not in ("eap", "eap-ig"):
        raise ValueError(f"method must be 'eap' or 'eap-ig', got {method!r}.")
    check_ig_points(ig_points)
    steps = 1 if method == "eap" else check_positive_int(steps, "steps")
    # the interpolation points; EAP is the clean input alone
    alphas = (
        [1.0]
        if method == "eap"
        else [k / steps for k in (range(steps) if ig_points == "left" else range(1, steps + 1))]
    )
    check_positive_int(batch_size, "batch_size")
    t0 = time.perf_counter()
    clean_ds, corrupted_ds = paired_datasets(clean, corrupted)
    n_total = len(clean_ds)
    if rows is not None:
        idx = torch.as_tensor(check_indices(list(rows), n_total, "rows"), dtype=torch.long)
        clean_ds, corrupted_ds = clean_ds.rows(idx), corrupted_ds.rows(idx)
    circuit = Circuit.of_model(model, label=method.upper())
    scores = torch.zeros(circuit.n_parents, circuit.n_children, dtype=torch.float64)
    params = [p for p in model.parameters()]
    grads_on = [p.requires_grad for p in params]
    batches = list(zip(clean_ds.views(batch_size), corrupted_ds.views(batch_size)))
    bar = tqdm(total=len(batches) * steps, desc=method, disable=not progress)
    try:
        for p in params:
            p.requires_grad_(False)
        for view, corrupt_view in batches:
            _attribute_batch(
                model, circuit, scores, view, corrupt_view, metric, alphas, n_total, bar
            )
    finally:
        for p, on in zip(params, grads_on):
            p.requires_grad_(on)
        bar.close()
    circuit.scores = np.where(circuit.real_edges(), scores.numpy(), 0.0)
    circuit.seconds = time.perf_counter() - t0
    circuit.info = {
        "method": method,
        "steps": steps,
        **({"ig_points": ig_points} if method == "eap-ig" else {}),
        "n_examples": len(clean_ds),
        **({"of_examples": n_total} if rows is not None else {}),
        "metric": getattr(metric, "__name__", "metric"),
    }
    return circuit


def _parent_outputs(model: Any, store: list[Tensor | None]) -> list[tuple[str, Any]]:
    """Hooks writing every parent's output, ``[batch pos d_model]`` each, into ``store``
    (in parent order)."""
    cfg = model.cfg
    h = cfg.n_heads

    def embed(acts: Tensor, hook: Any) -> None:
        store[0] = acts.detach() if store[0] is None else store[0] + acts.detach()

    def result(layer: int) -> Any:
        w_o = model.blocks[layer].attn.W_O  # a head's output is z @ W_O[head]

        def hook(acts: Tensor, hook: Any) -> None:
            out = torch.einsum("bphd,hdm->bphm", acts.detach(), w_o.detach().to(acts.dtype))
            for head in range(h):
                store[1 + layer * (h + 1) + head] = out[:, :, head]

        return hook

    def mlp(layer: int) -> Any:
        def hook(acts: Tensor, hook: Any) -> None:
            store[1 + layer * (h + 1) + h] = acts.detach()

        return hook

    hooks: list[tuple[str, Any]] = [
        (n, embed) for n in parent_hooks(model) if n in (EMBED_HOOK, "hook_pos_embed")
    ]
    for layer in range(cfg.n_layers):
        hooks += [
            (get_act_name("z", layer), result(layer)),
            (get_act_name("mlp_out", layer), mlp(layer)),
        ]
    return hooks


def _attribute_batch(
    model: Any,
    circuit: Circuit,
    scores: Tensor,
    view: TokenDataset,
    corrupt_view: TokenDataset,
    metric: PatchMetric,
    alphas: Sequence[float],
    n_total: int,
    bar: Any,
) -> None:
    """Add one batch's EAP / EAP-IG scores to ``scores``: the parents' differences
    (corrupted - clean outputs) times the children's input gradients averaged over the
    inputs interpolated at ``alphas`` (``[1.0]``: EAP)."""
    steps = len(alphas)
    device = model_device(model)
    n_p = circuit.n_parents
    prev = circuit.prev_index()
    corrupt_out: list[Tensor | None] = [None] * n_p
    clean_out: list[Tensor | None] = [None] * n_p
    input_hooks = [n for n in parent_hooks(model) if n in (EMBED_HOOK, "hook_pos_embed")]
    parts: dict[str, Tensor] = {}  # the corrupted input embeddings, start of the IG path

    def keep(acts: Tensor, hook: Any) -> None:
        parts[hook.name] = acts.detach()

    with (
        torch.no_grad(),
        model.hooks(
            fwd_hooks=[(n, keep) for n in input_hooks] + _parent_outputs(model, corrupt_out)
        ),
    ):
        model(corrupt_view.tokens.to(device), return_type=None)
    state: dict[str, Any] = {}

    def interpolate(acts: Tensor, hook: Any) -> Tensor:
        part = parts[hook.name]
        return (part + state["alpha"] * (acts.detach() - part)).requires_grad_(True)

    def grad_hook(cols: np.ndarray) -> Any:
        def fwd(acts: Tensor, hook: Any) -> None:
            n_prev = int(prev[cols[0]])

            def backward(grad: Tensor) -> None:
                g = grad if grad.ndim == 4 else grad[:, :, None]
                g = g[active]  # [active positions, child, d_model]
                g = g.transpose(0, 1).reshape(g.shape[1], -1).to(state["diff"].dtype)
                s = state["diff"][:n_prev] @ g.T  # [parent, positions*d_model] @ [.., child]
                scores[:n_prev, cols[0] : cols[-1] + 1] += s.double() / (steps * n_total)

            if acts.requires_grad:
                acts.register_hook(backward)

        return fwd

    tokens = view.tokens.to(device)
    # before a row's first token that differs from its corrupted partner, every parent's
    # output is the same on both prompts (causal attention): those positions add nothing
    active = ((tokens != corrupt_view.tokens.to(device)).cumsum(1) > 0) & view.attention_mask.to(
        device
    )
    children = [(name, grad_hook(cols)) for name, cols in circuit.child_hooks()]

    def set_diff() -> None:
        state["diff"] = torch.stack(  # [parent, active positions*d_model]
            [(c - x)[active].reshape(-1) for c, x in zip(corrupt_out, clean_out)]
        )

    # the clean input (alpha = 1) gives the parents' clean outputs: in the first gradient
    # pass when it is one of the points, else in a pass of its own
    order = sorted(alphas, reverse=True)
    if order[0] != 1.0:
        with torch.no_grad(), edge_flags(model):
            with model.hooks(fwd_hooks=_parent_outputs(model, clean_out)):
                model(tokens, return_type=None)
        set_diff()
    for i, alpha in enumerate(order):
        state["alpha"] = alpha
        fwd = [(n, interpolate) for n in input_hooks]
        first_clean = i == 0 and alpha == 1.0
        if first_clean:
            fwd += _parent_outputs(model, clean_out)
        # per-head inputs (TransformerLens's split inputs) only where gradients are read
        with edge_flags(model), model.hooks(fwd_hooks=fwd + children):
            with torch.enable_grad():
                logits = model(tokens)
                if first_clean:
                    set_diff()
                value = per_example_metric(metric, logits, view).sum()
                value.backward()
        bar.update()
