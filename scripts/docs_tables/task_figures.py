"""Prompt→answer figures on a model: clean task metrics and an IOI head map.

1. The clean model's answer metrics (logit difference, first-token accuracy, answer
   log-prob) on the builtin ``ioi``, ``facts`` and ``greater_than`` eval splits, each with a
   95% bootstrap interval over examples, and IOI's normalised baseline (ABC prompts).
2. A mean-ablation head map of IOI (forget, drop in logit difference) vs Wikipedia (retain,
   drop in top-1): the top heads by forget drop with their retain drops. Means come from the
   IOI *fit* split, the map is measured on the eval split.

Usage::

    python scripts/docs_tables/task_figures.py                      # SmolLM2 (offline default)
    python scripts/docs_tables/task_figures.py --model tiny --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from tl_unlearn import evaluate, load_model, make_task
from tl_unlearn.circuits.maps import component_selectivity_map
from tl_unlearn.data.tasks import facts_task, greater_than_task, ioi_task


def per_example_ld(logits, batch):
    final = batch.answer_logits(logits)
    return (
        final.gather(1, batch.answers[:, None]) - final.gather(1, batch.counterfactual[:, None])
    ).squeeze(1)


def per_example_first_hit(logits, batch):
    return (batch.answer_logits(logits).argmax(-1) == batch.answers).double()


def interval(values: np.ndarray, seed: int = 0, n_boot: int = 2000) -> list[float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (n_boot, len(values)))
    return np.percentile(values[idx].mean(1), [2.5, 97.5]).tolist()


def clean_metrics(model, pa, max_examples, batch_size):
    ds = pa.tokenize(
        model.tokenizer, max_tokens=None, max_examples=max_examples, n_ctx=model.cfg.n_ctx
    )
    ev = evaluate(model, {pa.name: ds}, batch_size=batch_size, progress=False)[pa.name]
    lds, hits = [], []
    with torch.inference_mode():
        for view in ds.views(batch_size):
            logits = model(view.tokens)
            lds.append(per_example_ld(logits, view))
            hits.append(per_example_first_hit(logits, view))
    lds, hits = torch.cat(lds).numpy(), torch.cat(hits).numpy()
    assert abs(lds.mean() - ev.answer["logit_diff"]) < 1e-4
    return {
        "examples": len(ds),
        "logit_diff": float(lds.mean()),
        "logit_diff_ci": interval(lds),
        "first_token_accuracy": float(hits.mean()),
        "first_token_accuracy_ci": interval(hits),
        "answer_accuracy": ev.answer["answer_accuracy"],
        "answer_logprob": ev.answer["answer_logprob"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--examples", type=int, default=200, help="eval examples per task")
    ap.add_argument("--map-examples", type=int, default=48, help="IOI examples in the head map")
    ap.add_argument("--retain-tokens", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args()
    t0 = time.time()
    model = load_model(args.model)
    tok = model.tokenizer
    out: dict[str, object] = {"model": model.cfg.model_name}
    ioi = ioi_task(tok)
    for pa in (ioi, facts_task(), greater_than_task()):
        out[pa.name] = clean_metrics(model, pa, args.examples, args.batch_size)
        print(pa.name, json.dumps(out[pa.name]), flush=True)
    clean = evaluate(
        model,
        {"ioi": ioi.tokenize(tok, max_tokens=None, max_examples=args.examples)},
        progress=False,
    )
    abc = evaluate(
        model,
        {"ioi": ioi.tokenize(tok, max_tokens=None, max_examples=args.examples, corrupted=True)},
        progress=False,
    )
    out["ioi"]["corrupted_logit_diff"] = abc["ioi"].answer["logit_diff"]
    print("ioi ABC baseline logit diff", abc["ioi"].answer["logit_diff"], flush=True)
    del clean

    task = make_task(ioi, "wikipedia")
    data = {
        "forget": task.forget.tokenize(tok, max_tokens=None, max_examples=args.map_examples),
        "retain": task.retain.tokenize(tok, max_tokens=args.retain_tokens, seq_len=128),
    }
    reference = task.forget.tokenize(tok, "fit", max_tokens=None, max_examples=256)
    t1 = time.time()
    cmap = component_selectivity_map(
        model,
        data,
        "heads",
        "mean",
        reference,
        metric={"forget": "logit_diff", "retain": "top1"},
        batch_size=args.batch_size,
    )
    rows = []
    for comp in cmap.ranked("forget")[: args.top]:
        i = cmap.components.index(comp)
        rows.append(
            {
                "head": f"L{comp[0]}H{comp[1]}",
                "forget_drop": float(cmap.forget_drop[i]),
                "retain_drop": float(cmap.retain_drop[i]),
            }
        )
    out["head_map"] = {
        "seconds": time.time() - t1,
        "heads": len(cmap.components),
        "ioi_examples": len(data["forget"]),
        "retain_tokens": data["retain"].n_tokens,
        "clean_logit_diff": cmap.original["forget"].answer["logit_diff"],
        "clean_retain_top1": cmap.original["retain"].accuracy[1],
        "top": rows,
    }
    print("| head | IOI logit-diff drop | Wikipedia top-1 drop |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['head']} | {r['forget_drop']:.3f} | {r['retain_drop']:.4f} |")
    out["seconds"] = time.time() - t0
    print(f"total {out['seconds']:.0f}s", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
