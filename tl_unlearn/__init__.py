"""tl_unlearn: test interpretability claims the way machine-unlearning research tests unlearning.

If a method says "these heads / neurons / features do task X", removing them should make the
model worse at X (the *forget* set) and leave it good at everything else (the *retain* set).

The quickstart path is importable from here::

    from tl_unlearn import load_model, make_task, zero_ablation, selectivity_curve

Modules:
    models: load the embedded SmolLM2-135M default offline, the tiny test model, any TL model;
        fused attention for a faster forward pass.
    corpora: builtin offline corpora (Python code, Wikipedia, Shakespeare, KJV).
    data: text and token datasets, fit/eval splits, token chunks and batches.
    tasks: forget/retain tasks (make_task) and prompt→answer tasks (your own, or builtin
        ioi / induction / greater_than / facts).
    interventions: ablations, SAE edits, steering and selective pruning as TL hooks.
    metrics: streaming evaluation, selectivity curves, distances, relearning, generation,
        membership inference, scorecards (every result type of these is exported there).
    engine: the batched forward pass and scoring under every metric, and every use of
        TransformerLens internals (engine.tl_patches).
    circuits: component maps and greedy circuits.
    edges: edge-level circuits (EAP-IG / MIB file format) and edge ablation.
    attribution: activation patching, EAP and EAP-IG discovery by counterfactual patching.
    faithfulness: MIB faithfulness curves (CPR, CMD) with intervals and a random band.
    results: the protocol every result follows (label, seconds, save/load, figure).
    benchmark / report / cli: the one-command benchmark and its HTML report.
    scale / benchmark_units: sweeps as units of work, run in-process or on Ray (Execution),
        sharded and resumable.
    widget: the interactive ablation widget for Jupyter.
"""

from typing import Any

from tl_unlearn.attribution import NodeScores, activation_patching, edge_attribution
from tl_unlearn.circuits import ComponentMap, component_selectivity_map, greedy_circuit
from tl_unlearn.corpora import load_corpus
from tl_unlearn.data import TextDataset, TokenDataset
from tl_unlearn.edges import Circuit, edge_ablation
from tl_unlearn.faithfulness import FaithfulnessCurves, faithfulness_curves
from tl_unlearn.interventions import (
    Intervention,
    actadd,
    compose,
    counterfactual_ablation,
    directional_ablation,
    keep_only_circuit,
    mean_ablation,
    pruning_scores,
    resample_ablation,
    sae_feature_intervention,
    selective_pruning,
    train_sae,
    vector_steering,
    zero_ablation,
)
from tl_unlearn.metrics.cached import evaluate_logits
from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation, evaluate
from tl_unlearn.metrics.scorecard import Scorecard
from tl_unlearn.metrics.selectivity import SelectivityCurve, selectivity_curve
from tl_unlearn.models import (
    load_default_model,
    load_model,
    load_tiny_model,
    use_fused_attention,
)
from tl_unlearn.results import load_result
from tl_unlearn.tasks import ForgetRetainTask, PromptAnswers, make_task

__all__ = [
    "AblationWidget",
    "BenchmarkConfig",
    "BenchmarkResult",
    "Circuit",
    "ComponentMap",
    "DatasetMetrics",
    "Evaluation",
    "Execution",
    "FaithfulnessCurves",
    "ForgetRetainTask",
    "Intervention",
    "NodeScores",
    "PromptAnswers",
    "Scorecard",
    "SelectivityCurve",
    "TextDataset",
    "TokenDataset",
    "actadd",
    "activation_patching",
    "component_selectivity_map",
    "compose",
    "counterfactual_ablation",
    "directional_ablation",
    "edge_ablation",
    "edge_attribution",
    "evaluate",
    "evaluate_logits",
    "faithfulness_curves",
    "greedy_circuit",
    "keep_only_circuit",
    "load_corpus",
    "load_default_model",
    "load_model",
    "load_result",
    "load_tiny_model",
    "make_task",
    "mean_ablation",
    "pruning_scores",
    "resample_ablation",
    "run_benchmark",
    "sae_feature_intervention",
    "selective_pruning",
    "selectivity_curve",
    "train_sae",
    "use_fused_attention",
    "vector_steering",
    "zero_ablation",
]
__version__ = "0.1.0"

_LAZY = {
    "AblationWidget": "tl_unlearn.widget",
    "BenchmarkConfig": "tl_unlearn.benchmark",
    "BenchmarkResult": "tl_unlearn.runs",
    "Execution": "tl_unlearn.scale",
    "run_benchmark": "tl_unlearn.benchmark",
}


def __getattr__(name: str) -> Any:
    """The widget (ipywidgets) and the benchmark load on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tl_unlearn' has no attribute {name!r}")
