"""Command-line entry point: ``tl-unlearn``.

``tl-unlearn run`` runs the benchmark (default: four methods on SmolLM2, Python code vs English
prose) and writes ``report.html`` and ``results.json``. Settings come from flags or from
``--config FILE`` (YAML or JSON; flags given explicitly override the file).

``tl-unlearn options`` lists the methods and every ``--option`` key with its meaning.

``tl-unlearn smoke`` loads a model (default: the embedded SmolLM2-135M, offline), builds the
default forget/retain task (Python code vs English Wikipedia prose) and prints loss, perplexity
and top-1 accuracy on each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = ["main"]


def _smoke(args: argparse.Namespace) -> int:
    from tl_unlearn.data.tasks import make_task
    from tl_unlearn.metrics.evaluation import evaluate
    from tl_unlearn.models.loading import load_model

    t0 = time.time()
    model = load_model(args.model)
    load_s = time.time() - t0
    task = make_task(args.forget, args.retain)
    data = task.tokenize(
        model.tokenizer, "eval", seq_len=args.seq_len, max_tokens=args.tokens, n_ctx=model.cfg.n_ctx
    )
    ev = evaluate(model, data, batch_size=args.batch_size, label="original")
    table = ev.to_dataframe()[["n_predictions", "loss", "perplexity", "top1", "top5"]]
    sys.stdout.write(f"model: {model.cfg.model_name} (loaded in {load_s:.1f}s)\n")
    sys.stdout.write(f"forget={args.forget!r} retain={args.retain!r}\n")
    sys.stdout.write(table.to_string(float_format=lambda x: f"{x:.4f}") + "\n")
    sys.stdout.write(f"total {time.time() - t0:.1f}s\n")
    if args.json:
        sys.stdout.write(json.dumps(ev.to_dict()) + "\n")
    return 0


def _parse_options(pairs: list[str] | None) -> dict:
    """``--option KEY=VALUE`` flags as a dict (JSON values where they look like JSON)."""
    options = {}
    for opt in pairs or []:
        if "=" not in opt:
            raise ValueError(f"--option must look like key=value, got {opt!r}")
        key, value = opt.split("=", 1)
        try:
            options[key] = json.loads(value) if value[:1] in "[{0123456789-" else value
        except json.JSONDecodeError as exc:
            raise ValueError(f"--option {opt}: not valid JSON ({exc.msg}).") from None
    return options


#: Named configurations of ``tl-unlearn run --config NAME`` (a file path is read instead).
PRESETS = ("ground-truth",)


def _ground_truth(args: argparse.Namespace) -> int:
    """``--config ground-truth``: the ground-truth tier on the planted models."""
    from tl_unlearn.benchmark.tier import run_ground_truth_tier

    ignored = [
        k
        for k in (
            "model",
            "forget",
            "retain",
            "metric",
            "seq_len",
            "fit_tokens",
            "eval_tokens",
            "device",
        )
        if getattr(args, k) is not None
    ]
    if ignored:
        raise ValueError(
            f"--config ground-truth runs on the planted models and their own tasks; "
            f"drop {', '.join('--' + k.replace('_', '-') for k in ignored)}."
        )
    kwargs: dict = {"options": _parse_options(args.option), "progress": not args.quiet}
    if args.methods:
        kwargs["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.baseline_seeds is not None:
        kwargs["baseline_seeds"] = args.baseline_seeds
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    from pathlib import Path

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {str(out)!r} exists and is not a folder.")
    tier = run_ground_truth_tier(**kwargs)
    tier.write(out)
    sys.stdout.write(tier.to_markdown() + "\n")
    sys.stdout.write(
        f"report: {out}/report.html\nresults: {out}/results.json\ntotal {tier.seconds:.1f}s\n"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from tl_unlearn.benchmark.config import PRESET_CONFIGS
    from tl_unlearn.benchmark.runner import BenchmarkConfig, run_benchmark

    if args.config in PRESETS:
        return _ground_truth(args)
    if args.config in PRESET_CONFIGS:
        cfg = BenchmarkConfig.preset(args.config)
    elif args.resume and not args.config:  # the interrupted run's own configuration
        from tl_unlearn.execution.run_folder import RunFolder

        job = RunFolder.stored_job(args.output)
        if job is None:
            raise ValueError(f"Nothing to resume in {args.output}: it has no job.json.")
        cfg = BenchmarkConfig.from_dict(job["config"])
    else:
        cfg = BenchmarkConfig.from_file(args.config) if args.config else BenchmarkConfig()
    overrides = {
        k: getattr(args, k)
        for k in (
            "model",
            "forget",
            "retain",
            "seq_len",
            "fit_tokens",
            "eval_tokens",
            "batch_size",
            "metric",
            "seed",
            "baseline_seeds",
            "mia_texts",
            "relearn_steps",
            "device",
            "component_map",
        )
        if getattr(args, k) is not None
    }
    if args.metric is not None:  # "top1", or "forget=logit_diff,retain=top1"
        overrides["metric"] = BenchmarkConfig.from_dict({"metric": args.metric}).metric
    if args.methods:
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg.options.update(_parse_options(args.option))
    for k, v in overrides.items():
        setattr(cfg, k, v)
    result = run_benchmark(
        cfg,
        output_dir=args.output,
        progress=not args.quiet,
        executor=_execution(args),
        shards=args.shards,
        resume=args.resume,
    )
    ranked = result.scorecard.ranked()
    cols = [
        c
        for c in (
            "held_out_difference",
            "held_out_difference_low",
            "held_out_difference_high",
            "vs_baseline",
            "vs_baseline_low",
            "vs_baseline_high",
            "relearn_steps",
            "baseline_relearn_steps",
            "zrf",
            "uds",
            "max_difference",
            "forget_drop_at_best",
            "retain_drop_at_best",
            "fit_seconds",
            "eval_seconds",
        )
        if c in ranked
    ]
    from tl_unlearn.metrics.intervals import describe_interval
    from tl_unlearn.metrics.scorecard import field_label

    sys.stdout.write(
        f"ranked by {field_label(result.scorecard.rank_by)}; _low/_high: {describe_interval()} "
        "over sequences; held-out = level chosen on other sequences\n"
    )
    sys.stdout.write(ranked[cols].to_string(float_format=lambda x: f"{x:.4f}") + "\n")
    sys.stdout.write(f"report: {args.output}/report.html\nresults: {args.output}/results.json\n")
    sys.stdout.write(f"total {result.timings['total']:.1f}s\n")
    return 0


def _map(args: argparse.Namespace) -> int:
    """``tl-unlearn map``: a component selectivity map, unit by unit, in-process or on Ray."""
    from tl_unlearn.benchmark.jobs import MapJob, component_map_job

    job = MapJob(
        model=args.model,
        forget=args.forget,
        retain=args.retain,
        components=args.components,
        method=args.method,
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        seed=args.seed,
        shards=args.shards,
        threads=args.threads,
        device=args.device,
    )
    cmap = component_map_job(
        job,
        executor="inprocess" if args.ray is None else "ray",
        actors=args.actors,
        address=args.ray or None,
        num_gpus=args.gpus_per_actor,
        run_dir=args.output,
        resume=args.resume,
        progress=not args.quiet,
    )
    from pathlib import Path

    cmap.save(Path(args.output) / "component_map.json")
    sys.stdout.write(cmap.to_dataframe().to_string(float_format=lambda x: f"{x:.4f}") + "\n")
    info = cmap.info
    sys.stdout.write(
        f"{info['units']} units: {info['computed']} computed, {info['read_back']} read back, "
        f"{info['retried']} retried ({info['executor']}); {cmap.seconds:.1f}s\n"
        f"map: {args.output}/component_map.json\n"
    )
    return 0


def _options(args: argparse.Namespace) -> int:
    from tl_unlearn.benchmark.config import DEFAULT_METHODS, RunOptions
    from tl_unlearn.benchmark.methods.registry import METHODS, option_keys

    sys.stdout.write("methods (default: " + ", ".join(DEFAULT_METHODS) + "):\n")
    for name, spec in METHODS.items():
        sys.stdout.write(f"  {name:14s} {spec.summary}\n")
    sys.stdout.write("options (--option KEY=VALUE):\n")
    for key, help_text in sorted(option_keys(RunOptions).items()):
        sys.stdout.write(f"  {key:28s} {help_text}\n")
    return 0


def _execution_args(parser: argparse.ArgumentParser, shards: int | None) -> None:
    """Where the units of ``run`` and ``map`` run, and resuming an interrupted run."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the units on Ray: a cluster's address, or nothing for a local cluster "
        "(needs pip install 'tl_unlearn[ray]')",
    )
    parser.add_argument("--actors", type=int, default=2, help="Ray actors (each loads the model)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per Ray actor (default 1)"
    )
    parser.add_argument(
        "--gpus-per-actor",
        type=float,
        default=0.0,
        dest="gpus_per_actor",
        help="GPUs per Ray actor (a fraction shares one GPU between actors)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=shards,
        help="pieces the evaluation data is cut into, each a unit"
        + (" (default: 1 in-process, one per Ray actor)" if shards is None else ""),
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --output: compute only its unfinished units",
    )


