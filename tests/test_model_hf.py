"""HybridLM against transformers' OlmoHybridForCausalLM / Olmo3ForCausalLM (fp32, CPU).

Each test builds a randomised transformers model, writes it to disk with transformers, loads it
with HybridLM and compares logits (max abs diff <= 1e-4), or goes the other way round.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_model_util import NO_ROPE, VOCAB, YARN, hf_reference, hybrid_config, max_diff, olmo3_config
from transformers import AutoModelForCausalLM

from longctx.errors import UsageError
from longctx.model import HybridLM

TOL = 1e-4
T = 150  # > 2 GDN chunks of 64, > the sliding window of 16


def ids(batch=2, length=T, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def hf_logits(model, x):
    with torch.no_grad():
        return model(x).logits


def ours_logits(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw)


HYBRID_CASES = {
    "rope-default-untied-negeig": dict(),
    "rope-yarn-tied-posonly": dict(rope_parameters=dict(YARN), tie_word_embeddings=True, linear_allow_neg_eigval=False),
    "rope-none-untied-posonly": dict(rope_parameters=dict(NO_ROPE), linear_allow_neg_eigval=False),
    "rope-none-tied-negeig-mha": dict(
        rope_parameters=dict(NO_ROPE),
        tie_word_embeddings=True,
        num_key_value_heads=4,
        linear_num_value_heads=2,
        linear_value_head_dim=32,
    ),
    "rope-dynamic": dict(
        rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}, max_position_embeddings=64
    ),
}
OLMO3_CASES = {
    "rope-default-untied": dict(),
    "rope-yarn-full-tied": dict(
        tie_word_embeddings=True,
        rope_parameters={
            "full_attention": dict(YARN),
            "sliding_attention": {"rope_type": "default", "rope_theta": 5e5},
        },
    ),
    "rope-yarn-both-mha": dict(
        num_key_value_heads=4,
        rope_parameters={"full_attention": dict(YARN), "sliding_attention": dict(YARN, factor=2.0)},
    ),
}


@pytest.mark.parametrize("case", list(HYBRID_CASES))
def test_olmo_hybrid_matches_transformers(case, tmp_path):
    ref = hf_reference(hybrid_config(**HYBRID_CASES[case]))
    ref.save_pretrained(tmp_path)
    ours = HybridLM.from_pretrained(tmp_path)
    x = ids()
    expected = hf_logits(ref, x)
    assert expected.abs().max() > 1.0  # the comparison is not between near-zero logits
    assert max_diff(ours_logits(ours, x), expected) <= TOL


@pytest.mark.parametrize("case", list(OLMO3_CASES))
def test_olmo3_matches_transformers(case, tmp_path):
    ref = hf_reference(olmo3_config(**OLMO3_CASES[case]))
    ref.save_pretrained(tmp_path)
    ours = HybridLM.from_pretrained(tmp_path)
    x = ids()  # 150 tokens through windows of 16: the sliding mask matters
    assert max_diff(ours_logits(ours, x), hf_logits(ref, x)) <= TOL


def test_sliding_window_is_exercised(tmp_path):
    """Sanity of the olmo3 comparison: with a window as long as the sequence the logits change."""
    ref = hf_reference(olmo3_config())
    ref.save_pretrained(tmp_path)
    ours = HybridLM.from_pretrained(tmp_path)
    x = ids(batch=1)
    windowed = ours_logits(ours, x)
    ours.config.sliding_window = 4096
    for layer in ours.model.layers:
        if layer.self_attn.window is not None:
            layer.self_attn.window = 4096
    assert max_diff(ours_logits(ours, x), windowed) > 1e-2


def test_explicit_position_ids(tmp_path):
    ref = hf_reference(hybrid_config())
    ref.save_pretrained(tmp_path)
    ours = HybridLM.from_pretrained(tmp_path)
    x = ids(length=40)
    pos = (3 * torch.arange(40) + 7).expand(2, 40)  # a plain offset would be invisible to RoPE
    with torch.no_grad():
        expected = ref(x, position_ids=pos).logits
    assert max_diff(ours_logits(ours, x, position_ids=pos), expected) <= TOL
    assert max_diff(ours_logits(ours, x), expected) > 1e-3  # positions do matter


def test_drope_config_none(tmp_path):
    """rope_parameters=None (what DRoPE sets) means no RoPE, and saves in the form transformers keeps."""
    ref = hf_reference(hybrid_config(rope_parameters=dict(NO_ROPE)))
    ref.save_pretrained(tmp_path / "ref")
    ours = HybridLM.from_pretrained(tmp_path / "ref")
    ours.config.rope_parameters = None
    ours = HybridLM.from_pretrained(ours.save_pretrained(tmp_path / "ours"))  # rebuilt from the saved config
    x = ids()
    assert max_diff(ours_logits(ours, x), hf_logits(ref, x)) <= TOL
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["rope_parameters"]["rope_theta"] is None
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert back.model.rotary_emb is None
    assert max_diff(hf_logits(back, x), hf_logits(ref, x)) <= TOL


def test_olmo3_drope_is_rope_switched_off(tmp_path):
    """The transformer's DRoPE: transformers' Olmo3 always rotates q and k, so the reference is its own
    attention with every inv_freq zeroed (cos 1, sin 0: q and k unrotated), in both layer types
    (sliding and full). The saved config spells "no RoPE" as rope_methods.UNROTATED, which
    transformers runs as that same identity rotation."""
    ref = hf_reference(olmo3_config())
    ref.save_pretrained(tmp_path / "ref")
    ours = HybridLM.from_pretrained(tmp_path / "ref")
    ours.config.rope_parameters = None
    ours = HybridLM.from_pretrained(ours.save_pretrained(tmp_path / "ours"))
    x = ids()
    with_rope = hf_logits(ref, x)
    for layer_type in ("sliding_attention", "full_attention"):
        getattr(ref.model.rotary_emb, f"{layer_type}_inv_freq").zero_()
    expected = hf_logits(ref, x)
    assert max_diff(with_rope, expected) > 1e-2  # RoPE mattered in the reference
    assert max_diff(ours_logits(ours, x), expected) <= TOL
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert back.config.rope_parameters["full_attention"]["rope_type"] == "llama3"
    assert max_diff(hf_logits(back, x), expected) <= TOL


@pytest.mark.parametrize(
    "kind,tied", [("olmo_hybrid", False), ("olmo_hybrid", True), ("olmo3", False), ("olmo3", True)]
)
def test_save_pretrained_loads_in_transformers(kind, tied, tmp_path):
    config = (hybrid_config if kind == "olmo_hybrid" else olmo3_config)(tie_word_embeddings=tied)
    ref = hf_reference(config)
    ref.save_pretrained(tmp_path / "ref")
    ours = HybridLM.from_pretrained(tmp_path / "ref")
    ours.save_pretrained(tmp_path / "ours")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    x = ids()
    assert max_diff(hf_logits(back, x), ours_logits(ours, x)) <= TOL
    assert max_diff(hf_logits(back, x), hf_logits(ref, x)) <= TOL
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert ("lm_head.weight" in shapes) == (not tied)
    if kind == "olmo_hybrid":  # q/k/v convs apart, with their true channel counts
        assert shapes["model.layers.0.linear_attn.q_conv1d.weight"][0] == 2 * 16
        assert shapes["model.layers.0.linear_attn.v_conv1d.weight"][0] == 4 * 24
        # the norms under transformers' in-memory names (vLLM 0.26 reads no others): with the three convs
        # taken as one, as vLLM's weight mapper does, the saved keys are transformers' own
        fused = {re.sub(r"\.[qkv]_conv1d\.", ".conv1d.", k) for k in shapes}
        assert fused == set(_transformers_state(ref))
        assert not any("attention_layer_norm" in k or "feedforward_layer_norm" in k for k in shapes)


def test_state_dict_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = HybridLM(hybrid_config(tie_word_embeddings=True))
    model.save_pretrained(tmp_path / "m")
    again = HybridLM.from_pretrained(tmp_path / "m")
    assert again.lm_head.weight is again.model.embed_tokens.weight
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _transformers_state(ref):
    """transformers' in-memory keys: fused conv1d, input_layernorm / post_attention_layernorm."""
    return {
        k: v.contiguous()
        for k, v in ref.state_dict().items()
        if k != "lm_head.weight" or not ref.config.tie_word_embeddings
    }


