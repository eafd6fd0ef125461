"""The fused-elementwise branch (fused.py: fla's rms_norm and swiglu) on CPU, with fla's two entry
points stood in by fakes held to fla's calling conventions. What fla's kernels compute is tested on
the GPU (tests/test_model_gpu.py::test_fused_elementwise_matches_reference); this tests that every
RMSNorm and MLP of the model goes through them with the right tensors and the module's own eps."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from test_model_util import hybrid_config, max_diff, olmo3_config, randomize

from longctx.model import HybridLM, fused
from longctx.model.generate import greedy_generate

CALLS: list[tuple] = []


def fake_rms_norm(x, weight, bias, residual=None, eps=1e-5, prenorm=False, residual_in_fp32=False):
    # fla: (x, weight, bias, residual=None, eps=1e-5, ...); output in x's dtype
    assert bias is None and residual is None and not prenorm and weight.shape == (x.shape[-1],)
    CALLS.append(("rms_norm", eps))
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def fake_swiglu(x, y):
    assert x.shape == y.shape
    CALLS.append(("swiglu",))
    return (F.silu(x.float()) * y.float()).to(x.dtype)


@pytest.fixture()
def fake_fused(monkeypatch):
    monkeypatch.setattr(fused, "_load", lambda: (fake_rms_norm, fake_swiglu))
    monkeypatch.setattr(fused, "DEVICES", ("cpu",))
    monkeypatch.setattr(fused, "ENABLED", None)
    CALLS.clear()


def _grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    F.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("make_config", [hybrid_config, olmo3_config])
def test_every_norm_and_mlp_goes_through_the_kernels(fake_fused, monkeypatch, make_config):
    # a large eps: a call that dropped the module's eps for fla's default 1e-5 would change the output
    config = make_config(rms_norm_eps=0.25)
    model = randomize(HybridLM(config), seed=2)
    ids = torch.randint(2, config.vocab_size, (2, 40))
    logits_f, grads_f = _grads(model, ids)
    layers = config.num_hidden_layers
    attn_layers = sum(t != "linear_attention" for t in config.layer_types)
    # two per block, q and k norms per attention layer, and the final norm
    assert sum(c[0] == "rms_norm" for c in CALLS) == 2 * layers + 2 * attn_layers + 1
    assert sum(c[0] == "swiglu" for c in CALLS) == layers
    assert {c[1] for c in CALLS if c[0] == "rms_norm"} == {0.25}

    monkeypatch.setattr(fused, "ENABLED", False)  # the reference path: no kernel is called
    CALLS.clear()
    logits_r, grads_r = _grads(model, ids)
    assert not CALLS
    assert max_diff(logits_f, logits_r) < 1e-5
    assert grads_f.keys() == grads_r.keys()
    for name in grads_r:
        assert max_diff(grads_f[name], grads_r[name]) < 1e-5, name


def test_decoding_uses_the_kernels_and_matches(fake_fused, monkeypatch):
    model = randomize(HybridLM(hybrid_config()), seed=3).eval()
    prompts = [[5, 9, 13, 2, 7], list(range(3, 40))]
    out_f = greedy_generate(model, prompts, 6)
    assert CALLS
    monkeypatch.setattr(fused, "ENABLED", False)
    assert greedy_generate(model, prompts, 6) == out_f


def test_switches(monkeypatch):
    x = torch.zeros(2, 4)
    if "LONGCTX_FUSED_ELEMENTWISE" not in os.environ:
        assert fused.ENABLED is None  # on CUDA when fla is installed (measured; GPU-tested)
    monkeypatch.setattr(fused, "ENABLED", True)
    assert fused.kernels(x) is None  # CPU tensors keep the reference path
    monkeypatch.setattr(fused, "ENABLED", None)
    monkeypatch.setattr(fused, "DEVICES", ("cpu",))
    monkeypatch.setattr(fused, "_load", lambda: False)  # fla not installed
    assert fused.kernels(x) is None
    monkeypatch.setattr(fused, "ENABLED", True)
    with pytest.raises(RuntimeError, match="fla is not installed"):
        fused.kernels(x)
    monkeypatch.setattr(fused, "_load", lambda: (fake_rms_norm, fake_swiglu))
    monkeypatch.setattr(fused, "ENABLED", False)
    assert fused.kernels(x) is None


def test_bench_switches(monkeypatch):
    """bench/_common.apply_fused_arg: --fused-elementwise requires the kernels, --plain-elementwise turns them
    off, neither keeps the default (fused on CUDA when fla is installed) and says which it is."""
    import argparse
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from _common import add_fused_arg, apply_fused_arg

    p = argparse.ArgumentParser()
    add_fused_arg(p)
    monkeypatch.setattr(fused, "ENABLED", None)
    monkeypatch.setattr(fused, "_load", lambda: False)
    assert apply_fused_arg(p.parse_args([])) == "off (fla not installed)" and fused.ENABLED is None
    monkeypatch.setattr(fused, "_load", lambda: ("rms_norm", "swiglu"))
    assert apply_fused_arg(p.parse_args([])) == "fla on CUDA" and fused.ENABLED is None
    assert apply_fused_arg(p.parse_args(["--plain-elementwise"])) == "off" and fused.ENABLED is False
    assert apply_fused_arg(p.parse_args(["--fused-elementwise"])) == "fla on CUDA" and fused.ENABLED is True
    with pytest.raises(SystemExit):
        p.parse_args(["--fused-elementwise", "--plain-elementwise"])
