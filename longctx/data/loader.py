"""The training data loader: documents -> tokens + EOS -> packed rows -> batches, resumable.

The data position is (epoch, document position in the epoch's stream, token offset inside that
document). Shuffling, sharding across ranks and long-document sampling are pure functions of
(seed, epoch, position), so restoring the position restores exactly the batches that follow.

Long-document sampling: a document longer than `long_doc_fraction * seq_len` tokens gets relative
sampling weight `long_doc_weight` (1 for the rest). It is applied by thinning, not by repeating:
with weight w > 1, long documents are all kept and each other document is kept with probability
1/w (w < 1: long documents kept with probability w). The share of long documents among those
trained on becomes p*w / (p*w + 1 - p) for a long share p, the same as repeating long documents
w times, but no document repeats within an epoch and no state beyond the position is needed.
The epoch still visits every document; an infinite run (the default) therefore sees every short
document too, only less often.
"""

from __future__ import annotations

import inspect
import itertools
from collections import deque

import numpy as np

from longctx.data import prefetch as _prefetch
from longctx.data.packing import pack_batch
from longctx.data.sources import DocSource, open_source
from longctx.data.tokenizer import load_tokenizer
from longctx.errors import UsageError

STATE_VERSION = 1
_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a fixed, platform-independent hash for per-document coin flips."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def uniform(*keys: int) -> float:
    """A deterministic number in [0, 1) from integer keys."""
    h = 0x1D0C5EED
    for k in keys:
        h = _mix64(h ^ (k & _M64))
    return (h >> 11) / float(1 << 53)


