"""bench/fla_peer.py: our hybrid configs mapped to fla's GatedDeltaNetConfig fields, checked without fla
(fla needs Triton and a GPU): layer count, attention layer indices, head dims, the loss flags, and fla's
parameter count (counted from fla 0.6.0's module definitions) against ours; the SDPA stand-in for
flash_attn_func; train_throughput.py's --impl fla plumbing with the fla build faked, and its one-line
refusal where fla is missing."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longctx.model import HybridLM, load_config

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fla_peer = _load("fla_peer")

# GatedDeltaNetForCausalLM(GatedDeltaNetConfig(**fla_config_fields(load_config("hybrid-1b")))) built with
# fla 0.6.0 on the meta device counted these parameters (2026-12-04); fla_param_count must give them.
FLA_PARAMS_HYBRID_1B = 1_334_940_288
REL_TOL = 2e-4  # ours and fla's counts differ only by the QK-norm weights: 1.3e-4 of hybrid-tiny, 1.2e-5 of hybrid-1b


def ours_params(config) -> int:
    with torch.device("meta"):
        return HybridLM(config).num_params()


@pytest.mark.parametrize("name", ["hybrid-tiny", "hybrid-1b", "hybrid-7b"])
def test_mapped_shapes_equal_ours(name):
    config = load_config(name)
    f = fla_peer.fla_config_fields(config)
    assert f["num_hidden_layers"] == config.num_hidden_layers
    full = [i for i, t in enumerate(config.layer_types) if t == "full_attention"]
    assert f["attn"]["layers"] == full == list(range(3, config.num_hidden_layers, 4))  # every 4th layer
    assert f["hidden_size"] == config.hidden_size and f["vocab_size"] == config.vocab_size
    assert f["intermediate_size"] == config.intermediate_size and f["hidden_act"] == "swish"
    # attention: fla derives head_dim = hidden_size // num_heads
    assert f["attn"]["num_heads"] == config.num_attention_heads
    assert f["attn"]["num_kv_heads"] == config.num_key_value_heads
    assert f["hidden_size"] // f["attn"]["num_heads"] == config.hidden_size // config.num_attention_heads
    assert f["attn"]["rope_theta"] == 500000.0 and f["attn"]["window_size"] is None
    # GDN: key heads/dim, value heads, value dim = head_dim * expand_v
    assert (f["num_heads"], f["head_dim"]) == (config.linear_num_key_heads, config.linear_key_head_dim)
    assert f["num_v_heads"] == config.linear_num_value_heads
    assert f["head_dim"] * f["expand_v"] == config.linear_value_head_dim
    assert f["conv_size"] == config.linear_conv_kernel_dim and f["allow_neg_eigval"] is True
    assert f["tie_word_embeddings"] is False and f["fuse_norm"] and f["fuse_swiglu"]
    # parameters: fla's = ours less the QK-norm weights of our attention layers
    ours, fla = ours_params(config), fla_peer.fla_param_count(f)
    qk = len(full) * 2 * config.hidden_size  # MHA: q and k norms are hidden_size wide each
    assert ours - fla == qk == fla_peer.qk_norm_params(config)
    assert abs(ours - fla) / ours < REL_TOL
    d = fla_peer.describe(config)
    assert d["params"]["ours_minus_fla"] == d["params"]["ours_minus_fla_explained"] == qk


def test_hybrid_1b_count_is_fla_0_6s():
    f = fla_peer.fla_config_fields(load_config("hybrid-1b"))
    assert fla_peer.fla_param_count(f) == FLA_PARAMS_HYBRID_1B


@pytest.mark.parametrize(
    "overrides",
    [
        {"tie_word_embeddings": True},
        {"linear_num_value_heads": 8},  # GVA: 2 value heads per key head
        {"num_key_value_heads": 2},  # GQA attention
        {"attention_bias": True},
        {"linear_value_head_dim": 36},  # expand_v 1.5
    ],
)
def test_param_count_follows_the_shapes(overrides):
    config = load_config("hybrid-tiny", **overrides)
    d = fla_peer.describe(config)
    assert d["params"]["ours_minus_fla"] == d["params"]["ours_minus_fla_explained"]
    assert abs(d["params"]["ours_minus_fla"]) / d["params"]["ours"] < 1e-3


def test_loss_flags():
    config = load_config("hybrid-tiny")
    flags = {
        ce: (f["fuse_linear_cross_entropy"], f["fuse_cross_entropy"])
        for ce in fla_peer.CE_CHOICES
        for f in [fla_peer.fla_config_fields(config, ce)]
    }
    assert flags == {"linear": (True, False), "fused": (False, True), "plain": (False, False)}  # never both
    with pytest.raises(ValueError, match="accepted"):
        fla_peer.fla_config_fields(config, "chunked")


def test_unmappable_configs():
    assert "olmo3" in fla_peer.describe(load_config("transformer-tiny"))["error"]
    with pytest.raises(ValueError, match="head_dim"):
        fla_peer.fla_config_fields(load_config("hybrid-tiny", head_dim=16))


def test_differences_name_what_fla_lacks():
    tiny = fla_peer.differences(load_config("hybrid-tiny"))
    assert any("post-norm" in d for d in tiny) and any("QK-norm" in d for d in tiny)
    assert not any("padding_idx" in d for d in tiny)  # hybrid-tiny has no pad token
    one_b = fla_peer.differences(load_config("hybrid-1b"))
    assert any("padding_idx=100277" in d for d in one_b)
    no_rope = load_config("hybrid-tiny", rope_parameters={"rope_type": "default", "rope_theta": None})
    assert any("ours none" in d for d in fla_peer.differences(no_rope))
    assert fla_peer.fla_config_fields(no_rope)["attn"]["rope_theta"] == 10000.0


def test_sdpa_stand_in_is_causal_attention():
    gen = torch.Generator().manual_seed(0)
    B, T, H, Hkv, D = 2, 7, 4, 2, 8
    q = torch.randn(B, T, H, D, generator=gen)
    k, v = (torch.randn(B, T, Hkv, D, generator=gen) for _ in range(2))
    out = fla_peer.sdpa_flash_attn_func(q, k, v, causal=True, window_size=(-1, -1))
    kr, vr = (x.repeat_interleave(H // Hkv, dim=2) for x in (k, v))
    scores = torch.einsum("bihd,bjhd->bhij", q, kr) * D**-0.5
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    ref = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), vr)
    assert out.shape == (B, T, H, D)
    torch.testing.assert_close(out, ref)
    with pytest.raises(NotImplementedError):
        fla_peer.sdpa_flash_attn_func(q, k, v, causal=True, window_size=(3, 0))


def run_bench(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "train_throughput.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_help_lists_the_fla_flags():
    done = run_bench("--help")
    assert done.returncode == 0, done.stderr
    assert "--fla-ce" in done.stdout and "--fla-attn" in done.stdout and "fla" in done.stdout


@pytest.mark.skipif(importlib.util.find_spec("fla") is not None, reason="fla is installed here")
def test_fla_impl_without_fla_is_one_line(tmp_path):
    done = run_bench("--device", "cpu", "--configs", "hybrid-tiny", "--impl", "ours,fla", "--out", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no traceback
    assert done.stderr.startswith("--impl fla: flash-linear-attention is not installed")
    assert not (tmp_path / "train_throughput.json").exists()


def test_fla_rows_with_the_build_faked(tmp_path, monkeypatch, capsys):
    """The script's fla path end to end on CPU, fla's model stood in by transformers' (same call, same
    loss from labels=): rows, checkpointed blocks equal to ours, skipped Olmo 3 rows, meta, table."""
    tt = _load("train_throughput")
    seen = {}

    def fake_build(config, device, dtype, *, ce, attn, checkpointed):
        from transformers import AutoModelForCausalLM

        seen.update(ce=ce, attn=attn)
        cfg = copy.deepcopy(config)
        cfg.use_cache = False
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).train()
        return model, {"fla_checkpointed_blocks": sorted(checkpointed), "fla_class": "stand-in"}

    monkeypatch.setattr(tt.fla_peer, "missing", lambda device_type: None)
    monkeypatch.setattr(tt.fla_peer, "build", fake_build)
    argv = ["--device", "cpu", "--configs", "hybrid-tiny,transformer-tiny", "--lengths", "32", "--steps", "1"]
    argv += ["--warmup", "0", "--impl", "ours,fla", "--checkpoint-fraction", "0.75", "--fla-ce", "fused"]
    assert tt.main([*argv, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "train_throughput.json").read_text())
    rows = {(r["config"], r["impl"]): r for r in data["results"]}
    ours, fla = rows["hybrid-tiny", "ours"], rows["hybrid-tiny", "fla"]
    assert ours["status"] == fla["status"] == "ok" and fla["fla_class"] == "stand-in"
    assert fla["fla_checkpointed_blocks"] == ours["ours_checkpointed_blocks"] == [0, 1, 2]
    assert seen == {"ce": "fused", "attn": "auto"}
    assert rows["transformer-tiny", "fla"]["status"] == "skipped"
    assert "olmo3" in rows["transformer-tiny", "fla"]["reason"]
    assert rows["transformer-tiny", "ours"]["status"] == "ok"
    meta = data["meta"]["fla_peer"]
    assert meta["hybrid-tiny"]["params"]["ours"] == data["meta"]["params"]["hybrid-tiny"]["total"]
    assert meta["hybrid-tiny"]["fields"]["fuse_cross_entropy"] is True
    assert meta["hybrid-tiny"]["differences"] and "error" in meta["transformer-tiny"]
    assert "ours/fla" in capsys.readouterr().out
