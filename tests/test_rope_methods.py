"""rope_methods against transformers' own RoPE code (configs read by transformers, its init
functions, its rotary modules and apply_rotary_pos_emb) and the published formulas."""

import copy
import math

import pytest
import torch
from transformers import LlamaConfig, Olmo3Config, OlmoHybridConfig, OlmoHybridModel
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.olmo3.modeling_olmo3 import Olmo3RotaryEmbedding
from transformers.models.olmo_hybrid.modeling_olmo_hybrid import OlmoHybridRotaryEmbedding, apply_rotary_pos_emb

import rope_methods as rm

TINY = dict(num_hidden_layers=4, intermediate_size=32, vocab_size=32, pad_token_id=0, eos_token_id=1)


def hybrid_config(rope_parameters, head_dim, max_position_embeddings=32768):
    # OlmoHybridConfig has no head_dim field: transformers derives it as hidden_size // heads
    return OlmoHybridConfig(
        rope_parameters=None if rope_parameters is None else dict(rope_parameters),
        hidden_size=2 * head_dim,
        num_attention_heads=2,
        max_position_embeddings=max_position_embeddings,
        **TINY,
    )


def hf_init(config, layer_type=None):
    """transformers' (inv_freq, attention_scaling), as its rotary module gets them at init."""
    rp = config.rope_parameters if layer_type is None else config.rope_parameters[layer_type]
    if rp["rope_type"] == "default":
        return OlmoHybridRotaryEmbedding.compute_default_rope_parameters(config)
    kwargs = {} if layer_type is None else {"layer_type": layer_type}
    return ROPE_INIT_FUNCTIONS[rp["rope_type"]](config, None, **kwargs)


def same(ours, theirs):
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- inv_freq vs transformers

YARN = {"rope_type": "yarn"}
CASES = [
    {"rope_type": "default"},
    {},  # rope_type omitted -> default
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "linear", "factor": 8},
    {"rope_type": "dynamic", "factor": 4.0},
    {**YARN, "factor": 8.0, "original_max_position_embeddings": 8192},
    {**YARN, "factor": 8.0, "original_max_position_embeddings": 8192, "truncate": False},
    {**YARN, "factor": 16.0, "original_max_position_embeddings": 4096, "beta_fast": 16, "beta_slow": 2},
    {
        **YARN,
        "factor": 3.5,
        "original_max_position_embeddings": 4096,
        "beta_fast": 64.0,
        "beta_slow": 0.5,
        "truncate": False,
    },
    {**YARN, "factor": 4.0, "original_max_position_embeddings": 2048, "beta_fast": 8, "beta_slow": 4},
    {**YARN, "factor": 8.0, "original_max_position_embeddings": 4096, "mscale": 1.0, "mscale_all_dim": 0.5},
    {**YARN, "factor": 8.0, "original_max_position_embeddings": 4096, "mscale": 0.707, "mscale_all_dim": 0.707},
    {**YARN, "factor": 8.0, "original_max_position_embeddings": 4096, "attention_factor": 1.5},
    {**YARN, "factor": 1.0, "original_max_position_embeddings": 4096},
    # beta_fast == beta_slow untruncated: a zero-width ramp, which transformers widens by 0.001
    {
        **YARN,
        "factor": 4.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 8,
        "beta_slow": 8,
        "truncate": False,
    },
    {**YARN, "factor": 4.0},  # original <- max_position_embeddings (transformers' standardize)
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    {
        "rope_type": "llama3",
        "factor": 4.0,
        "low_freq_factor": 2.0,
        "high_freq_factor": 8.0,
        "original_max_position_embeddings": 2048,
    },
]


