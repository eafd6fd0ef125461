"""Stop vLLM's engine process when an evaluation ends, instead of at interpreter exit.

vLLM 0.26 starts its engine core as a non-daemon process and stops it from a finalizer of its client. When the
client is still reachable at exit (lm-eval's model, the objects around it), the interpreter waits on the engine
process first: `longctx eval --backend vllm` wrote its results on an H100 and then held 75 GiB of GPU memory, idle,
until killed. lm-eval's `vllm` model keeps its vllm.LLM as `model`; vllm.LLM keeps its LLMEngine as `llm_engine`,
whose `engine_core` client has `shutdown()` (tests/test_evaluate_vllm.py checks the path on vLLM's own classes).
"""

from __future__ import annotations

import gc
import sys
from typing import Any


def stop_llm(llm: Any) -> bool:
    """Stop the engine process of the vllm.LLM `llm`; True if one was stopped."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    stop = getattr(core, "shutdown", None)
    if stop is None:
        return False
    stop()
    return True


def stop_vllm_engine(lm: Any) -> bool:
    """Stop the engine of lm-eval's `vllm` model `lm`; False for another model (lm-eval's data-parallel vllm runs
    its engines under Ray and keeps no vllm.LLM here)."""
    return stop_llm(getattr(lm, "model", None))


def stop_all() -> int:
    """Stop every vllm.LLM engine of this process (`longctx lm-eval --model vllm`: lm-eval built and dropped the
    model inside its own run); how many were stopped. Nothing to do where vLLM was never imported."""
    llm_module = sys.modules.get("vllm.entrypoints.llm")
    if llm_module is None:
        return 0
    return sum(stop_llm(o) for o in gc.get_objects() if isinstance(o, llm_module.LLM))
