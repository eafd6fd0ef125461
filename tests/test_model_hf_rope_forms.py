"""Every spelling of RoPE settings transformers reads survives load -> save -> transformers reload.

transformers keeps several forms of a config's RoPE:
- flat `rope_parameters` ({rope_type, rope_theta, ...}): Olmo Hybrid reads it as is; Olmo 3 keeps the
  flat keys and adds its own per-layer-type defaults (theta 5e5) beside them, and runs those;
- nested by layer type ({full_attention: {...}, sliding_attention: {...}}): Olmo 3's own form; an
  Olmo Hybrid reads no flat rope_theta there and so builds no rotary embedding at all;
- mixed (flat keys and per-layer-type entries side by side): Olmo 3 runs the entries, Olmo Hybrid
  the flat keys;
- legacy top-level `rope_theta` / `rope_scaling` of older config.json files;
- allenai/Olmo-Hybrid-7B's released config.json: no RoPE, spelled `rope_theta: null`.

Each case writes a transformers checkpoint (tiny config, randomised weights), loads it with
HybridLM (logits equal to transformers', fp32, <= 1e-4), saves it with HybridLM and reloads that
with transformers: same logits, same RoPE in every attention layer type.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_model_util import NO_ROPE, VOCAB, YARN, hf_reference, hybrid_config, max_diff, olmo3_config
from transformers import AutoModelForCausalLM

from longctx import results as R
from longctx.model import HybridLM

TOL = 1e-4
T = 150  # positions up to 149: theta 1e4 vs 5e5 changes the logits far beyond TOL
LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")
DEFAULT = {"rope_type": "default", "rope_theta": 1e4}


def _legacy(rope_theta, rope_scaling="absent"):
    """Rewrite a saved config.json into the pre-`rope_parameters` spelling."""

    def edit(cfg):
        cfg.pop("rope_parameters", None)
        cfg["rope_theta"] = rope_theta
        if rope_scaling != "absent":
            cfg["rope_scaling"] = rope_scaling
        return cfg

    return edit


# name -> (config builder, rope_parameters given to transformers' config, config.json edit or None)
CASES = {
    "olmo3-flat": (olmo3_config, dict(DEFAULT), None),
    "olmo3-nested": (olmo3_config, {"full_attention": dict(YARN), "sliding_attention": dict(DEFAULT)}, None),
    "olmo3-mixed": (
        olmo3_config,
        {
            "rope_type": "yarn",
            "rope_theta": 3e4,
            "factor": 2.0,
            "full_attention": {"rope_type": "default", "rope_theta": 2e4},
            "sliding_attention": dict(DEFAULT),
        },
        None,
    ),
    "olmo3-legacy-theta": (olmo3_config, None, _legacy(1e4)),
    "olmo3-legacy-scaling": (
        olmo3_config,
        None,
        _legacy(2e4, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    ),
    "hybrid-flat": (hybrid_config, dict(DEFAULT), None),
    "hybrid-yarn": (hybrid_config, dict(YARN), None),
    "hybrid-nested": (hybrid_config, {"full_attention": dict(DEFAULT)}, None),
    "hybrid-mixed": (
        hybrid_config,
        {"rope_type": "default", "rope_theta": 2e4, "full_attention": {"rope_type": "default", "rope_theta": 1e4}},
        None,
    ),
    "hybrid-legacy-theta": (hybrid_config, None, _legacy(2e4, None)),
    "hybrid-legacy-scaling": (hybrid_config, None, _legacy(1e4, {"type": "linear", "factor": 2.0})),
    # allenai/Olmo-Hybrid-7B's config.json: `"rope_theta": null`, no rope_parameters
    "hybrid-released-7b": (hybrid_config, None, _legacy(None, None)),
    "hybrid-no-rope": (hybrid_config, dict(NO_ROPE), None),
}


def _effective(model) -> dict:
    """The RoPE transformers' model runs, per attention layer type (None = none), read off its modules
    and config the way its modeling code does."""
    config, rotary = model.config, model.model.rotary_emb
    out = {}
    for t in sorted(set(config.layer_types) - {"linear_attention"}):
        if config.model_type == "olmo3":
            rp = config.rope_parameters[t]
            inv = getattr(rotary, f"{t}_inv_freq")
            scale = getattr(rotary, f"{t}_attention_scaling")
        elif rotary is None:
            out[t] = None
            continue
        else:
            rp = {k: v for k, v in config.rope_parameters.items() if k not in LAYER_TYPES}
            inv, scale = rotary.inv_freq, rotary.attention_scaling
        out[t] = (dict(rp), inv.tolist(), scale)
    return out


def _checkpoint(case, tmp_path):
    build, rope_parameters, edit = CASES[case]
    config = build() if rope_parameters is None else build(rope_parameters=rope_parameters)
    hf_reference(config).save_pretrained(tmp_path / "ref")
    if edit is not None:
        path = tmp_path / "ref" / "config.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text())), indent=2))
    return tmp_path / "ref"


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.filterwarnings("ignore:olmo_hybrid rope_parameters nested")) for c in CASES],
)
def test_rope_form_survives_save(case, tmp_path):
    ref = AutoModelForCausalLM.from_pretrained(_checkpoint(case, tmp_path)).eval()
    x = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x).logits
        ours = HybridLM.from_pretrained(tmp_path / "ref")
        assert max_diff(ours(x), expected) <= TOL
        ours.save_pretrained(tmp_path / "ours")
        back = AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
        assert max_diff(back(x).logits, expected) <= TOL
        assert max_diff(HybridLM.from_pretrained(tmp_path / "ours")(x), expected) <= TOL
    assert _effective(back) == _effective(ref)
    # `longctx eval` records rope_parameters read off config.json; the method named from them is the
    # one the full-attention layers run, for transformers' file and for ours
    runs = _effective(ref)["full_attention"]
    method = R.rope_method(None if runs is None else runs[0])
    assert R.rope_method(R.read_rope_parameters(tmp_path / "ref")) == method
    assert R.rope_method(R.read_rope_parameters(tmp_path / "ours")) == method
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert "rope_theta" not in saved and "rope_scaling" not in saved  # one spelling: rope_parameters
    rp = saved["rope_parameters"]
    if ref.config.model_type == "olmo3":  # only the entries Olmo 3 runs; no flat keys it ignores
        assert set(rp) == {"full_attention", "sliding_attention"}
    else:  # the flat dict Olmo Hybrid runs; no per-layer-type entries it ignores
        assert not set(rp) & set(LAYER_TYPES)


def test_rope_forms_differ(tmp_path):
    """The cases are not vacuous: each runs a RoPE other than the plain default (theta 5e5), except
    Olmo 3 given a flat dict, which runs its own defaults and ignores the flat keys."""
    plain = {
        "olmo3": _effective(hf_reference(olmo3_config())),
        "olmo_hybrid": _effective(hf_reference(hybrid_config())),
    }
    for case in CASES:
        model = AutoModelForCausalLM.from_pretrained(_checkpoint(case, tmp_path / case))
        assert (_effective(model) == plain[model.config.model_type]) == (case == "olmo3-flat"), case


def test_hybrid_nested_rope_runs_without_rope_as_transformers_does(tmp_path):
    """transformers' Olmo Hybrid reads only flat RoPE keys: a config nested by layer type builds no
    rotary embedding. HybridLM runs the same (and says so), and saves the explicit no-RoPE form."""
    ref = AutoModelForCausalLM.from_pretrained(_checkpoint("hybrid-nested", tmp_path)).eval()
    assert ref.model.rotary_emb is None
    with pytest.warns(UserWarning, match="nested by layer type"):
        ours = HybridLM.from_pretrained(tmp_path / "ref")
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["rope_parameters"] == NO_ROPE
