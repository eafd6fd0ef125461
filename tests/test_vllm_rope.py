"""vLLM's RoPE table against the prompts it must hold (longctx.evaluate.vllm_rope).

The table lengths are vLLM 0.26's (vllm/model_executor/layers/rotary_embedding: RotaryEmbedding holds
max_position_embeddings positions, LinearScalingRotaryEmbedding that x factor, YaRNScalingRotaryEmbedding
original_max_position_embeddings x factor, DynamicNTKScalingRotaryEmbedding max_position_embeddings with the base
kept); the rope_parameters are what `longctx extend` writes (rope_methods)."""

import json

import pytest
import torch

import rope_methods
from longctx.errors import UsageError
from longctx.evaluate.vllm_rope import hf_overrides

BASE = {"rope_type": "default", "rope_theta": 10000.0}


def _model(tmp_path, method=None, mpe=4096, base_len=4096, target=16384):
    rp = rope_methods.get(method).extend(dict(BASE), base_len=base_len, target_len=target) if method else BASE
    if rp is None:  # DRoPE: transformers' spelling of no RoPE
        rp = {"rope_type": "default", "rope_theta": None}
    cfg = {"model_type": "olmo_hybrid", "max_position_embeddings": mpe, "rope_parameters": rp}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_default_rope_table_lengthened_to_the_engine_length(tmp_path):
    m = _model(tmp_path, mpe=4096)
    assert hf_overrides(m, 4096, 4096) == {}
    assert hf_overrides(m, 16640, 16384) == {"max_position_embeddings": 16640}


def test_pi_table_is_mpe_times_factor(tmp_path):
    m = _model(tmp_path, "pi", mpe=4096)  # factor 4: 16,384 positions
    assert hf_overrides(m, 16384, 16384) == {}
    assert hf_overrides(m, 16640, 16384) == {"max_position_embeddings": 16640}


def test_yarn_refused_past_original_times_factor(tmp_path):
    m = _model(tmp_path, "yarn", mpe=16384)  # 4,096 x 4 = 16,384 positions
    assert hf_overrides(m, 16384 + 256, 16384) == {}  # RULER's prompts at 16k stay inside the table
    with pytest.raises(UsageError, match="32,768.*yarn.*16,384 positions"):
        hf_overrides(m, 32768 + 256, 32768)


def test_dynamic_ntk_refused_past_its_original_length(tmp_path):
    m = _model(tmp_path, "ntk", mpe=16384)
    assert hf_overrides(m, 4096 + 256, 4096) == {}
    with pytest.raises(UsageError, match="8,192.*4,096 positions"):
        hf_overrides(m, 8192 + 256, 8192)


def test_no_rope_has_no_table(tmp_path):
    assert hf_overrides(_model(tmp_path, "drope", mpe=4096), 65792, 65536) == {}


def test_per_layer_type_rope_checks_every_entry(tmp_path):
    """Olmo 3: sliding-window layers on plain RoPE, full-attention layers extended; each indexes its own table."""

    def olmo3(full, mpe):
        rp = {"full_attention": full, "sliding_attention": BASE}
        cfg = {"model_type": "olmo3", "max_position_embeddings": mpe, "rope_parameters": rp}
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        return tmp_path

    yarn = rope_methods.get("yarn").extend(dict(BASE), base_len=4096, target_len=8192)
    with pytest.raises(UsageError, match="yarn.*8,192 positions"):
        hf_overrides(olmo3(yarn, 8192), 16640, 16384)
    # inside YaRN's table (8,192) but past the plain layers' (4,096): those are lengthened
    assert hf_overrides(olmo3(yarn, 4096), 8192, 8192) == {"max_position_embeddings": 8192}
    pi = rope_methods.get("pi").extend(dict(BASE), base_len=4096, target_len=8192)
    assert hf_overrides(olmo3(pi, 4096), 8192, 8192) == {"max_position_embeddings": 8192}


def test_eval_refuses_vllm_lengths_past_a_yarn_table_before_writing(tmp_path, capsys):
    from longctx.cli import main

    m = _model(tmp_path / "m", "yarn", mpe=16384) if (tmp_path / "m").mkdir() is None else None
    (m / "tokenizer.json").write_text("{}")
    (m / "model.safetensors").write_bytes(b"")
    out = tmp_path / "r.json"
    code = main(["eval", "--model", str(m), "--backend", "vllm", "--lengths", "4096,32768", "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "32,768" in err[0] and "--backend longctx" in err[0]


@pytest.mark.parametrize("method", [None, "pi", "yarn", "ntk"])
def test_tables_as_vllms_own_rotary_embeddings(tmp_path, method):
    """Where vLLM is importable (bash bench/vllm_peer/cpu-site.sh): vLLM's get_rope, given max_position as its Olmo
    Hybrid passes it (config.max_position_embeddings), holds the positions this module says; the override makes it
    hold the engine length with the same values in the positions it held before (the same frequencies)."""
    pytest.importorskip("vllm.model_executor.layers.rotary_embedding", reason="vLLM is not installed here")
    from vllm.config import DeviceConfig, VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    from longctx.results import read_rope_parameters

    model = _model(tmp_path, method, mpe=4096)
    rp = read_rope_parameters(model)

    def table(mpe):
        with set_current_vllm_config(VllmConfig(device_config=DeviceConfig(device="cpu"))):
            return get_rope(64, max_position=mpe, rope_parameters=dict(rp), dtype=torch.float32).cos_sin_cache

    before = table(4096)
    held = before.shape[0]  # the table's end is where this module must start acting
    assert hf_overrides(model, held, min(held, 4096 if method == "ntk" else held)) == {}
    if method == "yarn":
        with pytest.raises(UsageError, match=f"{held:,} positions"):
            hf_overrides(model, held + 1, held + 1)
    else:
        assert hf_overrides(model, held + 1, 4096) == {"max_position_embeddings": held + 1}
    needed = 4096 if method == "ntk" else 16384
    over = hf_overrides(model, needed + 256, needed)
    if method == "yarn":  # 4,096 x 4 = 16,384 positions: RULER's 16k prompts inside, nothing to lengthen
        assert over == {} and before.shape[0] == 16384
        return
    assert before.shape[0] < needed + 256
    after = table(over["max_position_embeddings"])
    assert after.shape[0] >= needed + 256
    assert torch.equal(after[: before.shape[0]], before)
