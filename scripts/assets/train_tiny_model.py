"""Train the tiny test model committed in ``tl_unlearn/assets/tiny`` (reproducible, CPU only).

What it does, deterministically given ``--seed``:
1. trains a 4,096-token byte-level BPE tokenizer on the *fit* splits of the four builtin
   corpora (Python stdlib code, Wikipedia, Shakespeare, KJV);
2. trains a 2-layer HookedTransformer (d_model 128, 4 heads, d_mlp 512, n_ctx 256,
   shortformer positions: added to queries and keys only) with AdamW, first on repeated
   random-token rows alone (``--induction-steps``; an induction circuit forms there), then on
   balanced batches of those fit splits with ``--induction-rows`` repeated rows beside every
   step (which keep the circuit);
3. evaluates held-out loss on every corpus's *eval* split and a unigram baseline, and writes
   ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``train_log.json``.

Usage::

    python scripts/assets/train_tiny_model.py                 # ~10-15 minutes on 2 CPU cores
    python scripts/assets/train_tiny_model.py --steps 50 --out /tmp/tiny   # quick check
    python scripts/assets/train_tiny_model.py --exclude python_code --out tl_unlearn/assets/tiny_twin
        # the same recipe without the forget corpus: the committed retrained twin

Bit-identical weights need the same torch version and thread count; the losses reproduce to
about 0.01 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tl_unlearn.data.corpora import BUILTIN_CORPORA
from tl_unlearn.data.datasets import TextDataset
from tl_unlearn.data.tasks import InductionTask, induction_vocab
from tl_unlearn.metrics import evaluate
from tl_unlearn.models.loading import TINY_MODEL_DIR, TINY_SPECIAL_TOKENS

CORPORA = list(BUILTIN_CORPORA)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **TINY_SPECIAL_TOKENS)


def unigram_loss(
    train: torch.Tensor,
    train_mask: torch.Tensor,
    test: torch.Tensor,
    test_mask: torch.Tensor,
    vocab: int,
) -> float:
    """Cross-entropy (nats) of an add-one unigram model fit on ``train`` targets, on ``test``."""
    counts = torch.bincount(train[:, 1:][train_mask[:, 1:]], minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[test[:, 1:][test_mask[:, 1:]]].mean())


def repeated_rows(
    vocab: torch.Tensor,
    bos: int,
    n: int,
    length: int,
    periods: tuple[int, int],
    gen: torch.Generator,
) -> torch.Tensor:
    """``n`` rows ``[BOS] + A + A + ...`` of ``length`` tokens: a random segment ``A`` of
    ``vocab`` ids, its length drawn from ``periods`` (inclusive) per row, repeated."""
    rows = []
    for _ in range(n):
        period = int(torch.randint(periods[0], periods[1] + 1, (1,), generator=gen))
        seg = vocab[torch.randint(len(vocab), (period,), generator=gen)]
        rows.append(
            torch.cat([torch.tensor([bos]), seg.repeat(length // period + 1)[: length - 1]])
        )
    return torch.stack(rows)


@torch.no_grad()
def heldout_loss(model: HookedTransformer, tokens: torch.Tensor, mask: torch.Tensor) -> float:
    total, n = 0.0, 0
    for s in range(0, len(tokens), 32):
        t, m = tokens[s : s + 32], mask[s : s + 32]
        per_tok = model(t, return_type="loss", loss_per_token=True, attention_mask=m)
        valid = m[:, 1:]
        total += float(per_tok[valid].sum())
        n += int(valid.sum())
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=TINY_MODEL_DIR)
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--batch-per-corpus", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--train-tokens-per-corpus", type=int, default=2_000_000)
    ap.add_argument(
        "--induction-steps",
        type=int,
        default=1000,
        help="steps of repeated random-token rows alone, before the text steps",
    )
    ap.add_argument(
        "--induction-rows",
        type=int,
        default=32,
        help="repeated random-token rows beside every text step (0: none)",
    )
    ap.add_argument(
        "--exclude",
        action="append",
        default=[],
        choices=CORPORA,
        help="leave a corpus out of the model's training (e.g. the forget corpus, "
        "for a retrained twin; the tokenizer still sees every corpus)",
    )
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    t0 = time.time()

    data = {c: TextDataset.from_source(c, name=c) for c in CORPORA}
    tok_texts = [t for c in CORPORA for t in data[c].fit[: 400 if c != "wikipedia" else None]]
    tokenizer = train_tokenizer(tok_texts, args.vocab)
    # TransformerLens re-loads the tokenizer by path (to add BOS), so it must come from disk.
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    tokenizer = AutoTokenizer.from_pretrained(args.out)
    print(f"tokenizer trained ({len(tokenizer)} tokens) in {time.time() - t0:.1f}s", flush=True)

    corpora = [c for c in CORPORA if c not in args.exclude]  # trained on
    # spread=False: whole documents one after another, the recipe the committed model used
    train = {
        c: data[c].tokenize(
            tokenizer,
            "fit",
            seq_len=args.seq_len,
            spread=False,
            max_tokens=args.train_tokens_per_corpus,
            seed=args.seed,
        )
        for c in CORPORA
    }
    test = {
        c: data[c].tokenize(
            tokenizer, "eval", seq_len=args.seq_len, max_tokens=40_000, seed=args.seed, spread=False
        )
        for c in CORPORA
    }
    print({c: train[c].n_tokens for c in CORPORA}, f"{time.time() - t0:.1f}s", flush=True)

    cfg_kwargs = dict(
        n_layers=2,
        d_model=128,
        n_heads=4,
        d_head=32,
        d_mlp=512,
        d_vocab=len(tokenizer),
        n_ctx=256,
        act_fn="gelu_new",
        normalization_type="LN",
        seed=args.seed,
        default_prepend_bos=True,
        model_name="tl-unlearn-tiny",
        positional_embedding_type="shortformer",
    )
    model = HookedTransformer(HookedTransformerConfig(**cfg_kwargs), tokenizer=tokenizer)
    gen = torch.Generator().manual_seed(args.seed)
    vocab, bos = induction_vocab(tokenizer), tokenizer.bos_token_id
    induction_eval = InductionTask().tokenize(tokenizer, "eval", max_tokens=64 * 49)
    log = []

    def induction_top1() -> float:
        """Top-1 on the scored second copy of the builtin ``induction`` task (eval rows)."""
        return evaluate(model, induction_eval, progress=False)["induction"].accuracy[1]

    def text_batch(per_corpus: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = {c: torch.randint(len(train[c]), (per_corpus,), generator=gen) for c in corpora}
        return (
            torch.cat([train[c].tokens[idx[c]] for c in corpora]),
            torch.cat([train[c].attention_mask[idx[c]] for c in corpora]),
        )

    def text_loss(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_tok = model(tokens, return_type="loss", loss_per_token=True, attention_mask=mask)
        return per_tok[mask[:, 1:]].mean()

    def update(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def record(phase: str, step: int, loss: torch.Tensor) -> None:
        log.append(
            {
                "phase": phase,
                "step": step,
                "loss": float(loss),
                "induction_top1": induction_top1(),
                "seconds": time.time() - t0,
            }
        )
        print(log[-1], flush=True)

    def induction_rows(n: int) -> torch.Tensor:  # as long as the builtin task's rows
        return repeated_rows(vocab, bos, n, 49, (8, 24), gen)

    # Phase 1: repeated rows alone. With shortformer positions (and the unembedding starting
    # as the embedding, so copying is easy) the induction loss drops sharply after ~600 steps.
    with torch.no_grad():
        model.unembed.W_U.copy_(model.W_E.T)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for step in range(args.induction_steps):
        loss = model(induction_rows(64), return_type="loss")
        update(loss, opt)
        if step % 100 == 0 or step == args.induction_steps - 1:
            record("induction", step, loss)
    # Phase 2: text of every trained corpus, balanced, and repeated rows beside it (their
    # loss added with equal weight, which keeps the circuit).
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
        ),
    )
    for step in range(args.steps):
        loss = text_loss(*text_batch(args.batch_per_corpus))
        if args.induction_rows:
            loss = loss + model(induction_rows(args.induction_rows), return_type="loss")
        update(loss, opt)
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            record("text", step, loss)

    model.eval()
    results = {
        c: {
            "heldout_loss": heldout_loss(model, test[c].tokens, test[c].attention_mask),
            "unigram_loss": unigram_loss(
                train[c].tokens,
                train[c].attention_mask,
                test[c].tokens,
                test[c].attention_mask,
                len(tokenizer),
            ),
        }
        for c in CORPORA
    }
    results["induction"] = {"top1": induction_top1()}
    print(json.dumps(results, indent=1))
    (args.out / "config.json").write_text(json.dumps(cfg_kwargs, indent=1))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(args.out / "model.safetensors"),
    )
    (args.out / "train_log.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "heldout": results,
                "curve": log,
                "seconds": time.time() - t0,
                "torch": torch.__version__,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
