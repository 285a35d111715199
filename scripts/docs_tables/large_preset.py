"""The large preset against the default run: how much narrower its intervals are, what its
units cost here, and its projected wall time per hardware size.

    tl-unlearn run --output runs/default
    tl-unlearn run --config large --methods prune-abs --relearn-steps 0 --output runs/large
    python scripts/docs_tables/large_preset.py --default runs/default --large runs/large \\
        --large-rss-gb 2.1 --markdown docs/generated/large-preset.md

The measured large run may hold a subset of the preset's methods (one full run takes about
an hour on 2 CPU cores). The projection scales its measured unit costs to every method of
the preset:

- every level of a method costs one pass over the layers it changes: pruning changes every
  layer; ActAdd the layers from its layer on; the SAE's features the layers from the SAE's
  layer on; head-mean is counted at every layer (an upper bound);
- each random baseline seed costs one such pass over the held-out halves;
- the head map: a unit holds the heads of one layer L, so it costs one pass up to L and one
  pass from L on per head, ``(L + H (n_layers - L)) / n_layers`` passes of the original
  model, summed over the layers;
- fits and relearning attacks do not grow with the evaluation tokens: their costs come
  from the default run, the SAE's training scaled by its training tokens.

With A actors of one thread each the units divide by A times an actor's speed (against
this 2-thread process). The fits do not divide: each actor fits the methods it runs, while
the driver fits them all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tl_unlearn.benchmark.config import PRESET_CONFIGS
from tl_unlearn.benchmark.result import BenchmarkResult


def _width(row, col: str) -> float:
    return float(row[f"{col}_high"] - row[f"{col}_low"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default", required=True, help="folder of the default run")
    ap.add_argument("--large", required=True, help="folder of the (partial) large run")
    ap.add_argument("--large-rss-gb", type=float, dest="rss", help="its peak RSS (GB)")
    ap.add_argument(
        "--actor-speed",
        type=float,
        default=0.6,
        dest="actor_speed",
        help="a 1-thread actor's speed against the 2-thread in-process run "
        "(docs/generated/scale.md measures 0.60 for SmolLM2)",
    )
    ap.add_argument("--markdown")
    args = ap.parse_args()
    small = BenchmarkResult.load(Path(args.default))
    large = BenchmarkResult.load(Path(args.large))
    ts, tl = small.timings, large.timings
    tokens = sum(d["tokens"] for d in large.data["eval"].values())
    small_tokens = sum(d["tokens"] for d in small.data["eval"].values())
    lines = [
        f"Measured in one session on this machine ({large.environment.get('threads', '?')} "
        f"threads, CPU): the default run and the large preset restricted to "
        f"{', '.join(large.config.methods)} (relearning off). Evaluation tokens, both sides: "
        f"{small_tokens:,} (default) and {tokens:,} (large).",
        "",
        "**How much narrower.** 95% interval widths of the same numbers:",
        "",
        "| method | number | default | large | default / large |",
        "| --- | --- | --- | --- | --- |",
    ]
    cs, cl = small.scorecard.ranked(), large.scorecard.ranked()
    for name in cl.index:
        if name not in cs.index:
            continue
        for col in ("held_out_difference", "vs_baseline"):
            if f"{col}_low" in cl and f"{col}_low" in cs:
                a, b = _width(cs.loc[name], col), _width(cl.loc[name], col)
                lines.append(f"| {name} | {col} | {a:.3f} | {b:.3f} | {a / b:.1f} |")
    for side in ("forget", "retain"):
        a = small.original.metric_interval(side, "top1")
        b = large.original.metric_interval(side, "top1")
        wa, wb = a.high - a.low, b.high - b.low
        lines.append(f"| original model | {side} top-1 | {wa:.3f} | {wb:.3f} | {wa / wb:.1f} |")
    rate = tokens / tl["evaluate_original"]
    lines += [
        "",
        f"The square root of the token ratio is {(tokens / small_tokens) ** 0.5:.1f}.",
        "",
        "**What the large run cost here**",
        "",
        "| | seconds |",
        "| --- | --- |",
        f"| wall time, everything included | {tl['total']:.0f} |",
        f"| one pass of the original model over both sides ({rate:,.0f} tokens/s) "
        f"| {tl['evaluate_original']:.0f} |",
    ]
    lines += [
        f"| {k.replace(':', ' ')} | {v:.0f} |"
        for k, v in tl.items()
        if k.split(":")[0] in ("fit", "sweep") or k == "random_baselines"
    ]
    if args.rss:
        lines.append(f"| peak RSS | {args.rss:.2f} GB |")

    # projection of the whole preset from the measured costs
    preset = PRESET_CONFIGS["large"]
    n_layers, n_heads = 30, 9  # SmolLM2-135M
    depth = {
        "prune-abs": 1.0,
        "prune-freq": 1.0,
        "prune-random": 1.0,
        "head-mean": 1.0,
        "sae-features": (n_layers - n_layers // 3) / n_layers,
        "actadd": (n_layers - 6) / n_layers,
    }
    measured = large.config.methods[0]
    level_cost = tl[f"sweep:{measured}"] / len(large.curve(measured).levels) / depth[measured]
    seeds = large.config.baseline_seeds
    seed_cost = tl.get("random_baselines", 0.0) / max(1, seeds) / depth[measured]
    units = tl["evaluate_original"]
    for m in preset["methods"]:
        units += 4 * depth[m] * level_cost
        if m != "prune-random":
            units += preset["baseline_seeds"] * depth[m] * seed_cost
    head_map = 0.0
    if preset.get("component_map") == "heads":
        passes = sum((lay + n_heads * (n_layers - lay)) / n_layers for lay in range(n_layers))
        head_map = passes * tl["evaluate_original"]
        units += head_map
    relearn = ts.get("degree_of_removal", 0.0) / len(small.config.methods)
    units += relearn * len(preset["methods"])  # relearning attacks are units too
    sae_scale = preset["options"]["sae.training_tokens"] / small.config.options.get(
        "sae.training_tokens", 100_000
    )
    fits = (
        tl.get(f"fit:{measured}", 0.0)  # pruning statistics on the large fit data
        + ts.get("fit:head-mean", 0.0) * preset["options"]["head-mean.attribution_seqs"] / 16
        + ts.get("fit:sae-features", 0.0) * sae_scale
        + ts.get("fit:actadd", 0.0)
    )
    other = tl["load_model"] + tl["tokenize"] + tl.get("generation", 0) + tl.get("extras", 0)
    lines += [
        "",
        "**The whole preset, projected** (every method, 5 baselines, relearning on, the "
        f"head map): {units / 60:.0f} min of units, of which the head map "
        f"{head_map / 60:.0f} min; {fits / 60:.0f} min of fits; "
        f"{other / 60:.0f} min of loading, extras and generation.",
        "",
        "| hardware | projected wall time |",
        "| --- | --- |",
    ]
    for label, actors, speed in (
        ("this machine, in-process", 1, 1.0),
        ("Ray, 8 actors x 1 thread (8 such cores)", 8, args.actor_speed),
        ("Ray, 32 actors x 1 thread (4 machines of 8 such cores)", 32, args.actor_speed),
        ("Ray, 128 actors x 1 thread (16 machines of 8 such cores)", 128, args.actor_speed),
    ):
        wall = fits + units / actors / speed + other
        lines.append(f"| {label} | {wall / 60:.0f} min |")
    lines.append("| a GPU | not measured: no GPU was lent |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        from tl_unlearn.core.files import atomic_write_text

        atomic_write_text(Path(args.markdown), text + "\n")


if __name__ == "__main__":
    main()
