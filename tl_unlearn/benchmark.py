"""The benchmark runner: rank interpretability methods on one forget/retain task.

:func:`run_benchmark` loads the model (default: the embedded SmolLM2-135M, offline), builds
the task (default: Python code vs English Wikipedia prose), fits every method on the fit
split, sweeps it over its levels on the eval split, computes extra metrics at each method's
most selective level, and writes ``results.json`` and a self-contained ``report.html`` into
the output folder. Both files are written atomically (temporary file, then rename): a run that
fails or is interrupted never leaves a half-written report.

Configuration (``BenchmarkConfig``) comes from keyword arguments, CLI flags or a YAML/JSON
file. Everything that can be checked before heavy work (method names, corpus names and paths,
option keys, layers and hooks) is checked first, with a message that says what to fix.

Example:
    >>> cfg = BenchmarkConfig(model="tiny", methods=["prune-abs", "prune-random"],
    ...                       fit_tokens=2000, eval_tokens=1000, seq_len=64)
    >>> result = run_benchmark(cfg, output_dir=None, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tl_unlearn.corpora import BUILTIN_CORPORA
from tl_unlearn.files import atomic_write_text, save_json
from tl_unlearn.methods import METHODS, MethodContext, fit_method
from tl_unlearn.metrics.distances import (
    activation_distances,
    output_distances_many,
    random_tokens,
)
from tl_unlearn.metrics.evaluation import (
    check_metric_name,
    check_user_metrics,
    evaluate,
    evaluate_many,
    metric_of,
)
from tl_unlearn.metrics.generation import GenerationBehaviour, UnigramDomain, generation_behaviour
from tl_unlearn.metrics.logit_lens import logit_lens_diff
from tl_unlearn.metrics.membership import membership_inference
from tl_unlearn.metrics.scorecard import Scorecard
from tl_unlearn.metrics.selectivity import RandomBaseline, SelectivityCurve, selectivity_curve
from tl_unlearn.tasks import BUILTIN_TASKS

__all__ = ["BenchmarkConfig", "BenchmarkResult", "run_benchmark"]

# prune-freq and prune-random are available by name; prune-freq is not a default because on the
# default task no level of it was ever more selective than removing nothing (held-out
# difference 0 [0, 0] in every default run), and each method costs about a minute
DEFAULT_METHODS = ("prune-abs", "head-mean", "sae-features", "actadd")
OPTION_KEYS = {"sae.layer", "sae.d_sae", "sae.training_tokens", "actadd.layer",
               "head-mean.attribution_seqs", "generation.topic", "relearn.lrs",
               "actadd.prompt_add", "actadd.prompt_sub",
               *(f"{m}.levels" for m in METHODS)}


@dataclass
class BenchmarkConfig:
    """Settings of a benchmark run (all have defaults for the default task on SmolLM2).

    Attributes:
        model: ``"smollm2"`` (offline default), ``"tiny"``, or a TransformerLens model name.
        forget: Forget source: a builtin corpus, a builtin prompt→answer task (``ioi``,
            ``induction``, ``greater_than``, ``facts``) or a path.
        retain: Retain source (the same kinds).
        methods: Method names from :data:`tl_unlearn.methods.METHODS`.
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
        relearn_steps: Degree of removal (0, the default, disables it): a relearning attack
            on each method at its validated level, and on one of its random baselines:
            fine-tune a copy of the model on forget fit data with the intervention held
            (AdamW, learning rates ``relearn.lrs``, default 1e-4, 3e-4, 1e-3; the strongest
            reported) for at most this many steps, until half of the forget drop is won
            back; and ZRF against a randomly initialised twin. Off by default on SmolLM2:
            a copy with AdamW state is 4x the model's weights and a step costs about three
            forward passes, beyond the default run's memory and time budget.
        baseline_seeds: Random baselines per method (random units of the same kind and
            count at the method's validated level, evaluated on the held-out halves); the
            scorecard compares each method with their mean (0 disables).
        extras: Compute logit lens and activation distances for the top-ranked method.
        generation_prompts: Prompts for the generation-behaviour check of ``actadd`` and of
            the top-ranked ablation method (the openings of this many forget eval documents;
            0 disables it).
        generation_tokens: New tokens per continuation.
        generation_samples: Sampled continuations per prompt.
        options: Method options (``sae.layer``, ``sae.d_sae``, ``sae.training_tokens``,
            ``actadd.layer``, ``actadd.prompt_add``, ``actadd.prompt_sub``,
            ``<method>.levels``, ``generation.topic``: a committed topic word list, default
            ``"code"`` when the forget set is ``python_code``).
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
    relearn_steps: int = 0
    extras: bool = True
    generation_prompts: int = 6
    generation_tokens: int = 20
    generation_samples: int = 2
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
            raise ValueError(f"Config file {str(path)!r} is not valid "
                             f"{'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: "
                             f"{' '.join(line.strip() for line in first)}") from None
        if not isinstance(data, dict):
            raise ValueError(f"Config file {str(path)!r} must hold a mapping of settings.")
        return cls.from_dict(data)

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
                raise ValueError(f"metric {metric!r}: write one name, or dataset=name pairs "
                                 "separated by commas.")
            data["metric"] = {k.strip(): v.strip() for k, v in pairs}
        return cls(**data)

    def validate(self, user_metrics: Any = ()) -> None:
        """Check everything that needs no model; raise ValueError saying what to fix."""
        types = {"model": str, "forget": str, "retain": str, "metric": (str, dict), "seq_len": int,
                 "fit_tokens": int, "eval_tokens": int, "batch_size": int, "seed": int,
                 "mia_texts": int, "baseline_seeds": int, "relearn_steps": int, "extras": bool, "generation_prompts": int,
                 "generation_tokens": int, "generation_samples": int, "options": dict}
        for key, kind in types.items():
            value = getattr(self, key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple)
                                                         else (kind,)))
                raise ValueError(f"Setting {key} must be a {kinds}, got {value!r}.")
        if not isinstance(self.methods, (list, tuple)) or not all(
                isinstance(m, str) for m in self.methods):
            raise ValueError(f"Setting methods must be a list of method names, got "
                             f"{self.methods!r}.")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"Unknown method(s) {bad}; choose from {sorted(METHODS)}.")
        if not self.methods:
            raise ValueError("No method selected.")
        for side in ("forget", "retain"):
            src = getattr(self, side)
            if src not in BUILTIN_CORPORA and src not in BUILTIN_TASKS and not Path(src).exists():
                raise ValueError(
                    f"{side}={src!r} is neither a builtin corpus {sorted(BUILTIN_CORPORA)}, a "
                    f"builtin task {sorted(BUILTIN_TASKS)}, nor an existing file or folder."
                )
        bad_opts = sorted(set(self.options) - OPTION_KEYS)
        if bad_opts:
            raise ValueError(f"Unknown option(s) {bad_opts}; valid options: {sorted(OPTION_KEYS)}.")
        if "generation.topic" in self.options:
            from tl_unlearn.metrics.generation import topic_words

            topic_words(self.options["generation.topic"])
        minimums = {"seq_len": 2, "fit_tokens": 1, "eval_tokens": 1, "batch_size": 1,
                    "mia_texts": 0, "baseline_seeds": 0, "relearn_steps": 0, "seed": 0,
                    "generation_prompts": 0,
                    "generation_tokens": 1, "generation_samples": 1}
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}.")
        if isinstance(self.metric, dict) and sorted(self.metric) != ["forget", "retain"]:
            raise ValueError(f"A per-dataset metric names 'forget' and 'retain', got "
                             f"{sorted(self.metric)}.")
        check_metric_name(self.metric, custom=user_metrics)

    def validate_for_model(self, model: Any) -> None:
        """Checks that need the model's config (layers, hooks)."""
        from tl_unlearn.interventions.base import check_hook_name, check_layer

        if "sae.layer" in self.options:
            check_layer(model, int(self.options["sae.layer"]))
            check_hook_name(model, f"blocks.{int(self.options['sae.layer'])}.hook_resid_pre")
        if "actadd.layer" in self.options:
            check_layer(model, int(self.options["actadd.layer"]))
        if self.seq_len > model.cfg.n_ctx:
            raise ValueError(f"seq_len={self.seq_len} is longer than the model's n_ctx={model.cfg.n_ctx}.")


