"""SQuAD v2 dev and HotpotQA dev (distractor) for RULER's QA tasks, read as NVIDIA/RULER's qa.py
reads them, from a local cache; downloaded into it once when the network allows.

Offline without a cached file the data is unavailable (DataUnavailable), never silently empty.
A cache folder may hold NVIDIA's names (squad.json, hotpotqa.json) or the original ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root
from .errors import DataUnavailable
from .haystack import offline

log = logging.getLogger(__name__)

# The files NVIDIA's download_qa_dataset.sh and lm-eval's ruler fetch.
URLS = {
    "squad": "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json",
    "hotpotqa": "https://huggingface.co/datasets/namlh2004/hotpotqa/resolve/7e54db4656209750ff487f6fdf8e39a66dba136b/hotpot_dev_distractor_v1.json",
}
FILES = {"squad": ("squad.json", "dev-v2.0.json"), "hotpotqa": ("hotpotqa.json", "hotpot_dev_distractor_v1.json")}


@dataclass(frozen=True)
class QaData:
    source: str
    digest: str
    qas: tuple  # dicts: query, outputs, context (gold doc ids), more_context (same-article doc ids)
    docs: tuple  # document texts, sorted and deduplicated as NVIDIA does


def qa_root(cache_dir=None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    root = cache_root(None)
    return (root if root is not None else Path.home() / ".cache" / "longctx" / "ruler") / "qa"


@functools.lru_cache(maxsize=4)
def load_qa(dataset: str, cache_dir: str | None = None) -> QaData:
    if dataset not in URLS:
        raise ValueError(f"QA dataset {dataset!r}; accepted: {', '.join(URLS)}")
    root = qa_root(cache_dir)
    path = next((root / f for f in FILES[dataset] if (root / f).is_file()), None)
    if path is None:
        path = _download(dataset, root)
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
        qas, docs = (_read_squad if dataset == "squad" else _read_hotpotqa)(data)
    except (ValueError, KeyError, TypeError) as err:
        raise DataUnavailable(f"{path} is not a {dataset} file NVIDIA's reader accepts: {err}") from err
    name = {"squad": "SQuAD v2 dev", "hotpotqa": "HotpotQA dev distractor"}[dataset]
    return QaData(f"{name} ({path.name})", hashlib.sha256(raw).hexdigest()[:16], tuple(qas), tuple(docs))


def _download(dataset: str, root: Path) -> Path:
    where = f"{URLS[dataset]} (cache: {root})"
    if offline():
        raise DataUnavailable(f"{dataset} is not cached and HF offline mode is on; fetch {where}")
    try:
        with urllib.request.urlopen(URLS[dataset], timeout=60) as resp:
            raw = resp.read()
        json.loads(raw)
    except Exception as err:  # no network, a proxy page, a moved file: all mean "not here"
        raise DataUnavailable(f"{dataset} could not be downloaded from {where}: {err}") from err
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    path = root / FILES[dataset][0]
    os.replace(tmp, path)
    log.info("cached %s at %s", dataset, path)
    return path


def _read_squad(data: dict) -> tuple[list[dict], list[str]]:
    docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
    ids = {c: i for i, c in enumerate(docs)}
    qas = []
    for d in data["data"]:
        article = [ids[p["context"]] for p in d["paragraphs"]]
        for p in d["paragraphs"]:
            for qa in p["qas"]:
                if not qa["is_impossible"]:
                    me = ids[p["context"]]
                    qas.append(
                        {
                            "query": qa["question"],
                            "outputs": [a["text"] for a in qa["answers"]],
                            "context": [me],
                            "more_context": [i for i in article if i != me],
                        }
                    )
    return qas, docs


def _read_hotpotqa(data: list) -> tuple[list[dict], list[str]]:
    docs = sorted({f"{t}\n{''.join(p)}" for d in data for t, p in d["context"]})
    ids = {c: i for i, c in enumerate(docs)}
    qas = [
        {
            "query": d["question"],
            "outputs": [d["answer"]],
            "context": [ids[f"{t}\n{''.join(p)}"] for t, p in d["context"]],
            "more_context": [],
        }
        for d in data
    ]
    return qas, docs
