"""IOI circuits on SmolLM2 (or the tiny model): discovery by activation patching, EAP and
EAP-IG on the fit split, then MIB faithfulness curves (CPR, CMD, random band, intervals) and
forget/retain selectivity on the eval split.

    python scripts/docs_tables/circuit_faithfulness.py --model smollm2 --fit 24 --eval 40 --out runs/circuits

Writes ``faithfulness.json`` / ``.html``, one EAP-IG-format circuit file per method, the
selectivity curves, and prints the tables of the README's results section.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from tl_unlearn import load_model, make_task
from tl_unlearn.circuits.attribution import activation_patching, edge_attribution
from tl_unlearn.circuits.faithfulness import circuit_selectivity, faithfulness_curves
from tl_unlearn.data.tasks import ioi_task
from tl_unlearn.interventions.counterfactual import counterfactual_pair


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--fit", type=int, default=24, help="IOI examples to find circuits on")
    ap.add_argument("--eval", type=int, default=40, help="IOI examples to score them on")
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--retain-tokens", type=int, default=1000)
    ap.add_argument("--out", default="runs/circuits")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    model = load_model(args.model)
    tok = model.tokenizer
    ioi = ioi_task(tok)
    fit_clean, fit_corr = counterfactual_pair(ioi, tok, "fit", max_examples=args.fit)
    ev_clean, ev_corr = counterfactual_pair(ioi, tok, "eval", max_examples=args.eval)
    timings = {}
    t = time.perf_counter()
    patching = activation_patching(model, fit_clean, fit_corr, progress=True)
    timings["activation patching"] = time.perf_counter() - t
    t = time.perf_counter()
    eap = edge_attribution(model, fit_clean, fit_corr, method="eap", progress=True)
    timings["EAP"] = time.perf_counter() - t
    t = time.perf_counter()
    eap_ig = edge_attribution(
        model, fit_clean, fit_corr, method="eap-ig", steps=args.ig_steps, progress=True
    )
    timings["EAP-IG"] = time.perf_counter() - t
    scores = {
        "activation patching": patching.edge_scores(model.cfg.d_model),
        "EAP": eap,
        "EAP-IG": eap_ig,
    }
    for name, c in scores.items():
        c.to_json(out / f"{name.replace(' ', '_')}.json")
    t = time.perf_counter()
    fc = faithfulness_curves(
        model, ev_clean, ev_corr, scores, n_random=args.n_random, progress=True
    )
    timings["faithfulness curves"] = time.perf_counter() - t
    fc.label = f"IOI on {args.model}"
    fc.save(out / "faithfulness.json")
    fc.figure().write_html(out / "faithfulness.html")
    print(
        f"\n{args.model}: {fc.info['n_real_edges']} edges; fit {len(fit_clean)} / eval "
        f"{len(ev_clean)} IOI examples; clean logit diff {fc.full.mean():.3f}, empty "
        f"{fc.empty.mean():.3f}"
    )
    print("\n| method | CPR [95% CI] | CMD [95% CI] | CPR - random [95% CI] | beats random |")
    print("| --- | --- | --- | --- | --- |")
    for name, a in fc.areas().items():
        vs = (
            f"{a['cpr_vs_random']:+.3f} [{a['cpr_vs_random_low']:+.3f}, "
            f"{a['cpr_vs_random_high']:+.3f}]"
            if name != "random"
            else ""
        )
        print(
            f"| {name} | {a['cpr']:.3f} [{a['cpr_low']:.3f}, {a['cpr_high']:.3f}] | "
            f"{a['cmd']:.3f} [{a['cmd_low']:.3f}, {a['cmd_high']:.3f}] | {vs} | "
            f"{a.get('beats_random', '')} |"
        )
    print("\nfaithfulness per fraction:")
    print("| fraction | edges | " + " | ".join(fc.values) + " | random |")
    print("| --- | --- |" + " --- |" * (len(fc.values) + 1))
    for j, (f, n) in enumerate(zip(fc.fractions, fc.n_edges)):
        row = [f"{fc.faithfulness(m)[j]:.3f}" for m in [*fc.values, "random"]]
        print(f"| {f:g} | {n} | " + " | ".join(row) + " |")
    # selectivity: remove each method's top circuits (mean ablation), IOI vs Wikipedia
    t = time.perf_counter()
    task = make_task(forget=ioi, retain="wikipedia")
    data = {
        "forget": ev_clean,
        "retain": task.retain.tokenize(
            tok, "eval", seq_len=128, max_tokens=args.retain_tokens, n_ctx=model.cfg.n_ctx
        ),
    }
    sizes = [fc.n_edges[j] for j in (2, 4, 6)]
    print("\nselectivity (circuit edges mean-ablated; relative drops with 95% CI):")
    print("| method | edges removed | IOI logit-diff drop | Wikipedia top-1 drop |")
    print("| --- | --- | --- | --- |")
    sel = {}
    for name, c in scores.items():
        curve = circuit_selectivity(
            model,
            data,
            c,
            sizes,
            reference=fit_clean,
            metric={"forget": "logit_diff", "retain": "top1"},
            progress=False,
        )
        curve.save(out / f"selectivity_{name.replace(' ', '_')}.json")
        f_lo, f_hi = curve.drop_interval("forget")
        r_lo, r_hi = curve.drop_interval("retain")
        for j, k in enumerate(curve.x):  # x and the drops start with the level-0 point
            if k == 0:
                continue
            print(
                f"| {name} | {int(k)} | {curve.forget_drop[j]:.3f} [{f_lo[j]:.3f}, "
                f"{f_hi[j]:.3f}] | {curve.retain_drop[j]:.3f} [{r_lo[j]:.3f}, {r_hi[j]:.3f}] |"
            )
        sel[name] = curve.forget_drop.tolist()
    timings["selectivity"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        "\ntimings (s):",
        json.dumps({k: round(v, 1) for k, v in timings.items()}),
        f"peak RSS {peak:.2f} GB",
    )
    (out / "summary.json").write_text(
        json.dumps(
            {
                "areas": fc.areas(),
                "timings": timings,
                "peak_rss_gb": peak,
                "n_edges": fc.n_edges,
                "selectivity_forget_drop": sel,
                "top_heads_patching": patching.ranked()[:10],
            },
            indent=1,
            default=float,
        )
    )
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
