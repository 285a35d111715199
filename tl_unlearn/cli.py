"""Command-line entry point: ``tl-unlearn``.

``tl-unlearn smoke`` loads a model (default: the embedded SmolLM2-135M, offline), builds the
default forget/retain task (Python code vs English Wikipedia prose) and prints loss, perplexity
and top-1 accuracy on each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["main"]


def _smoke(args: argparse.Namespace) -> int:
    from tl_unlearn.data import make_task
    from tl_unlearn.metrics.evaluation import evaluate
    from tl_unlearn.models import load_model

    t0 = time.time()
    model = load_model(args.model)
    load_s = time.time() - t0
    task = make_task(args.forget, args.retain)
    data = task.tokenize(model.tokenizer, "eval", seq_len=args.seq_len,
                         max_tokens=args.tokens, n_ctx=model.cfg.n_ctx)
    ev = evaluate(model, data, batch_size=args.batch_size, label="original")
    table = ev.to_dataframe()[["n_predictions", "loss", "perplexity", "top1", "top5"]]
    sys.stdout.write(f"model: {model.cfg.model_name} (loaded in {load_s:.1f}s)\n")
    sys.stdout.write(f"forget={args.forget!r} retain={args.retain!r}\n")
    sys.stdout.write(table.to_string(float_format=lambda x: f"{x:.4f}") + "\n")
    sys.stdout.write(f"total {time.time() - t0:.1f}s\n")
    if args.json:
        sys.stdout.write(json.dumps(ev.to_dict()) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tl-unlearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    smoke = sub.add_parser("smoke", help="load the model and print forget/retain loss")
    smoke.add_argument("--model", default="smollm2",
                       help="'smollm2' (default, offline), 'tiny', or a TransformerLens name")
    smoke.add_argument("--forget", default="python_code")
    smoke.add_argument("--retain", default="wikipedia")
    smoke.add_argument("--tokens", type=int, default=4000, help="token budget per dataset")
    smoke.add_argument("--seq-len", type=int, default=128)
    smoke.add_argument("--batch-size", type=int, default=8)
    smoke.add_argument("--json", action="store_true", help="also print the result as JSON")
    smoke.set_defaults(func=_smoke)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ModuleNotFoundError) as exc:
        parser.exit(2, f"tl-unlearn: error: {exc}\n")


if __name__ == "__main__":
    raise SystemExit(main())
