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
The document index (EOS positions) is found by one pass over each file, in chunks, once per process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from longctx.config import TOKEN_DTYPES as DTYPES
from longctx.data.sources import IndexedSource
from longctx.errors import UsageError

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


@functools.lru_cache(maxsize=8)
def _index(path: str, mtime_ns: int, dtype: str, eos: int) -> np.ndarray:
    """[n, 3] (file number, start, end) per document of every token file under path; one scan per process
    (the loader of each training stage opens the source again)."""
    parts = []
    for k, f in enumerate(_files(Path(path))):
        spans = doc_spans(open_tokens(f, dtype), eos)
        parts.append(np.concatenate([np.full((len(spans), 1), k, dtype=np.int64), spans], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)


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
        if len(head) and (int(head.max()) >= vocab or int(head.min()) < 0):
            bad = int(head.max()) if int(head.max()) >= vocab else int(head.min())
            raise UsageError(
                f"token file {str(f)!r}: id {bad} is outside the tokenizer's vocabulary (0..{vocab - 1}); "
                "tokenized with another tokenizer, or a raw file whose data.token_dtype is not "
                f"{arrays[0].dtype}?"
            )
    table = _index(str(root.resolve()), root.stat().st_mtime_ns, dtype, int(eos))

    def get_many(idx: list[int]) -> list[np.ndarray]:
        return [np.asarray(arrays[f][s:e], dtype=np.int64) for f, s, e in table[idx]]

    return IndexedSource(len(table), get_many, str(root))
