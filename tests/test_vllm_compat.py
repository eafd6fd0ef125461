"""longctx/evaluate/vllm_compat.py: vLLM 0.26's fused GDN conv loader, called the way vLLM's AutoWeightsLoader
calls it (two arguments, the section on the tensor as `shard_id`), fills the fused parameter with q, k and v;
register() patches the module vLLM builds its layers from, once, and does nothing without vLLM."""

from __future__ import annotations

import sys
import types
from importlib.metadata import entry_points

import pytest
import torch

from longctx.evaluate import vllm_compat

DIMS = [4, 4, 6]  # key_dim, key_dim, value_dim


def vllm_026_factory(dims, tp_size, tp_rank):
    """The behaviour of vLLM 0.26's `_make_fused_conv1d_weight_loader`: the section only from the third argument
    (dims[None] raises TypeError), the rank's slice of that section copied to its offset in the fused parameter."""
    sharded = [d // tp_size for d in dims]

    def weight_loader(param, loaded_weight, loaded_shard_id=None):
        if loaded_weight.dim() == 2:
            loaded_weight = loaded_weight.unsqueeze(1)
        size = dims[loaded_shard_id] // tp_size
        offset = sum(sharded[:loaded_shard_id])
        param.data[offset : offset + size].copy_(loaded_weight[tp_rank * size : (tp_rank + 1) * size])

    return weight_loader


def _conv(channels, seed):
    return torch.randn(channels, 4, generator=torch.Generator().manual_seed(seed))


def _as_mapped(t, section):
    """What vLLM's WeightsMapper hands the loader: the tensor, with its section as an attribute."""
    t = t.clone()
    t.shard_id = section
    return t


@pytest.mark.parametrize("tp_size", [1, 2])
def test_sections_on_the_tensor_fill_the_fused_parameter(tp_size):
    q, k, v = (_conv(d, i) for i, d in enumerate(DIMS))
    for rank in range(tp_size):
        param = torch.nn.Parameter(torch.zeros(sum(DIMS) // tp_size, 1, 4), requires_grad=False)
        with pytest.raises(TypeError):  # the loader as vLLM 0.26 ships it
            vllm_026_factory(DIMS, tp_size, rank)(param, _as_mapped(q, 0))
        load = vllm_compat.section_aware(vllm_026_factory)(DIMS, tp_size, rank)
        for section, t in enumerate((q, k, v)):
            load(param, _as_mapped(t, section))
        want = torch.cat([t.chunk(tp_size)[rank] for t in (q, k, v)]).unsqueeze(1)
        assert torch.equal(param.data, want)


def test_a_whole_fused_conv_loads_section_by_section_and_a_wrong_one_is_named():
    fused = _conv(sum(DIMS), 7)
    param = torch.nn.Parameter(torch.zeros(sum(DIMS), 1, 4), requires_grad=False)
    vllm_compat.section_aware(vllm_026_factory)(DIMS, 1, 0)(param, fused)
    assert torch.equal(param.data, fused.unsqueeze(1))
    with pytest.raises(ValueError, match="13 channels"):
        vllm_compat.section_aware(vllm_026_factory)(DIMS, 1, 0)(param, _conv(13, 1))


def test_register_wraps_the_module_factory_once(monkeypatch):
    mod = types.ModuleType(vllm_compat.GDN_MODULE)
    setattr(mod, vllm_compat.FACTORY, vllm_026_factory)
    monkeypatch.setitem(sys.modules, vllm_compat.GDN_MODULE, mod)
    vllm_compat.register()
    wrapped = getattr(mod, vllm_compat.FACTORY)
    assert wrapped is not vllm_026_factory and wrapped.longctx_wrapped
    vllm_compat.register()  # vLLM may run a plugin in several processes and more than once
    assert getattr(mod, vllm_compat.FACTORY) is wrapped
    param = torch.nn.Parameter(torch.zeros(sum(DIMS), 1, 4), requires_grad=False)
    wrapped(DIMS, 1, 0)(param, _as_mapped(_conv(DIMS[2], 3), 2))
    assert torch.equal(param.data[8:, 0], _conv(DIMS[2], 3))


def test_register_without_vllm_does_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, vllm_compat.GDN_MODULE, None)  # import raises ImportError
    vllm_compat.register()


def test_the_plugin_is_registered_where_vllm_looks():
    """vLLM runs every `vllm.general_plugins` entry point in each of its processes (the engine core too)."""
    found = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert found.get("olmo_hybrid_conv") == "longctx.evaluate.vllm_compat:register"
    assert vllm_compat.registered()
