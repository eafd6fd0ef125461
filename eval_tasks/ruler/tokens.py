"""Token counting as lm-eval's HF model will see the prompt.

lm-eval builds `input + gen_prefix` (or, with `--apply_chat_template`, the chat template of a
user turn `input` continued by an assistant turn `gen_prefix`) and encodes it with special
tokens unless the text already starts with BOS. `count` reproduces exactly that.

Sizing a 128k prompt by re-tokenizing it dozens of times is what makes other generators slow.
Here prompts are assembled from pieces whose joints sit where byte-level / regex pre-tokenizers
always cut (right after a newline, right before a space that precedes a word), so a prompt's
length is the sum of its pieces' lengths, each counted once and cached. That additivity is a
property of the tokenizer, so the sizer checks it against a full tokenization (see sizing.py)
and falls back to full tokenization when it does not hold (e.g. SentencePiece tokenizers that
prepend a space marker to each piece).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import numpy as np

MARK = "@@LONGCTX-SPLIT@@"


class TokenCounter:
    def __init__(self, tokenizer, chat_template: bool | Callable = False, system_instruction: str | None = None):
        self.tok = tokenizer
        self.chat_template = chat_template
        self.system = system_instruction or None
        self.backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self.bos = getattr(tokenizer, "bos_token", None)
        self._plain: dict[str, int] = {}
        self.memo: dict = {}  # per-tokenizer caches (haystack token counts, numbering counts, ...)
        self._render_parts: dict[tuple[str, str, str], str] = {}

    # ---- rendering: the exact string lm-eval hands to the model
    def render(self, text: str, gen_prefix: str) -> str:
        if not self.chat_template:
            # lm-eval (api/task.py build_qa_turn): a target delimiter " " only when neither side has
            # whitespace; a system instruction is prepended as is.
            delim = " " if text and gen_prefix and not (text[-1].isspace() or gen_prefix[0].isspace()) else ""
            return (self.system or "") + text + delim + gen_prefix
        messages = [{"role": "user", "content": text}, {"role": "assistant", "content": gen_prefix}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        if callable(self.chat_template):
            return self.chat_template(messages)
        # what lm-eval's HFLM.apply_chat_template does when a gen_prefix is given
        return self.tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False, continue_final_message=True
        )

    def render_head(self, head: str, gen_prefix: str) -> str:
        """Rendered text before the input's continuation after `head`."""
        key = ("head", head, gen_prefix)
        if key not in self._render_parts:
            self._render_parts[key] = self._split(self.render(head + MARK, gen_prefix))[0]
        return self._render_parts[key]

    def render_tail(self, tail: str, gen_prefix: str) -> str:
        """Rendered text from the start of `tail` (the input's last characters) to the end."""
        key = ("tail", tail, gen_prefix)
        if key not in self._render_parts:
            self._render_parts[key] = self._split(self.render(MARK + tail, gen_prefix))[1]
        return self._render_parts[key]

    @staticmethod
    def _split(rendered: str) -> tuple[str, str]:
        if rendered.count(MARK) != 1:
            raise ValueError("the chat template altered the prompt text; cannot size prompts with it")
        return tuple(rendered.split(MARK))

    # ---- counting
    def _encode_len(self, text: str, special: bool) -> int:
        if self.backend is not None:
            return len(self.backend.encode(text, add_special_tokens=special))
        return len(self.tok.encode(text, add_special_tokens=special))

    def count(self, rendered: str) -> int:
        """Exact length of a rendered prompt, special tokens as lm-eval's HFLM adds them."""
        special = not (self.bos and rendered.startswith(self.bos))
        return self._encode_len(rendered, special)

    def count_head(self, rendered_head: str) -> int:
        """`count` of a prompt's first piece (special tokens included), cached."""
        key = ("\x00head", rendered_head)
        n = self._plain.get(key)
        if n is None:
            n = self._plain[key] = self.count(rendered_head)
        return n

    def count_plain(self, text: str) -> int:
        """Length of a piece inside a prompt (no special tokens), cached."""
        n = self._plain.get(text)
        if n is None:
            n = self._plain[text] = self._encode_len(text, False)
        return n

    def count_many(self, texts: Sequence[str]) -> list[int]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._plain]
        if missing:
            if self.backend is not None:
                batch = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)  # no offsets needed
                lens = [len(e) for e in batch(missing, add_special_tokens=False)]
            else:
                lens = [len(self.tok.encode(t, add_special_tokens=False)) for t in missing]
            self._plain.update(zip(missing, lens, strict=True))
        return [self._plain[t] for t in texts]

    def prefix_counts(self, text: str, cuts: np.ndarray) -> np.ndarray:
        """Tokens of `text` before each cut (char offsets), from one tokenization.

        A cut sits on the space in front of a word; a token starting at that space (untrimmed
        offsets) or at the word (trimmed offsets) belongs after the cut either way.
        """
        if self.backend is None:
            # slow tokenizer: proportional estimate, corrected by the exact check
            total = self._encode_len(text, False)
            return np.floor(cuts * (total / max(1, len(text)))).astype(np.int64)
        offsets = self.backend.encode(text, add_special_tokens=False).offsets
        starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
        return np.searchsorted(starts, cuts, side="left").astype(np.int64)

    # ---- identity
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(type(self.tok).__name__.encode())
        if self.backend is not None:
            h.update(self.backend.to_str().encode())
        else:
            h.update(json.dumps(sorted(self.tok.get_vocab().items())).encode())
        h.update(repr((self.bos, getattr(self.tok, "eos_token", None), self.system)).encode())
        if self.chat_template:
            if callable(self.chat_template):
                probe = self.render("hello", " Answer:")
            else:
                probe = str(getattr(self.tok, "chat_template", ""))
            h.update(b"chat" + probe.encode())
        return h.hexdigest()[:16]


class IndexedCounts:
    """Tokens of item(1) + ... + item(n) for numbered pieces ("1." / " 2." list numbers, "Document i:"
    headers), cumulated and grown by doubling: upto(n) is one array lookup once n has been seen."""

    def __init__(self, counter: TokenCounter, item: Callable[[int], str]):
        self.counter, self.item = counter, item
        self.cum = np.zeros(1, dtype=np.int64)

    def upto(self, n: int) -> int:
        if n >= len(self.cum):
            size = max(n + 1, 2 * len(self.cum))
            counts = self.counter.count_many([self.item(i) for i in range(len(self.cum), size)])
            self.cum = np.concatenate([self.cum, self.cum[-1] + np.cumsum(np.asarray(counts, dtype=np.int64))])
        return int(self.cum[n])


def indexed_counts(counter: TokenCounter, key: str, item: Callable[[int], str]) -> IndexedCounts:
    """The tokenizer's one IndexedCounts for `key` (kept in counter.memo across samples and lengths)."""
    if key not in counter.memo:
        counter.memo[key] = IndexedCounts(counter, item)
    return counter.memo[key]
