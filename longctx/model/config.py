"""Model configs: transformers' own `OlmoHybridConfig` / `Olmo3Config`, read from YAML or checkpoints.

A YAML under configs/models/ holds the HF config fields including `model_type`; `load_config`
builds the matching transformers config class from it, so what we train is exactly what
transformers (and vLLM) will load.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import yaml
from transformers import AutoConfig, PretrainedConfig

from longctx.errors import UsageError
from longctx.shipped import configs_dir, shipped_config
from rope_methods.freqs import UNROTATED, is_unrotated

# which layer types each architecture's transformers implementation can run
LAYER_TYPES = {
    "olmo_hybrid": ("linear_attention", "full_attention"),
    "olmo3": ("sliding_attention", "full_attention"),
}
ARCHITECTURES = {"olmo_hybrid": "OlmoHybridForCausalLM", "olmo3": "Olmo3ForCausalLM"}
ROPE_LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")


def config_dirs() -> list[Path]:
    """Where model config names are looked up: the shipped configs/models (inside an installed
    package, or the checkout's), then configs/models under the current directory."""
    shipped = configs_dir()
    return ([shipped / "models"] if shipped else []) + [Path.cwd() / "configs" / "models"]


def available_configs() -> list[str]:
    names = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def config_from_dict(fields: dict, **overrides) -> PretrainedConfig:
    """transformers config of `fields["model_type"]` from a plain dict (YAML / JSON contents)."""
    fields = {**fields, **overrides}
    model_type = fields.pop("model_type", None)
    if model_type not in LAYER_TYPES:
        raise UsageError(f"model_type {model_type!r} is not supported; accepted: {', '.join(LAYER_TYPES)}")
    try:
        config = AutoConfig.for_model(model_type, **fields)
        check_config(config)
    except (TypeError, ValueError) as e:  # transformers' strict dataclass validation, and ours
        raise UsageError(f"invalid {model_type} config: {e}") from e
    config.rope_parameters = saved_rope_parameters(config)  # only the entries the architecture runs
    return config


def load_config(path_or_name: str | Path, **overrides) -> PretrainedConfig:
    """Config from a configs/models name ('hybrid-tiny'), a .yaml/.json file, or a checkpoint dir.

    `overrides` replace fields before the config is built (e.g. vocab_size=tokenizer size), so
    derived defaults (head dims, layer_types) follow them.
    """
    path = shipped_config(path_or_name) or Path(path_or_name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{path} has no config.json")
        fields = json.loads((path / "config.json").read_text())
    elif path.is_file():
        text = path.read_text()
        fields = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    else:
        name = str(path_or_name)
        found = [d / f"{name}.yaml" for d in config_dirs() if (d / f"{name}.yaml").is_file()]
        if not found:
            raise UsageError(
                f"model config {name!r} not found (not a file, a checkpoint dir or a name); "
                f"accepted names: {', '.join(available_configs())}"
            )
        fields = yaml.safe_load(found[0].read_text())
    if not isinstance(fields, dict):
        raise UsageError(f"model config {path_or_name} is not a mapping of config fields")
    return config_from_dict(fields, **overrides)


def check_config(config) -> None:
    """Raise ValueError on configs HybridLM cannot run exactly as transformers does."""
    model_type = getattr(config, "model_type", None)
    if model_type not in LAYER_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported; accepted: {', '.join(LAYER_TYPES)}")
    types = list(config.layer_types or [])
    if len(types) != config.num_hidden_layers:
        raise ValueError(f"layer_types has {len(types)} entries but num_hidden_layers={config.num_hidden_layers}")
    bad = sorted(set(types) - set(LAYER_TYPES[model_type]))
    if bad:
        raise ValueError(
            f"layer types {bad} not supported by {model_type}; accepted: {', '.join(LAYER_TYPES[model_type])}"
        )
    if config.hidden_act not in ("silu", "swish"):
        raise ValueError(f"hidden_act {config.hidden_act!r} not supported; accepted: silu")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    if not getattr(config, "head_dim", None) and config.hidden_size % heads:
        raise ValueError(f"hidden_size={config.hidden_size} is not a multiple of num_attention_heads={heads}")
    if "sliding_attention" in types and not config.sliding_window:
        raise ValueError("sliding_attention layers need a positive sliding_window")
    if "linear_attention" in types and config.linear_num_value_heads % config.linear_num_key_heads:
        raise ValueError(
            f"linear_num_value_heads={config.linear_num_value_heads} is not a multiple of "
            f"linear_num_key_heads={config.linear_num_key_heads}"
        )


NO_ROPE = {"rope_type": "default", "rope_theta": None}  # transformers' saved form of "no RoPE"


def _no_rope(rp) -> bool:
    # a null rope_theta is how transformers keeps "no RoPE" (`rope_parameters: null` means the default RoPE)
    # rope_methods.UNROTATED: the RoPE-free form Olmo 3 can run (frequencies ~0)
    return rp is None or rp.get("rope_theta", 0) is None or is_unrotated(rp)


def rope_parameters_for(config, layer_type: str) -> dict | None:
    """The flat rope dict one attention layer type runs, or None for no RoPE, read as transformers does.

    transformers keeps RoPE settings in several shapes, and each architecture reads its own part:
    - Olmo 3 runs `rope_parameters[layer_type]` (nested by layer type). Its config also keeps the
      flat keys of a flat `rope_parameters` beside the per-layer-type entries it adds (the mixed
      form); those are never read. A purely flat dict (only ever set in memory) is the
      full-attention layers' RoPE.
    - Olmo Hybrid runs the flat keys in its full-attention layers and ignores per-layer-type
      entries: a dict with no flat keys builds no rotary embedding at all.
    Legacy `rope_theta` / `rope_scaling` keys are folded into `rope_parameters` by transformers when
    the config is read, so they arrive here in one of these shapes.
    """
    if layer_type not in ("full_attention", "sliding_attention"):
        return None
    rp = getattr(config, "rope_parameters", None)
    if rp is None:
        return None
    flat = {k: v for k, v in rp.items() if k not in ROPE_LAYER_TYPES}
    nested = {k: v for k, v in rp.items() if k in ROPE_LAYER_TYPES}
    if getattr(config, "model_type", None) == "olmo_hybrid":
        if not flat and nested:
            warnings.warn(
                f"olmo_hybrid rope_parameters nested by layer type ({', '.join(nested)}): transformers' "
                "OlmoHybrid reads only flat keys (rope_type, rope_theta, ...), so this model runs without RoPE",
                stacklevel=2,
            )
        rp = flat if layer_type == "full_attention" and flat else None
    elif nested:
        rp = nested.get(layer_type)
    elif layer_type != "full_attention":
        return None
    return None if _no_rope(rp) else rp


def saved_rope_parameters(config) -> dict:
    """`rope_parameters` in the one form transformers reads back as exactly the RoPE HybridLM runs.

    Olmo Hybrid: the flat dict. Olmo 3: one entry per attention layer type, without the flat keys
    it ignores. transformers reads `rope_parameters: null` (or a missing entry) as its default RoPE, so
    no RoPE is written as a null rope_theta (Olmo Hybrid) or as `rope_methods.UNROTATED` (Olmo 3,
    which rotates every layer type whatever its entry says: a null theta fails there).
    """
    if config.model_type == "olmo_hybrid":
        return copy.deepcopy(rope_parameters_for(config, "full_attention") or NO_ROPE)
    return {
        t: copy.deepcopy(rope_parameters_for(config, t) or UNROTATED) for t in ("full_attention", "sliding_attention")
    }