@pytest.mark.parametrize("theta", [1e4, 5e5])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k[:6]}{v}" for k, v in c.items()) or "empty")
def test_inv_freq_matches_transformers(theta, head_dim, case):
    rp = {**case, "rope_theta": theta}
    config = hybrid_config(rp, head_dim, max_position_embeddings=16384)
    ref_inv, ref_scale = hf_init(config)
    inv, scale = rm.inv_freq(rp, head_dim, max_position_embeddings=16384)
    assert inv.dtype == torch.float32 and inv.shape == (head_dim // 2,)
    same(inv, ref_inv)
    assert scale == pytest.approx(ref_scale, rel=1e-12)
    # the rotary module the model actually builds agrees too
    module = OlmoHybridRotaryEmbedding(config)
    same(inv, module.inv_freq)
    assert scale == pytest.approx(module.attention_scaling, rel=1e-12)


def test_inv_freq_yarn_factor_from_lengths():
    # transformers derives a missing factor as max_position_embeddings / original
    rp = {"rope_type": "yarn", "rope_theta": 5e5, "factor": None, "original_max_position_embeddings": 4096}
    config = hybrid_config(rp, 64, max_position_embeddings=32768)
    ref_inv, ref_scale = ROPE_INIT_FUNCTIONS["yarn"](config, None)
    inv, scale = rm.inv_freq(rp, 64, max_position_embeddings=32768)
    same(inv, ref_inv)
    assert scale == pytest.approx(ref_scale) == pytest.approx(0.1 * math.log(8) + 1)


def test_inv_freq_with_llama_config_head_dim():
    # LlamaConfig carries an explicit head_dim (not hidden_size // heads)
    rp = {"rope_type": "yarn", "rope_theta": 5e5, "factor": 8.0, "original_max_position_embeddings": 4096}
    config = LlamaConfig(
        hidden_size=64,
        num_attention_heads=2,
        head_dim=96,
        max_position_embeddings=32768,
        rope_parameters=dict(rp),
        num_hidden_layers=1,
        intermediate_size=32,
        vocab_size=32,
    )
    module = LlamaRotaryEmbedding(config)
    inv, scale = rm.inv_freq(rp, 96)
    same(inv, module.inv_freq)
    assert scale == pytest.approx(module.attention_scaling)


@pytest.mark.parametrize("with_factor", [True, False])
def test_inv_freq_longrope(with_factor):
    head_dim, theta = 64, 1e4
    g = torch.Generator().manual_seed(0)
    rp = {
        "rope_type": "longrope",
        "rope_theta": theta,
        "original_max_position_embeddings": 4096,
        "short_factor": (1 + torch.rand(head_dim // 2, generator=g)).tolist(),
        "long_factor": (1 + 4 * torch.rand(head_dim // 2, generator=g)).tolist(),
    }
    if with_factor:
        rp["factor"] = 4.0
    config = hybrid_config(rp, head_dim, max_position_embeddings=32768)
    ref_inv, ref_scale = ROPE_INIT_FUNCTIONS["longrope"](config, None)
    inv, scale = rm.inv_freq(rp, head_dim, max_position_embeddings=32768)
    same(inv, ref_inv)
    assert scale == pytest.approx(ref_scale)
    # past the original length transformers switches to long_factor
    ref_long, _ = ROPE_INIT_FUNCTIONS["longrope"](config, None, seq_len=8192)
    long, _ = rm.dynamic_inv_freq(rp, head_dim, 8192, max_position_embeddings=32768)
    same(long, ref_long)
    assert not torch.allclose(long, inv)


def test_inv_freq_no_rope():
    assert rm.inv_freq(None, 128) == (None, 1.0)
    # a null rope_theta is how an OlmoHybrid config says "no RoPE": transformers builds no rotary module
    rp = {"rope_type": "default", "rope_theta": None}
    assert OlmoHybridModel(hybrid_config(rp, 16)).rotary_emb is None
    assert rm.inv_freq(rp, 16) == (None, 1.0)


@pytest.mark.parametrize("factor", [2.0, 8.0])
@pytest.mark.parametrize("seq_len", [1000, 16384, 20000, 65536, 100000])
def test_dynamic_inv_freq_matches_transformers(factor, seq_len):
    head_dim, max_len = 64, 16384
    rp = {"rope_type": "dynamic", "rope_theta": 5e5, "factor": factor}
    config = hybrid_config(rp, head_dim, max_position_embeddings=max_len)
    inv, scale = rm.dynamic_inv_freq(rp, head_dim, seq_len, max_position_embeddings=max_len)
    ref, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, None, seq_len=seq_len)
    same(inv, ref)
    assert scale == 1.0
    # what a fresh rotary module does in forward (seq_len as a tensor, float32 maths: close, not equal)
    module = OlmoHybridRotaryEmbedding(config)
    module(torch.zeros(1), torch.arange(seq_len)[None])
    torch.testing.assert_close(inv, module.inv_freq, rtol=1e-5, atol=0)
    default, _ = rm.inv_freq({"rope_type": "default", "rope_theta": 5e5}, head_dim)
    assert torch.equal(inv, default) == (seq_len <= max_len)


def test_dynamic_reference_length_from_dict():
    rp = rm.get("ntk").extend({"rope_type": "default", "rope_theta": 1e4}, base_len=4096, target_len=16384)
    with_kw, _ = rm.dynamic_inv_freq(rp, 64, 16384, max_position_embeddings=4096)
    from_dict, _ = rm.dynamic_inv_freq(rp, 64, 16384)
    assert torch.equal(with_kw, from_dict)


# ---------------------------------------------------------------- cos/sin and rotation


@pytest.mark.parametrize(
    "rp",
    [
        {"rope_type": "default", "rope_theta": 5e5},
        {"rope_type": "yarn", "rope_theta": 5e5, "factor": 8.0, "original_max_position_embeddings": 4096},
    ],
    ids=["default", "yarn"],
)
def test_cos_sin_matches_rotary_module(rp):
    head_dim = 64
    position_ids = torch.stack([torch.arange(32), torch.arange(40000, 40032)])
    cos, sin = rm.cos_sin(*rm.inv_freq(rp, head_dim), position_ids, torch.float32)
    # OlmoHybrid keeps float32 cos/sin
    ref_cos, ref_sin = OlmoHybridRotaryEmbedding(hybrid_config(rp, head_dim))(
        torch.zeros(1, dtype=torch.bfloat16), position_ids
    )
    assert cos.shape == ref_cos.shape == (2, 32, head_dim)
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)
    # Llama casts them to the activations' dtype
    llama = LlamaRotaryEmbedding(
        LlamaConfig(
            hidden_size=2 * head_dim,
            num_attention_heads=2,
            rope_parameters=dict(rp),
            max_position_embeddings=32768,
            num_hidden_layers=1,
            vocab_size=32,
        )
    )
    ref_cos, ref_sin = llama(torch.zeros(1, dtype=torch.bfloat16), position_ids)
    cos, sin = rm.cos_sin(*rm.inv_freq(rp, head_dim), position_ids, torch.bfloat16)
    assert cos.dtype == torch.bfloat16
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=0)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rotary_matches_transformers(dtype):
    g = torch.Generator().manual_seed(0)
    B, H, T, D = 2, 3, 17, 64
    q = torch.randn(B, H, T, D, generator=g).to(dtype)
    k = torch.randn(B, H, T, D, generator=g).to(dtype)
    rp = {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "original_max_position_embeddings": 1024}
    position_ids = torch.randint(0, 8192, (B, T), generator=g)
    cos, sin = rm.cos_sin(*rm.inv_freq(rp, D), position_ids)
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    q2, k2 = rm.apply_rotary(q, k, cos, sin)
    assert q2.dtype == k2.dtype == dtype
    torch.testing.assert_close(q2, ref_q, rtol=0, atol=0)
    torch.testing.assert_close(k2, ref_k, rtol=0, atol=0)
    # [B, T, H, D] layout: heads axis at 2
    q3, k3 = rm.apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin, unsqueeze_dim=2)
    torch.testing.assert_close(q3.transpose(1, 2), ref_q, rtol=0, atol=0)
    torch.testing.assert_close(k3.transpose(1, 2), ref_k, rtol=0, atol=0)


def test_rotation_is_relative():
    # the defining RoPE property, independent of transformers: q.k depends only on the offset
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, 64, generator=g), torch.randn(1, 1, 1, 64, generator=g)
    inv, scale = rm.inv_freq({"rope_type": "default", "rope_theta": 1e4}, 64)

    def dot(pq, pk):
        cq, sq = rm.cos_sin(inv, scale, torch.tensor([[pq]]))
        ck, sk = rm.cos_sin(inv, scale, torch.tensor([[pk]]))
        return (rm.apply_rotary(q, q, cq, sq)[0] * rm.apply_rotary(k, k, ck, sk)[1]).sum()

    assert dot(10, 3).item() == pytest.approx(dot(1010, 1003).item(), rel=1e-4)
    assert dot(10, 3).item() != pytest.approx(dot(10, 9).item(), rel=1e-2)


