"""The settings and the typed output of a benchmark run: :class:`BenchmarkConfig` and
:class:`BenchmarkResult` (with its run-level figures).

:mod:`tl_unlearn.benchmark.runner` produces them and :mod:`tl_unlearn.benchmark.report` renders them; this
module imports neither, so the three import one way (benchmark -> report -> runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tl_unlearn.benchmark.methods.base import Options, option
from tl_unlearn.benchmark.methods.registry import METHODS, check_options
from tl_unlearn.data.corpora import BUILTIN_CORPORA
from tl_unlearn.data.tasks import BUILTIN_TASKS
from tl_unlearn.metrics.names import check_metric_name

__all__ = ["BenchmarkConfig", "DEFAULT_METHODS", "RunOptions"]


# prune-freq and prune-random are available by name; prune-freq is not a default because on the
# default task no level of it was ever more selective than removing nothing (held-out
# difference 0 [0, 0] in every default run), and each method costs about a minute
DEFAULT_METHODS = ("prune-abs", "head-mean", "sae-features", "actadd")


@dataclass(frozen=True)
class RunOptions(Options):
    """Options of a run that belong to no method (in ``BenchmarkConfig.options``)."""

    topic: str | None = option(
        "generation.topic",
        None,
        "a committed topic word list for the generation check "
        "(default 'code' when the forget set is python_code)",
    )
    relearn_lrs: tuple[float, ...] | None = option(
        "relearn.lrs",
        None,
        "learning rates of the relearning attack, the strongest reported "
        "(default: 1e-2 for adapters, the strongest of 3e-3, 1e-2, 3e-2 on SmolLM2; 1e-4, "
        "3e-4, 1e-3 for a full fine-tune)",
    )
    relearn_rank: int = option(
        "relearn.rank",
        8,
        "rank of the adapters the relearning attack trains beside every "
        "MLP (0: fine-tune every weight of a copy of the model, about 4x its memory)",
    )
    relearn_micro_batch: int = option(
        "relearn.micro_batch",
        2,
        "sequences per forward/backward pass of the relearning "
        "attack (a step accumulates batch_size of them; less activation memory)",
    )

    @property
    def lrs(self) -> tuple[float, ...]:
        """The attack's learning rates (``relearn.lrs``, or the default for its kind)."""
        if self.relearn_lrs is not None:
            return self.relearn_lrs
        return (1e-2,) if self.relearn_rank else (1e-4, 3e-4, 1e-3)

    def __post_init__(self) -> None:
        if self.relearn_rank < 0:
            raise ValueError(f"Option relearn.rank must be >= 0, got {self.relearn_rank}.")
        if self.relearn_micro_batch < 1:
            raise ValueError(
                f"Option relearn.micro_batch must be >= 1, got {self.relearn_micro_batch}."
            )


#: Named configurations (``tl-unlearn run --config NAME``; ``BenchmarkConfig.preset(NAME)``).
PRESET_CONFIGS: dict[str, dict[str, Any]] = {
    # sized for a GPU or a cluster: 25x the default's evaluation tokens (the standard error
    # of top-1 shrinks about 5x), every method that runs on a text task, 5 random baselines,
    # every head ablated alone
    "large": {
        "fit_tokens": 50_000,
        "eval_tokens": 50_000,
        "methods": [
            "prune-abs",
            "prune-freq",
            "prune-random",
            "head-mean",
            "sae-features",
            "actadd",
        ],
        "baseline_seeds": 5,
        "component_map": "heads",
        "batch_size": 16,
        "options": {"sae.training_tokens": 200_000, "head-mean.attribution_seqs": 64},
    },
}


