"""Layer-wise weight distance, and the equivalent weight edit of a hook intervention.

:func:`weight_distance` compares two models parameter by parameter: ``||W_a - W_b||_2``
(Frobenius) and the same relative to ``||W_a||``, with a per-layer sum of squares.

Hook interventions change no weight. Where an equivalent weight edit exists,
:func:`equivalent_weight_edit` reports it without applying it: a zero-pruned MLP neuron ``i``
of layer ``l`` equals zeroing row ``i`` of ``W_out[l]`` (``[d_mlp, d_model]``); a zeroed
``hook_z`` entry ``(h, j)`` equals zeroing row ``j`` of ``W_O[l, h]``. Other interventions
(mean ablation, steering, SAE edits) have no pure weight equivalent: the result says "n/a".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tl_unlearn.core.checks import renamed_keywords
from tl_unlearn.core.results import Result
from tl_unlearn.engine.hooks import Intervention

__all__ = ["WeightDistance", "equivalent_weight_edit", "weight_distance"]


@dataclass
class WeightDistance(Result):
    """Per-parameter and per-layer distances between two sets of weights.

    Attributes:
        per_param: ``{name: (||W_a - W_b||, ||W_a - W_b|| / ||W_a||)}``.
        per_layer: ``{layer or "other": ||W_a - W_b||}`` over that layer's parameters.
        note: Explanation when no distance applies ("n/a").
        label: What is compared.
        seconds: Wall time.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import weight_distance
        >>> wd = weight_distance(m, m)
        >>> type(wd).from_dict(wd.to_dict()).label == wd.label
        True
    """

    per_param: dict[str, tuple[float, float]]
    per_layer: dict[str, float]
    note: str = ""
    label: str = "weight distance"
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("per_layer",)

    @property
    def total(self) -> float:
        return float(sum(v**2 for v in self.per_layer.values()) ** 0.5)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "total": self.total}

    def figure(self, kind: str = "per_layer") -> Any:
        """``kind="per_layer"``: ``||W_a - W_b||`` per layer."""
        import plotly.graph_objects as go

        self._check_kind(kind)
        fig = go.Figure(go.Bar(x=list(self.per_layer), y=list(self.per_layer.values())))
        fig.update_layout(
            title=f"{self.label}: total {self.total:.4g}",
            xaxis_title="layer",
            yaxis_title="||W_a - W_b||",
            template="plotly_white",
        )
        return fig


def _layer_of(name: str) -> str:
    m = re.match(r"blocks\.(\d+)\.", name)
    return m.group(1) if m else "other"


def _distance(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], note: str = ""
) -> WeightDistance:
    if a.keys() != b.keys():
        diff = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"The two models have different parameters, e.g. {diff}.")
    per_param, layer_sq = {}, {}
    for k, wa in a.items():
        d = float((wa.double() - b[k].double()).norm())
        na = float(wa.double().norm())
        per_param[k] = (d, d / na if na else 0.0)
        layer_sq[_layer_of(k)] = layer_sq.get(_layer_of(k), 0.0) + d**2
    return WeightDistance(per_param, {k: v**0.5 for k, v in layer_sq.items()}, note)


def weight_distance(model_a: Any, model_b: Any) -> WeightDistance:
    """``||W_a - W_b||`` per parameter and per layer (e.g. original vs fine-tuned / retrained).

    Args:
        model_a: The first model.
        model_b: The second, of the same architecture.

    Returns:
        :class:`WeightDistance`.

    Examples:
        >>> from tl_unlearn.metrics import weight_distance
        >>> from tl_unlearn import load_tiny_model
        >>> m = load_tiny_model()
        >>> weight_distance(m, m).total
        0.0
    """
    return _distance(
        {k: v.detach() for k, v in model_a.named_parameters()},
        {k: v.detach() for k, v in model_b.named_parameters()},
    )


@renamed_keywords(intervention="hooks")
def equivalent_weight_edit(model: Any, hooks: Intervention) -> WeightDistance | None:
    """Distance of the weight edit equivalent to a zero-pruning / zero-ablation, or None ("n/a").

    Only interventions whose ``info`` has ``pruned`` units with mode ``"zero"`` (selective
    pruning) or ``kind == "zero"`` with neuron/head sites translate into weight edits.

    Args:
        model: The model.
        hooks: A zero ablation or zero-pruning of neurons or heads (``intervention=`` until
            the next release).

    Returns:
        The distance of the equivalent edit, or None when the intervention has no weight
        equivalent (a steering vector, a mean ablation).

    Examples:
        >>> from tl_unlearn.metrics import equivalent_weight_edit
        >>> from tl_unlearn import load_tiny_model, zero_ablation
        >>> m = load_tiny_model()
        >>> edit = equivalent_weight_edit(m, zero_ablation(m, neurons={0: [1, 2]}))
        >>> edit is not None
        True
    """
    info = hooks.info
    pruned = info.get("pruned")
    if not pruned or info.get("mode") != "zero":
        return None
    params = {k: v.detach() for k, v in model.named_parameters()}
    edited = {k: v.clone() for k, v in params.items()}
    for hook, units in pruned.items():
        layer = int(hook.split(".")[1])
        if hook.endswith("mlp.hook_post"):
            edited[f"blocks.{layer}.mlp.W_out"][units] = 0
        elif hook.endswith("attn.hook_z"):
            w_o = edited[f"blocks.{layer}.attn.W_O"]  # [head_index, d_head, d_model]
            d_head = w_o.shape[1]
            for u in units:
                w_o[u // d_head, u % d_head] = 0
        else:
            return None
    return _distance(params, edited, note=f"equivalent edit of {hooks.name}")
