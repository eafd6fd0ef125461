"""`--model longctx`: the lm-eval model adapter of this suite.

Importing this module registers it with lm-eval (`longctx eval --backend longctx` and
`longctx lm-eval --model longctx --model_args pretrained=DIR ...` both do).

It keeps lm-eval's HF model for everything around the model (tokenizer, chat template, request
batching, stop strings, loglikelihood bookkeeping) and swaps the model itself for
`longctx.model.HybridLM`: logits come from its forward, and generation from
`longctx.model.generate.greedy_generate`, which prefills the batch's prompts packed into one
row (cu_seqlens, no padding) and decodes on the GDN recurrent state + KV cache. RULER is greedy;
sampling arguments are refused rather than silently ignored.
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from longctx.model import HybridLM, prefix
from longctx.model.generate import generation_batch_size, greedy_generate, release_kept

log = logging.getLogger("lm_eval.longctx")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ENCODE_GROUP = 64  # prompts a tokenizer call in generate_until (Python's lists of a call: 36 bytes a token)


def _ids(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.int32)


def _flag(name: str, value) -> bool:
    if isinstance(value, str):  # model_args arrive as text
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name}={value!r}: expected True or False")
        return value.lower() in ("true", "1")
    return bool(value)


@register_model("longctx")
class LongctxLM(HFLM):
    """model_args: `pretrained=DIR` plus HFLM's (`dtype`, `batch_size`, `max_length`, `device`, ...),
    and `cuda_graphs`: replay each decode step from one CUDA graph (greedy_generate). Default: on for
    a model on a GPU (the same tokens as eager decoding; 4x faster decode steps for the GPU test's
    small model on an H200, docs/benchmarks.md), off on CPU; `cuda_graphs=False` turns it off. With it, the
    cache and decode graph of a batch are kept for the next batch of as many prompts and about as long
    (greedy_generate's keep_graph: no capture per batch; 66.5 -> 37.8 ms per call of 32 tokens in the GPU test).

    `batch_size=auto` sizes generation batches from memory, without HFLM's trial forwards: as many
    sequences as the decode caches of `max_length` positions fit in (generate.generation_batch_size, at
    most `max_batch_size`); `set_generation_capacity(n)` sizes them for sequences of n positions instead
    (`longctx eval` does so per length). A batch that still runs out of memory is split in two and retried.

    `share_prefixes` (default: longctx.model.prefix.DEFAULT_ON): the prefixes a batch's prompts share (RULER's
    haystack before each needle) are prefilled once and the caches forked (longctx.model.prefix); False prefills
    every prompt whole. The same arithmetic per token, in another order: bf16 answers can differ at near-ties."""

    def __init__(self, pretrained, cuda_graphs=None, share_prefixes=None, **kwargs):
        self.cuda_graphs = None if cuda_graphs is None else _flag("cuda_graphs", cuda_graphs)
        self.share_prefixes = prefix.DEFAULT_ON if share_prefixes is None else _flag("share_prefixes", share_prefixes)
        self.generation_stats: dict = {}  # greedy_generate's counts since the last take_generation_stats()
        self._encoded: dict | None = None  # inside generate_until: its prompts' encodings (tok_encode)
        kwargs.setdefault("backend", "causal")  # these models are all decoder-only
        if isinstance(pretrained, str) and os.path.isdir(pretrained):
            # HFLM asks the Hub for the model's sha when `pretrained` looks like a repo id
            # (`runs/x` does); an absolute path is recognised as local, without a network call.
            pretrained = os.path.abspath(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
        self.auto_batch = self.batch_size_per_gpu == "auto"
        self._generating = False

    def take_generation_stats(self) -> dict | None:
        """Since the last call: the share of prompt tokens not prefilled (shared with another prompt), the seconds
        in greedy_generate, its calls and decode steps; None when nothing was generated."""
        got, self.generation_stats = self.generation_stats, {}
        total = got.get("prompt_tokens", 0)
        if not total:
            return None
        keys = ("generate_s", "calls", "decode_steps")
        return {"shared": 1 - got["prefilled_tokens"] / total, **{k: got.get(k, 0) for k in keys}}

    def set_generation_capacity(self, capacity: int) -> int | None:
        """With batch_size=auto: size the batches of the next generate_until calls for sequences of up to
        `capacity` positions (prompt + generated) and return the size; else None (a fixed batch_size)."""
        release_kept()  # the batches before kept their cache (keep_graph): not free memory, yet not needed now
        if not self.auto_batch:
            return None
        self.batch_size_per_gpu = generation_batch_size(self.model, capacity, limit=self.max_batch_size or 64)
        return self.batch_size_per_gpu

    def generate_until(self, requests, disable_tqdm: bool = False):
        self._generating = True  # HFLM sizes an auto batch here through _detect_batch_size()
        # HFLM encodes every prompt twice, one by one to sort them, then for its batch: here up front, ENCODE_GROUP
        # prompts a tokenizer call (its threads), kept as int32 tensors (4 bytes a token) for tok_encode and the
        # batches
        self._encoded = {}
        contexts = list(dict.fromkeys(req.args[0] for req in requests))
        if contexts and not self._starts_with_bos(contexts):
            special = {} if self.add_bos_token is None else {"add_special_tokens": self.add_bos_token}
            for i in range(0, len(contexts), ENCODE_GROUP):
                group = contexts[i : i + ENCODE_GROUP]
                encoded = self.tokenizer(group, **special)["input_ids"]
                self._encoded.update({(c, None): _ids(e) for c, e in zip(group, encoded, strict=True)})
        try:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        finally:
            self._generating = False
            self._encoded = None

    def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
        """HFLM's; inside generate_until each string is encoded once and remembered for its batch."""
        if self._encoded is None or kwargs:
            return super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
        ids = self._remembered(string, add_special_tokens)
        return (ids[-left_truncate_len:] if left_truncate_len else ids).tolist()

    def _remembered(self, string, add_special_tokens=None) -> torch.Tensor:
        key = (string, add_special_tokens)
        if key not in self._encoded:
            self._encoded[key] = _ids(super().tok_encode(string, add_special_tokens))
        return self._encoded[key]

    def _starts_with_bos(self, strings) -> bool:
        """Any string starting with the BOS text, as HFLM's tok_encode or tok_batch_encode checks it (then they
        encode it without special tokens)."""
        bos = (getattr(self.tokenizer, "bos_token", None), self.tokenizer.decode(self.prefix_token_id))
        return any(b and s.startswith(b) for s in strings for b in bos)

    def _encode_batch(self, strings, padding_side: str, truncation: bool):
        """HFLM's tok_batch_encode (pad to the longest) from the encodings tok_encode remembered. It takes the
        same special tokens as tok_encode(string) where no string starts with the BOS text: so only then, else
        HFLM's own. (HFLM's tok_encode: `add_special_tokens=add_bos_token` where that is set, else the
        tokenizer's default, as generate_until's tokenizer calls.)"""
        pad = self.tokenizer.pad_token_id
        hflm = self._encoded is None or truncation or self.backend != "causal" or pad is None
        if hflm or self._starts_with_bos(strings):
            return super().tok_batch_encode(strings, padding_side=padding_side, truncation=truncation)
        rows = [self._remembered(s) for s in strings]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            cols = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            ids[i, cols] = row
            mask[i, cols] = 1
        return ids, mask

    def _detect_batch_size(self, requests=None, pos: int = 0):
        if self._generating:  # the decode caches bound a generation batch, not a full forward's logits
            return generation_batch_size(self.model, self.max_length, limit=self.max_batch_size or 64)
        return super()._detect_batch_size(requests, pos)

    def tok_batch_encode(self, strings, padding_side="left", left_truncate_len=None, truncation=False):
        """HFLM's (from the encodings tok_encode remembered, inside generate_until), with one warning carrying
        the numbers the first time a prompt does not fit: lm-eval keeps its last max_length - max_gen_toks tokens
        and scores the answer anyway (its own warning, repeated per batch, does not say which max_length would
        hold it)."""
        ids, mask = self._encode_batch(strings, padding_side, truncation)
        if left_truncate_len and ids.shape[1] > left_truncate_len:
            if not getattr(self, "_warned_truncation", False):
                self._warned_truncation = True
                longest, reserved = ids.shape[1], self.max_length - left_truncate_len
                log.warning(
                    "a prompt of %d tokens does not fit: max_length %d leaves %d for the prompt after %d to "
                    "generate, so lm-eval cuts its first %d tokens and still scores the answer; pass "
                    "--model_args ...,max_length=%d or more (warned once per model)",
                    longest, self.max_length, left_truncate_len, reserved, longest - left_truncate_len,
                    longest + reserved,
                )  # fmt: skip
            ids, mask = ids[:, -left_truncate_len:], mask[:, -left_truncate_len:]  # as HFLM truncates
        return ids, mask

    def _create_model(self, pretrained, dtype="auto", **kwargs) -> None:
        if dtype in (None, "auto"):
            dtype = None  # as stored
        elif isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype {dtype!r} unknown; accepted: auto, {', '.join(_DTYPES)}")
            dtype = _DTYPES[dtype]
        self._model = HybridLM.from_pretrained(pretrained, dtype=dtype, device=self.device).eval()
        weakref.finalize(self, release_kept, self._model)  # this model's kept decode set goes with this object

    def _model_call(self, inps, attn_mask=None, labels=None):
        with torch.no_grad():
            return self.model(inps)

    def _graphs(self) -> bool:
        if self.cuda_graphs is None:  # default: where they can run
            return next(self.model.parameters()).is_cuda
        return self.cuda_graphs

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if generation_kwargs.get("do_sample") or generation_kwargs.get("temperature", 0.0) not in (0, 0.0, None):
            raise ValueError(f"--model longctx decodes greedily; got generation kwargs {generation_kwargs}")
        mask = generation_kwargs.get("attention_mask")
        rows = context.tolist()
        if mask is not None:  # HFLM left-pads the batch; the packed prefill wants the bare prompts
            rows = [row[len(row) - int(m.sum()) :] for row, m in zip(rows, mask, strict=True)]
        new = max_length - context.shape[1]
        # The EOS token's own text (lm-eval adds it to every `until`) needs no decoding each step: the EOS id
        # already ends a sequence there, and HFLM cuts the answer at every stop string afterwards anyway.
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        stop = [s for s in stop if s and s != eos_text]

        def stopped(i: int, generated: list[int]) -> bool:
            tail = self.tok_decode(generated[-16:], skip_special_tokens=False)
            return any(s in tail for s in stop)

        outputs = self._generate(rows, new, stopped if stop else None)
        # HFLM cuts the context off and decodes the rest up to the first stop string; the EOS
        # padding is itself a stop string (lm-eval adds it to `until`).
        generated = torch.full((len(outputs), new), self.eot_token_id, dtype=context.dtype)
        for i, out in enumerate(outputs):
            generated[i, : len(out)] = torch.tensor(out, dtype=context.dtype)
        return torch.cat([context, generated.to(context.device)], dim=1)

    def _generate(self, rows: list[list[int]], new: int, stopped) -> list[list[int]]:
        """greedy_generate on `rows`; out of memory, the two halves one after the other."""
        try:
            return greedy_generate(
                self.model, rows, new, eos_token_ids={self.eot_token_id}, stop_sequences=stopped,
                cuda_graphs=self._graphs(), keep_graph=True, share_prefixes=self.share_prefixes,
                stats=self.generation_stats,
            )  # fmt: skip
        except torch.OutOfMemoryError:
            release_kept()  # the kept cache of the batch before: its memory for the halves
            if len(rows) == 1:
                raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(rows) // 2
        log.warning("a batch of %d prompts ran out of memory; generating it as %d + %d", len(rows), half,
                    len(rows) - half)  # fmt: skip
        if isinstance(self.batch_size_per_gpu, int):
            self.batch_size_per_gpu = min(self.batch_size_per_gpu, half)  # the next calls' batches
        later = None if stopped is None else (lambda i, generated: stopped(i + half, generated))
        return self._generate(rows[:half], new, stopped) + self._generate(rows[half:], new, later)
