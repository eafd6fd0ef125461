"""Essay haystacks: the Paul Graham essays RULER uses, a local folder, or the bundled text.

A haystack is a list of words (RULER splits the essays on whitespace) plus the sentence
boundaries a regex splitter finds between them; RULER inserts needles between sentences.
Nothing is downloaded at import time.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataUnavailable

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
PAUL_GRAHAM_DATASET = "baber/paul_graham_essays"  # what lm-eval's ruler loads; NVIDIA scrapes the same essays
BUNDLED = DATA_DIR / "botchan.txt"
HAYSTACKS = ("auto", "paul_graham", "bundled")

# Words after which a period does not end a sentence.
_ABBREV = {
    "mr.",
    "mrs.",
    "ms.",
    "dr.",
    "prof.",
    "st.",
    "jr.",
    "sr.",
    "vs.",
    "etc.",
    "e.g.",
    "i.e.",
    "no.",
    "inc.",
    "co.",
    "ltd.",
    "mt.",
    "cf.",
    "al.",
    "fig.",
    "vol.",
    "approx.",
    "u.s.",
}
_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
_START = re.compile(r"[\"'\u201c\u2018(\[]*[A-Z0-9]")


def sentence_starts(words: list[str]) -> np.ndarray:
    """starts[j] is True when word j begins a sentence (word 0 always does)."""
    starts = np.zeros(len(words), dtype=bool)
    if words:
        starts[0] = True
    for j in range(1, len(words)):
        starts[j] = _ends_sentence(words[j - 1]) and bool(_START.match(words[j]))
    return starts


def _ends_sentence(word: str) -> bool:
    if not _END.search(word):
        return False
    bare = word.lower().strip("\"'\u201c\u201d\u2018\u2019()[]")
    if bare in _ABBREV:
        return False
    # an initial such as "J." or "R." inside a name
    return not re.fullmatch(r"[A-Za-z]\.", bare)


def split_sentences(text: str) -> list[str]:
    """Regex sentence splitter over whitespace-normalised text (used in place of nltk punkt)."""
    words = re.sub(r"\s+", " ", text).strip().split(" ")
    if words == [""]:
        return []
    starts = np.flatnonzero(sentence_starts(words)).tolist() + [len(words)]
    return [" ".join(words[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]


@dataclass(frozen=True)
class Haystack:
    source: str  # where the text came from, recorded in every sample
    digest: str  # sha256 of the normalised text
    words: tuple[str, ...]
    starts: np.ndarray  # sentence starts over one period of `words`
    wrap_starts: bool  # does words[0] start a sentence when the haystack repeats?

    def word(self, j: int) -> str:
        return self.words[j % len(self.words)]

    def text(self, a: int, b: int) -> str:
        """Words a..b-1 of the endlessly repeated haystack joined by spaces (RULER repeats it)."""
        w = len(self.words)
        if b <= w:
            return " ".join(self.words[a:b])
        return " ".join(self.words[j % w] for j in range(a, b))

    def sentence_starts_upto(self, n: int) -> np.ndarray:
        """Word indices < n that start a sentence of the repeated haystack."""
        w = len(self.words)
        base = np.flatnonzero(self.starts)
        reps = -(-n // w)
        out = [base]
        for k in range(1, reps):
            block = base + k * w
            out.append(block if self.wrap_starts else block[block != k * w])
        idx = np.concatenate(out)
        return idx[idx < n]


def _from_text(text: str, source: str) -> Haystack:
    words = tuple(re.sub(r"\s+", " ", text).strip().split(" "))
    if len(words) < 100:
        raise DataUnavailable(f"haystack {source} has only {len(words)} words")
    digest = hashlib.sha256(" ".join(words).encode()).hexdigest()[:16]
    starts = sentence_starts(list(words))
    wrap = _ends_sentence(words[-1]) and bool(_START.match(words[0]))
    return Haystack(source=source, digest=digest, words=words, starts=starts, wrap_starts=wrap)


@functools.lru_cache(maxsize=8)
def load_haystack(haystack: str = "auto", haystack_dir: str | None = None) -> Haystack:
    """The essay haystack: `haystack_dir` (a folder of .txt files, or one file) if given, else
    the Paul Graham essays (`paul_graham`), the bundled public-domain text (`bundled`), or the
    essays falling back to the bundled text when they cannot be loaded (`auto`)."""
    if haystack_dir:
        path = Path(haystack_dir).expanduser().resolve()
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise DataUnavailable(f"haystack_dir {path} has no .txt files")
        text = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        return _from_text(text, f"dir:{path}")
    if haystack not in HAYSTACKS:
        raise ValueError(f"haystack={haystack!r}; accepted: {', '.join(HAYSTACKS)} (or haystack_dir=PATH)")
    if haystack in ("auto", "paul_graham"):
        try:
            return _from_text(_paul_graham_text(), f"hf:{PAUL_GRAHAM_DATASET}")
        except DataUnavailable as err:
            if haystack == "paul_graham":
                raise
            log.warning("%s; using the bundled public-domain haystack instead", err)
    return _from_text(BUNDLED.read_text(encoding="utf-8"), "bundled:botchan")


def _hub_unreachable(timeout: float = 3.0) -> bool:
    """True when the Hub's host does not accept a TCP connection within `timeout` seconds, so that an
    offline machine gives up at once instead of after the hub client's retries (about 23 s). Behind a
    proxy the direct connection says nothing: then the client decides (False)."""
    if any(
        os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
    ):
        return False
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection(
            (url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout=timeout
        ).close()
        return False
    except OSError:
        return True


def _hub_cached(dataset: str) -> bool:
    """Whether the dataset's files are in the local Hub cache (then loading it offline can work)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return (Path(HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}").is_dir()


def _paul_graham_text() -> str:
    if not offline() and not _hub_cached(PAUL_GRAHAM_DATASET) and _hub_unreachable():
        raise DataUnavailable(
            f"Paul Graham essays ({PAUL_GRAHAM_DATASET}) unavailable: the Hub is unreachable "
            "and they are not in the local cache"
        )
    try:
        import datasets

        rows = datasets.load_dataset(PAUL_GRAHAM_DATASET, split="train")["text"]
    except Exception as err:  # offline, hub unreachable, dataset gone: all mean "not here"
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataUnavailable(f"Paul Graham essays ({PAUL_GRAHAM_DATASET}) unavailable: {msg}") from err
    return " ".join(rows)


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
