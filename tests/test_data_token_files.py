"""Token files as training data (longctx.data.token_files): NumPy `.npy` and raw (dolma-style) id arrays split
at EOS give the documents they hold, and the loader's batches from them equal its batches from the same
documents as texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from longctx.cli import main
from longctx.data import build_loader, default_tokenizer, list_source, open_source
from longctx.errors import UsageError

TEXTS = [f"Document {i}: " + " ".join(f"word{i * 7 + j}" for j in range(3 + 5 * (i % 4))) for i in range(23)]


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


@pytest.fixture(autouse=True)
def index_cache(tmp_path, monkeypatch):
    from longctx.data import token_files

    monkeypatch.setenv("LONGCTX_CACHE", str(tmp_path / "cache"))
    token_files.file_spans.cache_clear()
    return tmp_path / "cache" / "token-index"


def ids_of(tok, texts):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def flat(docs, eos, trailing=True):
    """Documents joined with EOS after each (dolma's layout); trailing=False leaves the last one open."""
    out = []
    for d in docs:
        out += list(d) + [eos]
    return out if trailing else out[:-1]


def docs_of(src):
    return [list(map(int, d)) for _, d in src.iter_epoch(0, seed=0, shuffle=False)]


@pytest.mark.parametrize("form", ["npy", "raw-uint32", "raw-uint16", "bin"])
def test_files_give_back_their_documents(tmp_path, tok, form):
    docs = ids_of(tok, TEXTS[:5])
    ids = flat(docs[:2], tok.eos_token_id) + [tok.eos_token_id] + flat(docs[2:], tok.eos_token_id, trailing=False)
    dtype = "uint16" if form == "raw-uint16" else "uint32"
    path = tmp_path / ("t.bin" if form == "bin" else "t.npy")
    if form == "npy":
        np.save(path, np.array(ids, dtype=np.uint32))
    else:
        np.array(ids, dtype=dtype).tofile(path)
    src = open_source(str(path), tokenizer=tok, token_dtype=dtype)
    assert docs_of(src) == docs  # the empty document (two EOS in a row) is no document; the open last one is


def test_a_folder_of_files_and_bad_files(tmp_path, tok):
    docs, eos = ids_of(tok, TEXTS), tok.eos_token_id
    (tmp_path / "d" / "sub").mkdir(parents=True)
    np.array(flat(docs[:10], eos), np.uint32).tofile(tmp_path / "d" / "a.npy")
    np.save(tmp_path / "d" / "sub" / "b.npy", np.array(flat(docs[10:], eos), np.int64))
    assert docs_of(open_source(str(tmp_path / "d"), tokenizer=tok)) == docs
    (tmp_path / "d" / "c.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(UsageError, match="mixes token files with others"):
        open_source(str(tmp_path / "d"), tokenizer=tok)
    odd = tmp_path / "odd.npy"
    odd.write_bytes(b"\x01\x02\x03")
    with pytest.raises(UsageError, match="not a whole number of uint32 ids; set data.token_dtype"):
        open_source(str(odd), tokenizer=tok)
    wide = tmp_path / "wide.npy"
    np.array([5, len(tok) + 3, eos], np.uint32).tofile(wide)
    with pytest.raises(UsageError, match=f"id {len(tok) + 3} is outside the tokenizer's vocabulary"):
        open_source(str(wide), tokenizer=tok)
    with pytest.raises(UsageError, match="no such file"):
        open_source(str(tmp_path / "missing.npy"), tokenizer=tok)


@pytest.mark.parametrize("doc_mask", [True, False])
def test_loader_batches_equal_the_texts_batches(tmp_path, tok, doc_mask):
    """Same documents, same seed: the token files' loader yields the batches the text loader yields, and
    resumes from its state at the same place."""
    np.array(flat(ids_of(tok, TEXTS), tok.eos_token_id), np.uint32).tofile(tmp_path / "t.npy")
    kw = {"seed": 3, "doc_mask": doc_mask}
    a = build_loader(str(tmp_path / "t.npy"), tok, seq_len=32, batch_size=2, **kw)
    b = build_loader(list_source(TEXTS), tok, seq_len=32, batch_size=2, **kw)
    got, want = [], []
    for x, y, _ in zip(a, b, range(12), strict=False):
        got.append(x)
        want.append(y)
    assert len(got) == 12
    for x, y in zip(got, want, strict=True):
        assert x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x if hasattr(x[k], "shape"))
    state = a.state_dict()
    c = build_loader(str(tmp_path / "t.npy"), tok, seq_len=32, batch_size=2, **kw)
    c.load_state_dict(state)
    assert (next(iter(c))["input_ids"] == next(iter(a))["input_ids"]).all()


def test_pretrain_on_token_files(tmp_path, tok, capsys):
    eos = tok.eos_token_id
    np.array(flat(ids_of(tok, TEXTS * 3), eos), np.uint32).tofile(tmp_path / "t.npy")
    common = ["pretrain", "--model", "hybrid-tiny", "--seq-len", "64", "--batch-size", "2", "--device", "cpu"]
    common += ["--no-progress", "--data", str(tmp_path / "t.npy")]
    assert main([*common, "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    config = yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text())
    assert config["data"]["source"] == str(tmp_path / "t.npy") and config["data"]["token_dtype"] == "uint32"
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["tokens"] == 2 * 2 * 64
    capsys.readouterr()
    bad = [*common, "--steps", "2", "--out", str(tmp_path / "bad"), "--set", "data.token_dtype=float32"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.token_dtype" in err[0] and "float32" in err[0]
    assert not (tmp_path / "bad").exists()


def test_the_document_index_is_scanned_once_and_kept(tmp_path, tok, index_cache, monkeypatch):
    """Each file's EOS scan is kept on disk: a new process (here: the in-process cache cleared) reads it back
    instead of scanning; a file that changed is scanned again; an unwritable cache only costs the scan."""
    from longctx.data import token_files

    scans = []
    real = token_files.doc_spans
    monkeypatch.setattr(token_files, "doc_spans", lambda arr, eos: scans.append(len(arr)) or real(arr, eos))
    eos, docs = tok.eos_token_id, ids_of(tok, TEXTS)
    path = tmp_path / "t.npy"
    np.array(flat(docs, eos), np.uint32).tofile(path)
    assert docs_of(open_source(str(path), tokenizer=tok)) == docs and len(scans) == 1
    assert len(list(index_cache.glob("*.npy"))) == 1
    token_files.file_spans.cache_clear()
    assert docs_of(open_source(str(path), tokenizer=tok)) == docs and len(scans) == 1  # read back, not scanned
    np.array(flat(docs[:5], eos), np.uint32).tofile(path)  # rewritten: another size
    token_files.file_spans.cache_clear()
    assert docs_of(open_source(str(path), tokenizer=tok)) == docs[:5] and len(scans) == 2
    monkeypatch.setenv("LONGCTX_CACHE", str(path))  # a file, not a folder: nothing can be written there
    token_files.file_spans.cache_clear()
    assert docs_of(open_source(str(path), tokenizer=tok)) == docs[:5] and len(scans) == 3


def test_ranks_read_disjoint_documents_that_cover_the_file(tmp_path, tok):
    """Data parallel: rank r of 3 reads the stream positions p with p % 3 == r; together every document once."""
    docs = ids_of(tok, TEXTS)
    np.array(flat(docs, tok.eos_token_id), np.uint32).tofile(tmp_path / "t.npy")
    src = open_source(str(tmp_path / "t.npy"), tokenizer=tok)
    seen = {}
    for rank in range(3):
        for pos, d in src.iter_epoch(0, seed=5, rank=rank, world_size=3):
            assert pos % 3 == rank and pos not in seen
            seen[pos] = list(map(int, d))
    assert sorted(map(tuple, seen.values())) == sorted(map(tuple, docs))
