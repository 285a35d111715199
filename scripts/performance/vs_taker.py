"""The same selective-pruning job in tl_unlearn and in taker (issue 13): time, memory, numbers.

SmolLM2-135M fp32 on CPU, code (forget) vs Wikipedia (retain), the same documents in both
libraries (each truncated to ``--token-limit`` tokens, taker's own document handling), MLP
neurons scored by ``abs``, ``--frac`` of the neurons pruned per step for ``--steps`` steps
with statistics re-collected after each step, top-1 accuracy after every step. Statistics are
collected on the first ``--tokens`` tokens of each side and evaluated on the first
``--tokens`` predictions of the same documents (what taker does with local JSONL data).

Each library runs in its own child process (so each peak RSS is its own), alternating
``--repeats`` times. taker is not a dependency of tl_unlearn: install it in its own
environment (``pip install taker==1.2.3``, with the CPU torch pinned) and pass that
environment's Python as ``--taker-python``. Offline: taker gets the local SmolLM2 folder and
the local corpora as JSONL files.

    python scripts/performance/vs_taker.py --taker-python /path/to/taker-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()


def documents(name: str, tokenizer, n_tokens: int, limit: int, seed: int) -> list[str]:
    """Seeded documents of a builtin corpus, enough for ``n_tokens`` tokens after truncation
    to ``limit`` tokens (plus a margin, so the evaluation's predictions also reach it)."""
    from tl_unlearn.data.corpora import load_corpus

    texts = [t for t in load_corpus(name) if t.strip()]
    random.Random(seed).shuffle(texts)
    out, total = [], 0
    for text in texts:
        n = min(len(tokenizer(text)["input_ids"]), limit)
        if n < 8:
            continue
        out.append(text)
        total += n
        if total > 2 * n_tokens:
            break
    return out


def child_tl(args: argparse.Namespace, docs: dict[str, list[str]]) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from tl_unlearn import load_model
    from tl_unlearn.data.datasets import TokenDataset
    from tl_unlearn.interventions import selective_pruning

    model = load_model("smollm2")
    tok = model.tokenizer

    def dataset(name: str, texts: list[str], count_predictions: bool) -> TokenDataset:
        # taker's documents: tokenizer defaults, truncated to token_limit, until the budget
        rows, total = [], 0
        for text in texts:
            ids = tok(text)["input_ids"][: args.token_limit]
            rows.append(ids)
            total += len(ids) - 1 if count_predictions else len(ids)
            if total > args.tokens:
                break
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        return TokenDataset(name, tokens, mask)

    fit = {k: dataset(k, v, False) for k, v in docs.items()}
    ev = {k: dataset(k, v, True) for k, v in docs.items()}
    seen = [0]
    counter = ("hook_embed", lambda x, hook: seen.__setitem__(0, seen[0] + x.shape[0] * x.shape[1]))
    model.add_hook(*counter)
    # evaluated before pruning and after every step (taker's run_pruning); the statistics of
    # the next step are read in the same passes (the evaluation's documents start with the
    # collection's): the same numbers as separate passes, 4 passes per side instead of 7
    iv = selective_pruning(
        model,
        fit["forget"],
        fit["retain"],
        args.frac * args.steps,
        score="abs",
        components="mlp",
        steps=args.steps,
        batch_size=args.batch_size,
        evaluate_on=ev,
        evaluate_options={"skip_common": 0, "progress": False},
    )
    steps = [{k: e[k].accuracy[1] for k in ("forget", "retain")} for e in iv.info["evaluations"]]
    model.reset_hooks()
    return {
        "steps": steps,
        "tokens_through_model": seen[0],
        "tokens": {k: int(v.attention_mask.sum()) for k, v in fit.items()},
    }


def child_taker(args: argparse.Namespace, docs: dict[str, list[str]]) -> dict:
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    torch.set_num_threads(args.threads)
    import taker.model
    from taker.data_classes import PruningConfig
    from taker.prune import run_pruning

    seen = [0]
    get_ids = taker.model.Model.get_ids

    def counting_get_ids(self, text):
        ids = get_ids(self, text)
        seen[0] += ids.numel()
        return ids

    taker.model.Model.get_ids = counting_get_ids
    files = {}
    for k, texts in docs.items():
        files[k] = Path(args.workdir) / f"{k}.jsonl"
        files[k].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    c = PruningConfig(
        model_repo=args.model_dir,
        token_limit=args.token_limit,
        dtype="fp32",
        model_device="cpu",
        collection_sample_size=args.tokens,
        eval_sample_size=args.tokens,
        ff_frac=args.frac,
        attn_frac=0.0,
        ff_scoring="abs",
        n_steps=args.steps,
        recalculate_activations=True,
        run_pre_test=True,
        wandb_project="taker-vs-tl",
        focus=f"jsonl:{files['retain']}",
        cripple=f"jsonl:{files['forget']}",
    )
    _, history = run_pruning(c)
    steps = []
    for item in history.history:
        acc = item.accuracy if hasattr(item, "accuracy") else item["accuracy"]
        # taker names a JSONL dataset by its path (with or without the "jsonl:" prefix)
        steps.append(
            {
                k: next(v["base"] for name, v in acc.items() if str(name).endswith(f"{k}.jsonl"))
                / 100
                for k in files
            }
        )
    return {"steps": steps, "tokens_through_model": seen[0]}


def run_child(python: str, side: str, args: argparse.Namespace, docs_file: str) -> dict:
    cmd = [
        python,
        __file__,
        "--child",
        side,
        "--docs",
        docs_file,
        "--workdir",
        args.workdir,
        "--model-dir",
        args.model_dir,
        "--tokens",
        str(args.tokens),
        "--frac",
        str(args.frac),
        "--steps",
        str(args.steps),
        "--token-limit",
        str(args.token_limit),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"}
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--taker-python", help="Python of an environment with taker==1.2.3")
    ap.add_argument("--tokens", type=int, default=5000)
    ap.add_argument("--frac", type=float, default=0.02)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--token-limit", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    # 1, as taker: with fused attention, batches give no speed on a 2-core CPU, and a batch
    # pads its shorter documents (same numbers; 2026-11-24 child alone: 59.7 s / 1.50 GB at
    # 1, 62.1 s / 1.55 GB at 2, 59.8 s / 1.58 GB at 4)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--child", choices=["tl", "taker"], help=argparse.SUPPRESS)
    ap.add_argument("--docs", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        docs = json.loads(Path(args.docs).read_text())
        out = (child_tl if args.child == "tl" else child_taker)(args, docs)
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        out["child_wall_s"] = time.perf_counter() - T_START
        print(json.dumps(out))
        return
    if not args.taker_python:
        raise SystemExit(
            "Pass --taker-python: the Python of an environment with taker==1.2.3 "
            "(taker is not a dependency of tl_unlearn)."
        )
    from transformers import AutoTokenizer

    from tl_unlearn.models.loading import smollm2_hf_dir

    args.model_dir = str(smollm2_hf_dir())
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    docs = {
        "forget": documents("python_code", tok, args.tokens, args.token_limit, args.seed),
        "retain": documents("wikipedia", tok, args.tokens, args.token_limit, args.seed),
    }
    with tempfile.TemporaryDirectory() as work:
        args.workdir = work
        docs_file = str(Path(work) / "docs.json")
        Path(docs_file).write_text(json.dumps(docs))
        runs: dict[str, list[dict]] = {"tl_unlearn": [], "taker": []}
        for r in range(args.repeats):
            for side, python in (("tl", sys.executable), ("taker", args.taker_python)):
                name = "tl_unlearn" if side == "tl" else "taker"
                runs[name].append(run_child(python, side, args, docs_file))
                print(
                    f"repeat {r + 1}: {name} {runs[name][-1]['wall_s']:.0f} s, peak RSS "
                    f"{runs[name][-1]['peak_rss_gb']:.2f} GB",
                    flush=True,
                )
    print(
        f"\nSelective pruning, SmolLM2-135M fp32, {args.threads} threads, {args.tokens} tokens "
        f"collected and evaluated per side, {args.frac:.0%} of MLP neurons per step, "
        f"{args.steps} steps, abs score; {len(docs['forget'])} code / {len(docs['retain'])} "
        f"wiki documents available\n"
    )
    print("top-1 after each step (step 0 = original): forget (code) | retain (wiki)")
    for name, rs in runs.items():
        st = rs[0]["steps"]
        # taker's pre-pruning entry does not hold the JSONL datasets' accuracies: shown as "-"
        print(
            f"  {name:10s} "
            + "  ".join(
                f"{s['forget']:.3f}|{s['retain']:.3f}" if s["forget"] or s["retain"] else "-|-"
                for s in st
            )
        )
    print("\n| | tl_unlearn | taker | ratio |\n| --- | --- | --- | --- |")
    med = {
        n: {
            k: statistics.median(r[k] for r in rs)
            for k in ("wall_s", "peak_rss_gb", "tokens_through_model")
        }
        for n, rs in runs.items()
    }
    for key, label in (
        ("wall_s", "wall time (s, median)"),
        ("peak_rss_gb", "peak RSS (GB)"),
        ("tokens_through_model", "tokens through the model"),
    ):
        a, b = med["tl_unlearn"][key], med["taker"][key]
        print(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": med}, indent=1))


if __name__ == "__main__":
    main()
