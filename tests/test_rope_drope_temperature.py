"""DroPE as published: RoPE dropped from the full-attention layers (sliding ones keep theirs by default),
and the softmax temperature beta = 1 + c ln(s) folded into the weights, checked against references
built independently of the fold: SDPA with scale=beta/sqrt(d), and transformers' own models with
their rotary frequencies zeroed (no rotation) and their q_norm scaled."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_model_util import NO_ROPE, VOCAB, hf_reference, hybrid_config, max_diff, olmo3_config, randomize
from transformers import AutoModelForCausalLM

import rope_methods as rm
from longctx.model import HybridLM
from longctx.model.temperature import fold_temperature, temperature, temperature_layers
from longctx.model.varlen import doc_layout
from longctx.train.extend_cmd import with_rope
from longctx.train.temperature import fit_c
from rope_methods.drope import beta as beta_of

TOL = 1e-4
BASE_LEN, TARGET, C = 64, 256, 0.4
FULL = 3  # the full-attention layer of both tiny configs


def ids(batch=2, length=150, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out


def test_beta_formula():
    assert beta_of(0.412, 4096, 65536) == pytest.approx(1 + 0.412 * math.log(16))
    assert beta_of(0.0, 64, 256) == 1.0


@pytest.mark.parametrize("kind", ["olmo_hybrid", "olmo3"])
def test_fold_equals_softmax_of_beta_times_the_logits(kind):
    """One attention layer: folded weights == softmax(beta * q.k / sqrt(d)) v from SDPA on the same q, k, v."""
    config = (
        hybrid_config(rope_parameters=dict(NO_ROPE))
        if kind == "olmo_hybrid"
        else olmo3_config(
            rope_parameters={
                "full_attention": dict(rm.UNROTATED),
                "sliding_attention": {"rope_type": "default", "rope_theta": 5e5},
            }
        )
    )
    torch.manual_seed(0)
    model = randomize(HybridLM(config)).eval()
    assert temperature_layers(model.config) == [FULL]
    attn = model.model.layers[FULL].self_attn
    x = torch.randn(2, 40, config.hidden_size, generator=torch.Generator().manual_seed(2))
    beta = beta_of(C, BASE_LEN, TARGET)
    layout = doc_layout(None, 2, 40, torch.device("cpu"))
    with torch.no_grad():
        q, k, v = attn.qkv(x, None)
        ref = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            scale=beta / math.sqrt(attn.head_dim),
            enable_gqa=True,
        )
        ref = attn.o_proj(ref.transpose(1, 2).reshape(2, 40, -1))
        plain = attn(x, None, layout)
        with temperature(model, beta):
            scoped = attn(x, None, layout)
        assert torch.equal(attn(x, None, layout), plain)  # the context restores the weights
        assert fold_temperature(model, beta) == [FULL]
        folded = attn(x, None, layout)
    assert max_diff(folded, ref) <= 1e-5 and torch.equal(scoped, folded)
    assert max_diff(plain, ref) > 1e-3  # the temperature changes the output


def test_only_full_layers_without_rope_take_a_temperature():
    assert temperature_layers(hybrid_config()) == []  # RoPE kept: no temperature
    assert temperature_layers(hybrid_config(rope_parameters=dict(NO_ROPE))) == [FULL]
    nested = {"full_attention": None, "sliding_attention": {"rope_type": "default", "rope_theta": 5e5}}
    config = olmo3_config()
    config.rope_parameters = nested
    assert temperature_layers(config) == [FULL]  # the three sliding layers: none
    config.rope_parameters = None
    assert temperature_layers(config) == [FULL]  # layers: all drops the sliding RoPE, still no temperature there


def _reference(kind, tmp_path):
    config = hybrid_config() if kind == "olmo_hybrid" else olmo3_config()
    ref = hf_reference(config)
    ref.save_pretrained(tmp_path / "base")
    return ref, tmp_path / "base"


def _export(base, tmp_path, name, c, **opts):
    """What `longctx extend` exports, without the training: the base with DRoPE and the fold."""
    model = HybridLM.from_pretrained(base)
    rope = rm.get("drope").extend(model.config.rope_parameters, base_len=BASE_LEN, target_len=TARGET, **opts)
    ext = with_rope(model, rope, TARGET)
    fold_temperature(ext, beta_of(c, BASE_LEN, TARGET))
    ext.save_pretrained(tmp_path / name)
    return ext


def _unrotate(ref, layer_types):
    """transformers' model with no rotation in these layer types (the identity: cos 1, sin 0)."""
    rot = ref.model.rotary_emb
    for t in layer_types:
        getattr(rot, "inv_freq" if hasattr(rot, "inv_freq") else f"{t}_inv_freq").zero_()


