"""`--model longctx`: the lm-eval model adapter of this suite.

Importing this module registers it with lm-eval (`longctx eval --backend longctx` and
`longctx lm-eval --model longctx --model_args pretrained=DIR ...` both do). For now it is
lm-eval's HF model with the checkpoint loaded through transformers (`OlmoHybridForCausalLM`,
`Olmo3ForCausalLM`), pinned to a decoder-only backend; it exists so that the internals can move
to batched prefill on `longctx.model.HybridLM` without changing any command line.
"""
from __future__ import annotations

import os

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM


@register_model("longctx")
class LongctxLM(HFLM):
    """model_args: `pretrained=DIR` plus any HFLM argument (`max_length`, `dtype`, `batch_size`, ...)."""

    def __init__(self, pretrained, **kwargs):
        # Auto-detection of causal vs seq2seq reads a config mapping that does not know every
        # hybrid; these models are all decoder-only.
        kwargs.setdefault("backend", "causal")
        if isinstance(pretrained, str) and os.path.isdir(pretrained):
            # HFLM asks the Hub for the model's sha when `pretrained` looks like a repo id
            # (`runs/x` does); an absolute path is rejected locally, without a network call.
            pretrained = os.path.abspath(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
