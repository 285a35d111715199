"""Performance ratios of tl_unlearn's evaluation, measured in one run on one model and data.

Prints (and optionally writes as JSON) seven ratios:

1. streaming evaluation (loss, perplexity, top-1/top-5 and skip variants) of one dataset vs
   a bare ``model(tokens)`` loop over the same batches, best and median of paired runs
   (target <= 1.10);
2. a selectivity curve of N levels (statistics pass + baseline + N evaluations) vs N + 2 bare
   passes over the same amount of data (target <= 1.15);
3. peak memory of evaluation at 4x vs 1x the token count (target <= 1.1);
4. a sweep of K interventions at layer L with the shared prefix reused vs K full passes
   (speed-up; ideal n_layers / (n_layers - L));
5. the selectivity-curve job vs the straightforward notebook way (``run_with_cache`` with
   every hook, then metrics from the full logits), for time and peak memory;
6. the component selectivity map of every head vs the same map with full forward passes
   (target <= 0.6), and a floor no exact map can beat: each component re-running only the
   layers after its own, plus the unembedding and metrics that every ablation needs;
7. answer-metric evaluation (IOI prompts of 15-25 tokens, batch 16: answer loss, accuracy,
   log-prob, rank, logit difference) vs a bare ``model(tokens)`` loop over the same batches
   (target <= 1.15).

Each timing is the minimum over ``--repeats`` runs (alternating the two sides), on
``torch.get_num_threads()`` threads.

Usage::

    python scripts/performance/forward_and_evaluation.py --model tiny
    python scripts/performance/forward_and_evaluation.py --model smollm2 --tokens 2048 --json perf.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import torch

from tl_unlearn import evaluate, load_model, make_task
from tl_unlearn.interventions import pruning_scores, zero_ablation
from tl_unlearn.metrics import evaluate_many, selectivity_curve


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def paired_runs(
    a: Callable[[], object], b: Callable[[], object], repeats: int
) -> tuple[list[float], list[float]]:
    """Times of a and b, alternating so that drift hits both alike."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(best_time(a, 1))
        tb.append(best_time(b, 1))
    return ta, tb


def paired(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Minimum times of a and b, alternating so that drift hits both alike."""
    ta, tb = paired_runs(a, b, repeats)
    return min(ta), min(tb)


@torch.inference_mode()
def bare_pass(model, datasets, batch_size):
    for ds in datasets:
        for tokens, _ in ds.batches(batch_size):
            model(tokens)


PEAK = textwrap.dedent("""
    import sys, json, torch
    from tl_unlearn import load_model, make_task, evaluate
    from tl_unlearn.interventions import pruning_scores
    from tl_unlearn.metrics import selectivity_curve
    from tl_unlearn.metrics.evaluation import batch_statistics
    mode, model_name, tokens, seq_len, bs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    model = load_model(model_name)
    task = make_task()
    data = task.tokenize(model.tokenizer, "eval", seq_len=seq_len, max_tokens=tokens)
    levels = [0.01, 0.02, 0.05]
    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])
    scores = pruning_scores(model, data["forget"], data["retain"], batch_size=bs)
    evaluate(model, data["forget"].head(bs), progress=False)   # warm-up
    open("/proc/self/clear_refs", "w").write("5")
    before = rss("VmRSS:")
    if mode == "evaluate":
        evaluate(model, data, batch_size=bs, progress=False)
    elif mode == "curve":
        selectivity_curve(model, data, scores.intervention, levels, batch_size=bs, progress=False)
    elif mode == "naive":
        # the straightforward notebook way: cache everything, hold the logits, compute metrics
        out = {}
        for level in [0.0] + levels:
            iv = scores.intervention(level) if level else []
            for name, ds in data.items():
                with model.hooks(fwd_hooks=list(iv)):
                    logits, cache = model.run_with_cache(ds.tokens)
                out[(level, name)] = batch_statistics(logits, ds.tokens, ds.attention_mask, (1, 5))
                del logits, cache
    print(json.dumps({"peak_kb": rss("VmHWM:") - before}))