@pytest.mark.parametrize("kind", ["olmo_hybrid", "olmo3"])
def test_exported_temperature_gives_the_same_logits_in_transformers(kind, tmp_path):
    ref, model = _reference(kind, tmp_path)
    folded = _export(model, tmp_path, "t", C)
    plain = _export(model, tmp_path, "c0", 0.0)
    x = ids()
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "t").eval()
    theirs = logits(back, x)
    assert max_diff(theirs, logits(HybridLM.from_pretrained(tmp_path / "t"), x)) <= TOL
    assert max_diff(theirs, logits(folded, x)) <= TOL  # the in-memory model is what was saved
    # independently: transformers' base model, full layer unrotated, its q_norm scaled by beta
    _unrotate(ref, ["full_attention"])
    with torch.no_grad():
        ref.model.layers[FULL].self_attn.q_norm.weight.mul_(beta_of(C, BASE_LEN, TARGET))
    assert max_diff(theirs, logits(ref, x)) <= TOL
    c0 = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "c0").eval(), x)
    assert max_diff(c0, logits(plain, x)) <= TOL
    assert max_diff(theirs, c0) > 1e-3  # the temperature is in the checkpoint


def test_olmo3_keeps_the_sliding_rope_by_default_and_drops_all_on_request(tmp_path):
    ref, model = _reference("olmo3", tmp_path)
    _export(model, tmp_path, "full", C)
    _export(model, tmp_path, "all", C, layers="all")
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "full").eval()
    every = AutoModelForCausalLM.from_pretrained(tmp_path / "all").eval()
    base_rope = {"rope_type": "default", "rope_theta": 5e5}
    assert {k: full.config.rope_parameters["sliding_attention"][k] for k in base_rope} == base_rope
    for m in (full, every):
        assert rm.is_unrotated(m.config.rope_parameters["full_attention"])
    assert rm.is_unrotated(every.config.rope_parameters["sliding_attention"])
    assert full.model.rotary_emb.sliding_attention_inv_freq.max() == 1.0  # still rotating
    x = ids()
    theirs_full, theirs_all = logits(full, x), logits(every, x)
    assert max_diff(theirs_full, logits(HybridLM.from_pretrained(tmp_path / "full"), x)) <= TOL
    assert max_diff(theirs_all, logits(HybridLM.from_pretrained(tmp_path / "all"), x)) <= TOL
    assert max_diff(theirs_full, theirs_all) > 1e-3  # the sliding layers' RoPE matters
    with torch.no_grad():
        ref.model.layers[FULL].self_attn.q_norm.weight.mul_(beta_of(C, BASE_LEN, TARGET))
    _unrotate(ref, ["full_attention"])
    assert max_diff(theirs_full, logits(ref, x)) <= TOL
    _unrotate(ref, ["sliding_attention"])
    assert max_diff(theirs_all, logits(ref, x)) <= TOL


def test_fit_c_finds_the_minimum_and_records_every_try():
    c, tried = fit_c(lambda c: (c - 0.33) ** 2 + 2.0)
    assert abs(c - 0.33) < 0.02
    assert len(tried) == 15 and {0.0, 0.05, 1.0} <= {r["c"] for r in tried}
    assert min(tried, key=lambda r: r["nll"])["c"] == c
    c, _ = fit_c(lambda c: 1.0 + c)  # increasing: c = 0 (no temperature) wins
    assert c == 0.0