def _write(state, config_dir, out_dir):
    out_dir.mkdir()
    (out_dir / "config.json").write_text((config_dir / "config.json").read_text())
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def test_transformers_in_memory_layout_loads(tmp_path):
    ref = hf_reference(hybrid_config())
    ref.save_pretrained(tmp_path / "ref")
    state = _transformers_state(ref)
    assert "model.layers.0.linear_attn.conv1d.weight" in state and "model.layers.0.input_layernorm.weight" in state
    ours = HybridLM.from_pretrained(_write(state, tmp_path / "ref", tmp_path / "mem"))
    x = ids()
    assert max_diff(ours_logits(ours, x), hf_logits(ref, x)) <= TOL


def test_olmo_core_layout_loads(tmp_path):
    """OLMo-core's names (hf-internal-testing/olmo-hybrid): separate q/k/v convs (true channel counts),
    attention_/feedforward_layer_norm."""
    config = hybrid_config()
    ref = hf_reference(config)
    ref.save_pretrained(tmp_path / "ref")
    key_dim = config.linear_num_key_heads * config.linear_key_head_dim
    value_dim = config.linear_num_value_heads * config.linear_value_head_dim
    hub = {}
    for key, value in _transformers_state(ref).items():
        parts = key.split(".")
        gdn = parts[:2] == ["model", "layers"] and config.layer_types[int(parts[2])] == "linear_attention"
        if gdn and key.endswith("linear_attn.conv1d.weight"):
            q, k, v = value.split([key_dim, key_dim, value_dim])
            for n, t in zip("qkv", (q, k, v), strict=True):
                hub[key.replace("conv1d", f"{n}_conv1d")] = t.contiguous()
            continue
        if gdn:
            key = key.replace("input_layernorm", "attention_layer_norm").replace(
                "post_attention_layernorm", "feedforward_layer_norm"
            )
        hub[key] = value
    hub_dir = _write(hub, tmp_path / "ref", tmp_path / "hub")
    x = ids()
    expected = hf_logits(ref, x)
    assert max_diff(ours_logits(HybridLM.from_pretrained(hub_dir), x), expected) <= TOL
    # and it is a layout transformers itself renames on load
    assert max_diff(hf_logits(AutoModelForCausalLM.from_pretrained(hub_dir).eval(), x), expected) <= TOL