# ---------------------------------------------------------------- methods

BASE = {"rope_type": "default", "rope_theta": 5e5}


def test_registry():
    assert rm.METHODS == ("yarn", "drope", "pi", "ntk", "none")
    for name in rm.METHODS:
        assert rm.get(name).name == name


def test_yarn_defaults_follow_the_recipe():
    out = rm.get("yarn").extend(dict(BASE), base_len=8192, target_len=65536)
    assert out == {
        "rope_type": "yarn",
        "rope_theta": 5e5,
        "factor": 8.0,
        "original_max_position_embeddings": 8192,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    }
    assert rm.get("yarn").layers == ("full_attention",)
    # temperature from the YaRN paper: sqrt(1/t) = 0.1 ln(s) + 1, multiplied into cos and sin
    _, scale = rm.inv_freq(out, 128)
    assert scale == pytest.approx(0.1 * math.log(8) + 1)


def test_yarn_options_override():
    out = rm.get("yarn").extend(
        dict(BASE),
        base_len=4096,
        target_len=65536,
        factor=8,
        beta_fast=16,
        beta_slow=2,
        theta=1e6,
        original_max_position_embeddings=8192,
        attention_factor=1.25,
        truncate=False,
    )
    assert out == {
        "rope_type": "yarn",
        "rope_theta": 1e6,
        "factor": 8.0,
        "original_max_position_embeddings": 8192,
        "beta_fast": 16.0,
        "beta_slow": 2.0,
        "attention_factor": 1.25,
        "truncate": False,
    }


