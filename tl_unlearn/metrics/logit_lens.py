"""Logit-lens diffs: where along the layers an intervention removes the prediction.

For each layer ``l`` the accumulated residual stream entering the layer
(``blocks.{l}.hook_resid_pre``), plus the final ``hook_resid_post``, is put through the final
layer norm and the unembedding. At every predicted position this gives the log-probability
and the rank (0 = top) of the correct next token. Averages are streamed per batch for the
original model and the intervened one, on each dataset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from transformer_lens.utilities import get_act_name

from tl_unlearn.core.checks import Hooks, model_device
from tl_unlearn.core.results import Result, dataset_colour
from tl_unlearn.data.datasets import TokenDataset, predicted_positions
from tl_unlearn.engine.forward import row_chunks, unembed_residual
from tl_unlearn.metrics.evaluation import check_data

__all__ = ["LogitLensDiff", "logit_lens_diff"]


@dataclass
class LogitLensDiff(Result):
    """Per-layer correct-token log-prob and rank, original vs intervened, per dataset.

    Attributes:
        label: The intervention's name.
        layers: Lens points: ``"L0"`` ... ``"L{n-1}"`` (resid_pre) and ``"final"``.
        logprob: ``{dataset: {"original": [...], "intervened": [...]}}`` mean log-prob.
        rank: Same layout, mean rank of the correct token.
        seconds: Wall time of the lens.

    Examples:
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.metrics import logit_lens_diff
        >>> lens = logit_lens_diff(m, d, zero_ablation(m, heads=[(1, 0)]))
        >>> type(lens).from_dict(lens.to_dict()).label == lens.label
        True
    """

    label: str
    layers: list[str]
    logprob: dict[str, dict[str, list[float]]]
    rank: dict[str, dict[str, list[float]]]
    seconds: float = 0.0
    FIGURE_KINDS: ClassVar[tuple[str, ...]] = ("lines", "heatmap")

    def diff(self, dataset: str, stat: str = "logprob") -> np.ndarray:
        """Intervened minus original, per layer."""
        d = (self.logprob if stat == "logprob" else self.rank)[dataset]
        return np.array(d["intervened"]) - np.array(d["original"])

    def figure(self, kind: str = "lines") -> go.Figure:
        """``kind="lines"``: correct-token log-prob per layer, original (dashed) vs
        intervened, per dataset; ``kind="heatmap"``: the log-prob and rank change
        (intervened - original), dataset x layer."""
        self._check_kind(kind)
        if kind == "heatmap":
            return self._heatmap()
        fig = go.Figure()
        for ds, d in self.logprob.items():
            c = dataset_colour(ds)
            fig.add_trace(
                go.Scatter(
                    x=self.layers,
                    y=d["original"],
                    name=f"{ds} original",
                    line={"color": c, "dash": "dash"},
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=self.layers, y=d["intervened"], name=f"{ds} intervened", line={"color": c}
                )
            )
        fig.update_layout(
            title=f"Logit lens: {self.label}",
            xaxis_title="layer (resid_pre)",
            yaxis_title="mean log-prob of correct token",
            template="plotly_white",
        )
        return fig

    def _heatmap(self) -> go.Figure:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("Δ log-prob", "Δ rank"))
        names = list(self.logprob)
        for col, stat in ((1, "logprob"), (2, "rank")):
            z = [self.diff(ds, stat).tolist() for ds in names]
            fig.add_trace(
                go.Heatmap(
                    z=z,
                    x=self.layers,
                    y=names,
                    coloraxis=None,
                    colorscale="RdBu",
                    zmid=0,
                    showscale=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.update_layout(title=f"Logit-lens diff: {self.label}", template="plotly_white")
        return fig


@torch.inference_mode()
def logit_lens_diff(
    model: Any,
    data: TokenDataset | Mapping[str, TokenDataset],
    hooks: Hooks = (),
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    label: str = "",
) -> LogitLensDiff:
    """Logit lens of the original and the intervened model on each dataset.

    Args:
        model: The model.
        data: One dataset or ``{name: dataset}``.
        hooks: The intervention.
        layers: Layers whose ``resid_pre`` is lensed (default: all); the final residual is
            always included. Each lens point costs one unembedding: pick a few on big models.
        batch_size: Sequences per forward pass.
        label: Name of the intervention.

    Examples:
        >>> from tl_unlearn.metrics import logit_lens_diff
        >>> from tl_unlearn import load_tiny_model
        >>> from tl_unlearn.metrics.distances import random_tokens
        >>> m = load_tiny_model()
        >>> lens = logit_lens_diff(m, random_tokens(m, n=2, seq_len=8))
        >>> lens.layers
        ['L0', 'L1', 'final']
    """
    data = check_data(model, data, batch_size)
    from tl_unlearn.core.checks import check_layer

    t0 = time.perf_counter()
    n_layers = model.cfg.n_layers
    chosen = list(range(n_layers)) if layers is None else [check_layer(model, l) for l in layers]
    names = [get_act_name("resid_pre", l) for l in chosen]
    names.append(get_act_name("resid_post", n_layers - 1))
    lens_points = [f"L{l}" for l in chosen] + ["final"]
    logprob: dict[str, dict[str, list[float]]] = {}
    rank: dict[str, dict[str, list[float]]] = {}
    device = model_device(model)
    for ds_name, ds in data.items():
        logprob[ds_name], rank[ds_name] = {}, {}
        for run, run_hooks in (("original", ()), ("intervened", list(hooks))):
            sums = torch.zeros(len(names), 2, dtype=torch.float64)
            count = 0
            for tokens, mask in ds.batches(batch_size):
                tokens = tokens.to(device)
                with model.hooks(fwd_hooks=list(run_hooks)):
                    _, cache = model.run_with_cache(tokens, names_filter=names, return_type=None)
                valid = predicted_positions(mask).to(device)
                targets = tokens[:, 1:][valid]
                for i, n in enumerate(names):
                    # a few rows of logits at a time (a 49k vocabulary x a batch is 200 MB)
                    resid = cache[n][:, :-1][valid]
                    for rows in row_chunks(len(resid), 1, model.cfg.d_vocab):
                        part = resid[rows][:, None]  # [positions, 1, d_model]
                        logits = unembed_residual(model, model.ln_final(part))[:, 0].float()
                        target = logits.gather(-1, targets[rows, None])
                        tlp = target.squeeze(-1) - logits.logsumexp(-1)
                        # rank: how many tokens have a larger logit (= larger log-prob)
                        sums[i, 0] += tlp.double().sum().cpu()
                        sums[i, 1] += (logits > target).sum().double().cpu()
                count += int(valid.sum())
            if count == 0:
                raise ValueError(f"Dataset {ds_name!r} has no predicted position.")
            logprob[ds_name][run] = (sums[:, 0] / count).tolist()
            rank[ds_name][run] = (sums[:, 1] / count).tolist()
    return LogitLensDiff(
        label or "intervention", lens_points, logprob, rank, time.perf_counter() - t0
    )