""")


def peak_kb(mode: str, model: str, tokens: int, seq_len: int, batch_size: int) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(
        [sys.executable, "-c", PEAK, mode, model, str(tokens), str(seq_len), str(batch_size)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--tokens", type=int, default=None, help="eval tokens per dataset")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--levels", type=int, default=4, help="N levels of the selectivity curve")
    ap.add_argument("--sweep", type=int, default=6, help="K interventions of the layer sweep")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-map", action="store_true", help="skip ratio 6 (head map)")
    ap.add_argument("--only", default="1234567", help="which ratios to measure, e.g. 26")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    tokens = args.tokens or (8192 if args.model == "tiny" else 1024)
    model = load_model(args.model)
    task = make_task()
    data = task.tokenize(
        model.tokenizer, "eval", seq_len=args.seq_len, max_tokens=tokens, n_ctx=model.cfg.n_ctx
    )
    fit = task.tokenize(
        model.tokenizer, "fit", seq_len=args.seq_len, max_tokens=tokens, n_ctx=model.cfg.n_ctx
    )
    both = [data["forget"], data["retain"]]
    bs, reps = args.batch_size, args.repeats
    results: dict[str, object] = {
        "model": model.cfg.model_name,
        "n_layers": model.cfg.n_layers,
        "d_vocab": model.cfg.d_vocab,
        "tokens_per_dataset": tokens,
        "seq_len": args.seq_len,
        "batch_size": bs,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.platform(),
        "torch": torch.__version__,
    }
    bare_pass(model, both, bs)  # warm-up

    only = set(args.only)
    # 1. evaluation vs bare forward passes
    if "1" in only:
        run_1(model, data, both, bs, reps, results)
    if "2" in only:
        run_2(model, data, fit, both, bs, reps, results, args.levels)
    if "3" in only:
        run_3(args, tokens, bs, results)
    if "4" in only:
        run_4(model, data, bs, reps, results, args.sweep)
    if "5" in only:
        run_5(model, data, fit, both, bs, reps, results, args, tokens)
    if "6" in only and not args.skip_map:
        run_6(model, data, bs, reps, results)
    if "7" in only:
        run_7(model, reps, results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


def run_1(model, data, both, bs, reps, results):
    # what a user sees: evaluate() of one dataset vs a bare model(tokens) loop over its batches
    one = data["forget"]
    ta, tb = paired_runs(
        lambda: evaluate(model, one, batch_size=bs, progress=False),
        lambda: bare_pass(model, [one], bs),
        reps,
    )
    ratios = sorted(a / b for a, b in zip(ta, tb))
    median = (
        ratios[len(ratios) // 2]
        if len(ratios) % 2
        else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    )
    results["1_eval_vs_bare"] = {
        "eval_s": min(ta),
        "bare_s": min(tb),
        "ratio": min(ta) / min(tb),
        "ratio_median": median,
        "tokens": int(one.attention_mask.sum()),
        "target": "<= 1.10",
    }
    print(
        f"1. evaluation / bare forward:        {min(ta) / min(tb):.3f} best, {median:.3f} "
        f"median of paired runs  ({min(ta):.2f}s vs {min(tb):.2f}s, "
        f"{int(one.attention_mask.sum())} tokens of one dataset)",
        flush=True,
    )


def curve_job_factory(model, data, fit, bs, levels):
    def curve_job():
        scores = pruning_scores(model, fit["forget"], fit["retain"], batch_size=bs)
        selectivity_curve(model, data, scores.intervention, levels, batch_size=bs, progress=False)

    return curve_job


def run_2(model, data, fit, both, bs, reps, results, n_levels):
    # 2. selectivity curve (statistics + baseline + N levels) vs N + 2 bare passes
    levels = [0.005 * 2**i for i in range(n_levels)]
    curve_job = curve_job_factory(model, data, fit, bs, levels)

    def bare_job():
        bare_pass(model, [fit["forget"], fit["retain"]], bs)
        for _ in range(n_levels + 1):
            bare_pass(model, both, bs)

    t_curve, t_bare_n = paired(curve_job, bare_job, reps)
    results["2_curve_vs_bare"] = {
        "curve_s": t_curve,
        "bare_s": t_bare_n,
        "levels": n_levels,
        "ratio": t_curve / t_bare_n,
        "target": "<= 1.15",
    }
    print(
        f"2. selectivity curve / (N+2) bare:   {t_curve / t_bare_n:.3f}  "
        f"({t_curve:.2f}s vs {t_bare_n:.2f}s, N={n_levels})",
        flush=True,
    )


def run_3(args, tokens, bs, results):
    # 3. peak memory of evaluation at 4x vs 1x tokens
    small = peak_kb("evaluate", args.model, tokens, args.seq_len, bs)
    large = peak_kb("evaluate", args.model, 4 * tokens, args.seq_len, bs)
    results["3_peak_memory_4x_vs_1x"] = {
        "peak_1x_kb": small,
        "peak_4x_kb": large,
        "ratio": large / max(small, 1),
        "target": "<= 1.1",
    }
    print(
        f"3. eval peak memory 4x / 1x tokens:  {large / max(small, 1):.3f}  "
        f"({small / 1024:.0f} MiB vs {large / 1024:.0f} MiB)",
        flush=True,
    )


def run_4(model, data, bs, reps, results, sweep):
    # 4. K interventions at layer L: shared prefix vs K full passes
    n = model.cfg.n_layers
    layer = n - 1 if n <= 3 else (2 * n) // 3
    heads = [(layer, h % model.cfg.n_heads) for h in range(sweep)]
    ivs = [zero_ablation(model, heads=[hd]) for hd in heads]
    t_shared, t_full = paired(
        lambda: evaluate_many(model, data, ivs, batch_size=bs, progress=False),
        lambda: evaluate_many(model, data, ivs, batch_size=bs, progress=False, share_prefix=False),
        reps,
    )
    ideal = n / (n - layer)
    results["4_sweep_shared_prefix"] = {
        "layer": layer,
        "K": sweep,
        "shared_s": t_shared,
        "full_s": t_full,
        "speedup": t_full / t_shared,
        "ideal": ideal,
    }
    print(
        f"4. sweep at layer {layer}/{n}, K={sweep}: speed-up {t_full / t_shared:.2f}x "
        f"(ideal about {ideal:.2f}x; {t_shared:.2f}s vs {t_full:.2f}s)",
        flush=True,
    )


def run_5(model, data, fit, both, bs, reps, results, args, tokens):
    # 5. the curve job vs the straightforward notebook way
    levels = [0.005 * 2**i for i in range(args.levels)]
    curve_job = curve_job_factory(model, data, fit, bs, levels)

    def naive_job():
        scores = pruning_scores(model, fit["forget"], fit["retain"], batch_size=bs)
        from tl_unlearn.metrics.evaluation import batch_statistics

        for level in [0.0, *levels]:
            iv = scores.intervention(level) if level else []
            for ds in both:
                with model.hooks(fwd_hooks=list(iv)):
                    logits, cache = model.run_with_cache(ds.tokens)
                batch_statistics(logits, ds.tokens, ds.attention_mask, (1, 5))
                del logits, cache

    t_ours, t_naive = paired(curve_job, naive_job, max(1, reps - 1))
    mem_ours = peak_kb("curve", args.model, tokens, args.seq_len, bs)
    mem_naive = peak_kb("naive", args.model, tokens, args.seq_len, bs)
    results["5_curve_vs_naive"] = {
        "ours_s": t_ours,
        "naive_s": t_naive,
        "time_ratio": t_ours / t_naive,
        "ours_peak_kb": mem_ours,
        "naive_peak_kb": mem_naive,
        "memory_ratio": mem_ours / max(mem_naive, 1),
    }
    print(
        f"5. curve vs notebook way: time {t_ours / t_naive:.3f}x, peak memory "
        f"{mem_ours / max(mem_naive, 1):.3f}x ({mem_ours / 1024:.0f} MiB vs "
        f"{mem_naive / 1024:.0f} MiB)",
        flush=True,
    )


def map_floor_job(model, datasets, bs, components):
    """A lower bound on any exact head map: ablating costs nothing, nothing is re-run before
    the layer after the ablated one, and each component only pays for the layers after its
    own plus the unembedding and the metrics (which every distinct ablation needs)."""
    from tl_unlearn.metrics.evaluation import _common_targets, batch_statistics

    names = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]

    @torch.inference_mode()
    def job():
        for ds in datasets:
            skip = _common_targets(ds, 50)
            for tokens, mask in ds.batches(bs):
                logits, cache = model.run_with_cache(tokens, names_filter=names)
                batch_statistics(logits, tokens, mask, (1, 5), skip)  # the original
                for layer, _ in components:
                    logits = model(cache[names[layer]], start_at_layer=layer + 1, tokens=tokens)
                    batch_statistics(logits, tokens, mask, (1, 5), skip)

    return job


def run_6(model, data, bs, reps, results):
    # 6. component selectivity map (every head) vs full forward passes
    from tl_unlearn.circuits.maps import component_selectivity_map

    small_data = {k: v.head(2 * bs) for k, v in data.items()}
    t_map, t_map_full = paired(
        lambda: component_selectivity_map(model, small_data, batch_size=bs, progress=False),
        lambda: component_selectivity_map(
            model, small_data, batch_size=bs, progress=False, share_prefix=False
        ),
        max(1, reps - 1),
    )
    heads = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    t_floor = best_time(
        map_floor_job(model, list(small_data.values()), bs, heads), max(1, reps - 1)
    )
    results["6_head_map_vs_full"] = {
        "map_s": t_map,
        "full_s": t_map_full,
        "ratio": t_map / t_map_full,
        "target": "<= 0.6",
        "floor_s": t_floor,
        "floor_ratio": t_floor / t_map_full,
    }
    print(
        f"6. head selectivity map / full passes: {t_map / t_map_full:.3f}  "
        f"({t_map:.2f}s vs {t_map_full:.2f}s); floor for any exact map: "
        f"{t_floor / t_map_full:.3f}",
        flush=True,
    )


def run_7(model, reps, results, batch_size=16):
    from tl_unlearn.data.tasks import ioi_task

    ds = ioi_task(model.tokenizer, n=2000).tokenize(
        model.tokenizer, max_tokens=None, max_examples=256
    )
    lengths = ds.attention_mask.sum(1)
    ds = ds.rows((lengths >= 15) & (lengths <= 25))
    views = list(ds.views(batch_size))

    @torch.inference_mode()
    def bare():
        for v in views:
            model(v.tokens)

    bare()  # warm-up
    t_eval, t_bare = paired(
        lambda: evaluate(model, ds, batch_size=batch_size, progress=False), bare, reps
    )
    results["7_answer_eval_vs_bare"] = {
        "eval_s": t_eval,
        "bare_s": t_bare,
        "ratio": t_eval / t_bare,
        "examples": len(ds),
        "batch_size": batch_size,
        "target": "<= 1.15",
    }
    print(
        f"7. answer evaluation / bare forward: {t_eval / t_bare:.3f}  "
        f"({t_eval:.2f}s vs {t_bare:.2f}s, {len(ds)} IOI prompts)",
        flush=True,
    )


if __name__ == "__main__":
    main()
