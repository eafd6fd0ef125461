"""Pre-tokenized token files as a document source: billions of tokens without a text in memory.

`--data PATH` where PATH is a token file or a folder of them (recursive, sorted by path; a folder holds
token files only):
- `.npy` in NumPy's own format (any integer dtype; read with np.load's memory map), or
- a raw array of token ids without a header, as dolma's tokenizer writes the `.npy` files of OLMo's data
  mixes (and `.bin`): memory-mapped with `data.token_dtype` (default uint32, dolma's for vocabularies of
  more than 65,536 tokens; uint16 for smaller ones).
Documents are separated by the tokenizer's EOS id (dolma writes one after every document); each document is
yielded as its ids without the EOS, which the loader appends again. The ids must be the training
tokenizer's: ids outside its vocabulary are refused at open (checked on each file's first 2**20 tokens).
The document index (EOS positions) is found by one pass over each file, in chunks, and kept under
$LONGCTX_CACHE/token-index (default ~/.cache/longctx/token-index), read back memory-mapped, so the ranks of
a job and later jobs scan each file once; a file changed since (size or time) is scanned again.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from longctx.data.docsource import IndexedSource
from longctx.errors import UsageError

DTYPES = ("uint16", "uint32", "int32", "int64")  # data.token_dtype: what a raw token file may hold
TOKEN_EXTS = (".npy", ".bin")
NPY_MAGIC = b"\x93NUMPY"
SCAN = 1 << 26  # tokens per chunk of the EOS scan (256 MiB of uint32)
CHECK = 1 << 20  # tokens per file checked against the vocabulary


def is_token_path(path: str | os.PathLike) -> bool:
    """A token file, or a folder whose data files are token files."""
    p = Path(path)
    if p.is_file():
        return p.suffix in TOKEN_EXTS
    return p.is_dir() and any(f.suffix in TOKEN_EXTS for f in p.rglob("*") if f.is_file())


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = sorted(f for f in root.rglob("*") if f.is_file() and not f.name.startswith("."))
    other = [f for f in files if f.suffix not in TOKEN_EXTS]
    if other:
        raise UsageError(
            f"data folder {str(root)!r} mixes token files with others ({other[0].name}); give token files "
            f"({', '.join(TOKEN_EXTS)}) alone"
        )
    return files


def open_tokens(path: Path, dtype: str) -> np.ndarray:
    """A read-only memory map of the file's token ids: NumPy's format when it has the header, else raw `dtype`."""
    with open(path, "rb") as f:
        has_header = f.read(len(NPY_MAGIC)) == NPY_MAGIC
    if has_header:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise UsageError(f"token file {str(path)!r}: a {arr.ndim}-d {arr.dtype} array; need 1-d integer ids")
        return arr
    if dtype not in DTYPES:
        raise UsageError(f"data.token_dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    size, item = path.stat().st_size, np.dtype(dtype).itemsize
    if size % item:
        raise UsageError(
            f"token file {str(path)!r}: {size} bytes is not a whole number of {dtype} ids; set data.token_dtype"
        )
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)


def doc_spans(arr: np.ndarray, eos: int) -> np.ndarray:
    """[n, 2] (start, end) of the documents between EOS ids (end excludes the EOS); a last document without
    a closing EOS counts too; empty ones (two EOS in a row) are left out."""
    ends = [np.flatnonzero(np.asarray(arr[s : s + SCAN]) == eos) + s for s in range(0, len(arr), SCAN)]
    ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], ends + 1])
    ends = np.concatenate([ends, [len(arr)]])
    spans = np.stack([starts, ends], axis=1).astype(np.int64)
    return spans[spans[:, 1] > spans[:, 0]]


def cache_dir() -> Path:
    """Where document indexes are kept: $LONGCTX_CACHE/token-index, else ~/.cache/longctx/token-index."""
    root = os.environ.get("LONGCTX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "longctx")
    return Path(root) / "token-index"


@functools.lru_cache(maxsize=64)
def file_spans(path: str, size: int, mtime_ns: int, dtype: str, eos: int) -> np.ndarray:
    """doc_spans of one token file, kept on disk (keyed by the file's path, size, time, dtype and EOS id) and
    read back memory-mapped: a job's ranks and later jobs scan a file once, and share the index's pages."""
    key = hashlib.sha1(repr((path, size, mtime_ns, dtype, eos, 1)).encode()).hexdigest()
    cached = cache_dir() / f"{key}.npy"
    if cached.is_file():
        try:
            return np.load(cached, mmap_mode="r")
        except (OSError, ValueError):
            pass  # a torn or foreign file: scan again
    spans = doc_spans(open_tokens(Path(path), dtype), eos)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, spans)
        os.replace(tmp, cached)  # whole or not at all, whichever rank finishes first
    except OSError:
        pass  # an unwritable cache costs a scan per process, nothing else
    return spans


def token_source(path: str | os.PathLike, tokenizer, dtype: str = "uint32") -> IndexedSource:
    """The documents of a token file or folder (see the module docstring) as an IndexedSource of id arrays."""
    root = Path(path)
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    if eos is None:
        raise UsageError("token files are split at the tokenizer's EOS id, and this tokenizer has none")
    files = _files(root)
    arrays = [open_tokens(f, dtype) for f in files]
    for f, arr in zip(files, arrays, strict=True):
        head = np.asarray(arr[:CHECK])
        if not len(head):
            continue
        hi, lo = int(head.max()), int(head.min())
        if hi >= vocab or lo < 0:
            raise UsageError(
                f"token file {str(f)!r}: id {hi if hi >= vocab else lo} is outside the tokenizer's vocabulary "
                f"(0..{vocab - 1}); tokenized with another tokenizer, or a raw file whose data.token_dtype is not "
                f"{arr.dtype}?"
            )
    spans = []
    for f in files:
        st = f.stat()
        spans.append(file_spans(str(f.resolve()), st.st_size, st.st_mtime_ns, dtype, int(eos)))
    first = np.cumsum([0] + [len(x) for x in spans])  # global index of each file's first document

    def get_many(idx: list[int]) -> list[np.ndarray]:
        out = []
        for i in idx:
            k = int(np.searchsorted(first, i, side="right")) - 1
            s, e = spans[k][i - first[k]]
            out.append(np.asarray(arrays[k][s:e], dtype=np.int64))
        return out

    return IndexedSource(int(first[-1]), get_many, str(root))
