"""Document sources: local files, Hugging Face datasets, in-memory lists, the embedded corpus.

A source yields document texts for an epoch in a seeded order, starting at any stream position, so
the loader can resume from (epoch, position) alone. Indexed sources (local files, map-style HF
datasets, lists) shuffle with a per-epoch permutation and jump straight to a position; streaming
HF datasets shuffle with a seeded buffer and skip to a position by reading past it.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from longctx.data.docsource import DocSource, IndexedSource
from longctx.data.embedded import embedded_source
from longctx.data.token_files import TOKEN_EXTS, is_token_path, token_source
from longctx.errors import UsageError

TEXT_EXTS = (".txt", ".md", ".text")
JSON_EXTS = (".jsonl", ".ndjson", ".json")
PARQUET_EXTS = (".parquet",)
ACCEPTED = TEXT_EXTS + JSON_EXTS + PARQUET_EXTS
TXT_SPLITS = ("file", "paragraph", "line")


def list_source(texts: Sequence[str], name: str = "list") -> IndexedSource:
    texts = list(texts)
    return IndexedSource(len(texts), lambda idx: [texts[i] for i in idx], name)


# ---- local files ---------------------------------------------------------------------------------


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _kind(path: Path) -> str | None:
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    ext = suffixes[0].lower() if suffixes else ""
    if ext in TEXT_EXTS:
        return "txt"
    if ext in JSON_EXTS:
        return "json"
    if ext in PARQUET_EXTS and path.suffix != ".gz":
        return "parquet"
    return None


def _field(record, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        fields = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise UsageError(f"{where}: no text field {text_field!r} (fields: {fields}); set text_field")
    value = record[text_field]
    if not isinstance(value, str):
        raise UsageError(f"{where}: field {text_field!r} is {type(value).__name__}, expected a string")
    return value


def _read_json(path: Path, text_field: str) -> list[str]:
    with _open_text(path) as f:
        head = f.read(1)
        while head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == "[":  # a JSON array of records rather than JSON lines
            try:
                records = json.load(f)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}: not valid JSON ({e})") from None
            return [_field(r, text_field, f"{path}[{i}]") for i, r in enumerate(records)]
        out = []
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{lineno}: not valid JSON ({e})") from None
            out.append(_field(record, text_field, f"{path}:{lineno}"))
        return out


def _read_parquet(path: Path, text_field: str) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if text_field not in names:
        raise UsageError(f"{path}: no text column {text_field!r} (columns: {', '.join(names)}); set text_field")
    return [t for t in pq.read_table(path, columns=[text_field]).column(text_field).to_pylist() if t is not None]


def _read_txt(path: Path, txt_split: str) -> list[str]:
    with _open_text(path) as f:
        content = f.read()
    if txt_split == "file":
        return [content]
    if txt_split == "paragraph":
        return [p.strip("\n") for p in re.split(r"\n\s*\n", content) if p.strip()]
    return [line for line in content.splitlines() if line.strip()]


def local_source(path: str | os.PathLike, text_field: str = "text", txt_split: str = "file") -> IndexedSource:
    """A jsonl/json/parquet/txt file (optionally .gz for text and JSON) or a folder of them (recursive,
    sorted by path). In a .txt file a document is the whole file, a paragraph, or a line (`txt_split`)."""
    if txt_split not in TXT_SPLITS:
        raise UsageError(f"txt_split {txt_split!r}; accepted: {', '.join(TXT_SPLITS)}")
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and _kind(p))
        if not files:
            raise UsageError(
                f"data folder {str(root)!r} has no data files; accepted: {', '.join(ACCEPTED)} (.gz for text/JSON)"
            )
    elif root.is_file():
        if not _kind(root):
            raise UsageError(
                f"data file {str(root)!r}: unknown type; accepted: {', '.join(ACCEPTED)} (.gz for text/JSON)"
            )
        files = [root]
    else:
        raise UsageError(f"data source {str(root)!r}: no such file or folder")
    docs: list[str] = []
    for f in files:
        kind = _kind(f)
        if kind == "json":
            docs += _read_json(f, text_field)
        elif kind == "parquet":
            docs += _read_parquet(f, text_field)
        else:
            docs += _read_txt(f, txt_split)
    return list_source(docs, name=str(root))


# ---- Hugging Face datasets -----------------------------------------------------------------------


class HFStreamSource(DocSource):
    """A streaming (iterable) HF dataset: seeded buffer shuffle, re-seeded each epoch."""

    def __init__(self, ds, name: str, text_field: str = "text", shuffle_buffer: int = 10_000):
        self.ds, self.name, self.text_field, self.shuffle_buffer = ds, name, text_field, shuffle_buffer

    def iter_epoch(
        self, epoch: int, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[int, str]]:
        ds = self.ds.shuffle(seed=seed, buffer_size=self.shuffle_buffer) if shuffle else self.ds
        ds.set_epoch(epoch)  # datasets derives the epoch's shuffle seed from seed + epoch
        # Every rank reads the whole stream (cheap next to tokenizing) and keeps its positions.
        for pos, ex in enumerate(itertools.islice(ds, start, None), start):
            if pos % world_size == rank:
                yield pos, _field(ex, self.text_field, f"{self.name} example {pos}")


def from_hf(ds, name: str | None = None, text_field: str = "text", shuffle_buffer: int = 10_000) -> DocSource:
    """Wrap a `datasets.Dataset` (indexed) or `datasets.IterableDataset` (streaming)."""
    import datasets

    name = name or getattr(getattr(ds, "info", None), "dataset_name", None) or "hf-dataset"
    if isinstance(ds, datasets.IterableDataset):
        return HFStreamSource(ds, name, text_field, shuffle_buffer)
    if isinstance(ds, datasets.Dataset):
        if text_field not in ds.column_names:
            raise UsageError(
                f"{name}: no text field {text_field!r} (fields: {', '.join(ds.column_names)}); set text_field"
            )
        col = ds.select_columns([text_field])
        return IndexedSource(len(col), lambda idx: col[idx][text_field], name)
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise UsageError(f"{name}: a dataset dict (splits {', '.join(ds)}); name a split, e.g. {name}@train")
    raise UsageError(f"{name}: unsupported dataset type {type(ds).__name__}")


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """'[hf:]name[:config][@split]' -> (name, config, split)."""
    spec = spec[3:] if spec.startswith("hf:") else spec
    split = None
    if "@" in spec:
        spec, split = spec.rsplit("@", 1)
    name, _, config = spec.partition(":")
    if not name or (split is not None and not split) or ":" in config:
        raise UsageError(f"dataset spec {spec!r}; expected name[:config][@split], e.g. allenai/c4:en@train")
    return name, config or None, split


def hf_source(
    name: str,
    config: str | None = None,
    split: str | None = "train",
    *,
    streaming: bool = True,
    text_field: str = "text",
    shuffle_buffer: int = 10_000,
) -> DocSource:
    """`datasets.load_dataset(name, config, split=split, streaming=streaming)` (needs the Hub)."""
    import datasets

    label = name + (f":{config}" if config else "") + f"@{split}"
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as e:  # noqa: BLE001 -- not found / offline / bad config: all a bad user value
        first = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(f"dataset {label!r} could not be loaded ({type(e).__name__}: {first})") from None
    return from_hf(ds, label, text_field, shuffle_buffer)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or _kind(Path(spec)) is not None or spec.endswith(TOKEN_EXTS)


def open_source(
    spec,
    *,
    text_field: str = "text",
    split: str | None = None,
    config: str | None = None,
    streaming: bool | None = None,
    txt_split: str = "file",
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    tokenizer=None,
    doc_tokens=None,
    doc_chars=None,
    token_dtype: str = "uint32",
    **embedded_opts,
) -> DocSource:
    """Any accepted source -> DocSource.

    `spec`: a DocSource; a list of texts; a `datasets` object; "embedded" (the offline default);
    a local file or folder of texts, or of token ids (longctx.data.token_files: `.npy` / `.bin`, read raw
    as `token_dtype` without NumPy's header); or a Hugging Face dataset "[hf:]name[:config][@split]"
    (split/config may also be given as arguments; streaming by default).
    """
    if isinstance(spec, DocSource):
        return spec
    if isinstance(spec, (list, tuple)):
        return list_source(spec)
    if not isinstance(spec, (str, os.PathLike)):
        return from_hf(spec, text_field=text_field, shuffle_buffer=shuffle_buffer)
    spec = os.fspath(spec)
    if spec == "embedded":
        return embedded_source(seed, doc_tokens=doc_tokens, doc_chars=doc_chars, tokenizer=tokenizer, **embedded_opts)
    if os.path.exists(os.path.expanduser(spec)):
        if is_token_path(os.path.expanduser(spec)):
            if tokenizer is None:
                raise UsageError(f"data source {spec!r}: token files need the training tokenizer (its EOS id)")
            return token_source(os.path.expanduser(spec), tokenizer, token_dtype)
        return local_source(os.path.expanduser(spec), text_field=text_field, txt_split=txt_split)
    if _looks_like_path(spec) and not spec.startswith("hf:"):
        raise UsageError(f"data source {spec!r}: no such file or folder")
    name, cfg, spl = parse_hf_spec(spec)
    for what, a, b in (("config", cfg, config), ("split", spl, split)):
        if a is not None and b is not None and a != b:
            raise UsageError(f"dataset {spec!r} names {what} {a!r} but {what}={b!r} was also given")
    return hf_source(
        name,
        cfg or config,
        spl or split or "train",
        streaming=True if streaming is None else streaming,
        text_field=text_field,
        shuffle_buffer=shuffle_buffer,
    )
