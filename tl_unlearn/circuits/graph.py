"""Edge-level circuits (the graphs of ACDC, EAP, EAP-IG and the MIB circuit track) and their
ablation.

Nodes are ``input`` (the token embeddings, plus position embeddings where they enter the
residual stream), ``a{L}.h{H}`` (head ``H`` of layer ``L``, its output before the bias of
``W_O``), ``m{L}`` (MLP ``L``'s output) and ``logits``. An edge ``parent->child`` runs from
an earlier node to a later one; an edge into a head also names which input it feeds:
``input->a1.h2<k>``. Node and edge names, their order, and the JSON file format
(``cfg``, ``nodes``, ``edges`` with per-edge ``score`` and ``in_graph``) are those of the
EAP-IG library and the MIB circuit track, so a circuit found there is tested here unchanged.

Ablating the complement of a circuit (:func:`edge_ablation`): every child node reads the
*current* output of its in-circuit parents and the *ablated* (counterfactual, mean or zero)
output of its other parents, edge by edge, while the rest of the forward pass is unchanged:
the input of child ``c`` becomes ``x_c + sum_{p -> c ablated} (ablated_p - current_p)``.
A node set is the special case where all edges among kept nodes are in the circuit.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import plotly.graph_objects as go
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.components import component_name
from tl_unlearn.core.files import save_json
from tl_unlearn.core.results import Result
from tl_unlearn.interventions.counterfactual import (
    EMBED_HOOK,
    require_hooked_transformer,
)

__all__ = ["Circuit", "EdgeMethod", "parent_hooks"]


EdgeMethod = Literal["counterfactual", "mean", "zero"]


EDGE_RE = re.compile(r"^(?P<parent>[^<>\-]+)->(?P<child>[^<>\-]+)(<(?P<qkv>[qkv])>)?$")


@dataclass
class Circuit(Result):
    """A set of edges of a model's computational graph, with optional edge scores.

    Edges are held as an ``[n_parents, n_children]`` boolean matrix in EAP-IG's order:
    parents ``input, a0.h0 .. a0.h{H-1}, m0, a1.h0, ...``; children per layer
    ``a{L}.h*<q>, a{L}.h*<k>, a{L}.h*<v>, m{L}``, then ``logits``.

    Attributes:
        n_layers: Layers of the model.
        n_heads: Heads per layer.
        in_graph: ``[n_parents, n_children]`` True for the circuit's edges.
        scores: Same shape, an attribution score per edge (None when it has none).
        d_model: Width of the residual stream (kept for the JSON ``cfg``).
        label: What the circuit is (e.g. ``"EAP top 120"``).
        seconds: Time it took to find it.
        info: Free-form details.

    Examples:
        >>> from tl_unlearn import Circuit
        >>> c = Circuit.empty(2, 4).with_edges(["input->a1.h2<k>", "a1.h2->logits"])
        >>> c.n_edges, c.n_real_edges, c.edges
        (2, 110, ['input->a1.h2<k>', 'a1.h2->logits'])
        >>> c.nodes
        ['input', 'a1.h2', 'logits']
    """

    n_layers: int
    n_heads: int
    in_graph: np.ndarray
    scores: np.ndarray | None = None
    d_model: int = 0
    label: str = "circuit"
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("adjacency", "scores")

    def __post_init__(self) -> None:
        self.in_graph = np.asarray(self.in_graph, dtype=bool)
        shape = (self.n_parents, self.n_children)
        if self.in_graph.shape != shape:
            raise ValueError(
                f"in_graph has shape {self.in_graph.shape}; a model with "
                f"{self.n_layers} layers of {self.n_heads} heads needs {shape}."
            )
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64)
            if self.scores.shape != shape:
                raise ValueError(f"scores has shape {self.scores.shape}; expected {shape}.")
        fake = self.in_graph & ~self.real_edges()
        if fake.any():
            p, c = (int(i[0]) for i in fake.nonzero())
            raise ValueError(
                f"Edge {self.parent_names[p]}->{self.child_names[c]} does not "
                "exist: a parent must come before its child."
            )

    # ------------------------------------------------------------------ layout
    @property
    def n_parents(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_children(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1) + 1

    @property
    def parent_names(self) -> list[str]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [component_name((layer, h)) for h in range(self.n_heads)] + [
                component_name((layer, None))
            ]
        return names

    @property
    def child_names(self) -> list[str]:
        names = []
        for layer in range(self.n_layers):
            for letter in "qkv":
                names += [f"a{layer}.h{h}<{letter}>" for h in range(self.n_heads)]
            names.append(component_name((layer, None)))
        return [*names, "logits"]

    def parent_index(self, node: str) -> int:
        """Row of parent node ``node`` (``input``, ``a{L}.h{H}``, ``m{L}``)."""
        return self._index(node, self.parent_names, "parent")

    def child_index(self, node: str, qkv: str | None = None) -> int:
        """Column of child ``node`` (``a{L}.h{H}`` with ``qkv``, ``m{L}`` or ``logits``)."""
        if node.startswith("a") and qkv is None:
            raise ValueError(
                f"An edge into head {node!r} must say which input it feeds: "
                f"'{node}<q>', '<k>' or '<v>'."
            )
        if qkv is not None and not node.startswith("a"):
            raise ValueError(f"Only heads have q/k/v inputs; got {node}<{qkv}>.")
        return self._index(node if qkv is None else f"{node}<{qkv}>", self.child_names, "child")

    def _index(self, name: str, names: list[str], role: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"Unknown {role} node {name!r} for a model with {self.n_layers} "
                f"layers of {self.n_heads} heads.{hint}"
            ) from None

    def prev_index(self) -> np.ndarray:
        """Per child, the number of parents before it (its parents are rows ``0..n-1``)."""
        h = self.n_heads
        out = []
        for layer in range(self.n_layers):
            out += [1 + layer * (h + 1)] * (3 * h) + [1 + layer * (h + 1) + h]
        return np.array([*out, self.n_parents])

    def child_hooks(self) -> list[tuple[str, np.ndarray]]:
        """The hook point of every child input (``blocks.L.hook_q_input``...,
        ``hook_mlp_in``, the last ``hook_resid_post`` for ``logits``) and its columns."""
        h = self.n_heads
        out = []
        for layer in range(self.n_layers):
            base = layer * (3 * h + 1)
            for j, letter in enumerate("qkv"):
                out.append(
                    (
                        f"blocks.{layer}.hook_{letter}_input",
                        np.arange(base + j * h, base + (j + 1) * h),
                    )
                )
            out.append((f"blocks.{layer}.hook_mlp_in", np.array([base + 3 * h])))
        out.append((get_act_name("resid_post", self.n_layers - 1), np.array([self.n_children - 1])))
        return out

    def real_edges(self) -> np.ndarray:
        """``[n_parents, n_children]`` True where an edge exists."""
        return np.arange(self.n_parents)[:, None] < self.prev_index()[None, :]

    @property
    def n_real_edges(self) -> int:
        """Edges of the full graph."""
        return int(self.real_edges().sum())

    @property
    def n_edges(self) -> int:
        """Edges in the circuit."""
        return int(self.in_graph.sum())

    @property
    def edges(self) -> list[str]:
        """Names of the circuit's edges, in matrix order."""
        parents, children = self.parent_names, self.child_names
        return [f"{parents[p]}->{children[c]}" for p, c in zip(*self.in_graph.nonzero())]

    @property
    def nodes(self) -> list[str]:
        """Nodes touched by an edge of the circuit (``input`` and ``logits`` when used)."""
        used = set(np.flatnonzero(self.in_graph.any(1)).tolist())
        child_nodes = {
            self.child_names[c].split("<")[0] for c in np.flatnonzero(self.in_graph.any(0))
        }
        names = [n for i, n in enumerate(self.parent_names) if i in used or n in child_nodes]
        return names + (["logits"] if "logits" in child_nodes else [])

    # ------------------------------------------------------------------ builders
    @classmethod
    def of_model(cls, model: Any, fill: bool = False, **kwargs: Any) -> Circuit:
        """The full (``fill=True``) or empty graph of ``model``."""
        require_hooked_transformer(model, "An edge circuit")
        cfg = model.cfg
        if getattr(cfg, "parallel_attn_mlp", False):
            raise ValueError(
                "Edge circuits of parallel attention/MLP blocks (GPT-J, NeoX) are not supported."
            )
        if getattr(cfg, "attn_only", False):
            raise ValueError("Edge circuits need a model with MLPs (attn_only is set).")
        c = cls.empty(cfg.n_layers, cfg.n_heads, d_model=cfg.d_model, **kwargs)
        if fill:
            c.in_graph = c.real_edges()
        return c

    @classmethod
    def empty(cls, n_layers: int, n_heads: int, **kwargs: Any) -> Circuit:
        """A circuit with no edge."""
        n_p, n_c = 1 + n_layers * (n_heads + 1), n_layers * (3 * n_heads + 1) + 1
        return cls(n_layers, n_heads, np.zeros((n_p, n_c), dtype=bool), **kwargs)

    def copy(self, **changes: Any) -> Circuit:
        kw = {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "in_graph": self.in_graph.copy(),
            "scores": None if self.scores is None else self.scores.copy(),
            "d_model": self.d_model,
            "label": self.label,
            "seconds": self.seconds,
            "info": dict(self.info),
        }
        kw.update(changes)
        return Circuit(**kw)

    def parse_edge(self, name: str) -> tuple[int, int]:
        """``(row, column)`` of an edge name such as ``a0.h1->a1.h2<k>``."""
        m = EDGE_RE.match(name.strip()) if isinstance(name, str) else None
        if m is None:
            raise ValueError(
                f"Edge {name!r} is not of the form 'parent->child' or "
                "'parent->a{L}.h{H}<q|k|v>'."
            )
        p = self.parent_index(m["parent"])
        c = self.child_index(m["child"], m["qkv"])
        if not p < self.prev_index()[c]:
            raise ValueError(
                f"Edge {name!r} does not exist: {m['parent']} does not come before {m['child']}."
            )
        return p, c

    def with_edges(self, names: Iterable[str], in_graph: bool = True) -> Circuit:
        """A copy with the named edges added (or removed with ``in_graph=False``)."""
        out = self.copy()
        for name in names:
            out.in_graph[self.parse_edge(name)] = in_graph
        return out

    def top(self, n: int, *, absolute: bool = True, label: str | None = None) -> Circuit:
        """The ``n`` highest-scoring edges (by ``|score|`` unless ``absolute=False``; ties
        by matrix order)."""
        if self.scores is None:
            raise ValueError(f"Circuit {self.label!r} has no edge scores to rank.")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}.")
        real = self.real_edges()
        values = np.abs(self.scores) if absolute else self.scores.copy()
        flat = np.where(real, values, -np.inf).ravel()
        order = np.argsort(-flat, kind="stable")[: min(n, self.n_real_edges)]
        graph = np.zeros(flat.shape, dtype=bool)
        graph[order] = True
        return self.copy(in_graph=graph.reshape(real.shape), label=label or f"{self.label} top {n}")

    @classmethod
    def from_nodes(
        cls, model: Any, nodes: Iterable[str | tuple[int, int | None]], **kwargs: Any
    ) -> Circuit:
        """Every edge among ``nodes`` (``"a1.h2"``, ``"m0"`` or ``(layer, head)`` /
        ``(layer, None)``), ``input`` and ``logits``: a node-level circuit as edges."""
        c = cls.of_model(model, **kwargs)
        keep = {"input", "logits"}
        for node in nodes:
            if isinstance(node, tuple):
                layer, head = node
                node = component_name((layer, head))
            c.parent_index(node)  # raises on an unknown name
            keep.add(node)
        parents = np.array([n in keep for n in c.parent_names])
        children = np.array([n.split("<")[0] in keep for n in c.child_names])
        c.in_graph = c.real_edges() & parents[:, None] & children[None, :]
        return c

    def check_model(self, model: Any) -> None:
        """Raise a ValueError when ``model`` has another shape than the circuit's graph."""
        cfg = model.cfg
        if (cfg.n_layers, cfg.n_heads) != (self.n_layers, self.n_heads):
            raise ValueError(
                f"Circuit {self.label!r} is for {self.n_layers} layers of "
                f"{self.n_heads} heads; the model has {cfg.n_layers} of "
                f"{cfg.n_heads}."
            )

    # ------------------------------------------------------------------ files
    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """The EAP-IG / MIB circuit file (``cfg``, ``nodes``, ``edges``); written to ``path``
        atomically when given."""
        used = set(self.nodes)
        nodes = {n: {"in_graph": n in used} for n in [*self.parent_names, "logits"]}
        scores = self.scores if self.scores is not None else np.zeros(self.in_graph.shape)
        real = self.real_edges()
        parents, children = self.parent_names, self.child_names
        edges = {
            f"{parents[p]}->{children[c]}": {
                "score": float(scores[p, c]),
                "in_graph": bool(self.in_graph[p, c]),
            }
            for p, c in zip(*real.nonzero())
        }
        d = {
            "cfg": {
                "n_layers": self.n_layers,
                "n_heads": self.n_heads,
                "parallel_attn_mlp": False,
                "d_model": self.d_model,
            },
            "nodes": nodes,
            "edges": edges,
        }
        if path is not None:
            save_json(path, d)
        return d

    @classmethod
    def from_json(
        cls, source: str | Path | Mapping[str, Any], *, label: str | None = None
    ) -> Circuit:
        """Read an EAP-IG / MIB circuit file (a path or the loaded dict).

        Raises:
            ValueError: A file that is not JSON (or is empty), a missing key, an unsupported
                config, or an unknown node (in ``nodes`` or an edge) or impossible edge
                (named).
        """
        if isinstance(source, Mapping):
            d, where = source, "the circuit"
        else:
            where = str(source)
            text = Path(source).read_text()
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                what = (
                    "an empty file" if not text.strip() else f"not JSON ({e.msg}, line {e.lineno})"
                )
                raise ValueError(
                    f"{where} is not an EAP-IG circuit file: it is {what}; a circuit file is "
                    "JSON with 'cfg', 'nodes' and 'edges' (Circuit.to_json writes one)."
                ) from None
        if not isinstance(d, Mapping):
            raise ValueError(
                f"{where} is not an EAP-IG circuit file: its JSON is a {type(d).__name__}, "
                "not an object with 'cfg', 'nodes' and 'edges'."
            )
        missing = [k for k in ("cfg", "edges") if k not in d]
        if missing:
            raise ValueError(f"{where} is not an EAP-IG circuit file: no {missing} key(s).")
        cfg = d["cfg"]
        if cfg.get("parallel_attn_mlp"):
            raise ValueError(
                f"{where}: circuits of parallel attention/MLP models are not supported."
            )
        c = cls.empty(
            int(cfg["n_layers"]),
            int(cfg["n_heads"]),
            d_model=int(cfg.get("d_model", 0)),
            label=label or (Path(where).stem if where != "the circuit" else "circuit"),
        )
        known = {*c.parent_names, "logits"}
        unknown = [node for node in d.get("nodes") or {} if node not in known]
        if unknown:
            raise ValueError(
                f"{where}: unknown node(s) {unknown[:5]} in 'nodes' for a model of "
                f"{c.n_layers} layers x {c.n_heads} heads (nodes are input, a{{L}}.h{{H}}, "
                "m{L} and logits)."
            )
        scores = np.zeros(c.in_graph.shape)
        has_score = False
        for name, info in d["edges"].items():
            p, q = c.parse_edge(name)
            info = info if isinstance(info, Mapping) else {"in_graph": bool(info)}
            c.in_graph[p, q] = bool(info.get("in_graph", False))
            if info.get("score") is not None:
                scores[p, q] = float(info["score"])
                has_score = True
        c.scores = scores if has_score else None
        return c

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seconds": self.seconds,
            "info": self.info,
            "circuit": self.to_json(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Circuit:
        c = cls.from_json(d["circuit"], label=d.get("label"))
        c.seconds, c.info = float(d.get("seconds", 0.0)), dict(d.get("info", {}))
        return c

    # ------------------------------------------------------------------ figures
    def figure(self, kind: Literal["adjacency", "scores"] = "adjacency") -> go.Figure:
        """``kind="adjacency"``: the circuit's edges as a parent x child matrix;
        ``"scores"``: the edge scores (signed) on the same axes."""
        self._check_kind(kind)
        if kind == "scores":
            if self.scores is None:
                raise ValueError(f"Circuit {self.label!r} has no edge scores.")
            z = np.where(self.real_edges(), self.scores, np.nan)
            trace = go.Heatmap(
                z=z,
                x=self.child_names,
                y=self.parent_names,
                colorscale="RdBu",
                zmid=0,
                colorbar={"title": "score"},
            )
        else:
            z = np.where(self.real_edges(), self.in_graph.astype(float), np.nan)
            trace = go.Heatmap(
                z=z,
                x=self.child_names,
                y=self.parent_names,
                colorscale=[[0, "#eeeeee"], [1, "#d62728"]],
                showscale=False,
            )
        fig = go.Figure(trace)
        fig.update_layout(
            title=f"{self.label}: {self.n_edges} of {self.n_real_edges} edges",
            xaxis_title="child (input)",
            yaxis_title="parent (output)",
            yaxis_autorange="reversed",
            template="plotly_white",
        )
        return fig


# ---------------------------------------------------------------------- ablation
def parent_hooks(model: Any) -> list[str]:
    """The hook points whose values define the parents' outputs: the embeddings, each
    layer's ``hook_z`` (head outputs are ``z @ W_O``) and ``hook_mlp_out``."""
    names = [EMBED_HOOK]
    if model.cfg.positional_embedding_type == "standard":
        names.append("hook_pos_embed")
    for layer in range(model.cfg.n_layers):
        names += [get_act_name("z", layer), get_act_name("mlp_out", layer)]
    return names