def test_per_length_temperature_refolds_beta_for_each_length():
    """PerLengthTemperature on a model folded for TARGET: at L <= BASE_LEN beta is 1 (the unfolded model's logits),
    at L in between the paper's 1 + c ln(L / BASE_LEN) (a fresh fold of that beta's logits)."""
    import copy

    from longctx.model.temperature import PerLengthTemperature

    torch.manual_seed(0)
    plain = randomize(HybridLM(hybrid_config(rope_parameters=dict(NO_ROPE)))).eval()
    folded = copy.deepcopy(plain)
    beta_t = beta_of(C, BASE_LEN, TARGET)
    fold_temperature(folded, beta_t)
    record = {"c": C, "beta": beta_t, "base_len": BASE_LEN, "layers": [FULL]}
    x = ids()
    per = PerLengthTemperature(folded, record)
    assert per.set(BASE_LEN // 2) == 1.0 and per.set(BASE_LEN) == 1.0
    assert max_diff(logits(folded, x), logits(plain, x)) <= TOL
    mid = 2 * BASE_LEN
    assert per.set(mid) == pytest.approx(1 + C * math.log(2))
    fresh = copy.deepcopy(plain)
    fold_temperature(fresh, 1 + C * math.log(2))
    assert max_diff(logits(folded, x), logits(fresh, x)) <= TOL
    assert max_diff(logits(folded, x), logits(plain, x)) > 1e-3
    assert per.set(TARGET) == pytest.approx(beta_t)  # back to the folded model, whatever came before
    folded_again = copy.deepcopy(plain)
    fold_temperature(folded_again, beta_t)
    assert max_diff(logits(folded, x), logits(folded_again, x)) <= TOL


def test_per_length_temperature_gives_back_the_unfolded_bf16_weights_exactly(tmp_path):
    """A bf16 DRoPE run with a temperature added in fp32 (`longctx temperature`'s default export), evaluated in
    bf16: at L <= BASE_LEN the q_norm weights are the run's own bf16 weights bit for bit when the fp32 ones
    are read from the checkpoint (stored_q_norms), where dividing the bf16-rounded folded weights is off."""
    from safetensors.torch import save_file

    from longctx.model.temperature import PerLengthTemperature, stored_q_norms

    torch.manual_seed(0)
    run = randomize(HybridLM(hybrid_config(rope_parameters=dict(NO_ROPE)))).to(torch.bfloat16).eval()
    key = f"model.layers.{FULL}.self_attn.q_norm.weight"
    own = run.model.layers[FULL].self_attn.q_norm.weight.detach().clone()
    beta_t = beta_of(C, BASE_LEN, TARGET)
    save_file({key: own.float() * beta_t}, str(tmp_path / "model.safetensors"))  # the fp32 export of the fold
    record = {"c": C, "beta": beta_t, "base_len": BASE_LEN, "layers": [FULL]}
    weight = run.model.layers[FULL].self_attn.q_norm.weight

    def load_folded():  # the fp32 checkpoint loaded in bf16: its folded weights rounded
        with torch.no_grad():
            weight.copy_((own.float() * beta_t).to(torch.bfloat16))

    stored = stored_q_norms(tmp_path, [FULL])
    assert stored is not None and stored[0].dtype == torch.float32
    load_folded()
    per = PerLengthTemperature(run, record, stored)
    per.set(BASE_LEN)
    assert torch.equal(weight, own)
    per.set(TARGET)
    assert torch.equal(weight, (own.float() * beta_t).to(torch.bfloat16))
    load_folded()
    PerLengthTemperature(run, record).set(BASE_LEN)  # without the stored weights: from the bf16 fold
    assert not torch.equal(weight, own) and max_diff(weight.float(), own.float()) < 0.02
    assert stored_q_norms(tmp_path / "nothing-here", [FULL]) is None