def test_bad_checkpoints_fail_with_one_line(tmp_path):
    ref = hf_reference(hybrid_config())
    ref.save_pretrained(tmp_path / "ref")
    state = _transformers_state(ref)
    del state["model.layers.3.self_attn.q_norm.weight"]
    with pytest.raises(UsageError, match="missing: model.layers.3.self_attn.q_norm.weight"):
        HybridLM.from_pretrained(_write(state, tmp_path / "ref", tmp_path / "broken"))
    with pytest.raises(UsageError, match="not a directory"):
        HybridLM.from_pretrained(tmp_path / "nope")


def test_tokenizer_is_saved_and_carried(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB - 1)} | {"<unk>": VOCAB - 1}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    model = HybridLM(hybrid_config())
    first = model.save_pretrained(tmp_path / "a", tokenizer=tok)
    assert AutoTokenizer.from_pretrained(first)("w3 w5")["input_ids"] == [3, 5]
    # loaded from a dir with tokenizer files, saved again without passing one: files carried over
    second = HybridLM.from_pretrained(first).save_pretrained(tmp_path / "b")
    assert AutoTokenizer.from_pretrained(second)("w7")["input_ids"] == [7]
    # overwriting an existing checkpoint leaves no temporary dirs behind
    HybridLM.from_pretrained(first).save_pretrained(tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_sharded_save_loads_everywhere(tmp_path, monkeypatch):
    from longctx.model import hf

    monkeypatch.setattr(hf, "MAX_SHARD_BYTES", 40_000)  # a few tensors per shard
    ref = hf_reference(hybrid_config())
    ref.save_pretrained(tmp_path / "ref")
    out = HybridLM.from_pretrained(tmp_path / "ref").save_pretrained(tmp_path / "sharded")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3 and not (out / "model.safetensors").exists()
    x = ids()
    expected = hf_logits(ref, x)
    assert max_diff(ours_logits(HybridLM.from_pretrained(out), x), expected) <= TOL
    assert max_diff(hf_logits(AutoModelForCausalLM.from_pretrained(out).eval(), x), expected) <= TOL