def _check_against_transformers(method, out, base_len, target_len, head_dim=64):
    config = hybrid_config(out, head_dim, max_position_embeddings=method.max_position_embeddings(base_len, target_len))
    module = OlmoHybridRotaryEmbedding(config)
    inv, scale = rm.inv_freq(out, head_dim)
    same(inv, module.inv_freq)
    assert scale == pytest.approx(module.attention_scaling)
    return config, module


@pytest.mark.parametrize("name", ["yarn", "pi", "ntk", "none"])
@pytest.mark.parametrize("lengths", [(4096, 65536), (8192, 65536), (3000, 10000)])
def test_extended_parameters_load_in_transformers(name, lengths):
    base_len, target_len = lengths
    method = rm.get(name)
    out = method.extend(dict(BASE), base_len=base_len, target_len=target_len)
    config, module = _check_against_transformers(method, out, base_len, target_len)
    default, _ = rm.inv_freq(BASE, 64)
    factor = target_len / base_len
    if name == "pi":  # published PI: every frequency divided by the factor
        torch.testing.assert_close(module.inv_freq, default / factor)
    if name in ("yarn", "pi", "ntk"):
        assert out["factor"] == pytest.approx(factor)
    if name == "none":
        assert out == BASE and out is not BASE
    if name == "ntk":
        # at the target length transformers' dynamic update and ours agree, and the base has grown
        module(torch.zeros(1), torch.arange(target_len)[None])
        inv, _ = rm.dynamic_inv_freq(out, 64, target_len)
        torch.testing.assert_close(inv, module.inv_freq, rtol=1e-5, atol=0)
        assert inv[-1] < default[-1]


def test_extend_nested_olmo3_keeps_sliding_rope():
    nested = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        "full_attention": {"rope_type": "default", "rope_theta": 5e5},
    }
    out = rm.get("yarn").extend(nested, base_len=8192, target_len=65536, beta_fast=16)
    assert out["sliding_attention"] == nested["sliding_attention"]
    assert nested["full_attention"] == {"rope_type": "default", "rope_theta": 5e5}  # input untouched
    config = Olmo3Config(
        hidden_size=128, num_attention_heads=2, max_position_embeddings=65536, rope_parameters=out, **TINY
    )
    module = Olmo3RotaryEmbedding(config)
    for layer_type in ("full_attention", "sliding_attention"):
        inv, scale = rm.inv_freq(out[layer_type], 64)
        same(inv, getattr(module, f"{layer_type}_inv_freq"))
        assert scale == pytest.approx(getattr(module, f"{layer_type}_attention_scaling"))
    assert out["full_attention"]["rope_type"] == "yarn"


@pytest.mark.parametrize(
    "rope_parameters", [dict(BASE), None, {"sliding_attention": dict(BASE), "full_attention": dict(BASE)}]
)
def test_drope_removes_rope(rope_parameters):
    method = rm.get("drope")
    assert method.extend(rope_parameters, base_len=8192, target_len=65536, layers="all") is None
    assert rm.inv_freq(None, 64) == (None, 1.0)


