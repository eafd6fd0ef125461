"""Our exported checkpoints in vLLM's own model classes and weight loaders (bench/vllm_peer/load_check.py, on
CPU): hybrid with RoPE (tied and untied), YaRN, DRoPE, olmo3 and olmo3 with YaRN load every parameter with the
checkpoint's values and every attention layer's cos/sin table equals transformers' for its layer type; YaRN gets
vLLM's YaRN rotary embedding with mscale 0.1 ln(factor) + 1, DRoPE no rotary embedding at all;
and vLLM 0.26 as it ships (without longctx's plugin) loads no Olmo Hybrid checkpoint.
Runs where vLLM is importable (bench/vllm_peer/cpu-site.sh, then PYTHONPATH=DIR); skipped elsewhere."""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_model_util import hybrid_config, olmo3_config

import rope_methods
from longctx.model.hybrid import HybridLM

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM not importable (bench/vllm_peer/cpu-site.sh)"
)
ROOT = Path(__file__).resolve().parents[1]


def _export(out: Path, config) -> str:
    torch.manual_seed(0)
    HybridLM(config).save_pretrained(out)
    return str(out)


def _extended(method: str, config=None):
    config = config or hybrid_config()
    config.rope_parameters = rope_methods.get(method).extend(
        copy.deepcopy(config.rope_parameters), base_len=64, target_len=256
    )
    return config


def _check(*args):
    path = [p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    cmd = [sys.executable, str(ROOT / "bench" / "vllm_peer" / "load_check.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("exports")
    return {
        "hybrid": _export(d / "hybrid", hybrid_config()),
        "tied": _export(d / "tied", hybrid_config(tie_word_embeddings=True)),
        "yarn": _export(d / "yarn", _extended("yarn")),
        "drope": _export(d / "drope", _extended("drope")),
        "olmo3": _export(d / "olmo3", olmo3_config()),
        "olmo3-yarn": _export(d / "olmo3-yarn", _extended("yarn", olmo3_config())),  # YaRN on full layers only
    }


def test_every_export_loads_in_vllm_with_its_values(exports):
    run = _check(*exports.values())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = {m: next(ln for ln in run.stdout.splitlines() if ln.startswith(p + ":")) for m, p in exports.items()}
    for m, line in lines.items():
        assert " 0 wrong" in line, line
        assert ("OlmoHybridForCausalLM" in line) == (not m.startswith("olmo3")), line
    for m in ("yarn", "olmo3-yarn"):
        assert "YaRNScalingRotaryEmbedding" in lines[m]
        assert f"(4.0, {round(0.1 * math.log(4.0) + 1, 6)})" in lines[m]  # factor 256/64, YaRN's mscale
    # every attention layer's cos/sin table is transformers' for that layer type (rc 0: within 1e-4)
    assert "against transformers: 1 layers" in lines["yarn"] and "against transformers: 4 layers" in lines["olmo3-yarn"]
    assert "RoPE modules: 0 []" in lines["drope"] and "no RoPE in either" in lines["drope"]
    assert "YaRN" not in lines["hybrid"] and "RoPE modules: 0" not in lines["hybrid"]


def test_vllm_as_shipped_fails_on_the_fused_conv(exports):
    run = _check(exports["hybrid"], "--no-plugin")
    if "0 wrong" in run.stdout:
        pytest.skip("this vLLM loads Olmo Hybrid's conv weights itself (the plugin is then a no-op)")
    assert run.returncode == 1 and "load_weights raised TypeError" in run.stdout, run.stdout[-2000:]