class Loader:
    """Iterable of batch dicts (see `longctx.data.packing.pack_batch`) with state_dict/load_state_dict.

    The state is the position after the last batch yielded: save it right after taking a batch.
    `prefetch=N` prepares N batches ahead without changing that, in a background thread, or with
    `prefetch_in="process"` in a forked process (off the training step's host thread and its GIL).
    Each rank (`rank` of `world_size`) reads its own share of documents and has its own state.
    """

    def __init__(
        self,
        source: DocSource,
        tokenizer,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        doc_mask: bool = True,
        long_doc_fraction: float | None = None,
        long_doc_weight: float = 1.0,
        num_epochs: int | None = None,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        add_bos: bool = False,
        prefetch: int = 0,
        prefetch_in: str = "thread",
        read_ahead: int = 32,
    ):
        if prefetch_in not in ("thread", "process"):
            raise UsageError(f"prefetch_in {prefetch_in!r}: need 'thread' or 'process'")
        for what, v in (("seq_len", seq_len), ("batch_size", batch_size), ("world_size", world_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UsageError(f"{what} {v!r}: need an integer >= 1")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise UsageError(f"rank {rank!r}: need 0 <= rank < world_size ({world_size})")
        if num_epochs is not None and (not isinstance(num_epochs, int) or num_epochs < 1):
            raise UsageError(f"num_epochs {num_epochs!r}: need None (endless) or an integer >= 1")
        if long_doc_fraction is not None and not long_doc_fraction > 0:
            raise UsageError(f"long_doc_fraction {long_doc_fraction!r}: need None or a number > 0")
        if not long_doc_weight > 0:
            raise UsageError(f"long_doc_weight {long_doc_weight!r}: need a number > 0")
        if tokenizer.eos_token_id is None:
            raise UsageError("tokenizer has no eos token; packing needs one between documents")
        if add_bos and tokenizer.bos_token_id is None:
            raise UsageError("add_bos=True but the tokenizer has no bos token")
        self.source, self.tokenizer = source, tokenizer
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.doc_mask, self.shuffle, self.add_bos = doc_mask, shuffle, add_bos
        self.long_doc_fraction, self.long_doc_weight = long_doc_fraction, float(long_doc_weight)
        self.num_epochs, self.rank, self.world_size = num_epochs, rank, world_size
        self.prefetch, self.prefetch_in, self.read_ahead = prefetch, prefetch_in, read_ahead
        self._pos = {"epoch": 0, "doc": 0, "offset": 0}
        self._batches = 0

    @property
    def tokens_per_batch(self) -> int:
        return self.seq_len * self.batch_size

    # ---- state -----------------------------------------------------------------------------

    def _identity(self) -> dict:
        return {
            "source": self.source.name,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def state_dict(self) -> dict:
        """JSON-serialisable position; identity fields guard against resuming a different stream."""
        return {"version": STATE_VERSION, **self._identity(), "batches": self._batches, **self._pos}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Resume at `state`'s position. strict=False skips the identity check (e.g. the data moved
        to another path), at the cost of the exact-resume guarantee if the stream really differs."""
        if state.get("version") != STATE_VERSION:
            raise UsageError(f"data state version {state.get('version')!r}; this build reads {STATE_VERSION}")
        for key, mine in self._identity().items():
            if strict and state.get(key) != mine:
                raise UsageError(f"data state was saved with {key}={state.get(key)!r}; this loader has {key}={mine!r}")
        self._pos = {k: int(state[k]) for k in ("epoch", "doc", "offset")}
        self._batches = int(state["batches"])

    # ---- documents -------------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> list[list[int]]:
        from transformers import PreTrainedTokenizerFast

        backend = getattr(self.tokenizer, "_tokenizer", None)
        if (
            isinstance(self.tokenizer, PreTrainedTokenizerFast)
            and hasattr(backend, "encode_batch_fast")
            and type(self.tokenizer)._encode_plus is PreTrainedTokenizerFast._encode_plus
        ):
            # What the plain fast tokenizer does anyway, minus the Python overhead and the
            # "sequence longer than model_max_length" warnings that whole books trigger.
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _ids(self, items: list) -> list:
        """Token ids of each document: texts are encoded (in one batch), id arrays (token files) pass as they are."""
        texts = [t for t in items if isinstance(t, str)]
        encoded = iter(self._encode(texts) if texts else [])
        return [next(encoded) if isinstance(t, str) else t for t in items]

    def is_long(self, n_tokens: int) -> bool:
        return self.long_doc_fraction is not None and n_tokens > self.long_doc_fraction * self.seq_len

    def _keep(self, epoch: int, pos: int, n_tokens: int) -> bool:
        w = self.long_doc_weight
        p = min(1.0, w) if self.is_long(n_tokens) else min(1.0, 1.0 / w)
        return p >= 1.0 or uniform(self.seed, epoch, pos) < p

    def _docs(self, epoch: int, pos: int):
        """(epoch, position, tokens incl. EOS) of this rank's kept documents, from (epoch, pos) on."""
        eos, bos = self.tokenizer.eos_token_id, self.tokenizer.bos_token_id
        while self.num_epochs is None or epoch < self.num_epochs:
            found = False
            stream = self.source.iter_epoch(
                epoch, self.seed, start=pos, shuffle=self.shuffle, rank=self.rank, world_size=self.world_size
            )
            while chunk := list(itertools.islice(stream, self.read_ahead)):
                chunk = [(p, t) for p, t in chunk if len(t)]  # empty texts are not documents
                for (p, _), ids in zip(chunk, self._ids([t for _, t in chunk]), strict=True):
                    if not len(ids):
                        continue
                    found = True
                    head = np.array([bos] if self.add_bos else [], np.int64)
                    toks = np.concatenate([head, np.asarray(ids, np.int64), np.array([eos], np.int64)])
                    if self._keep(epoch, p, len(toks)):
                        yield epoch, p, toks
            if self.source.infinite:
                return
            if not found and pos == 0:
                shard = f" for rank {self.rank} of {self.world_size}" if self.world_size > 1 else ""
                raise UsageError(f"data source {self.source.name!r} has no documents{shard}")
            epoch, pos = epoch + 1, 0

    # ---- batches ---------------------------------------------------------------------------

    def __iter__(self):
        gen = self._generate(dict(self._pos))
        if self.prefetch:
            run = _prefetch.in_process if self.prefetch_in == "process" else _prefetch.in_thread
            gen = run(gen, self.prefetch)
        try:
            for batch, pos in gen:
                # The state moves only when a batch is handed out, so prefetching does not shift it.
                self._pos = pos
                self._batches += 1
                yield batch
        finally:
            gen.close()  # a prefetch worker stops now, not whenever the generator is collected

    def _generate(self, start: dict):
        """(batch, position after it) from position `start`; touches no loader state."""
        B, L = self.batch_size, self.seq_len
        need = B * L + 1  # one look-ahead token: the label of each batch's last position
        docs = self._docs(start["epoch"], start["doc"])
        pieces: deque = deque()  # [epoch, pos, offset, remaining tokens]
        have, first = 0, True
        while True:
            while have < need:
                nxt = next(docs, None)
                if nxt is None:  # finite run: the last partial batch is dropped
                    return
                e, p, toks = nxt
                off = 0
                if first:
                    first = False
                    if start["offset"]:
                        if (e, p) != (start["epoch"], start["doc"]):
                            raise RuntimeError(
                                f"data state points into document {start} that the stream no longer yields"
                            )
                        off = start["offset"]
                pieces.append([e, p, off, toks[off:]])
                have += len(toks) - off
            tok_parts, id_parts, got = [], [], 0
            for k, piece in enumerate(pieces):
                take = min(len(piece[3]), need - got)
                tok_parts.append(piece[3][:take])
                id_parts.append(np.full(take, k, dtype=np.int64))
                got += take
                if got == need:
                    break
            batch = pack_batch(np.concatenate(tok_parts), np.concatenate(id_parts), B, L, self.doc_mask)
            left = B * L
            while left:
                piece = pieces[0]
                if len(piece[3]) <= left:
                    left -= len(piece[3])
                    pieces.popleft()
                else:
                    piece[3], piece[2], left = piece[3][left:], piece[2] + left, 0
            have -= B * L
            yield batch, {"epoch": pieces[0][0], "doc": pieces[0][1], "offset": pieces[0][2]}


def build_loader(source, tokenizer, seq_len: int, batch_size: int, *, seed: int = 0, **opts) -> Loader:
    """Open `source` (see `open_source`) and return a resumable, endless (unless `num_epochs`) Loader.

    `tokenizer`: a tokenizer object, a name/path for AutoTokenizer, or None/"default". `opts` are
    Loader's keywords (doc_mask, long_doc_fraction, long_doc_weight, num_epochs, shuffle, rank,
    world_size, add_bos, prefetch, prefetch_in, read_ahead) and open_source's (text_field, split,
    config, streaming, txt_split, doc_tokens, doc_chars, the embedded source's options); `seed` goes
    to both. For the "embedded" source, documents default to seq_len/16 .. seq_len tokens (`doc_tokens`).
    """
    tokenizer = load_tokenizer(tokenizer)
    loader_opts = {k: opts.pop(k) for k in list(opts) if k in _LOADER_OPTS}
    sized = opts.get("doc_tokens") is not None or opts.get("doc_chars") is not None
    if isinstance(source, str) and source == "embedded" and not sized:
        opts["doc_tokens"] = (max(16, seq_len // 16), max(16, seq_len))
    src = open_source(source, seed=seed, tokenizer=tokenizer, **opts)
    return Loader(src, tokenizer, seq_len, batch_size, seed=seed, **loader_opts)


_LOADER_OPTS = frozenset(inspect.signature(Loader.__init__).parameters) - {
    "self",
    "source",
    "tokenizer",
    "seq_len",
    "batch_size",
    "seed",
}
