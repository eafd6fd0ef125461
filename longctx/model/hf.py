"""HF checkpoints in and out: key layouts, safetensors shards, config.json, tokenizer files.

Olmo Hybrid checkpoints come in three spellings of the GDN blocks' norms and convs:
- OLMo-core's names (hf-internal-testing/olmo-hybrid): `attention_layer_norm`,
  `feedforward_layer_norm`, `linear_attn.{q,k,v}_conv1d.weight`;
- transformers' in-memory layout: `input_layernorm`, `post_attention_layernorm` and one fused
  `linear_attn.conv1d.weight` (q, k, v channels concatenated in that order);
- what vLLM's OlmoHybridForCausalLM reads (0.26): transformers' norm names with the three
  `{q,k,v}_conv1d` weights.
All three load; our parameters use the first. transformers' own save_pretrained reverses its
renaming imperfectly: an attention block's `post_attention_layernorm` comes out as
`feedforward_layer_norm`, and the fused conv is cut into three equal thirds under the q/k/v
names; both are undone here. We save the third spelling (q/k/v convs with their true channel
counts, transformers' norm names, attention blocks under their own names), which transformers
reads too (its renaming of OLMo-core's names leaves these as they are).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, GenerationConfig

from longctx.errors import UsageError
from longctx.model.config import ARCHITECTURES, check_config, saved_rope_parameters

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
MAX_SHARD_BYTES = 5 * 2**30
_IGNORED = re.compile(r"(^mtp\.|rotary_emb\.|\.inv_freq$)")  # MTP heads, rope buffers: not weights
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def resolve_dir(path_or_id: str | Path) -> Path:
    """A local checkpoint dir, or a Hub id downloaded into the HF cache."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_id)
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise UsageError(f"checkpoint {name!r} is not a directory and not a Hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", *TOKENIZER_FILES]))
    except Exception as e:  # offline, missing repo, gated repo: one line for the user
        raise UsageError(
            f"{name!r} is not a local checkpoint directory, and fetching it from the Hub failed: {e}"
        ) from e


def read_config(ckpt_dir: Path):
    if not (ckpt_dir / "config.json").is_file():
        raise UsageError(f"{ckpt_dir} has no config.json")
    config = AutoConfig.from_pretrained(str(ckpt_dir))
    try:
        check_config(config)
    except ValueError as e:
        raise UsageError(f"{ckpt_dir}: {e}") from e
    # keep only the RoPE entries the architecture runs (Olmo 3's ignored flat keys go), so that what
    # reads rope_parameters next (extension methods, results) sees what runs
    config.rope_parameters = saved_rope_parameters(config)
    return config


def _weight_files(ckpt_dir: Path) -> list[Path]:
    if (ckpt_dir / WEIGHTS_INDEX).is_file():
        index = json.loads((ckpt_dir / WEIGHTS_INDEX).read_text())
        return [ckpt_dir / f for f in sorted(set(index["weight_map"].values()))]
    if (ckpt_dir / WEIGHTS).is_file():
        return [ckpt_dir / WEIGHTS]
    raise UsageError(f"{ckpt_dir} has no {WEIGHTS} or {WEIGHTS_INDEX} (only safetensors checkpoints are read)")


def read_state_dict(ckpt_dir: Path, config, device="cpu") -> dict[str, torch.Tensor]:
    """All weights of a checkpoint, renamed to HybridLM's parameter names."""
    state = {}
    for f in _weight_files(ckpt_dir):
        with safe_open(str(f), framework="pt", device=str(device)) as sf:
            for key in sf.keys():
                state[key] = sf.get_tensor(key)
    return to_internal(state, config)


def read_tensors(ckpt_dir: Path, keys) -> dict[str, torch.Tensor]:
    """The named tensors of a checkpoint as stored (their saved dtype), without reading the rest."""
    want, out = set(keys), {}
    for f in _weight_files(Path(ckpt_dir)):
        with safe_open(str(f), framework="pt", device="cpu") as sf:
            for key in want & set(sf.keys()):
                out[key] = sf.get_tensor(key)
    return out


