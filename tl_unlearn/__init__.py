"""tl_unlearn: test interpretability claims the way machine-unlearning research tests unlearning.

If a method says "these heads / neurons / features do task X", removing them should make the
model worse at X (the *forget* set) and leave it good at everything else (the *retain* set).

The quickstart path is importable from here::

    from tl_unlearn import load_model, make_task, zero_ablation, selectivity_curve

Packages, bottom to top (each imports only from the ones above it in this list):
    core: argument checks, the result protocol (label, seconds, save/load, figure), files.
    data: builtin offline corpora, text and token datasets, forget/retain and prompt→answer
        tasks (make_task; builtin ioi / induction / greater_than / facts).
    engine: hooks and streaming (Intervention), the batched forward pass, scoring, and every
        use of TransformerLens internals (engine.tl_patches).
    models: the embedded SmolLM2-135M default offline, the tiny test model, any TL model;
        the planted-circuit models.
    metrics: streaming evaluation, selectivity curves, distances, relearning, generation,
        membership inference, scorecards (every result type of these is exported there).
    interventions: ablations, SAE edits, steering and selective pruning as TL hooks.
    circuits: component maps, edge circuits (EAP-IG / MIB file format) and edge ablation,
        activation patching / EAP / EAP-IG, MIB faithfulness, ground-truth verification.
    execution: units of work run in-process or on Ray (Execution), sharded and resumable.
    benchmark: the one-command benchmark, its methods, jobs, report and ground-truth tier.
    cli / widget: the `tl-unlearn` command and the interactive ablation widget for Jupyter.
"""

from typing import Any

from tl_unlearn.circuits.attribution import NodeScores, activation_patching, edge_attribution
from tl_unlearn.circuits.edge_ablation import edge_ablation
from tl_unlearn.circuits.faithfulness import FaithfulnessCurves, faithfulness_curves
from tl_unlearn.circuits.graph import Circuit
from tl_unlearn.circuits.maps import ComponentMap, component_selectivity_map, greedy_circuit
from tl_unlearn.core.results import load_result
from tl_unlearn.data.corpora import load_corpus
from tl_unlearn.data.datasets import TextDataset, TokenDataset
from tl_unlearn.data.tasks import ForgetRetainTask, PromptAnswers, make_task
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
from tl_unlearn.models.loading import (
    load_default_model,
    load_model,
    load_tiny_model,
    use_fused_attention,
)

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
    "BenchmarkConfig": "tl_unlearn.benchmark.config",
    "BenchmarkResult": "tl_unlearn.benchmark.result",
    "Execution": "tl_unlearn.execution.executors",
    "run_benchmark": "tl_unlearn.benchmark.runner",
}


#: The flat modules of 0.1, and the modules their names live in now. Importing an old path
#: still works until the next release, with a DeprecationWarning naming the new ones.
MOVED_MODULES = {
    "tl_unlearn.attribution": ("tl_unlearn.circuits.attribution", "tl_unlearn.engine.scoring"),
    "tl_unlearn.benchmark_units": ("tl_unlearn.benchmark.units",),
    "tl_unlearn.corpora": ("tl_unlearn.data.corpora",),
    "tl_unlearn.edges": ("tl_unlearn.circuits.graph", "tl_unlearn.circuits.edge_ablation"),
    "tl_unlearn.faithfulness": ("tl_unlearn.circuits.faithfulness",),
    "tl_unlearn.files": ("tl_unlearn.core.files",),
    "tl_unlearn.ground_truth": ("tl_unlearn.models.planted", "tl_unlearn.circuits.ground_truth"),
    "tl_unlearn.ground_truth_tier": ("tl_unlearn.benchmark.tier",),
    "tl_unlearn.induction": ("tl_unlearn.circuits.induction",),
    "tl_unlearn.interventions.base": ("tl_unlearn.engine.hooks", "tl_unlearn.core.checks"),
    "tl_unlearn.methods": (
        "tl_unlearn.benchmark.methods.registry",
        "tl_unlearn.benchmark.methods.base",
        "tl_unlearn.benchmark.methods.pruning",
        "tl_unlearn.benchmark.methods.head_mean",
        "tl_unlearn.benchmark.methods.sae",
        "tl_unlearn.benchmark.methods.actadd",
        "tl_unlearn.benchmark.methods.edges",
    ),
    "tl_unlearn.report": ("tl_unlearn.benchmark.report",),
    "tl_unlearn.results": ("tl_unlearn.core.results",),
    "tl_unlearn.runs": ("tl_unlearn.benchmark.config", "tl_unlearn.benchmark.result"),
    "tl_unlearn.scale": (
        "tl_unlearn.execution.executors",
        "tl_unlearn.execution.units",
        "tl_unlearn.execution.run_folder",
        "tl_unlearn.benchmark.jobs",
    ),
    "tl_unlearn.tasks": ("tl_unlearn.data.tasks",),
}


class _MovedModuleFinder:
    """Imports an old module path as a module holding the public names of its new modules."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        import importlib.util

        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec: Any) -> None:
        return None  # the default module

    def exec_module(self, module: Any) -> None:
        import importlib
        import warnings

        new = MOVED_MODULES[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {', '.join(new)} (or import from tl_unlearn); the "
            "old path goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        for target in new:
            for key, value in vars(importlib.import_module(target)).items():
                if not key.startswith("__"):
                    module.__dict__.setdefault(key, value)


import sys as _sys  # noqa: E402

_sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    """The widget (ipywidgets) and the benchmark load on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tl_unlearn' has no attribute {name!r}")