def _execution(args: argparse.Namespace) -> Any:
    from tl_unlearn.execution.executors import Execution

    return Execution(
        "inprocess" if args.ray is None else "ray",
        args.actors,
        args.ray or None,
        args.threads,
        args.gpus_per_actor,
    )


def _run_parser(sub: Any) -> None:
    """``tl-unlearn run``: the benchmark."""
    run = sub.add_parser("run", help="run the benchmark and write report.html + results.json")
    run.add_argument(
        "--config",
        help="YAML or JSON file with BenchmarkConfig settings, 'ground-truth' (every "
        "method on the planted-circuit models, scored against their known circuits) or "
        "'large' (50,000 tokens per side, every method, 5 random baselines: for a GPU)",
    )
    run.add_argument("--model", help="'smollm2' (default, offline), 'tiny', or a TL model name")
    run.add_argument(
        "--forget",
        help="forget corpus, task (ioi, induction, greater_than, facts) "
        "or path (default python_code)",
    )
    run.add_argument("--retain", help="retain corpus, task or path (default wikipedia)")
    run.add_argument(
        "--methods",
        help="comma-separated method names (default: prune-abs, head-mean, "
        "sae-features, actadd; also prune-freq, prune-random; with a paired "
        "forget task such as ioi: eap, eap-ig, patching)",
    )
    run.add_argument("--seq-len", type=int, dest="seq_len")
    run.add_argument("--fit-tokens", type=int, dest="fit_tokens")
    run.add_argument("--eval-tokens", type=int, dest="eval_tokens")
    run.add_argument("--batch-size", type=int, dest="batch_size")
    run.add_argument(
        "--metric",
        help="drop metric: top1 (default), top5, top1_skip, loss, "
        "logit_diff..., or per dataset: forget=logit_diff,retain=top1",
    )
    run.add_argument("--seed", type=int)
    run.add_argument(
        "--baseline-seeds",
        type=int,
        dest="baseline_seeds",
        help="random baselines per method, compared at its validated level (default 3; 0 disables)",
    )
    run.add_argument(
        "--relearn-steps",
        type=int,
        dest="relearn_steps",
        help="relearning attack + ZRF per method and baseline, at most this many "
        "fine-tuning steps (default 4; 0: off; the attack trains rank-8 adapters, "
        "--option relearn.rank=0 fine-tunes every weight of a copy)",
    )
    run.add_argument(
        "--mia-texts",
        type=int,
        dest="mia_texts",
        help="texts per side for membership inference (default 0: off; use >= 64)",
    )
    run.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="method option, e.g. sae.layer=10 or actadd.levels=[1,4]",
    )
    run.add_argument("--device", help="where the model runs: cpu (default), cuda, cuda:1, mps")
    run.add_argument(
        "--component-map",
        dest="component_map",
        choices=["heads", "mlp", "both"],
        help="also ablate each head (MLP) alone and report the component map",
    )
    run.add_argument("--output", default="runs/latest", help="output folder")
    _execution_args(run, shards=None)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)


