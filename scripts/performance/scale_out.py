"""Units per second of a component map: in-process against Ray with 1 and 2 actors.

    python scripts/performance/scale_out.py --markdown docs/generated/scale.md
    python scripts/performance/scale_out.py --run --markdown docs/generated/scale-run.md

With ``--run``: the benchmark itself (sweeps, random baselines, relearning attacks as
units) on SmolLM2, in-process against Ray with 1 and 2 actors, and that every run gives the
same scorecard.

One job per model (each head, or each MLP of SmolLM2, ablated alone), run by each executor in one session on the
same machine; the in-process worker gets every thread, each Ray actor one. Reports wall time
(model loading included, as a user waits for it), units per second after the workers are
up, the overhead per unit (Ray with one actor against in-process, both one thread), and that
every run gives the same map.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from tl_unlearn.benchmark.jobs import MapJob, component_map_job


def _run(job: MapJob, executor: str, actors: int) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    first: list[float] = []

    def mark(n: int, pool: object) -> None:
        if n == 1:
            first.append(time.perf_counter())

    cmap = component_map_job(job, executor=executor, actors=actors, progress=False, on_unit=mark)
    end = time.perf_counter()
    units = cmap.info["units"]
    # units/s once the workers are up: from the first finished unit to the last
    rate = (units - 1) / (end - first[0]) if first and units > 1 else float("nan")
    return end - t0, rate, cmap


def _run_benchmark_table(args: argparse.Namespace) -> str:
    """The benchmark run by each executor (one session): wall time as the user waits,
    the two unit phases' wall times, and whether the scorecards agree."""
    import ray

    from tl_unlearn.benchmark.runner import BenchmarkConfig, run_benchmark
    from tl_unlearn.execution.executors import Execution

    cfg = BenchmarkConfig(
        model=args.run_model, methods=args.run_methods.split(","), eval_tokens=args.tokens,
        fit_tokens=2 * args.tokens, generation_prompts=0, extras=False,
    )  # fmt: skip
    threads = torch.get_num_threads()
    runs = {
        f"in-process, {threads} threads": Execution("inprocess"),
        "Ray, 1 actor x 1 thread": Execution("ray", actors=1, threads=1),
        "Ray, 2 actors x 1 thread": Execution("ray", actors=2, threads=1),
    }
    out = {}
    for label, execution in runs.items():
        if execution.remote:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            t0 = time.perf_counter()
            res = run_benchmark(cfg, output_dir=None, progress=False, executor=execution)
            out[label] = (time.perf_counter() - t0, res)
        finally:
            if execution.remote:
                ray.shutdown()
                torch.set_num_threads(threads)
    ref_wall, ref = out[f"in-process, {threads} threads"]
    card = ref.scorecard.ranked().drop(columns=["fit_seconds", "eval_seconds"])
    rows = []
    for label, (wall, res) in out.items():
        other = res.scorecard.ranked().drop(columns=["fit_seconds", "eval_seconds"])
        diff = (card.select_dtypes("number") - other.select_dtypes("number")).abs().max().max()
        t = res.timings
        rows.append(
            f"| {label} | {wall:.1f} | {t['sweeps_wall']:.1f} | {t['second_phase_wall']:.1f} "
            f"| {ref_wall / wall:.2f} | {diff:.1e} |"
        )
    return "\n".join(
        [
            f"The benchmark on `{cfg.model}` ({', '.join(cfg.methods)}; {cfg.eval_tokens} "
            f"evaluation tokens per side, {cfg.baseline_seeds} random baselines, relearning "
            f"{cfg.relearn_steps} steps), one session, {threads} cores:",
            "",
            "| executor | wall s (with loading) | sweeps wall s | baselines + relearning wall s "
            "| speed / in-process | largest scorecard difference |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"Peak RSS of the driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}"
            " GB (each actor holds its own model and data).",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--tokens", type=int, default=512, help="evaluation tokens per side")
    ap.add_argument(
        "--components",
        default="tiny=heads,smollm2=mlp",
        help="what each model's map ablates (heads, mlp or both)",
    )
    ap.add_argument("--markdown")
    ap.add_argument("--run", action="store_true", help="time the benchmark run instead")
    ap.add_argument("--run-model", default="smollm2", dest="run_model")
    ap.add_argument("--run-methods", default="prune-abs,head-mean,actadd", dest="run_methods")
    args = ap.parse_args()
    if args.run:
        text = _run_benchmark_table(args)
        print(text)
        if args.markdown:
            from tl_unlearn.core.files import atomic_write_text

            atomic_write_text(Path(args.markdown), text + "\n")
        return
    import ray

    threads = torch.get_num_threads()
    rows = []
    what = dict(pair.split("=") for pair in args.components.split(","))
    for name in args.models.split(","):
        base = dict(
            model=name, components=what.get(name, "heads"), tokens=args.tokens, seq_len=64,
            batch_size=8, shards=1,
        )  # fmt: skip
        runs = {
            f"in-process, {threads} threads": (MapJob(**base, threads=threads), "inprocess", 1),
            "in-process, 1 thread": (MapJob(**base, threads=1), "inprocess", 1),
            "Ray, 1 actor x 1 thread": (MapJob(**base, threads=1), "ray", 1),
            "Ray, 2 actors x 1 thread": (MapJob(**base, threads=1), "ray", 2),
        }
        out = {}
        for label, (job, executor, actors) in runs.items():
            if executor == "ray":
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                out[label] = _run(job, executor, actors)
            finally:
                if executor == "ray":
                    ray.shutdown()
        ref = out[f"in-process, {threads} threads"]
        same = all(abs(c.forget_drop - ref[2].forget_drop).max() < 1e-6 for _, _, c in out.values())
        overhead = 1 / out["Ray, 1 actor x 1 thread"][1] - 1 / out["in-process, 1 thread"][1]
        for label, (wall, rate, cmap) in out.items():
            rows.append(
                f"| {name} | {label} | {cmap.info['units']} | {wall:.1f} | {rate:.2f} "
                f"| {rate / ref[1]:.2f} |"
            )
        rows.append(
            f"| {name} | overhead per unit (Ray 1 actor - in-process, 1 thread each) "
            f"| | | {overhead * 1000:.0f} ms | |"
        )
        rows.append(f"| {name} | every run gives the same map (1e-6) | | | {same} | |")
    text = "\n".join(
        [
            f"Component maps (each component ablated alone: {args.components}; {args.tokens} "
            "tokens per side), "
            f"one session, {threads} cores:",
            "",
            "| model | executor | units | wall s (with loading) | units/s (workers up) "
            "| / in-process |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"Peak RSS of the driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}"
            " GB (each actor holds its own model).",
        ]
    )
    print(text)
    if args.markdown:
        from tl_unlearn.core.files import atomic_write_text

        atomic_write_text(Path(args.markdown), text + "\n")


if __name__ == "__main__":
    main()
