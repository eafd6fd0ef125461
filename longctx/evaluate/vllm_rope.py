"""How many positions vLLM's RoPE table holds for a checkpoint, and the config override that makes it hold more.

vLLM (0.26, vllm/model_executor/layers/rotary_embedding) precomputes cos/sin for a fixed number of positions and
indexes that table with each token's position: a position past its end is an out-of-bounds index (a device-side
assert in the compiled model; with VLLM_ALLOW_LONG_MAX_MODEL_LEN it is not caught at start-up). The table holds

- default RoPE: `max_position_embeddings` positions; linear (PI): `max_position_embeddings` x factor. Neither's
  frequencies depend on `max_position_embeddings`, so raising it (vLLM's `hf_overrides`) only lengthens the table;
  transformers and longctx compute any position, so the longer table gives what they give.
- YaRN: `original_max_position_embeddings` x factor, its frequencies derived from those numbers: it cannot be
  lengthened without changing the model, so longer prompts are refused (UsageError; run them with `--backend
  longctx` or `hf`).
- dynamic NTK: `max_position_embeddings` positions, lengthened like default RoPE; but vLLM keeps RoPE's base (its
  DynamicNTKScalingRotaryEmbedding scales it by max_position_embeddings / max_trained_positions, 1 without the
  latter) where transformers scales it once a sequence passes `original_max_position_embeddings`: prompts past that
  are refused too.
- no RoPE (DRoPE): no table.
"""

from __future__ import annotations

import json
from pathlib import Path

from longctx.errors import UsageError


def hf_overrides(model_dir: str | Path, positions: int, needed: int) -> dict:
    """vLLM's `hf_overrides` for a checkpoint whose prompts reach `needed` positions (at most `positions`, the
    engine's max_model_len): {} when its tables are long enough or it has none; raises UsageError when a method
    whose table cannot be lengthened falls short of `needed`. RoPE per layer type (Olmo 3: sliding-window layers
    plain, full-attention layers extended) is checked entry by entry: every layer indexes its table by position."""
    from longctx.results import per_layer_type, read_rope_parameters, rope_method

    config = json.loads((Path(model_dir) / "config.json").read_text())
    config = config.get("text_config", config)
    mpe = int(config.get("max_position_embeddings") or 0)
    rp = read_rope_parameters(model_dir)
    nested = per_layer_type(rp)
    lengthen = False
    for entry in nested.values() if nested is not None else [rp]:
        method = rope_method(entry)
        if method == "drope":
            continue
        factor = float(entry.get("factor") or 1.0)
        original = int(entry.get("original_max_position_embeddings") or mpe)
        where = f"vLLM's {method} RoPE in {str(model_dir)!r}"
        if method == "ntk" and needed > original:
            raise UsageError(
                f"--lengths up to {needed:,}: {where} keeps RoPE's base where transformers scales it past "
                f"{original:,} positions; use --backend longctx or hf"
            )
        table = {"yarn": int(original * factor), "pi": int(mpe * factor)}.get(method, mpe)
        if table >= positions:
            continue
        if method != "yarn":  # a longer table, the same frequencies
            lengthen = True
        elif table < needed:
            raise UsageError(
                f"--lengths up to {needed:,}: {where} holds {table:,} positions and cannot be lengthened without "
                "changing the model's frequencies; use --backend longctx or hf"
            )
    return {"max_position_embeddings": max(positions, mpe)} if lengthen else {}
