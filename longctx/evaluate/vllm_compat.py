"""Olmo Hybrid checkpoints in vLLM: a fix for vLLM's fused GDN conv loader, run as a vLLM general plugin.

vLLM 0.26's Olmo Hybrid GDN layer (vllm/model_executor/layers/mamba/gdn/olmo_gdn_linear_attn.py) loads a
checkpoint's q, k and v conv weights into one fused parameter with a loader that takes the section (0, 1, 2) from
its third argument, while vLLM's AutoWeightsLoader calls it with two and leaves the section on the tensor
(`shard_id`, set by the model's WeightsMapper): every Olmo Hybrid checkpoint then fails to load with "list indices
must be integers or slices, not NoneType" (vllm-project/vllm pull request 55858, open). `register()` wraps that
loader factory so the section falls back to the tensor's, and a tensor holding all three sections at once (the
fused `linear_attn.conv1d.weight` of transformers' in-memory layout) loads section by section.

vLLM runs `register` in every process it starts (the engine core's too) through the `vllm.general_plugins` entry
point in pyproject.toml; our vLLM paths also call it before they build an engine. Without vLLM, or with a vLLM
without that factory, it does nothing; it wraps once however often it is called.
"""

from __future__ import annotations

GDN_MODULE = "vllm.model_executor.layers.mamba.gdn.olmo_gdn_linear_attn"
FACTORY = "_make_fused_conv1d_weight_loader"
PLUGIN_GROUP = "vllm.general_plugins"
ENTRY_POINT = f"{__name__}:register"  # what pyproject.toml registers under PLUGIN_GROUP


def registered() -> bool:
    """Is this plugin where vLLM looks for general plugins (longctx installed, not only on the path)?"""
    from importlib.metadata import entry_points

    return any(ep.value == ENTRY_POINT for ep in entry_points(group=PLUGIN_GROUP))


def register() -> None:
    import importlib

    try:
        gdn = importlib.import_module(GDN_MODULE)
    except ImportError:  # no vLLM, or one without Olmo Hybrid
        return
    make = getattr(gdn, FACTORY, None)
    if make is None or getattr(make, "longctx_wrapped", False):
        return
    setattr(gdn, FACTORY, section_aware(make))


def section_aware(make):
    """A loader factory like `make` (dims, tp_size, tp_rank) whose loaders find the section on the tensor."""

    def factory(dims, tp_size, tp_rank):
        load = make(dims, tp_size, tp_rank)

        def weight_loader(param, loaded_weight, loaded_shard_id=None):
            if loaded_shard_id is None:
                loaded_shard_id = getattr(loaded_weight, "shard_id", None)
            if loaded_shard_id is not None:
                return load(param, loaded_weight, loaded_shard_id)
            if loaded_weight.shape[0] != sum(dims):
                raise ValueError(
                    f"fused conv weight has {loaded_weight.shape[0]} channels and no section; expected {sum(dims)}"
                )
            for section, part in enumerate(loaded_weight.split(list(dims), dim=0)):
                load(param, part, section)

        return weight_loader

    factory.longctx_wrapped = True
    return factory
