"""On-disk cache of generated samples, so a rerun of the same evaluation starts at once.

Keyed by (generator version, task, length, seed, tokenizer fingerprint, chat template, data
sources); the sample count is not in the key because sample i never depends on how many are
generated, so a file with more samples serves any smaller request.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_root(opt) -> Path | None:
    if opt is False:
        return None
    if opt:
        return Path(opt).expanduser()
    env = os.environ.get("LONGCTX_RULER_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longctx" / "ruler"


def _path(key: dict, root: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return root / "samples" / f"{key['task']}-{key['max_seq_length']}-{digest}.jsonl.gz"


def load(key: dict, num_samples: int, opt=None) -> list[dict] | None:
    root = cache_root(opt)
    if root is None:
        return None
    path = _path(key, root)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            head = json.loads(f.readline())
            if head.get("key") != key or head.get("count", 0) < num_samples:
                return None
            return [json.loads(f.readline()) for _ in range(num_samples)]
    except (OSError, ValueError, EOFError):
        return None


def save(key: dict, samples: list[dict], opt=None) -> None:
    root = cache_root(opt)
    if root is None or not samples:
        return
    path = _path(key, root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as f:
            f.write((json.dumps({"key": key, "count": len(samples)}) + "\n").encode())
            for s in samples:
                f.write((json.dumps(s, ensure_ascii=False) + "\n").encode())
        existing = load(key, len(samples) + 1, opt)  # keep a larger file another run wrote meanwhile
        if existing is None:
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    except OSError:
        pass  # a read-only or full disk only costs regeneration next time