def to_internal(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Rename/unfuse transformers' in-memory keys into ours; drop non-weights and a tied head."""
    out, convs = {}, {}
    for key, value in state.items():
        if _IGNORED.search(key):
            continue
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # transformers ties the head to the embedding and ignores a stored copy
        m = _LAYER_KEY.match(key)
        if m is None:
            out[key] = value
            continue
        idx, rest = int(m.group(1)), m.group(2)
        is_gdn = idx < len(config.layer_types) and config.layer_types[idx] == "linear_attention"
        if is_gdn:
            conv = _CONV_KEY.fullmatch(rest)
            if conv:
                convs.setdefault(idx, {})[conv.group(1) or "qkv"] = value
                continue
            rest = _GDN_NORMS.get(rest, rest)
        elif rest == "feedforward_layer_norm.weight":
            rest = "post_attention_layernorm.weight"
        out[f"model.layers.{idx}.{rest}"] = value
    for idx, parts in convs.items():
        out.update(_split_conv(idx, parts, config))
    return out


_CONV_KEY = re.compile(r"linear_attn\.(?:([qkv])_)?conv1d\.weight")
_GDN_NORMS = {
    "input_layernorm.weight": "attention_layer_norm.weight",
    "post_attention_layernorm.weight": "feedforward_layer_norm.weight",
}


def _split_conv(idx: int, parts: dict, config) -> dict[str, torch.Tensor]:
    """q/k/v conv weights of one GDN layer from the fused tensor or the three named ones.

    The three are concatenated first and re-split by the true channel counts because
    transformers (5.x) writes its fused conv back as three EQUAL chunks under the q/k/v names,
    which are not the q, k and v channels whenever the value dim differs from the key dim.
    """
    key_dim = config.linear_num_key_heads * config.linear_key_head_dim
    value_dim = config.linear_num_value_heads * config.linear_value_head_dim
    prefix = f"model.layers.{idx}.linear_attn."
    if "qkv" in parts:
        fused = parts["qkv"]
    elif set(parts) == {"q", "k", "v"}:
        fused = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    else:
        raise UsageError(f"{prefix}: conv weights {sorted(parts)} found, expected q, k and v")
    if fused.shape[0] != 2 * key_dim + value_dim:
        raise UsageError(
            f"{prefix}: conv weights have {fused.shape[0]} channels; config implies {2 * key_dim + value_dim}"
        )
    q, k, v = fused.split([key_dim, key_dim, value_dim], dim=0)
    return {f"{prefix}{n}_conv1d.weight": t.contiguous() for n, t in (("q", q), ("k", k), ("v", v))}


def load_into(model, state: dict[str, torch.Tensor]) -> None:
    """Load a renamed state dict into a (possibly meta-device) HybridLM; every weight must match."""
    if model.config.tie_word_embeddings and "model.embed_tokens.weight" in state:
        state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise UsageError("checkpoint does not match its config; " + "; ".join(parts))
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()


# ---------------------------------------------------------------- saving


_SAVED_GDN_NORMS = {ours: saved for saved, ours in _GDN_NORMS.items()}


def export_state_dict(model) -> dict[str, torch.Tensor]:
    """Our parameters under the names we save: a GDN block's norms as transformers (and vLLM) name them."""
    gdn = {i for i, t in enumerate(getattr(model.config, "layer_types", None) or ()) if t == "linear_attention"}
    state = {}
    for key, value in model.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m is not None and int(m.group(1)) in gdn and m.group(2) in _SAVED_GDN_NORMS:
            key = f"model.layers.{m.group(1)}.{_SAVED_GDN_NORMS[m.group(2)]}"
        state[key] = value.detach().contiguous().cpu()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # safetensors stores no aliases; transformers re-ties
    return state


def export_config(model):
    """A copy of the config as transformers should read it back."""
    config = copy.deepcopy(model.config)
    config.architectures = [ARCHITECTURES[config.model_type]]
    config.dtype = model.model.embed_tokens.weight.dtype
    config.rope_parameters = saved_rope_parameters(config)
    return config


def _shards(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > MAX_SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensor
        size += nbytes
    return shards + [current]


def save_checkpoint(model, out_dir: Path, tokenizer=None, source_dir: Path | None = None) -> Path:
    out_dir = out_dir.expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        state = export_state_dict(model)
        shards = _shards(state)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in state.values())
            (tmp / WEIGHTS_INDEX).write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
            )
        config = export_config(model)
        config.save_pretrained(str(tmp))
        GenerationConfig.from_model_config(config).save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        elif source_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(source_dir) / name).is_file():
                    shutil.copy2(Path(source_dir) / name, tmp / name)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
