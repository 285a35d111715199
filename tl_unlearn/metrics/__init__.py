"""Metrics: how much an intervention removes the forget task and spares the retain task.

Definitions: the metric definitions page of the docs (``docs/metrics.md``). Every result object holds its numbers,
converts to a dict (JSON) and, where it has a picture, makes a plotly ``go.Figure``.

- ``evaluation``: :func:`evaluate` (loss, perplexity, top-k, skip-common top-k; streamed).
- ``scoring``: the per-sequence sums behind them, from logits or from the final residual
  (the vocabulary a slice at a time); ``forward``: the passes they come from.
- ``selectivity``: :func:`selectivity_curve` (max difference, area between, perplexity ratio).
- ``distances``: :func:`js_divergence`, :func:`output_distances`, :func:`zrf_score`,
  :func:`zrf_scores`, :func:`activation_distances`, :func:`completeness`, :func:`random_twin`.
- ``relearning``: :func:`relearn`, :func:`relearn_attack`, :func:`anamnesis_index`,
  :func:`degree_of_removal`.
- ``membership``: :func:`membership_inference` (LOSS, zlib, Min-K% AUC).
- ``uncertainty``: :func:`fisher_uncertainty` (empirical Fisher trace, efficacy).
- ``weights``: :func:`weight_distance`, :func:`equivalent_weight_edit`.
- ``logit_lens``: :func:`logit_lens_diff`.
- ``scorecard``: :class:`Scorecard` comparing methods.
- ``generation``: :func:`generation_behaviour` (topic frequency, fluency, repetition,
  distinct-2, forget likeness of generated text, with bootstrap intervals).
- ``intervals``: bootstrap intervals over units (sequences, prompts, samples), paired.
- ``coverage``: :func:`interval_coverage` (do the intervals hold their level? simulated).
- ``depth``: :func:`unlearning_depth` (UDS: removal depth by patching against a twin).
"""

from tl_unlearn.metrics.depth import UnlearningDepth, unlearning_depth
from tl_unlearn.metrics.distances import (
    ActivationDistances,
    OutputDistances,
    activation_distances,
    completeness,
    js_divergence,
    output_distances,
    random_tokens,
    random_twin,
    zrf_score,
    zrf_scores,
)
from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation, evaluate, evaluate_many
from tl_unlearn.metrics.generation import (
    NEUTRAL_PROMPTS,
    GenerationBehaviour,
    UnigramDomain,
    generation_behaviour,
)
from tl_unlearn.metrics.intervals import Interval
from tl_unlearn.metrics.logit_lens import LogitLensDiff, logit_lens_diff
from tl_unlearn.metrics.membership import MembershipInference, auc_score, membership_inference
from tl_unlearn.metrics.relearning import (
    DegreeOfRemoval,
    RelearnResult,
    anamnesis_index,
    degree_of_removal,
    relearn,
    relearn_attack,
)
from tl_unlearn.metrics.scorecard import Scorecard
from tl_unlearn.metrics.selectivity import RandomBaseline, SelectivityCurve, selectivity_curve
from tl_unlearn.metrics.uncertainty import FisherUncertainty, fisher_uncertainty
from tl_unlearn.metrics.weights import WeightDistance, equivalent_weight_edit, weight_distance

__all__ = [
    "UnlearningDepth",
    "unlearning_depth",
    "FisherUncertainty",
    "MembershipInference",
    "OutputDistances",
    "RandomBaseline",
    "WeightDistance",
    "NEUTRAL_PROMPTS",
    "ActivationDistances",
    "DegreeOfRemoval",
    "GenerationBehaviour",
    "Interval",
    "UnigramDomain",
    "generation_behaviour",
    "DatasetMetrics",
    "Evaluation",
    "LogitLensDiff",
    "RelearnResult",
    "Scorecard",
    "SelectivityCurve",
    "activation_distances",
    "anamnesis_index",
    "auc_score",
    "completeness",
    "degree_of_removal",
    "equivalent_weight_edit",
    "evaluate",
    "evaluate_many",
    "fisher_uncertainty",
    "js_divergence",
    "logit_lens_diff",
    "membership_inference",
    "output_distances",
    "random_tokens",
    "random_twin",
    "relearn",
    "relearn_attack",
    "selectivity_curve",
    "weight_distance",
    "zrf_score",
    "zrf_scores",
]
