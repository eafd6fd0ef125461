"""Does vLLM load a checkpoint, every weight where it belongs? vLLM's own model class and weight loader, on CPU.

    PYTHONPATH=<vllm site> python3 bench/vllm_peer/load_check.py MODEL_DIR [MODEL_DIR ...] [--no-plugin]

Builds the model vLLM resolves for MODEL_DIR's config (OlmoHybridForCausalLM, Olmo3ForCausalLM, ...) with a
real VllmConfig on the CPU, loads MODEL_DIR's safetensors through the model's `load_weights` (vLLM's
AutoWeightsLoader, its WeightsMapper, its fused loaders), and compares every vLLM parameter with what the
checkpoint holds for it: the same tensor, or for vLLM's fused parameters the checkpoint's pieces concatenated
in vLLM's order (q, k, v[, g]; gate, up; the q, k, v convs); and every attention layer's RoPE cos/sin table with
transformers' for that layer's type, built from the same config.json (a DRoPE export: no RoPE on either side;
YaRN: vLLM's YaRN module and mscale); and what each attention layer hands vLLM's attention (heads, KV heads,
head size, softmax scale, sliding window) with the config. Exit 1 on anything missing or different.

Needs no GPU: attention layers, whose backend needs one, are built without it (they hold no weights), and
the GDN layer's Triton allocator is skipped. `--no-plugin` leaves out longctx's fix for vLLM 0.26's fused
conv loader (longctx/evaluate/vllm_compat.py), to see vLLM as it ships. vLLM's wheel installs on a CPU
machine with `pip install --no-deps --target DIR` plus the pure-Python modules it imports (pyzmq, msgspec,
cbor2, openai, openai-harmony, einops, pybase64, cachetools, uvloop, prometheus-client, ...).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from longctx.evaluate import vllm_compat

FUSED = {  # vLLM's fused parameter (suffix) -> the checkpoint's pieces, in vLLM's order
    "self_attn.qkv_proj.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "linear_attn.in_proj_qkvg.weight": tuple(f"linear_attn.{n}_proj.weight" for n in "qkvg"),
    "mlp.gate_up_proj.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "linear_attn.conv1d.weight": tuple(f"linear_attn.{n}_conv1d.weight" for n in "qkv"),
}


def expected(name: str, state: dict):
    """What the checkpoint holds for vLLM parameter `name` (None: nothing)."""
    import torch

    if name in state:
        return state[name]
    for suffix, pieces in FUSED.items():
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            parts = [state.get(stem + p) for p in pieces]
            if all(p is not None for p in parts):
                return torch.cat([p.reshape(p.shape[0], -1) for p in parts])
    if name == "lm_head.weight" and "model.embed_tokens.weight" in state:  # tied
        return state["model.embed_tokens.weight"]
    return None


def build(model_dir: str, plugin: bool):
    import torch
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.distributed.parallel_state import model_parallel_is_initialized
    from vllm.model_executor.model_loader.utils import get_model_architecture
    from vllm.platforms import current_platform

    current_platform.__class__.current_device = staticmethod(lambda: torch.device("cpu"))
    mc = ModelConfig(model=model_dir, tokenizer=None, skip_tokenizer_init=True, dtype="float32")
    vc = VllmConfig(model_config=mc, device_config=DeviceConfig(device="cpu"))
    cls, arch = get_model_architecture(mc)

    class NoAttention(torch.nn.Module):  # vLLM's Attention picks a GPU backend; it holds no weights
        def __init__(self, num_heads, head_size, scale, **kwargs):
            super().__init__()
            self.seen = {"num_heads": num_heads, "head_size": head_size, "scale": scale, **kwargs}

    importlib.import_module(cls.__module__).Attention = NoAttention
    if arch == "OlmoHybridForCausalLM":
        importlib.import_module(vllm_compat.GDN_MODULE).set_triton_allocator = lambda *args: None
    if plugin:
        vllm_compat.register()
    with set_current_vllm_config(vc):
        if not model_parallel_is_initialized():  # once a process, whatever the number of models
            init_distributed_environment(1, 0, "tcp://127.0.0.1:29531", 0, backend="gloo")
            initialize_model_parallel(1, 1)
        model = cls(vllm_config=vc)
    return model, arch


def check(model_dir: str, plugin: bool) -> list[str]:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    model, arch = build(model_dir, plugin)
    state = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        state.update(load_file(str(f)))
    params = dict(model.named_parameters())
    try:
        loaded = set(model.load_weights(iter(state.items())))
    except Exception as e:  # noqa: BLE001 -- what vLLM raises is the finding
        return [f"{model_dir}: {arch} load_weights raised {type(e).__name__}: {e}"]
    bad = [f"{model_dir}: {n} not loaded" for n in sorted(set(params) - loaded)]
    for name, p in params.items():
        want = expected(name, state)
        if want is None:
            bad.append(f"{model_dir}: {name}: nothing in the checkpoint for it")
            continue
        got = p.detach()
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            got = got[: want.shape[0]]  # vLLM pads the vocabulary (to a multiple of 64)
        if got.numel() != want.numel() or not torch.equal(got.reshape(want.shape).to(want.dtype), want):
            bad.append(f"{model_dir}: {name}: differs from the checkpoint")
    ropes = [m for n, m in model.named_modules() if n.endswith("rotary_emb") and m is not None]
    kinds = sorted({type(m).__name__ for m in ropes})
    yarn = {(round(m.scaling_factor, 4), round(m.mscale, 6)) for m in ropes if hasattr(m, "mscale")}
    config = AutoConfig.from_pretrained(model_dir)
    rope, rope_bad = rope_against_transformers(model, config)
    bad += [f"{model_dir}: {b}" for b in rope_bad + attention_against_config(model, config)]
    print(
        f"{model_dir}: {arch}, {len(loaded)} of {len(params)} parameters loaded, {len(bad)} wrong; "
        f"RoPE modules: {len(ropes)} {kinds}{f' yarn (factor, mscale) {sorted(yarn)}' if yarn else ''}; "
        f"cos/sin against transformers: {rope}",
        flush=True,
    )
    return bad


def attention_against_config(model, c) -> list[str]:
    """What each attention layer hands vLLM's Attention (heads, KV heads, head size, softmax scale, sliding window)
    against the checkpoint's config `c`: [what disagrees]."""
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    types = getattr(c, "layer_types", None) or ["full_attention"] * c.num_hidden_layers
    bad = []
    for i, layer in enumerate(model.model.layers):
        attn = getattr(getattr(layer, "self_attn", None), "attn", None)
        if attn is None:
            continue
        window = c.sliding_window if types[i] == "sliding_attention" else None
        want = {
            "num_heads": c.num_attention_heads,
            "num_kv_heads": c.num_key_value_heads,
            "head_size": head,
            "scale": head**-0.5,
            "per_layer_sliding_window": window,
        }
        got = {k: attn.seen.get(k) for k in want}
        if got != want:
            bad.append(f"layer {i} ({types[i]}): vLLM's attention gets {got}, the config says {want}")
    return bad


