"""vLLM's greedy tokens against longctx's own decoding of the same prompt ids, on a trained checkpoint.

Runs on a GPU machine with vLLM installed (bench/vllm_peer/install.sh) and a trained model named by
LONGCTX_VLLM_MODEL (scripts/gpu/vllm-lane.sh trains one, study-20m's hybrid cut to 1200 steps, and runs this test
on it); skipped otherwise. Random weights are not used: their logits tie too often for token agreement to
say anything. Asserts every first token equal and prints how far the whole continuations agree.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.gpu_alone]  # vLLM asks for 40% of the card free at start
SMOKE = Path(__file__).resolve().parents[1] / "bench" / "vllm_peer" / "smoke.py"


def _trained_model() -> str:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("vllm")
    model = os.environ.get("LONGCTX_VLLM_MODEL")
    if not model:
        pytest.skip("LONGCTX_VLLM_MODEL unset: a trained checkpoint to compare on (scripts/gpu/vllm-lane.sh)")
    return model


def test_vllm_greedy_tokens_equal_longctx(tmp_path):
    model = _trained_model()
    spec = importlib.util.spec_from_file_location("vllm_smoke", SMOKE)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    out = tmp_path / "smoke.json"
    argv = [model, "--against-longctx", "--max-tokens", "32", "--dtype", "bfloat16"]
    rc = smoke.main(argv + ["--gpu-memory-utilization", "0.4", "--out", str(out)])
    agree = json.loads(out.read_text())["against_longctx"]
    print(f"vLLM vs longctx on {model}: {agree}")
    assert agree["first_token_equal"] == agree["prompts"] and rc == 0, agree
