"""configs/models/*.yaml: they load into transformers' config classes and hold the published shapes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Olmo3Config, OlmoHybridConfig

from longctx.errors import UsageError
from longctx.model import HybridLM, available_configs, load_config

SIZES = ("tiny", "20m", "60m", "190m", "1b", "7b")
NAMES = [f"{family}-{size}" for family in ("hybrid", "transformer") for size in SIZES]


def meta_model(config) -> HybridLM:
    with torch.device("meta"):
        return HybridLM(config)


def test_every_config_is_present():
    assert set(NAMES) <= set(available_configs())


@pytest.mark.parametrize("name", NAMES)
def test_config_builds(name):
    config = load_config(name)
    hybrid = name.startswith("hybrid")
    assert isinstance(config, OlmoHybridConfig if hybrid else Olmo3Config)
    pattern = ["linear_attention" if hybrid else "sliding_attention"] * 3 + ["full_attention"]
    assert config.layer_types == pattern * (config.num_hidden_layers // 4)
    model = meta_model(config)
    non_embedding = model.num_params(exclude_embeddings=True) - config.vocab_size * config.hidden_size
    size = name.split("-")[1]
    if size == "tiny":
        assert 1e6 <= model.num_params() <= 3e6
    elif size != "7b":  # named after the non-embedding count, within ~25%
        target = {"20m": 20e6, "60m": 60e6, "190m": 190e6, "1b": 1e9}[size]
        assert 0.75 * target <= non_embedding <= 1.25 * target, non_embedding


def test_hybrid_7b_is_olmo_hybrid_7b():
    c = load_config("hybrid-7b")
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (32, 3840, 30, 30)
    assert c.hidden_size // c.num_attention_heads == 128
    assert (c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim) == (
        30,
        30,
        96,
        192,
    )
    assert (c.linear_conv_kernel_dim, c.linear_allow_neg_eigval, c.intermediate_size, c.vocab_size) == (
        4,
        True,
        11008,
        100352,
    )
    assert c.rope_parameters["rope_theta"] == 5e5 and c.max_position_embeddings == 65536
    # transformers documents its OlmoHybridConfig defaults as allenai/Olmo-Hybrid-7B
    default = OlmoHybridConfig()
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "rms_norm_eps",
        "pad_token_id",
        "eos_token_id",
        "tie_word_embeddings",
        "layer_types",
        "max_position_embeddings",
    ):
        assert getattr(c, field) == getattr(default, field), field
    assert 7.3e9 < meta_model(c).num_params() < 7.5e9


def test_transformer_7b_is_olmo3_7b():
    c = load_config("transformer-7b")
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (32, 4096, 32, 32)
    assert (c.intermediate_size, c.sliding_window, c.vocab_size, c.rms_norm_eps) == (11008, 4096, 100278, 1e-6)
    assert {t: p["rope_theta"] for t, p in c.rope_parameters.items()} == {
        "full_attention": 5e5,
        "sliding_attention": 5e5,
    }
    assert 7.2e9 < meta_model(c).num_params() < 7.4e9


@pytest.mark.parametrize("name", ["hybrid-tiny", "transformer-tiny"])
def test_tiny_matches_transformers(name, tmp_path):
    """The tiny YAMLs as built by transformers and by us are the same model (count and logits)."""
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(load_config(name)).eval()
    ref.save_pretrained(tmp_path)
    ours = HybridLM.from_pretrained(tmp_path)
    assert ours.num_params() == ref.num_parameters()
    x = torch.randint(0, ours.config.vocab_size, (1, 64))
    with torch.no_grad():
        assert (ours(x) - ref(x).logits).abs().max() <= 1e-4


def test_load_config_sources_and_overrides(tmp_path):
    assert load_config("hybrid-tiny", vocab_size=1234).vocab_size == 1234
    model = HybridLM(load_config("hybrid-tiny"))
    model.save_pretrained(tmp_path / "ckpt")
    assert load_config(tmp_path / "ckpt").to_dict()["layer_types"] == model.config.layer_types
    yaml_file = tmp_path / "m.yaml"
    yaml_file.write_text(
        "model_type: olmo3\nhidden_size: 32\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
        "intermediate_size: 64\nvocab_size: 50\n"
    )
    assert load_config(yaml_file).layer_types == ["sliding_attention", "sliding_attention"]


@pytest.mark.parametrize(
    "source,match",
    [
        ("hybrid-huge", "accepted names: hybrid-190m"),
        ("hybrid-tiny:bad", "not found"),
    ],
)
def test_load_config_errors(source, match):
    with pytest.raises(UsageError, match=match):
        load_config(source)


def test_load_config_rejects_bad_fields(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model_type: llama\nhidden_size: 32\n")
    with pytest.raises(UsageError, match="accepted: olmo_hybrid, olmo3"):
        load_config(f)
    f.write_text("model_type: olmo3\nhidden_size: 30\nnum_attention_heads: 4\nnum_hidden_layers: 2\n")
    with pytest.raises(UsageError, match="not a multiple of num_attention_heads"):
        load_config(f)
