"""Train the tiny test model committed in ``tl_unlearn/assets/tiny`` (reproducible, CPU only).

What it does, deterministically given ``--seed``:
1. trains a 4,096-token byte-level BPE tokenizer on the *fit* splits of the four builtin
   corpora (Python stdlib code, Wikipedia, Shakespeare, KJV);
2. trains a 2-layer HookedTransformer (d_model 128, 4 heads, d_mlp 512, n_ctx 256) on
   balanced batches of those fit splits with AdamW;
3. evaluates held-out loss on every corpus's *eval* split and a unigram baseline, and writes
   ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``train_log.json``.

Usage::

    python scripts/train_tiny_model.py                 # ~10 minutes on 2 CPU cores
    python scripts/train_tiny_model.py --steps 50 --out /tmp/tiny   # quick check
    python scripts/train_tiny_model.py --exclude python_code --out tl_unlearn/assets/tiny_twin
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

from tl_unlearn.corpora import BUILTIN_CORPORA
from tl_unlearn.data import TextDataset
from tl_unlearn.models import TINY_MODEL_DIR, TINY_SPECIAL_TOKENS

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


def unigram_loss(train: torch.Tensor, train_mask: torch.Tensor, test: torch.Tensor,
                 test_mask: torch.Tensor, vocab: int) -> float:
    """Cross-entropy (nats) of an add-one unigram model fit on ``train`` targets, on ``test``."""
    counts = torch.bincount(train[:, 1:][train_mask[:, 1:]], minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[test[:, 1:][test_mask[:, 1:]]].mean())


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
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--train-tokens-per-corpus", type=int, default=2_000_000)
    ap.add_argument("--exclude", action="append", default=[], choices=CORPORA,
                    help="leave a corpus out of the model's training (e.g. the forget corpus, "
                         "for a retrained twin; the tokenizer still sees every corpus)")
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
    train = {c: data[c].tokenize(tokenizer, "fit", seq_len=args.seq_len, spread=False,
                                 max_tokens=args.train_tokens_per_corpus, seed=args.seed)
             for c in CORPORA}
    test = {c: data[c].tokenize(tokenizer, "eval", seq_len=args.seq_len, max_tokens=40_000,
                                seed=args.seed, spread=False) for c in CORPORA}
    print({c: train[c].n_tokens for c in CORPORA}, f"{time.time() - t0:.1f}s", flush=True)

    cfg_kwargs = dict(
        n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=len(tokenizer),
        n_ctx=256, act_fn="gelu_new", normalization_type="LN", seed=args.seed,
        default_prepend_bos=True, model_name="tl-unlearn-tiny",
    )
    model = HookedTransformer(HookedTransformerConfig(**cfg_kwargs), tokenizer=tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    for step in range(args.steps):
        idx = {c: torch.randint(len(train[c]), (args.batch_per_corpus,), generator=gen)
               for c in corpora}
        tokens = torch.cat([train[c].tokens[idx[c]] for c in corpora])
        mask = torch.cat([train[c].attention_mask[idx[c]] for c in corpora])
        per_tok = model(tokens, return_type="loss", loss_per_token=True, attention_mask=mask)
        loss = per_tok[mask[:, 1:]].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            log.append({"step": step, "loss": float(loss), "seconds": time.time() - t0})
            print(log[-1], flush=True)

    model.eval()
    results = {
        c: {
            "heldout_loss": heldout_loss(model, test[c].tokens, test[c].attention_mask),
            "unigram_loss": unigram_loss(train[c].tokens, train[c].attention_mask,
                                         test[c].tokens, test[c].attention_mask, len(tokenizer)),
        }
        for c in CORPORA
    }
    print(json.dumps(results, indent=1))
    (args.out / "config.json").write_text(json.dumps(cfg_kwargs, indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(args.out / "model.safetensors"))
    (args.out / "train_log.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "heldout": results,
         "curve": log, "seconds": time.time() - t0, "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main()
