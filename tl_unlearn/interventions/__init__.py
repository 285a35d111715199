"""Interventions as TransformerLens hooks.

Every factory takes the model first, validates the selection (unknown hook names, layers,
heads, neurons, SAE widths and feature indices raise ``ValueError`` naming the bad value),
and returns an :class:`Intervention`: a named list of ``(hook_name, hook_fn)`` pairs usable in
``run_with_hooks``, ``model.hooks(...)``, ``run_with_cache`` or its own ``applied(model)``
context manager. Interventions compose with ``+`` and never change model weights.

- ``ablation``: :func:`zero_ablation`, :func:`mean_ablation`, :func:`resample_ablation`,
  :func:`keep_only_circuit`, :func:`directional_ablation`.
- ``sae``: :func:`sae_feature_intervention` (zero / clamp / scale SAE features), and the
  SAE helpers :func:`train_sae`, :func:`sae_feature_means`, :func:`sae_quality`.
- ``steering``: :func:`actadd`, :func:`vector_steering`, :func:`sae_direction_steering`.
- ``counterfactual``: :func:`counterfactual_ablation` (each example's corrupted partner).
- ``pruning``: :func:`pruning_scores`, :func:`selective_pruning`.
"""

from tl_unlearn.engine.hooks import Intervention, compose
from tl_unlearn.interventions.ablation import (
    activation_means,
    directional_ablation,
    keep_only_circuit,
    mean_ablation,
    resample_ablation,
    zero_ablation,
)
from tl_unlearn.interventions.counterfactual import counterfactual_ablation, counterfactual_pair
from tl_unlearn.interventions.pruning import PruningScores, pruning_scores, selective_pruning
from tl_unlearn.interventions.sae import (
    sae_feature_intervention,
    sae_feature_means,
    sae_quality,
    train_sae,
)
from tl_unlearn.interventions.steering import actadd, sae_direction_steering, vector_steering

__all__ = [
    "Intervention",
    "PruningScores",
    "activation_means",
    "actadd",
    "compose",
    "counterfactual_ablation",
    "counterfactual_pair",
    "directional_ablation",
    "keep_only_circuit",
    "mean_ablation",
    "pruning_scores",
    "resample_ablation",
    "sae_direction_steering",
    "sae_feature_intervention",
    "sae_feature_means",
    "sae_quality",
    "selective_pruning",
    "train_sae",
    "vector_steering",
    "zero_ablation",
]