def test_drope_keeps_the_sliding_layers_rope_by_default():
    nested = {"sliding_attention": dict(BASE), "full_attention": dict(BASE)}
    out = rm.get("drope").extend(nested, base_len=8192, target_len=65536)
    assert out == {"sliding_attention": BASE, "full_attention": None}
    assert nested["full_attention"] == BASE  # input untouched
    assert rm.get("drope").extend(dict(BASE), base_len=8192, target_len=65536) is None  # Olmo Hybrid: flat


def test_unrotated_is_no_rope_here_and_identity_in_transformers():
    """UNROTATED, the Olmo 3 spelling of "no RoPE": transformers' llama3 init gives frequencies so
    small that cos is exactly 1 and sin negligible at any position we reach; we read it as None."""
    assert rm.inv_freq(rm.UNROTATED, 64) == (None, 1.0)
    assert rm.is_unrotated(dict(rm.UNROTATED)) and not rm.is_unrotated(BASE) and not rm.is_unrotated(None)
    config = Olmo3Config(
        hidden_size=128,
        num_attention_heads=2,
        max_position_embeddings=65536,
        rope_parameters={"full_attention": dict(rm.UNROTATED), "sliding_attention": dict(BASE)},
        **TINY,
    )
    module = Olmo3RotaryEmbedding(config)
    pos = torch.tensor([[0, 1, 4096, 2**20, 2**30]])
    cos, sin = module(torch.zeros(1), pos, "full_attention")
    assert bool((cos == 1).all()) and sin.abs().max() < 1e-20
    cos, sin = module(torch.zeros(1), pos, "sliding_attention")
    assert sin.abs().max() > 0.5  # the other layer type still rotates


def test_plans():
    Stage = rm.Stage
    assert rm.get("drope").plan(8192, 65536) == [Stage("recalibrate", 8192), Stage("train", 65536)]
    for name in ("yarn", "pi", "ntk", "none"):
        assert rm.get(name).plan(8192, 65536) == [Stage("train", 65536)]


def test_none_keeps_no_rope():
    assert rm.get("none").extend(None, base_len=8192, target_len=65536) is None


# ---------------------------------------------------------------- bad input


def _yarn(**opts):
    return rm.get("yarn").extend(dict(BASE), base_len=4096, target_len=32768, **opts)


