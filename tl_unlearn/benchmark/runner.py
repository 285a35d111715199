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

Examples:
    >>> cfg = BenchmarkConfig(model="tiny", methods=["prune-abs", "prune-random"],
    ...                       fit_tokens=2000, eval_tokens=1000, seq_len=64)
    >>> result = run_benchmark(cfg, output_dir=None, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tl_unlearn.benchmark.config import DEFAULT_METHODS, BenchmarkConfig, RunOptions
from tl_unlearn.benchmark.methods.edges import EDGE_METHODS
from tl_unlearn.benchmark.result import BenchmarkResult
from tl_unlearn.benchmark.units import BenchmarkState, BenchmarkWorker, SweepUnit, prepare_data
from tl_unlearn.core.checks import check_positive_ints
from tl_unlearn.core.files import atomic_write_text, release_free_memory
from tl_unlearn.execution.executors import (
    Execution,
    InProcessExecutor,
    connect_cluster,
    open_executor,
    release_cluster,
)
from tl_unlearn.execution.run_folder import RunFolder, UnitRunner
from tl_unlearn.metrics.distances import (
    activation_distances,
    output_distances_many,
    random_tokens,
)
from tl_unlearn.metrics.generation import GenerationBehaviour, UnigramDomain, generation_behaviour
from tl_unlearn.metrics.logit_lens import logit_lens_diff
from tl_unlearn.metrics.membership import membership_inference
from tl_unlearn.metrics.names import check_user_metrics
from tl_unlearn.metrics.relearning import DegreeOfRemoval
from tl_unlearn.metrics.scorecard import Scorecard
from tl_unlearn.metrics.selectivity import RandomBaseline, SelectivityCurve, selectivity_curve

__all__ = ["DEFAULT_METHODS", "BenchmarkConfig", "BenchmarkResult", "run_benchmark"]


def _environment() -> dict[str, str]:
    import importlib.metadata as md

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
    for pkg in (
        "tl_unlearn",
        "torch",
        "transformer_lens",
        "sae_lens",
        "transformers",
        "plotly",
        "datasets",
        "numpy",
    ):
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
    config: BenchmarkConfig,
    model: Any,
    task: Any,
    fit: Any,
    fitted: dict[str, Any],
    curves: list[SelectivityCurve],
    ranked: Any,
    progress: bool,
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
    topic = RunOptions.read(config.options).topic
    topic = ("code" if config.forget == "python_code" else None) if topic is None else topic
    domain = UnigramDomain.fit(fit["forget"], fit["retain"], model.cfg.d_vocab)
    names = [m for m in ranked.index if m != "actadd"][:1]
    if "actadd" in fitted:
        names.append("actadd")
    out = {}
    for name in names:
        curve = next(c for c in curves if c.name == name)
        fm = fitted[name]
        out[name] = generation_behaviour(
            model,
            prompts,
            fm.family,
            curve.levels,
            topic=topic,
            domain=domain,
            max_new_tokens=config.generation_tokens,
            n_samples=config.generation_samples,
            seed=config.seed,
            batch_size=16,
            n_boot=1000,
            label=name,
            level_name=fm.level_name,
            progress=progress,
        )
    return out


def _sweep(
    state: BenchmarkState,
    runner: UnitRunner,
    timings: dict[str, float],
    progress: bool,
    driver_fits: bool = False,
) -> tuple[Any, list[SelectivityCurve], dict[str, dict[str, Any]], Any]:
    """The original model and every method's curve, unit by unit: the original
    evaluation, the curves, each method's information, and the component map (None when
    the configuration asks for none). With ``driver_fits`` (remote
    workers), this process fits the methods while the workers sweep, and checks each
    worker's fit against its own."""
    config = state.config
    runner.submit(state.curve_units() + state.map_units())
    if driver_fits:  # needed here for the rest of the run; the workers are busy meanwhile
        for name in tqdm(config.methods, desc="fits (driver)", disable=not progress):
            state.fitted(name)
    results = runner.collect(progress, "sweeps")
    original = state.merged(results, "original")[0]
    timings["evaluate_original"] = state.seconds(results, "original")
    if state.map_components():
        timings["component_map"] = state.seconds(results, "map")
    curves: list[SelectivityCurve] = []
    method_info: dict[str, dict[str, Any]] = {}
    for name in config.methods:
        fm = state.fitted(name)
        for u, r in results.items():
            if u.kind == "curve" and u.method == name and "probe" in r:
                state.check_probe(name, r["probe"])
        curve = selectivity_curve(
            state.model,
            state.ev,
            fm.family,
            fm.levels,
            name=name,
            metric=config.metric,
            level_name=fm.level_name,
            original=original,
            fit_seconds=fm.fit_seconds,
            progress=False,
            evaluations=state.merged(results, "curve", name),
            metrics=state.metrics,
        )
        curve.seconds = fm.fit_seconds + state.seconds(results, "curve", name)
        curve.info = fm.info
        curves.append(curve)
        method_info[name] = {**fm.info, "level_name": fm.level_name}
        timings[f"fit:{name}"] = fm.fit_seconds
        timings[f"sweep:{name}"] = state.seconds(results, "curve", name)
    return original, curves, method_info, state.component_map(results, original)


def _baselines_and_relearning(
    state: BenchmarkState, results: dict[SweepUnit, dict], curves: list[SelectivityCurve]
) -> tuple[dict[str, RandomBaseline], dict[str, DegreeOfRemoval]]:
    """Each method's random baselines (``config.baseline_seeds`` random interventions of the
    same kind and size at the level its curve chose on validation sequences, on the
    held-out halves) and relearning attack, from the units of :meth:`BenchmarkState.second_units`."""
    config = state.config
    seeds = [config.seed + 1 + i for i in range(config.baseline_seeds)]
    baselines: dict[str, RandomBaseline] = {}
    removal: dict[str, DegreeOfRemoval] = {}
    for curve in curves:
        name, level = curve.name, curve.held_out()["level"]
        fm = state.fitted(name)
        if config.baseline_seeds and fm.baseline is not None and math.isfinite(level):
            # at level 0 nothing is removed: the baseline is the original
            evaluations = state.merged(results, "baseline", name) if level != 0 else []
            baselines[name] = RandomBaseline(
                fm.baseline_label,
                level,
                seeds,
                evaluations,
                state.seconds(results, "baseline", name),
            )
        relearned = [r for u, r in results.items() if u.kind == "relearn" and u.method == name]
        if relearned:
            removal[name] = DegreeOfRemoval.from_dict(relearned[0]["removal"])
    return baselines, removal


def sweep_fitted(
    config: BenchmarkConfig,
    model: Any,
    ev: dict[str, Any],
    fitted: dict[str, Any],
) -> tuple[Any, list[SelectivityCurve], dict[str, RandomBaseline]]:
    """Curves and random baselines of methods already fitted, in this process: the original
    evaluation, one curve per method of ``config.methods``, and the baselines."""
    state = BenchmarkState(config, model, ev, fitted=fitted)
    runner = UnitRunner(InProcessExecutor(state))
    original, curves, _, _ = _sweep(state, runner, {}, False)
    runner.submit([u for u in state.second_units(curves) if u.kind == "baseline"])
    baselines, _ = _baselines_and_relearning(state, runner.collect(), curves)
    return original, curves, baselines


def _check_output_dir(output_dir: str | Path | None) -> None:
    """Refuse, before any work, an output folder that cannot hold the run's two files."""
    if output_dir is not None:
        out = Path(output_dir)
        clash = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if clash is not None:
            raise ValueError(
                f"Output folder {str(out)!r} cannot be created: {str(clash)!r} is an existing file."
            )
        for name in ("results.json", "report.html"):
            if (out / name).is_dir():
                raise ValueError(
                    f"{str(out / name)!r} is a folder; the run would write a file there."
                )


def _depth_rows(
    config: BenchmarkConfig,
    model: Any,
    ev: dict[str, Any],
    curves: list[SelectivityCurve],
    fitted: dict[str, Any],
) -> dict[str, dict[str, float]]:
    """Where the model has a retrained twin (``tiny``): each method's Unlearning Depth at
    its validated level on the forget eval set, a scorecard column (``uds``)."""
    from tl_unlearn.metrics.depth import unlearning_depth
    from tl_unlearn.models.loading import load_tiny_model

    if config.model != "tiny" or "forget" not in ev:
        return {}
    twin = load_tiny_model(model.cfg.device, twin=True)
    if (twin.cfg.n_layers, twin.cfg.d_model) != (model.cfg.n_layers, model.cfg.d_model):
        return {}  # another model was passed in under the name "tiny"
    rows = {}
    for curve in curves:
        level = curve.held_out()["level"]
        if not (math.isfinite(level) and level > 0):
            continue
        d = unlearning_depth(
            model,
            ev["forget"],
            fitted[curve.name].family(level),
            twin,
            batch_size=config.batch_size,
            seed=config.seed,
        )
        rows[curve.name] = {"uds": d.value, "uds_low": d.low, "uds_high": d.high}
    return rows


def _extra_metrics(
    config: BenchmarkConfig,
    model: Any,
    task: Any,
    one_batch: dict[str, Any],
    curves: list[SelectivityCurve],
    fitted: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Output distances (and membership inference when asked) of each method at its
    validated level: a scorecard row of extra columns per method."""
    # extra metrics at each method's most selective level
    extra_rows: dict[str, dict[str, Any]] = {}
    # at the validated level, like the baselines and the relearning attack
    levels = {c.name: c.held_out()["level"] for c in curves}
    chosen = {
        name: fitted[name].family(level)
        for name, level in levels.items()
        if math.isfinite(level) and level > 0
    }
    # on one batch per dataset (a distance needs far fewer tokens than an accuracy), every
    # method against one shared run of the original model
    js = (
        {
            ds: dict(
                zip(
                    chosen,
                    output_distances_many(
                        model, one_batch[ds], list(chosen.values()), batch_size=config.batch_size
                    ),
                )
            )
            for ds in ("forget", "retain")
        }
        if chosen
        else {}
    )
    for curve in curves:
        iv = chosen.get(curve.name)
        row: dict[str, Any] = {}
        if iv is not None:
            row["js_forget"] = js["forget"][curve.name].js
            row["js_retain"] = js["retain"][curve.name].js
            if config.mia_texts and task.forget.fit and task.forget.eval:
                n = config.mia_texts
                mi = membership_inference(
                    model,
                    task.forget.fit[:n],
                    task.forget.eval[:n],
                    iv,
                    max_tokens=config.seq_len,
                    seed=config.seed,
                )
                row.update(
                    mia_auc_loss=mi.auc["loss"],
                    mia_auc_loss_low=mi.auc_low["loss"],
                    mia_auc_loss_high=mi.auc_high["loss"],
                )
        extra_rows[curve.name] = row
    return extra_rows


def _lens_and_distances(
    config: BenchmarkConfig,
    model: Any,
    one_batch: dict[str, Any],
    ranked: Any,
    curves: list[SelectivityCurve],
    fitted: dict[str, Any],
) -> tuple[Any, Any]:
    """Logit-lens differences and activation distances of the top-ranked method at its best
    level (None, None when it removes nothing)."""
    lens = distances = None
    best_name = ranked.index[0]
    best_curve = next(c for c in curves if c.name == best_name)
    if best_curve.best_level > 0:
        iv = fitted[best_name].family(best_curve.best_level)
        n = model.cfg.n_layers
        lens_layers = sorted({round(i * (n - 1) / 7) for i in range(8)}) if n > 8 else None
        # half a batch per dataset: each lens point costs an unembedding of every position
        half = {k: v.head(max(1, config.batch_size // 2)) for k, v in one_batch.items()}
        lens = logit_lens_diff(
            model, half, iv, layers=lens_layers, batch_size=config.batch_size, label=iv.name
        )
        rand = random_tokens(model, n=config.batch_size, seq_len=config.seq_len, seed=config.seed)
        distances = activation_distances(
            model,
            {**one_batch, "random": rand},
            None,
            iv,
            batch_size=config.batch_size,
            label=f"original vs {iv.name}",
        )
    return lens, distances


def _write_outputs(result: BenchmarkResult, out: Path) -> None:
    """Render both files first, then write both: an interrupt leaves neither half-written,
    and a failure writing the report takes results.json back out."""
    from tl_unlearn.benchmark.report import render_report

    report_html = render_report(result)
    existed = (out / "results.json").exists()
    result.save(out / "results.json")
    try:
        atomic_write_text(out / "report.html", report_html)
    except BaseException:
        if not existed:
            (out / "results.json").unlink(missing_ok=True)
        raise


def run_benchmark(
    config: BenchmarkConfig | None = None,
    *,
    model: Any = None,
    output_dir: str | Path | None = "runs/latest",
    progress: bool = True,
    metrics: dict[str, Any] | None = None,
    executor: str | Execution = "inprocess",
    shards: int | None = None,
    resume: bool = False,
    on_unit: Any = None,
) -> BenchmarkResult:
    """Fit, sweep and score every configured method; write results.json and report.html.

    Args:
        config: Settings (default: :class:`BenchmarkConfig` defaults).
        model: An already-loaded model to use instead of ``config.model``.
        output_dir: Folder for ``results.json`` and ``report.html`` (None: write nothing).
        progress: Show progress bars.
        metrics: User metrics ``metric(logits, batch)`` by name, computed with every
            evaluation; ``config.metric`` may name one (``{"forget": "my_ld", ...}``).
        executor: Where the sweeps, random baselines and relearning attacks run:
            ``"inprocess"`` (default), ``"ray"`` (a local Ray cluster, 2 actors), or an
            :class:`~tl_unlearn.execution.executors.Execution` (actors, cluster address, threads and GPUs
            per actor). Every executor gives the same numbers.
        shards: Pieces the evaluation data is cut into, each a unit of its own (default:
            1 in-process, one per actor on Ray; on ``resume``, the run's own).
        resume: Read the units already finished in ``output_dir`` (an interrupted run)
            back and compute only the others; the report equals an uninterrupted run's.
        on_unit: Called as ``on_unit(n, executor)`` after the n-th unit computed now.

    Returns:
        The :class:`BenchmarkResult` (also written to ``output_dir``).

    Raises:
        ValueError: On a bad configuration, before any heavy work (also: Ray with user
            metrics or a live ``model``, which cannot travel to workers; ``resume`` with
            nothing to resume).

    Examples:
        >>> from tl_unlearn import run_benchmark
        >>> from tl_unlearn import load_tiny_model, make_task, zero_ablation
        >>> m = load_tiny_model()
        >>> d = make_task().tokenize(m.tokenizer, "eval", seq_len=32, max_tokens=200)
        >>> from tl_unlearn.benchmark.config import BenchmarkConfig
        >>> cfg = BenchmarkConfig(model="tiny", methods=["prune-abs"], eval_tokens=300, fit_tokens=300,
        ...                       seq_len=32, relearn_steps=0, extras=False, baseline_seeds=1)
        >>> result = run_benchmark(cfg, model=m, output_dir=None, progress=False)
        >>> result.scorecard.ranked().index.tolist()
        ['prune-abs']
    """
    from tl_unlearn.data.tasks import make_task

    config = config or BenchmarkConfig()
    execution = Execution.of(executor)
    metrics = check_user_metrics(metrics)
    if execution.remote and metrics:
        raise ValueError(
            "User metrics are Python functions and do not travel to Ray workers: run them "
            "with executor='inprocess'."
        )
    if execution.remote and model is not None:
        raise ValueError(
            "executor='ray': each worker loads config.model itself; a live model cannot "
            "travel. Leave model= out (config.model names what to load)."
        )
    if resume and output_dir is None:
        raise ValueError("resume=True needs the output_dir of the run to resume.")
    if shards is not None:
        check_positive_ints(None, shards=shards)
    config.validate(user_metrics=metrics)  # user metric names are valid drop metrics
    if 0 < config.mia_texts < 64:
        warnings.warn(
            f"mia_texts={config.mia_texts}: a membership-inference AUC from fewer than "
            "64 texts per side is mostly noise; read its interval.",
            stacklevel=2,
        )
    _check_output_dir(output_dir)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    task = make_task(config.forget, config.retain)
    edge_methods = [m for m in config.methods if m in EDGE_METHODS]
    if edge_methods and not getattr(task.forget, "has_corrupted", False):
        raise ValueError(
            f"Method(s) {edge_methods} patch from corrupted prompts, but the forget "
            f"task {config.forget!r} has none: use forget='ioi', 'greater_than', "
            "'induction', or a PromptAnswers with corrupted prompts."
        )
    # a cluster that cannot start fails here, before the model and the data are prepared
    started = connect_cluster(execution) if execution.remote else False
    try:
        return _run_checked(
            config,
            task,
            execution,
            model,
            metrics,
            output_dir,
            resume,
            shards,
            progress,
            on_unit,
            timings,
            t_start,
        )
    finally:
        if started:
            release_cluster()


def _run_checked(
    config: BenchmarkConfig,
    task: Any,
    execution: Execution,
    model: Any,
    metrics: dict[str, Any],
    output_dir: str | Path | None,
    resume: bool,
    shards: int | None,
    progress: bool,
    on_unit: Any,
    timings: dict[str, float],
    t_start: float,
) -> BenchmarkResult:
    """:func:`run_benchmark` after its checks: load, prepare, sweep, score and write."""
    from tl_unlearn.models.loading import load_model

    t0 = time.perf_counter()
    model = (
        load_model(model) if model is not None else load_model(config.model, device=config.device)
    )
    timings["load_model"] = time.perf_counter() - t0
    config.validate_for_model(model)

    t0 = time.perf_counter()
    fit, ev, ctx = prepare_data(config, task, model)
    timings["tokenize"] = time.perf_counter() - t0
    if shards is None and resume and output_dir is not None:
        # the run's own, so its units are reused
        shards = (RunFolder.stored_job(output_dir) or {}).get("shards")
    shards = shards or (execution.actors if execution.remote else 1)
    state = BenchmarkState(config, model, ev, fit=fit, ctx=ctx, shards=shards, metrics=metrics)
    folder = None
    if output_dir is not None:  # each finished unit is kept there, for --resume
        job = {"config": asdict(config), "shards": state.shards}
        folder = RunFolder(output_dir, job, resume, overwrite=True)
    ex = open_executor(execution, lambda: state, BenchmarkWorker, state.payload(execution.threads))
    try:
        runner = UnitRunner(ex, folder, resume, on_unit)
        t0 = time.perf_counter()
        original, curves, method_info, cmap = _sweep(
            state, runner, timings, progress, driver_fits=execution.remote
        )
        timings["sweeps_wall"] = time.perf_counter() - t0
        fitted = {name: state.fitted(name) for name in config.methods}
        # relearning attacks and random baselines run (on the workers) while this process
        # computes the extra metrics
        t0 = time.perf_counter()
        runner.submit(state.second_units(curves))
        one_batch = {k: v.head(config.batch_size) for k, v in ev.items()}
        extra_rows = _extra_metrics(config, model, task, one_batch, curves, fitted)
        timings["extra_metrics"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        for name, row in _depth_rows(config, model, ev, curves, fitted).items():
            extra_rows.setdefault(name, {}).update(row)
        timings["unlearning_depth"] = time.perf_counter() - t1
        results = runner.collect(progress, "baselines, relearning")
        timings["second_phase_wall"] = time.perf_counter() - t0
    finally:
        ex.close()
    baselines, removal = _baselines_and_relearning(state, results, curves)
    timings["random_baselines"] = state.seconds(results, "baseline")
    if removal:
        timings["degree_of_removal"] = state.seconds(results, "relearn")
    for name, r in removal.items():
        extra_rows.setdefault(name, {}).update(r.row())
    release_free_memory()
    t0 = time.perf_counter()
    scorecard = Scorecard.from_curves(curves, extra_rows, baselines=baselines)
    scorecard.seconds = time.perf_counter() - t0
    data_sizes = {
        split: {
            k: {"sequences": len(d), "tokens": d.n_tokens, "documents": d.n_documents}
            for k, d in part.items()
        }
        for split, part in (("fit", fit), ("eval", ev))
    }
    ranked = scorecard.ranked()
    lens = distances = None
    if config.extras:
        t0 = time.perf_counter()
        lens, distances = _lens_and_distances(config, model, one_batch, ranked, curves, fitted)
        timings["extras"] = time.perf_counter() - t0
    generation: dict[str, GenerationBehaviour] = {}
    if config.generation_prompts:
        t0 = time.perf_counter()
        generation = _generation(config, model, task, fit, fitted, curves, ranked, progress)
        timings["generation"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    result = BenchmarkResult(
        config,
        curves,
        scorecard,
        timings,
        _environment(),
        method_info,
        generation,
        original=original,
        random_baselines=dict(baselines),
        logit_lens=lens,
        activation_distances=distances,
        degree_of_removal=removal,
        data=data_sizes,
        component_map=cmap,
        seconds=timings["total"],
    )
    if output_dir is not None:
        _write_outputs(result, Path(output_dir))
    if folder is not None:  # finished: the report holds everything the units did
        folder.remove()
    return result