@dataclass
class BenchmarkResult:
    """Everything a run produced: curves, scorecard, extras, generation behaviour, settings,
    timings, versions."""

    config: BenchmarkConfig
    curves: list[SelectivityCurve]
    scorecard: Scorecard
    extras: dict[str, Any]
    timings: dict[str, float]
    environment: dict[str, str]
    method_info: dict[str, dict[str, Any]]
    generation: dict[str, GenerationBehaviour] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "curves": [c.to_dict() for c in self.curves],
                "scorecard": self.scorecard.to_dict(), "extras": self.extras,
                "timings": self.timings, "environment": self.environment,
                "method_info": self.method_info,
                "generation": {k: g.to_dict() for k, g in self.generation.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchmarkResult:
        return cls(BenchmarkConfig.from_dict(d["config"]),
                   [SelectivityCurve.from_dict(c) for c in d["curves"]],
                   Scorecard.from_dict(d["scorecard"]), d["extras"], d["timings"],
                   d["environment"], d.get("method_info", {}),
                   {k: GenerationBehaviour.from_dict(g)
                    for k, g in d.get("generation", {}).items()})

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkResult:
        """Load ``results.json`` (or the folder that holds it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        return cls.from_dict(json.loads(path.read_text()))

    def curve(self, name: str) -> SelectivityCurve:
        for c in self.curves:
            if c.name == name:
                return c
        raise KeyError(f"No curve {name!r}; have {[c.name for c in self.curves]}.")


def _release_free_memory() -> None:
    """Give freed heap memory back to the operating system (glibc ``malloc_trim``).

    glibc keeps memory freed by large phases (a statistics pass over float64 activations:
    0.28 GB on SmolLM2) in its heap, where later phases of other sizes do not reuse it, so
    the resident set only grows; trimming between phases keeps the run's peak at the
    largest single phase. A no-op where there is no glibc.
    """
    import ctypes
    import ctypes.util

    try:
        name = ctypes.util.find_library("c")
        if name:
            ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _environment() -> dict[str, str]:
    import importlib.metadata as md

    env = {"python": platform.python_version(), "platform": platform.platform(),
           "processor": platform.machine()}
    for pkg in ("tl_unlearn", "torch", "transformer_lens", "sae_lens", "transformers", "plotly",
                "datasets", "numpy"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = "not installed"
    try:
        import torch

        env["threads"] = str(torch.get_num_threads())
    except ImportError:  # pragma: no cover
        pass
    return env


def _generation_prompts(model: Any, texts: list[str], n: int, n_tokens: int = 12) -> list[str]:
    """The openings (``n_tokens`` tokens) of the first ``n`` documents with that many tokens."""
    prompts = []
    for text in texts:
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
        opening = model.tokenizer.decode(ids)
        if len(ids) == n_tokens and opening.strip() and opening not in prompts:
            prompts.append(opening)
        if len(prompts) == n:
            break
    return prompts


def _generation(
    config: BenchmarkConfig, model: Any, task: Any, fit: Any, fitted: dict[str, Any],
    curves: list[SelectivityCurve], ranked: Any, progress: bool,
) -> dict[str, GenerationBehaviour]:
    """Generation behaviour of ``actadd`` and of the top-ranked ablation method, at their
    levels, on continuations of forget-document openings."""
    if hasattr(task.forget, "prompts"):  # prompt→answer: continue the task's own prompts
        prompts = [task.forget.prompts[i] for i in task.forget.examples("eval")]
        prompts = list(dict.fromkeys(prompts))[: config.generation_prompts]
    else:
        prompts = _generation_prompts(model, task.forget.eval, config.generation_prompts)
    if not prompts:
        return {}
    topic = config.options.get("generation.topic",
                               "code" if config.forget == "python_code" else None)
    domain = UnigramDomain.fit(fit["forget"], fit["retain"], model.cfg.d_vocab)
    names = [m for m in ranked.index if m != "actadd"][:1]
    if "actadd" in fitted:
        names.append("actadd")
    out = {}
    for name in names:
        curve = next(c for c in curves if c.name == name)
        fm = fitted[name]
        out[name] = generation_behaviour(
            model, prompts, fm.family, curve.levels, topic=topic, domain=domain,
            max_new_tokens=config.generation_tokens, n_samples=config.generation_samples,
            seed=config.seed, batch_size=16, n_boot=1000, label=name,
            level_name=fm.level_name, progress=progress)
    return out


def random_baselines(
    config: BenchmarkConfig, model: Any, ev: dict[str, Any], curves: list[SelectivityCurve],
    fitted: dict[str, Any], metrics: dict[str, Any] | None = None, *, progress: bool = False,
) -> dict[str, RandomBaseline]:
    """For each method with a random counterpart: ``config.baseline_seeds`` random
    interventions of the same kind and size at the level its curve chose on validation
    sequences, evaluated on the held-out halves (on all sequences for skip-common metrics,
    whose common tokens are counted per dataset)."""
    out = {}
    seeds = [config.seed + 1 + i for i in range(config.baseline_seeds)]
    bar = tqdm([c for c in curves if fitted[c.name].baseline is not None],
               desc="random baselines", disable=not progress, leave=False)
    for curve in bar:
        fm = fitted[curve.name]
        level = curve.held_out()["level"]
        if not math.isfinite(level):
            continue
        evaluations = []
        if level != 0:  # at level 0 nothing is removed: the baseline is the original
            skip = any("_skip" in metric_of(curve.metric, ds) for ds in ("forget", "retain"))
            data = ev if skip else curve.held_out_data(ev)
            evaluations = evaluate_many(
                model, data, [fm.baseline(level, s) for s in seeds],
                batch_size=config.batch_size, progress=False, metrics=metrics)
        out[curve.name] = RandomBaseline(fm.baseline_label, level, seeds, evaluations)
    return out


def degree_of_removal(
    config: BenchmarkConfig, model: Any, fit: dict[str, Any], ev: dict[str, Any],
    curves: list[SelectivityCurve], fitted: dict[str, Any], *, progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Relearning attack and ZRF for each method at its validated level and for one random
    baseline of it (see ``BenchmarkConfig.relearn_steps``)."""
    from tl_unlearn.metrics.distances import completeness, random_twin, zrf_score
    from tl_unlearn.metrics.relearn import anamnesis_index, relearn, relearn_attack

    lrs = [float(x) for x in config.options.get("relearn.lrs", (1e-4, 3e-4, 1e-3))]
    steps = config.relearn_steps
    twin = random_twin(model, seed=config.seed)
    retrained = None
    if config.model == "tiny" and config.forget == "python_code":
        from tl_unlearn.models import TINY_TWIN_DIR, load_tiny_model

        if (TINY_TWIN_DIR / "model.safetensors").exists():  # trained without python_code
            retrained = load_tiny_model(twin=True)
    out: dict[str, dict[str, Any]] = {}
    bar = tqdm(curves, desc="relearn", disable=not progress, leave=False)
    for curve in bar:
        level = curve.held_out()["level"]
        if not math.isfinite(level) or level == 0:
            continue
        fm = fitted[curve.name]
        # measured on the held-out half of the forget eval data (one batch)
        check = curve.held_out_data(ev)["forget"].head(config.batch_size)
        runs = {"method": fm.family(level)}
        if fm.baseline is not None:
            runs["baseline"] = fm.baseline(level, config.seed + 1)
        entry: dict[str, Any] = {"level": level, "row": {}}
        for role, iv in runs.items():
            best, every = relearn_attack(model, fit["forget"], check, list(iv), lrs=lrs,
                                         recover=0.5, max_steps=steps,
                                         eval_every=max(1, steps // 4),
                                         batch_size=config.batch_size, seed=config.seed,
                                         label=iv.name)
            zrf = zrf_score(model, check, list(iv), random_model=twin,
                            batch_size=config.batch_size)
            entry[role] = {"label": iv.name, "best": best.to_dict(),
                           "all": [r.to_dict() for r in every], "zrf": zrf}
            prefix = "" if role == "method" else "baseline_"
            entry["row"].update({f"{prefix}relearn_steps": best.steps,
                                 f"{prefix}relearn_tokens": best.tokens,
                                 f"{prefix}relearn_lr": best.lr, f"{prefix}zrf": zrf})
            if retrained is not None:
                # the retrained twin relearns to the same target with the same optimiser
                mr = relearn(retrained, fit["forget"], check, (), target=best.target,
                             lr=best.lr, max_steps=steps, eval_every=max(1, steps // 4),
                             batch_size=config.batch_size, seed=config.seed,
                             label="retrained twin")
                entry[role]["retrained"] = mr.to_dict()
                entry["row"].update({f"{prefix}ain": anamnesis_index(best, mr),
                                     f"{prefix}completeness": completeness(
                                         model, check, retrained, list(iv),
                                         batch_size=config.batch_size)})
        entry["row"]["relearn_budget"] = steps
        out[curve.name] = entry
    return out


def run_benchmark(
    config: BenchmarkConfig | None = None,
    *,
    model: Any = None,
    output_dir: str | Path | None = "runs/latest",
    progress: bool = True,
    metrics: dict[str, Any] | None = None,
) -> BenchmarkResult:
    """Fit, sweep and score every configured method; write results.json and report.html.

    Args:
        config: Settings (default: :class:`BenchmarkConfig` defaults).
        model: An already-loaded model to use instead of ``config.model``.
        output_dir: Folder for ``results.json`` and ``report.html`` (None: write nothing).
        progress: Show progress bars.
        metrics: User metrics ``metric(logits, batch)`` by name, computed with every
            evaluation; ``config.metric`` may name one (``{"forget": "my_ld", ...}``).

    Returns:
        The :class:`BenchmarkResult` (also written to ``output_dir``).

    Raises:
        ValueError: On a bad configuration, before any heavy work.
    """
    from tl_unlearn.data import make_task
    from tl_unlearn.models import load_model
    from tl_unlearn.report import render_report

    config = config or BenchmarkConfig()
    metrics = check_user_metrics(metrics)
    config.validate(user_metrics=metrics)  # user metric names are valid drop metrics
    if 0 < config.mia_texts < 64:
        warnings.warn(f"mia_texts={config.mia_texts}: a membership-inference AUC from fewer than "
                      "64 texts per side is mostly noise; read its interval.", stacklevel=2)
    if output_dir is not None:
        out = Path(output_dir)
        clash = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if clash is not None:
            raise ValueError(f"Output folder {str(out)!r} cannot be created: {str(clash)!r} "
                             "is an existing file.")
        for name in ("results.json", "report.html"):
            if (out / name).is_dir():
                raise ValueError(f"{str(out / name)!r} is a folder; the run would write a file "
                                 "there.")
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    task = make_task(config.forget, config.retain)
    t0 = time.perf_counter()
    model = load_model(model if model is not None else config.model)
    timings["load_model"] = time.perf_counter() - t0
    config.validate_for_model(model)

    tok = model.tokenizer
    kw = dict(seq_len=config.seq_len, seed=config.seed, n_ctx=model.cfg.n_ctx)
    fit = task.tokenize(tok, "fit", max_tokens=config.fit_tokens, **kw)
    ev = task.tokenize(tok, "eval", max_tokens=config.eval_tokens, **kw)
    timings["tokenize"] = time.perf_counter() - t_start - timings["load_model"]

    sae_data = check = None
    if "sae-features" in config.methods:
        # the SAE sees each of its training tokens once: as many distinct fit tokens as it
        # trains on (half per side); its reconstruction is measured on eval sequences
        half = max(1, int(config.options.get("sae.training_tokens", 100_000)) // 2)
        sae_fit = task.tokenize(tok, "fit", max_tokens=half, **kw)
        sae_data = [sae_fit["forget"], sae_fit["retain"]]
        check = {k: ev[k].head(config.batch_size) for k in ("forget", "retain")}
    ctx = MethodContext(model, fit["forget"], fit["retain"], batch_size=config.batch_size,
                        seed=config.seed, options=dict(config.options), sae_data=sae_data,
                        check_data=check)
    eval_kw = {"batch_size": config.batch_size, "progress": False, "metrics": metrics}
    t0 = time.perf_counter()
    original = evaluate(model, ev, label="original", **eval_kw)
    timings["evaluate_original"] = time.perf_counter() - t0

    curves: list[SelectivityCurve] = []
    method_info: dict[str, dict[str, Any]] = {}
    fitted = {}
    bar = tqdm(config.methods, desc="methods", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        fm = fit_method(name, ctx)
        fitted[name] = fm
        _release_free_memory()
        t0 = time.perf_counter()
        curve = selectivity_curve(model, ev, fm.family, fm.levels, name=name,
                                  metric=config.metric, level_name=fm.level_name,
                                  original=original, fit_seconds=fm.fit_seconds,
                                  progress=progress, **{k: v for k, v in eval_kw.items()
                                                        if k != "progress"})
        curve.info = fm.info
        curves.append(curve)
        method_info[name] = {**fm.info, "level_name": fm.level_name}
        timings[f"fit:{name}"] = fm.fit_seconds
        timings[f"sweep:{name}"] = time.perf_counter() - t0
        _release_free_memory()

    # each method against random units of the same kind and count at its validated level
    t0 = time.perf_counter()
    baselines = random_baselines(config, model, ev, curves, fitted, metrics,
                                 progress=progress) if config.baseline_seeds else {}
    timings["random_baselines"] = time.perf_counter() - t0
    _release_free_memory()

    # extra metrics at each method's most selective level
    extra_rows: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    one_batch = {k: v.head(config.batch_size) for k, v in ev.items()}
    chosen = {c.name: fitted[c.name].family(c.best_level) for c in curves if c.best_level > 0}
    # on one batch per dataset (a distance needs far fewer tokens than an accuracy), every
    # method against one shared run of the original model
    js = {ds: dict(zip(chosen, output_distances_many(model, one_batch[ds], list(chosen.values()),
                                                     batch_size=config.batch_size)))
          for ds in ("forget", "retain")} if chosen else {}
    for curve in curves:
        iv = chosen.get(curve.name)
        row: dict[str, Any] = {}
        if iv is not None:
            row["js_forget"] = js["forget"][curve.name].js
            row["js_retain"] = js["retain"][curve.name].js
            if config.mia_texts and task.forget.fit and task.forget.eval:
                n = config.mia_texts
                mi = membership_inference(model, task.forget.fit[:n], task.forget.eval[:n], iv,
                                          max_tokens=config.seq_len, seed=config.seed)
                row.update(mia_auc_loss=mi.auc["loss"], mia_auc_loss_low=mi.auc_low["loss"],
                           mia_auc_loss_high=mi.auc_high["loss"])
        extra_rows[curve.name] = row
    timings["extra_metrics"] = time.perf_counter() - t0

    removal: dict[str, Any] = {}
    if config.relearn_steps:
        t0 = time.perf_counter()
        removal = degree_of_removal(config, model, fit, ev, curves, fitted, progress=progress)
        for name, r in removal.items():
            extra_rows.setdefault(name, {}).update(r["row"])
        timings["degree_of_removal"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scorecard = Scorecard.from_curves(curves, extra_rows, baselines=baselines)
    scorecard.seconds = time.perf_counter() - t0
    extras: dict[str, Any] = {"original": original.to_dict(),
                              "degree_of_removal": {k: {kk: vv for kk, vv in v.items()
                                                        if kk != "row"}
                                                    for k, v in removal.items()},
                              "data": {split: {k: {"sequences": len(d), "tokens": d.n_tokens,
                                                   "documents": d.n_documents}
                                               for k, d in part.items()}
                                       for split, part in (("fit", fit), ("eval", ev))},
                              "random_baselines": {k: b.to_dict() for k, b in baselines.items()}}
    ranked = scorecard.ranked()
    best_name = ranked.index[0]
    best_curve = next(c for c in curves if c.name == best_name)
    if config.extras and best_curve.best_level > 0:
        t0 = time.perf_counter()
        iv = fitted[best_name].family(best_curve.best_level)
        n = model.cfg.n_layers
        lens_layers = sorted({round(i * (n - 1) / 7) for i in range(8)}) if n > 8 else None
        # half a batch per dataset: each lens point costs an unembedding of every position
        half = {k: v.head(max(1, config.batch_size // 2)) for k, v in one_batch.items()}
        extras["logit_lens"] = logit_lens_diff(model, half, iv, layers=lens_layers,
                                               batch_size=config.batch_size,
                                               label=iv.name).to_dict()
        rand = random_tokens(model, n=config.batch_size, seq_len=config.seq_len, seed=config.seed)
        extras["activation_distances"] = asdict(activation_distances(
            model, {**one_batch, "random": rand}, None, iv, batch_size=config.batch_size,
            label=f"original vs {iv.name}"))
        timings["extras"] = time.perf_counter() - t0
    generation: dict[str, GenerationBehaviour] = {}
    if config.generation_prompts:
        t0 = time.perf_counter()
        generation = _generation(config, model, task, fit, fitted, curves, ranked, progress)
        timings["generation"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    result = BenchmarkResult(config, curves, scorecard, extras, timings, _environment(),
                             method_info, generation)
    if output_dir is not None:
        # render both first, then write both: an interrupt leaves neither file half-written,
        # and a failure writing the report takes results.json back out
        out = Path(output_dir)
        report_html = render_report(result)
        existed = (out / "results.json").exists()
        save_json(out / "results.json", result.to_dict())
        try:
            atomic_write_text(out / "report.html", report_html)
        except BaseException:
            if not existed:
                (out / "results.json").unlink(missing_ok=True)
            raise
    return result