BAD = [
    (lambda: rm.get("rope2"), "'rope2'"),
    (lambda: rm.get("yarn").extend(dict(BASE), base_len=8192, target_len=8192), "8192"),
    (lambda: rm.get("pi").extend(dict(BASE), base_len=8192, target_len=4096), "4096"),
    (lambda: rm.get("ntk").extend(dict(BASE), base_len=0, target_len=4096), "base_len=0"),
    (lambda: rm.get("drope").extend(dict(BASE), base_len=-5, target_len=4096), "-5"),
    (lambda: rm.get("yarn").plan(4096, 4096.5), "4096.5"),
    (lambda: _yarn(beta_fast=1, beta_slow=2), "beta_fast=1"),
    (lambda: _yarn(beta_slow=-1), "beta_slow=-1"),
    (lambda: _yarn(factor=-2.0), "factor=-2.0"),
    (lambda: _yarn(theta=0), "theta=0"),
    (lambda: _yarn(truncate="no"), "'no'"),
    (lambda: _yarn(original_max_position_embeddings=4096.0), "4096.0"),
    (lambda: _yarn(betafast=16), "'betafast'"),
    (lambda: rm.get("pi").extend(dict(BASE), base_len=4096, target_len=8192, beta_fast=16), "'beta_fast'"),
    (lambda: rm.get("drope").extend(dict(BASE), base_len=4096, target_len=8192, factor=2), "'factor'"),
    (lambda: rm.get("drope").extend(dict(BASE), base_len=4096, target_len=8192, layers="some"), "'some'"),
    (lambda: rm.get("drope").extend(dict(BASE), base_len=4096, target_len=8192, temperature=0), "temperature=0"),
    (lambda: rm.get("drope").extend(dict(BASE), base_len=4096, target_len=8192, temperature=-0.1), "-0.1"),
    (lambda: rm.get("drope").extend(dict(BASE), base_len=4096, target_len=8192, temperature="hot"), "'hot'"),
    (lambda: rm.get("drope").extend(dict(BASE), base_len=4096, target_len=8192, temperature=True), "True"),
    (lambda: rm.get("none").extend(dict(BASE), base_len=4096, target_len=8192, theta=1e6), "'theta'"),
    (lambda: rm.get("yarn").extend(None, base_len=4096, target_len=8192), "None"),
    (lambda: rm.get("pi").extend({"rope_theta": None}, base_len=4096, target_len=8192), "None"),
    (lambda: rm.get("ntk").extend(None, base_len=4096, target_len=8192), "None"),
    (lambda: rm.get("yarn").extend(_yarn(), base_len=4096, target_len=8192), "'yarn'"),
    (lambda: rm.inv_freq({"rope_type": "rope9", "rope_theta": 1e4}, 64), "'rope9'"),
    (lambda: rm.inv_freq({"rope_type": "linear", "rope_theta": 1e4}, 64), "'factor'"),
    (lambda: rm.inv_freq({"rope_type": "linear", "rope_theta": 1e4, "factor": -1}, 64), "factor=-1"),
    (lambda: rm.inv_freq(BASE, 63), "head_dim=63"),
    (lambda: rm.inv_freq({**BASE, "partial_rotary_factor": 0.5}, 64), "partial_rotary_factor=0.5"),
    (lambda: rm.inv_freq({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}, 64), "max_position_embeddings"),
    (lambda: rm.inv_freq({"full_attention": BASE}, 64), "full_attention"),
    (
        lambda: rm.dynamic_inv_freq({"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}, 64, 9000),
        "max_position_embeddings",
    ),
]


@pytest.mark.parametrize("call, named", BAD, ids=[named for _, named in BAD])
def test_bad_input_raises_value_error_naming_it(call, named):
    with pytest.raises(ValueError) as err:
        call()
    assert named in str(err.value)


MIXED = {
    "rope_type": "default",
    "rope_theta": 2e5,  # flat keys beside per-layer-type entries
    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    "full_attention": {"rope_type": "default", "rope_theta": 5e5},
}


@pytest.mark.parametrize("method, opts", [("yarn", {}), ("pi", {}), ("ntk", {}), ("drope", {}), ("none", {})])
def test_extend_mixed_form_as_transformers_reads_it(method, opts):
    """The mixed form transformers accepts: Olmo 3 runs the per-layer-type entries (the flat keys are left
    beside them, unread), Olmo Hybrid runs the flat keys. Extended, each architecture runs the extension of
    what it ran before: the flat dict's for Olmo Hybrid, the entry's for Olmo 3's full attention, and the
    sliding-window entry stays as it was."""
    m = rm.get(method)
    out = m.extend(MIXED, base_len=8192, target_len=65536, **opts)
    assert MIXED["full_attention"] == {"rope_type": "default", "rope_theta": 5e5}  # input untouched
    flat = {k: v for k, v in MIXED.items() if k not in ("sliding_attention", "full_attention")}
    want_flat = m.extend(dict(flat), base_len=8192, target_len=65536, **opts)
    want_full = m.extend(dict(MIXED["full_attention"]), base_len=8192, target_len=65536, **opts)

    olmo3 = Olmo3Config(
        hidden_size=128,
        num_attention_heads=2,
        max_position_embeddings=65536,
        rope_parameters=copy.deepcopy(out),
        **TINY,
    )
    assert sorted(olmo3.rope_parameters) == sorted(out)  # transformers keeps the mixed form as given
    module = Olmo3RotaryEmbedding(olmo3) if want_full is not None else None
    if module is not None:
        inv, scale = rm.inv_freq(want_full, 64, max_position_embeddings=65536)
        same(inv, module.full_attention_inv_freq)
        assert scale == pytest.approx(module.full_attention_attention_scaling)
        inv, _ = rm.inv_freq(MIXED["sliding_attention"], 64)
        same(inv, module.sliding_attention_inv_freq)
    else:
        assert out["full_attention"] is None  # DRoPE: rope_methods' "no RoPE" (the checkpoint writes UNROTATED)
    assert out["sliding_attention"] == MIXED["sliding_attention"]

    hybrid = OlmoHybridConfig(
        hidden_size=128,
        num_attention_heads=2,
        max_position_embeddings=65536,
        rope_parameters=copy.deepcopy(out),
        **TINY,
    )
    rotary = OlmoHybridRotaryEmbedding(hybrid) if want_flat is not None else None
    if rotary is not None:
        inv, scale = rm.inv_freq(want_flat, 64, max_position_embeddings=65536)
        same(inv, rotary.inv_freq)
        assert scale == pytest.approx(rotary.attention_scaling)
    else:
        assert {k: out[k] for k in flat} == rm.base.NO_ROPE  # Olmo Hybrid's saved "no RoPE"
