"""Removal depth by patching: the Unlearning Depth Score (UDS) of Lee, Kim & Jo (2026).

An output-level drop says the forget task is gone from the outputs; it does not say whether
it is gone from the model's inside. UDS asks the inside: the hidden state after each layer
of a model is patched into the *original* model, and the forget task's log-probability is
measured there.

1. **Baseline.** Patch the retrained twin's (never saw the forget data) hidden state after
   layer ``l`` into the original: ``d1[l] = lp(original) - lp(original with twin's h_l)``.
   Layers with ``d1[l] > tau`` encode the forget knowledge (*knowledge-encoding*, KE).
2. **Quantification.** The same with the intervened model's hidden state:
   ``d2[l] = lp(original) - lp(original with intervened h_l)``.
3. **Score.** The layer erasure ratio ``LER[l] = clip(d2[l] / d1[l], 0, 1)`` and
   ``UDS = sum_{l in KE} d1[l] * LER[l] / sum_{l in KE} d1[l]``: 1 when every KE layer holds
   as little of the forget task as the twin's, 0 when patching gives all of it back.

``lp`` is the mean log-probability of the scored target tokens of one example; UDS is
computed per example (examples with no KE layer are left out) and averaged, with a bootstrap
interval over examples.

Examples:
    >>> from tl_unlearn.models.planted import load_planted, planted_data
    >>> m = load_planted("planted-induction")
    >>> twin = load_planted("planted-induction", twin=True)
    >>> data = planted_data("planted-induction", 32, seed=3)["forget"]
    >>> unlearning_depth(m, data, twin, twin, n_boot=100).value  # the twin itself: 1
    1.0
    >>> unlearning_depth(m, data, [], twin, n_boot=100).value  # nothing removed: 0
    0.0
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor
from transformer_lens.utils import get_act_name

from tl_unlearn.core.results import Result
from tl_unlearn.data.datasets import TokenDataset
from tl_unlearn.engine.scoring import scored_logprob
from tl_unlearn.metrics.intervals import Interval, bootstrap_indices, bootstrap_interval

__all__ = ["UnlearningDepth", "unlearning_depth"]


@dataclass
class UnlearningDepth(Result):
    """The Unlearning Depth Score of one intervention, per layer and overall.

    Attributes:
        label: The intervention's name.
        value: UDS, the mean over examples with at least one knowledge-encoding layer.
        low: Lower bound of its bootstrap interval over examples.
        high: Upper bound.
        layers: Per layer (the hidden state after block ``l``): mean ``d1``, mean ``d2``,
            the share of examples for which the layer is knowledge-encoding, and mean LER
            over those.
        per_example: UDS of each counted example.
        tau: The knowledge-encoding threshold on ``d1`` (nats).
        n_examples: Examples evaluated.
        confidence: Nominal coverage.
        seconds: Wall time.

    Examples:
        >>> from tl_unlearn.metrics import UnlearningDepth
        >>> d = UnlearningDepth("C ablated", 0.5, 0.4, 0.6, [{"layer": 0, "d1": 2.0, "d2": 1.0}])
        >>> str(d.interval), UnlearningDepth.from_dict(d.to_dict()) == d
        ('0.5 [0.4, 0.6]', True)
    """

    label: str
    value: float
    low: float
    high: float
    layers: list[dict[str, float]]
    per_example: list[float] = field(default_factory=list)
    tau: float = 0.05
    n_examples: int = 0
    confidence: float = 0.95
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("layers",)

    @property
    def interval(self) -> Interval:
        return Interval(self.value, self.low, self.high, self.confidence)

    def figure(self, kind: str = "layers") -> go.Figure:
        """``kind="layers"``: the mean log-probability drop per patched layer, twin
        (``d1``) against the intervened model (``d2``)."""
        self._check_kind(kind)
        x = [f"after block {r['layer']}" for r in self.layers]
        fig = go.Figure(
            [
                go.Bar(x=x, y=[r["d1"] for r in self.layers], name="twin patched in (d1)"),
                go.Bar(x=x, y=[r["d2"] for r in self.layers], name="intervened patched in (d2)"),
            ]
        )
        fig.update_layout(
            title=f"{self.label}: UDS {self.interval}",
            yaxis_title="forget log-prob drop (nats)",
            barmode="group",
            template="plotly_white",
        )
        return fig


def _states(model: Any, hooks: Sequence, tokens: Tensor, names: list[str]) -> dict[str, Tensor]:
    store: dict[str, Tensor] = {}

    def keep(acts: Tensor, hook: Any) -> None:
        store[hook.name] = acts.detach()

    with model.hooks(fwd_hooks=[*hooks, *[(n, keep) for n in names]]):
        model(tokens)
    return store


@torch.no_grad()
def unlearning_depth(
    model: Any,
    data: TokenDataset,
    intervened: Any,
    twin: Any,
    *,
    tau: float = 0.05,
    batch_size: int = 64,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    label: str | None = None,
) -> UnlearningDepth:
    """UDS of an intervention (see the module docstring for the definition).

    Args:
        model: The original model.
        data: Forget data with scored positions (e.g. a planted model's forget task).
        intervened: The intervention: an :class:`~tl_unlearn.interventions.Intervention` or
            any list of ``(hook_name, fn)`` hooks on ``model``, or an edited copy of the
            model (a model of the same shape).
        twin: The model retrained without the forget data (same shape). The order
            ``(model, intervened, twin, data)`` of 0.1 still works, with a
            DeprecationWarning, until the next release.
        tau: Knowledge-encoding threshold on the twin's drop ``d1`` (nats).
        batch_size: Examples per pass.
        n_boot: Bootstrap replicates of the interval over examples.
        seed: Seed of the bootstrap.
        confidence: Nominal coverage.
        label: Name of the result.

    Returns:
        The :class:`UnlearningDepth`.

    Raises:
        ValueError: A twin or edited model of another shape, or ``tau`` not positive.

    Examples:
        >>> from tl_unlearn.models.planted import load_planted, planted_data
        >>> from tl_unlearn.metrics import unlearning_depth
        >>> m = load_planted("planted-lookup")
        >>> twin = load_planted("planted-lookup", twin=True)
        >>> forget = planted_data("planted-lookup", 16, seed=3)["forget"]
        >>> unlearning_depth(m, forget, twin, twin, n_boot=50).value
        1.0
    """
    if isinstance(twin, TokenDataset) and not isinstance(data, TokenDataset):  # 0.1's order
        warnings.warn(
            "unlearning_depth(model, intervened, twin, data) is now unlearning_depth(model, "
            "data, intervened, twin); the old order goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        data, intervened, twin = twin, data, intervened
    t0 = time.perf_counter()
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau!r}.")
    for name, other in (("twin", twin), ("intervened", intervened)):
        if hasattr(other, "cfg") and (
            other.cfg.n_layers != model.cfg.n_layers or other.cfg.d_model != model.cfg.d_model
        ):
            raise ValueError(
                f"The {name} model has {other.cfg.n_layers} layers of width "
                f"{other.cfg.d_model}; the model has {model.cfg.n_layers} of "
                f"{model.cfg.d_model}: hidden states cannot be patched between them."
            )
    edited = hasattr(intervened, "cfg")
    hooks = [] if edited else list(intervened)
    names = [get_act_name("resid_post", layer) for layer in range(model.cfg.n_layers)]
    d1, d2 = [], []
    for start in range(0, len(data), batch_size):
        batch = data.rows(slice(start, start + batch_size))
        tokens = batch.tokens
        base = scored_logprob(model(tokens).float(), batch)
        src_twin = _states(twin, [], tokens, names)
        src_iv = _states(intervened if edited else model, hooks, tokens, names)
        rows1, rows2 = [], []
        for name in names:
            for src, rows in ((src_twin, rows1), (src_iv, rows2)):

                def patch(acts: Tensor, hook: Any, value: Tensor = src[name]) -> Tensor:
                    return value

                patched = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
                rows.append(base - scored_logprob(patched.float(), batch))
        d1.append(torch.stack(rows1, 1))
        d2.append(torch.stack(rows2, 1))
    d1_all = torch.cat(d1).double().cpu().numpy()  # [example, layer]
    d2_all = torch.cat(d2).double().cpu().numpy()
    ke = d1_all > tau
    with np.errstate(divide="ignore", invalid="ignore"):
        ler = np.clip(d2_all / d1_all, 0.0, 1.0)
    weight = np.where(ke, d1_all, 0.0)
    counted = ke.any(1)
    per_example = (weight * ler).sum(1)[counted] / weight.sum(1)[counted]
    nan = float("nan")
    if counted.sum() == 0:
        value, lo, hi = nan, nan, nan
    else:
        value = float(per_example.mean())
        idx = bootstrap_indices(len(per_example), n_boot=n_boot, seed=seed)[0]
        lo, hi = bootstrap_interval(
            per_example[idx].mean(1), value, len(per_example), confidence, proportion=True
        )
        if value in (0.0, 1.0):  # every example at a bound: no spread to make an interval of
            lo = hi = value
    layers = []
    for j in range(len(names)):
        k = ke[:, j]
        layers.append(
            {
                "layer": j,
                "d1": float(d1_all[:, j].mean()),
                "d2": float(d2_all[:, j].mean()),
                "knowledge_encoding_share": float(k.mean()),
                "ler": float(ler[k, j].mean()) if k.any() else nan,
            }
        )
    return UnlearningDepth(
        label or ("edited model" if edited else getattr(intervened, "name", "intervention")),
        value,
        float(lo),
        float(hi),
        layers,
        [float(v) for v in per_example],
        tau,
        len(data),
        confidence,
        time.perf_counter() - t0,
    )