def _map_parser(sub: Any) -> None:
    """``tl-unlearn map``: a component map as units of work."""
    cmap = sub.add_parser(
        "map",
        help="ablate each head (or MLP) alone: a component map, in-process or on Ray, resumable",
    )
    cmap.add_argument("--model", default="tiny", help="'tiny' (default), 'smollm2' or a TL name")
    cmap.add_argument("--forget", default="python_code")
    cmap.add_argument("--retain", default="wikipedia")
    cmap.add_argument("--components", default="heads", choices=["heads", "mlp", "both"])
    cmap.add_argument("--method", default="zero", choices=["zero", "mean"])
    cmap.add_argument("--tokens", type=int, default=2000, help="evaluation tokens per side")
    cmap.add_argument("--seq-len", type=int, default=64, dest="seq_len")
    cmap.add_argument("--batch-size", type=int, default=8, dest="batch_size")
    cmap.add_argument("--seed", type=int, default=0)
    _execution_args(cmap, shards=1)
    cmap.add_argument("--device", default="cpu", help="device of each worker's model")
    cmap.add_argument("--output", default="runs/map", help="run folder (units, job, map)")
    cmap.add_argument("--quiet", action="store_true", help="no progress bars")
    cmap.set_defaults(func=_map)


def _smoke_parser(sub: Any) -> None:
    """``tl-unlearn smoke``: load the model, print forget/retain loss."""
    smoke = sub.add_parser("smoke", help="load the model and print forget/retain loss")
    smoke.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2' (default, offline), 'tiny', or a TransformerLens name",
    )
    smoke.add_argument("--forget", default="python_code")
    smoke.add_argument("--retain", default="wikipedia")
    smoke.add_argument("--tokens", type=int, default=4000, help="token budget per dataset")
    smoke.add_argument("--seq-len", type=int, default=128)
    smoke.add_argument("--batch-size", type=int, default=8)
    smoke.add_argument("--json", action="store_true", help="also print the result as JSON")
    smoke.set_defaults(func=_smoke)


def main(argv: list[str] | None = None) -> int:
    from tl_unlearn.execution.executors import ClusterError

    parser = argparse.ArgumentParser(prog="tl-unlearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _map_parser(sub)
    options = sub.add_parser("options", help="list the methods and their options")
    options.set_defaults(func=_options)
    _smoke_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ModuleNotFoundError, ClusterError) as exc:
        parser.exit(2, f"tl-unlearn: error: {exc}\n")
    except KeyboardInterrupt:
        # results are written atomically at the very end: an interrupted run wrote nothing
        # but its finished units, which --resume reads back
        kept = (
            f" Finished units are kept in {args.output}: add --resume to continue."
            if hasattr(args, "resume")
            else ""
        )
        sys.stderr.write(f"\ntl-unlearn: interrupted; no results were written.{kept}\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