def rope_against_transformers(model, config, positions: int = 2048, tol: float = 1e-4):
    """Each attention layer's cos/sin in vLLM (its cos_sin_cache: cos | sin, times YaRN's mscale) against
    transformers' rotary embedding for that layer's type, built from the checkpoint's config: ('n layers, max diff
    D' or 'no RoPE in either', [what disagrees])."""
    import torch
    from transformers import AutoModelForCausalLM

    rotary = AutoModelForCausalLM.from_config(config).model.rotary_emb  # None where transformers runs no RoPE
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    bad, worst, compared = [], 0.0, 0
    for i, layer in enumerate(model.model.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None:
            continue
        ours = getattr(attn, "rotary_emb", None)
        if (ours is None) != (rotary is None):
            bad.append(f"layer {i}: RoPE in {'vLLM' if ours is not None else 'transformers'} only")
            continue
        if ours is None:
            continue
        n = min(positions, ours.cos_sin_cache.shape[0])
        pos = torch.arange(n)[None]
        x = torch.zeros(1, n, 1)
        try:
            cos, sin = rotary(x, pos, types[i])  # per layer type (Olmo 3)
        except TypeError:
            cos, sin = rotary(x, pos)
        half = ours.cos_sin_cache.shape[1] // 2
        want = torch.cat([cos[0, :, :half], sin[0, :, :half]], dim=-1).float()
        diff = (ours.cos_sin_cache[:n].float() - want).abs().max().item()
        worst, compared = max(worst, diff), compared + 1
        if diff > tol:
            bad.append(f"layer {i} ({types[i]}): cos/sin differ from transformers' by {diff:.2e}")
    return (f"{compared} layers, max diff {worst:.1e}" if compared else "no RoPE in either"), bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="local HF checkpoint folders")
    p.add_argument("--no-plugin", action="store_true", help="vLLM as it ships, without longctx's conv loader fix")
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    bad = []
    for m in args.models:
        bad += check(m, plugin=not args.no_plugin)
    for line in bad[:20]:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
