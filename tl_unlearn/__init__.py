"""tl_unlearn: test interpretability claims the way machine-unlearning research tests unlearning.

If a method says "these heads / neurons / features do task X", removing them should make the
model worse at X (the *forget* set) and leave it good at everything else (the *retain* set).

Modules:
    models: load the embedded SmolLM2-135M default offline, the tiny test model, any TL model.
    corpora: builtin offline corpora (Python code, Wikipedia, Shakespeare, KJV).
    data: forget/retain tasks, fit/eval splits, token chunks and batches.
    tasks: prompt→answer tasks (your own, or builtin ioi / induction / greater_than / facts).
    evaluation: streaming forget/retain evaluation (loss, perplexity, top-k, answer metrics,
        your own metric).
    selectivity / circuits: selectivity curves, component maps and greedy circuits.
"""

from tl_unlearn.circuits import ComponentMap, component_selectivity_map, greedy_circuit
from tl_unlearn.corpora import load_corpus
from tl_unlearn.data import ForgetRetainTask, TextDataset, TokenDataset, make_task
from tl_unlearn.metrics.evaluation import DatasetMetrics, Evaluation, evaluate
from tl_unlearn.metrics.selectivity import SelectivityCurve, selectivity_curve
from tl_unlearn.models import load_default_model, load_model, load_tiny_model
from tl_unlearn.tasks import PromptAnswers

__all__ = [
    "ComponentMap",
    "DatasetMetrics",
    "Evaluation",
    "ForgetRetainTask",
    "PromptAnswers",
    "SelectivityCurve",
    "TextDataset",
    "TokenDataset",
    "component_selectivity_map",
    "evaluate",
    "greedy_circuit",
    "load_corpus",
    "load_default_model",
    "load_model",
    "load_tiny_model",
    "make_task",
    "selectivity_curve",
]
__version__ = "0.1.0"