def check_device(device: str) -> None:
    """Raise a ValueError naming ``device`` when torch cannot parse it or it is not here.

    Examples:
        >>> check_device("cpu")
        >>> check_device("gpu0")
        Traceback (most recent call last):
        ...
        ValueError: Setting device='gpu0' is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'mps').
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"Setting device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', "
            "'mps')."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"Setting device={device!r}, but this torch sees no CUDA GPU (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda}); install a CUDA torch "
                "with TORCH=cuda bash scripts/install.sh, or use device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"Setting device={device!r}, but only {torch.cuda.device_count()} GPU(s) exist."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Setting device={device!r}, but MPS is not available here.")


@dataclass
class BenchmarkConfig:
    """Settings of a benchmark run (all have defaults for the default task on SmolLM2).

    Attributes:
        model: ``"smollm2"`` (offline default), ``"tiny"``, or a TransformerLens model name.
        forget: Forget source: a builtin corpus, a builtin prompt→answer task (``ioi``,
            ``induction``, ``greater_than``, ``facts``) or a path.
        retain: Retain source (the same kinds).
        methods: Method names from :data:`tl_unlearn.benchmark.methods.registry.METHODS`.
        seq_len: Tokens per sequence (BOS included).
        fit_tokens: Token budget per dataset for fitting methods.
        eval_tokens: Token budget per dataset for evaluation.
        batch_size: Sequences per forward pass.
        metric: Metric of the selectivity drops (``top1``, ``top1_skip``, ``loss``, an answer
            metric such as ``logit_diff``...), or one per dataset: a mapping
            ``{"forget": "logit_diff", "retain": "top1"}`` or the string
            ``"forget=logit_diff,retain=top1"``.
        seed: Seed for data order and random baselines.
        mia_texts: Forget/held-out texts per side for membership inference (0, the default,
            disables it). Off by default because no method here trains on the fit texts, so
            the AUC only asks whether two samples of documents differ, and because it needs
            at least 64 texts per side to mean anything (8 per side gave 0.41-0.59 for the
            same model); when on, the AUC carries a bootstrap interval over texts.
        relearn_steps: Degree of removal (default 4; 0 disables it): a relearning attack on
            each method at its validated level, and on one of its random baselines, for at
            most this many steps of ``batch_size`` forget fit sequences, until half of the
            forget drop is won back (forget top-1 on ``batch_size`` held-out sequences); and
            ZRF against a randomly initialised twin. By default the attack trains rank-8
            adapters beside every MLP with the intervention held and the model's weights
            frozen (``relearn.rank``; AdamW at ``relearn.lrs``, the strongest reported): no
            copy of the model; each block's activations are recomputed in the backward pass
            and ZRF's random twin is let go before the attack, so it fits the default run's
            memory. ``relearn.rank: 0`` fine-tunes every weight of a copy instead (the
            stronger attack; about 4x the model's memory).
        baseline_seeds: Random baselines per method (random units of the same kind and
            count at the method's validated level, evaluated on the held-out halves); the
            scorecard compares each method with their mean (0 disables).
        extras: Compute logit lens and activation distances for the top-ranked method.
        generation_prompts: Prompts for the generation-behaviour check of ``actadd`` and of
            the top-ranked ablation method (the openings of this many forget eval documents;
            0 disables it).
        generation_tokens: New tokens per continuation.
        generation_samples: Sampled continuations per prompt.
        device: Where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); a
            model passed in already loaded stays where it is.
        component_map: Also ablate each component alone (zero ablation) and report the
            map: ``"heads"``, ``"mlp"``, ``"both"``, or ``""`` (default: no map).
        options: Method options by dotted key (``sae.layer``, ``sae.d_sae``,
            ``sae.training_tokens``, ``actadd.layer``, ``actadd.prompt_add``,
            ``actadd.prompt_sub``, ``head-mean.attribution_seqs``, ``<method>.levels``:
            the typed :class:`~tl_unlearn.benchmark.methods.base.Options` of each method) and the run's
            :class:`RunOptions` (``generation.topic``, ``relearn.lrs``, ``relearn.rank``,
            ``relearn.micro_batch``).

    Examples:
        >>> from tl_unlearn import BenchmarkConfig
        >>> import dataclasses
        >>> cfg = BenchmarkConfig(model="tiny", methods=["prune-abs"])
        >>> BenchmarkConfig.from_dict(dataclasses.asdict(cfg)) == cfg
        True
    """

    model: str = "smollm2"
    forget: str = "python_code"
    retain: str = "wikipedia"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    seq_len: int = 128
    fit_tokens: int = 4000
    eval_tokens: int = 2000
    batch_size: int = 8
    metric: str | dict[str, str] = "top1"
    seed: int = 0
    mia_texts: int = 0
    baseline_seeds: int = 3
    relearn_steps: int = 4
    extras: bool = True
    generation_prompts: int = 6
    generation_tokens: int = 20
    generation_samples: int = 2
    device: str = "cpu"
    component_map: str = ""
    options: dict[str, Any] = field(default_factory=lambda: {"sae.training_tokens": 40_000})

    @classmethod
    def from_file(cls, path: str | Path) -> BenchmarkConfig:
        """Read a YAML or JSON config file (keys are the attribute names)."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"Config file {str(path)!r} does not exist.")
        text = path.read_text()
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError: say where
            first = str(exc).strip().splitlines()
            raise ValueError(
                f"Config file {str(path)!r} is not valid "
                f"{'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
                f"{' '.join(line.strip() for line in first)}"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"Config file {str(path)!r} must hold a mapping of settings.")
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str) -> BenchmarkConfig:
        """A named configuration (:data:`PRESET_CONFIGS`: ``"large"``).

        Examples:
            >>> BenchmarkConfig.preset("large").eval_tokens
            50000
        """
        if name not in PRESET_CONFIGS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESET_CONFIGS)}.")
        return cls.from_dict(json.loads(json.dumps(PRESET_CONFIGS[name])))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown config key(s) {unknown}; valid keys are {sorted(known)}.")
        data = dict(data)
        if isinstance(data.get("methods"), str):  # "prune-abs" or "prune-abs, head-mean"
            data["methods"] = [m.strip() for m in data["methods"].split(",") if m.strip()]
        metric = data.get("metric")
        if isinstance(metric, str) and "=" in metric:  # "forget=logit_diff,retain=top1"
            pairs = [p.split("=", 1) for p in metric.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(
                    f"metric {metric!r}: write one name, or dataset=name pairs separated by commas."
                )
            data["metric"] = {k.strip(): v.strip() for k, v in pairs}
        return cls(**data)

    def validate(self, user_metrics: Any = ()) -> None:
        """Check everything that needs no model; raise ValueError saying what to fix."""
        types = {
            "model": str,
            "forget": str,
            "retain": str,
            "metric": (str, dict),
            "seq_len": int,
            "fit_tokens": int,
            "eval_tokens": int,
            "batch_size": int,
            "seed": int,
            "mia_texts": int,
            "baseline_seeds": int,
            "relearn_steps": int,
            "extras": bool,
            "generation_prompts": int,
            "generation_tokens": int,
            "generation_samples": int,
            "device": str,
            "component_map": str,
            "options": dict,
        }
        for key, kind in types.items():
            value = getattr(self, key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                kinds = " or ".join(
                    k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,))
                )
                raise ValueError(f"Setting {key} must be a {kinds}, got {value!r}.")
        if not isinstance(self.methods, (list, tuple)) or not all(
            isinstance(m, str) for m in self.methods
        ):
            raise ValueError(
                f"Setting methods must be a list of method names, got {self.methods!r}."
            )
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"Unknown method(s) {bad}; choose from {sorted(METHODS)}.")
        if not self.methods:
            raise ValueError("No method selected.")
        if self.component_map not in ("", "heads", "mlp", "both"):
            raise ValueError(
                f"Setting component_map must be 'heads', 'mlp', 'both' or '' (none), "
                f"got {self.component_map!r}."
            )
        for side in ("forget", "retain"):
            src = getattr(self, side)
            if src not in BUILTIN_CORPORA and src not in BUILTIN_TASKS and not Path(src).exists():
                raise ValueError(
                    f"{side}={src!r} is neither a builtin corpus {sorted(BUILTIN_CORPORA)}, a "
                    f"builtin task {sorted(BUILTIN_TASKS)}, nor an existing file or folder."
                )
        check_options(self.options, RunOptions)
        topic = RunOptions.read(self.options).topic
        if topic is not None:
            from tl_unlearn.metrics.generation import topic_words

            topic_words(topic)
        minimums = {
            "seq_len": 2,
            "fit_tokens": 1,
            "eval_tokens": 1,
            "batch_size": 1,
            "mia_texts": 0,
            "baseline_seeds": 0,
            "relearn_steps": 0,
            "seed": 0,
            "generation_prompts": 0,
            "generation_tokens": 1,
            "generation_samples": 1,
        }
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}.")
        if isinstance(self.metric, dict) and sorted(self.metric) != ["forget", "retain"]:
            raise ValueError(
                f"A per-dataset metric names 'forget' and 'retain', got {sorted(self.metric)}."
            )
        check_metric_name(self.metric, custom=user_metrics)
        check_device(self.device)

    def validate_for_model(self, model: Any) -> None:
        """Checks that need the model's config (layers, hooks)."""
        check_options(self.options, RunOptions, model=model)
        if self.seq_len > model.cfg.n_ctx:
            raise ValueError(
                f"seq_len={self.seq_len} is longer than the model's n_ctx={model.cfg.n_ctx}."
            )
