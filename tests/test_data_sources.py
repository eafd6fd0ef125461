"""Document sources: local jsonl/json/parquet/txt files and folders, HF dataset objects, specs, errors."""

import gzip
import json

import pytest
import torch

from longctx.data import build_loader, default_tokenizer, from_hf, local_source, open_source, parse_hf_spec
from longctx.errors import UsageError

TEXTS = ["First document, short.", "Second one has 12345 digits.", "", "Fourth: with\nnew lines.", "fifth"]


def read_all(src):
    return [t for _, t in src.iter_epoch(0, seed=0, shuffle=False)]


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def test_jsonl_with_custom_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"id": i, "content": t}) for i, t in enumerate(TEXTS)) + "\n\n")
    assert read_all(local_source(p, text_field="content")) == TEXTS
    with pytest.raises(UsageError, match=r"d\.jsonl:1: no text field 'text' \(fields: id, content\)"):
        local_source(p)


def test_json_array_and_gzip(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"text": t} for t in TEXTS]))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps({"text": t}) for t in TEXTS))
    assert read_all(local_source(tmp_path / "a.json")) == TEXTS
    assert read_all(local_source(tmp_path / "b.jsonl.gz")) == TEXTS


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": TEXTS, "n": list(range(len(TEXTS)))}), tmp_path / "d.parquet")
    assert read_all(local_source(tmp_path / "d.parquet", text_field="body")) == TEXTS
    with pytest.raises(UsageError, match="no text column 'text'.*body, n"):
        local_source(tmp_path / "d.parquet")


def test_txt_splits(tmp_path):
    p = tmp_path / "book.txt"
    p.write_text("Para one line one.\nPara one line two.\n\n\nPara two.\n")
    assert read_all(local_source(p)) == [p.read_text()]
    assert read_all(local_source(p, txt_split="paragraph")) == ["Para one line one.\nPara one line two.", "Para two."]
    assert read_all(local_source(p, txt_split="line")) == ["Para one line one.", "Para one line two.", "Para two."]
    with pytest.raises(UsageError, match="txt_split 'page'"):
        local_source(p, txt_split="page")


def test_folder_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n")
    (tmp_path / "notes.csv").write_text("ignored")
    assert read_all(local_source(tmp_path)) == ["one", "two"]


def test_local_file_through_the_loader(tmp_path, tok):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    batches = list(build_loader(str(p), tok, 8, 2, shuffle=False, num_epochs=1))
    stream = []
    for t in TEXTS:
        if t:  # empty texts are not documents
            stream += tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]
    got = torch.cat([b["input_ids"].flatten() for b in batches]).tolist()
    assert len(got) == (len(stream) - 1) // 16 * 16 and got == stream[: len(got)]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda d: d / "empty.jsonl", "has no documents"),
        (lambda d: d / "missing.jsonl", "no such file or folder"),
        (lambda d: d / "emptydir", "has no data files"),
        (lambda d: d / "x.csv", "unknown type"),
    ],
)
def test_empty_or_missing_local_source(tmp_path, tok, make, match):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "x.csv").write_text("a,b")
    path = make(tmp_path)
    with pytest.raises(UsageError, match=match) as e:
        build_loader(str(path), tok, 8, 1)
    assert str(path) in str(e.value)


def test_only_empty_texts_raise_when_iterated(tmp_path, tok):
    p = tmp_path / "blank.jsonl"
    p.write_text(json.dumps({"text": ""}) + "\n")
    loader = build_loader(str(p), tok, 8, 1)
    with pytest.raises(UsageError, match=f"{p}.*has no documents"):
        next(iter(loader))


def test_list_empty_raises(tok):
    with pytest.raises(UsageError, match="'list' has no documents"):
        build_loader([], tok, 8, 1)


def test_hf_map_dataset_is_indexed(tok):
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["alpha beta"] * 3 + ["gamma"], "x": [1, 2, 3, 4]})
    src = from_hf(ds, name="toy")
    assert len(src) == 4 and read_all(src) == ["alpha beta"] * 3 + ["gamma"]
    with pytest.raises(UsageError, match="no text field 'body'"):
        from_hf(ds, name="toy", text_field="body")
    with pytest.raises(UsageError, match="has no documents"):
        from_hf(datasets.Dataset.from_dict({"text": []}), name="none")


def test_hf_streaming_resume_and_epochs(tok):
    import datasets

    texts = [f"document number {i} " + "word " * (i % 7) for i in range(60)]
    ids = datasets.Dataset.from_dict({"text": texts}).to_iterable_dataset(num_shards=3)

    def make():
        return build_loader(ids, tok, 32, 2, seed=1)

    full = [next(it) for it in [iter(make())] for _ in range(12)]
    first = make()
    it = iter(first)
    for _ in range(7):
        next(it)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    it2 = iter(resumed)
    for want in full[7:]:
        got = next(it2)
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["labels"], want["labels"])
    # the seeded buffer shuffle differs between epochs but is a permutation of the data
    src = from_hf(ids, name="toy", shuffle_buffer=16)
    e0, e1 = [t for _, t in src.iter_epoch(0, seed=1)], [t for _, t in src.iter_epoch(1, seed=1)]
    assert sorted(e0) == sorted(e1) == sorted(texts) and e0 != e1


def test_hf_streaming_empty_raises_on_iteration(tok):
    import datasets

    ids = datasets.Dataset.from_dict({"text": ["", ""]}).to_iterable_dataset()
    with pytest.raises(UsageError, match="'empty-stream' has no documents"):
        next(iter(build_loader(from_hf(ids, name="empty-stream"), tok, 8, 1)))


@pytest.mark.parametrize(
    "spec,want",
    [
        ("allenai/c4", ("allenai/c4", None, None)),
        ("hf:allenai/c4:en@validation", ("allenai/c4", "en", "validation")),
        ("wikitext:wikitext-103-raw-v1@train", ("wikitext", "wikitext-103-raw-v1", "train")),
    ],
)
def test_parse_hf_spec(spec, want):
    assert parse_hf_spec(spec) == want


@pytest.mark.parametrize("spec", ["", "name@", "a:b:c"])
def test_parse_hf_spec_rejects(spec):
    with pytest.raises(UsageError, match="expected name"):
        parse_hf_spec(spec)


def test_hf_name_calls_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        return datasets.Dataset.from_dict({"text": ["x"]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    src = open_source("hf:org/set:cfg@validation", streaming=False)
    assert calls == [("org/set", "cfg", "validation", False)] and src.name == "org/set:cfg@validation"
    open_source("org/set", config="c2")
    assert calls[-1] == ("org/set", "c2", "train", True)
    with pytest.raises(UsageError, match="names split 'validation' but split='train'"):
        open_source("org/set@validation", split="train")


def test_unreachable_hf_dataset_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UsageError, match="dataset 'no-such-org/no-such-set@train' could not be loaded"):
        open_source("no-such-org/no-such-set")


def test_embedded_and_unknown_path_specs(tmp_path):
    assert open_source("embedded", doc_chars=(10, 20)).name == "embedded"
    with pytest.raises(UsageError, match="no such file or folder"):
        open_source("./nothing/here.jsonl")
