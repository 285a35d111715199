import json

import datasets
import pytest
import torch

from tl_unlearn.data.corpora import BUILTIN_CORPORA
from tl_unlearn.data.datasets import TextDataset, TokenDataset
from tl_unlearn.data.tasks import make_task


@pytest.mark.parametrize("name", sorted(BUILTIN_CORPORA))
def test_builtin_fit_and_eval_splits_share_no_text(name):
    ds = TextDataset.from_source(name)
    assert ds.fit and ds.eval
    assert not set(ds.fit) & set(ds.eval)
    # no eval document is contained in a fit document or vice versa (beyond exact equality)
    fit_blob = "\x00".join(ds.fit)
    assert not any(len(d) > 50 and d in fit_blob for d in ds.eval)
    share = len(ds.eval) / (len(ds.fit) + len(ds.eval))
    assert 0.1 < share < 0.3
    again = TextDataset.from_source(name)
    assert again.fit == ds.fit and again.eval == ds.eval


def test_duplicates_go_to_one_split_and_order_does_not_matter():
    docs = [f"document number {i}" for i in range(200)]
    a = TextDataset.from_source(docs + docs[:50])
    b = TextDataset.from_source(list(reversed(docs)))
    assert sorted(a.fit) == sorted(b.fit) and sorted(a.eval) == sorted(b.eval)
    assert len(a.fit) + len(a.eval) == 200


def test_sources_list_dataset_txt_jsonl_dir(tmp_path):
    texts = [f"text {i} " * 5 for i in range(40)]
    (tmp_path / "d").mkdir()
    for i, t in enumerate(texts):
        (tmp_path / "d" / f"{i}.txt").write_text(t)
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in texts))
    (tmp_path / "x.json").write_text(json.dumps(texts))
    variants = [
        TextDataset.from_source(texts),
        TextDataset.from_source(datasets.Dataset.from_dict({"text": texts})),
        TextDataset.from_source(tmp_path / "d"),
        TextDataset.from_source(tmp_path / "x.jsonl", text_column="body"),
        TextDataset.from_source(str(tmp_path / "x.json")),
    ]
    for v in variants:
        assert sorted(v.fit + v.eval) == sorted(texts)
        assert sorted(v.eval) == sorted(variants[0].eval)


def test_empty_and_too_small_sources_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no non-empty documents"):
        TextDataset.from_source(["", "   "])
    with pytest.raises(ValueError, match="too few"):
        TextDataset.from_source(["only one document"])
    with pytest.raises(ValueError, match="neither a builtin corpus"):
        TextDataset.from_source(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="no column 'text'"):
        TextDataset.from_source(datasets.Dataset.from_dict({"body": ["a", "b"]}))


def test_tokenize_chunks_bos_budget_and_masks(tiny_model):
    tok = tiny_model.tokenizer
    ds = TextDataset.from_source("kjv")
    td = ds.tokenize(tok, "eval", seq_len=32, max_tokens=1000)
    assert td.tokens.shape[1] == 32
    assert (td.tokens[:, 0] == tok.bos_token_id).all()
    assert td.n_tokens <= 1000 and td.n_tokens > 900
    # masks are a prefix of ones; padding carries the pad id
    m = td.attention_mask
    assert (m.int().diff(dim=1) <= 0).all()
    assert (td.tokens[~m] == tok.pad_token_id).all()
    # the chunk text is a piece of one eval document
    text = tok.decode(td.tokens[0, 1:][m[0, 1:]])
    assert any(text[:40] in d for d in ds.eval)
    # seeded and deterministic
    assert torch.equal(td.tokens, ds.tokenize(tok, "eval", seq_len=32, max_tokens=1000).tokens)
    assert not torch.equal(
        td.tokens, ds.tokenize(tok, "eval", seq_len=32, max_tokens=1000, seed=1).tokens
    )


def test_tokenize_errors(tiny_model):
    tok = tiny_model.tokenizer
    ds = TextDataset.from_source([f"w{i}" for i in range(30)])
    with pytest.raises(ValueError, match="n_ctx=256"):
        ds.tokenize(tok, seq_len=512, n_ctx=tiny_model.cfg.n_ctx)
    with pytest.raises(ValueError, match="too short"):
        ds.tokenize(tok, seq_len=64, min_chunk_tokens=8)
    with pytest.raises(ValueError, match="split"):
        ds.tokenize(tok, "test")


def test_batches_trim_padding_and_cover_all_rows():
    tokens = torch.arange(24).reshape(4, 6)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 2 + [0] * 4, [1] * 2 + [0] * 4]).bool()
    td = TokenDataset("x", tokens, mask)
    out = list(td.batches(2))
    assert [t.shape for t, _ in out] == [torch.Size([2, 6]), torch.Size([2, 2])]
    assert td.n_predictions == 5 + 2 + 1 + 1
    with pytest.raises(ValueError, match="empty"):
        TokenDataset("x", torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.bool))


def test_make_task_defaults_and_extra():
    task = make_task(extra_retain={"bible": "kjv"})
    assert set(task.datasets()) == {"forget", "retain", "bible"}
    assert "def " in task.forget.fit[0] or "import" in task.forget.fit[0]


def test_tokenize_spreads_the_budget_over_documents(tiny_model):
    """One chunk of every document before a second chunk of any; each row is a real chunk
    of the document it names; spread=False takes documents whole, one after another."""
    tok = tiny_model.tokenizer
    docs = [" ".join(f"w{d}x{i}" for i in range(40 + 7 * d)) for d in range(6)]
    ds = TextDataset("docs", fit=docs, eval=docs)
    full = {d: tok(t, add_special_tokens=False)["input_ids"] for d, t in enumerate(docs)}
    few = ds.tokenize(tok, "eval", seq_len=16, max_tokens=60)
    assert few.n_documents == len(few) == 4  # 4 sequences from 4 different documents
    many = ds.tokenize(tok, "eval", seq_len=16, max_tokens=None)
    counts = torch.bincount(many.document).tolist()
    chunks = [
        len([s for s in range(0, len(full[d]), 15) if len(full[d][s : s + 15]) >= 7])
        for d in range(6)
    ]
    assert counts == chunks  # everything, each chunk once
    for row in range(len(many)):
        body = many.tokens[row, 1:][many.attention_mask[row, 1:]].tolist()
        ids = full[int(many.document[row])]
        assert any(ids[s : s + len(body)] == body for s in range(0, len(ids), 15))
    budget = ds.tokenize(tok, "eval", seq_len=16, max_tokens=16 * 8)
    per_doc = torch.bincount(budget.document, minlength=6)
    assert per_doc.max() - per_doc.min() <= 1
    whole = ds.tokenize(tok, "eval", seq_len=16, max_tokens=16 * 8, spread=False)
    assert whole.n_documents < budget.n_documents
    assert (
        torch.equal(whole.document, torch.sort(whole.document, stable=True).values)
        or len(torch.unique_consecutive(whole.document)) == whole.n_documents
    )
    assert whole.rows(slice(0, 2)).document.tolist() == whole.document[:2].tolist()
