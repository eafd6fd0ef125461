"""What `longctx eval` can check of a model folder without loading it: the model type is one the
backend builds, every safetensors file is whole (its header parses and its data is all there), and
the longest length fits in memory at all (longctx.memory)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from longctx.errors import UsageError


def check_safetensors(path: Path, flag: str) -> None:
    """The header (8-byte length + JSON) parses and the file is as long as its tensors' offsets say."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as e:
        raise UsageError(f"{flag}: {path.name} is not a readable safetensors file ({e}); re-export the model") from None
    if 8 + n + end > size:
        raise UsageError(
            f"{flag}: {path.name} is truncated ({size:,} bytes, its header needs {8 + n + end:,}); "
            "re-export or re-copy the model"
        )


def check_model_type(config: dict, backend: str, flag: str) -> None:
    model_type = config.get("model_type")
    if backend == "longctx":
        from longctx.model.config import LAYER_TYPES

        if model_type not in LAYER_TYPES:
            raise UsageError(
                f"{flag}: model_type {model_type!r} is not one the longctx backend builds; accepted: "
                f"{', '.join(LAYER_TYPES)} (other models: --backend hf)"
            )
        return
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise UsageError(f"{flag}: model_type {model_type!r} is not known to transformers; give an HF model folder")


def check_model(model: Path, backend: str, flag: str) -> dict:
    """Check model's config type and weight files; return its config.json."""
    config = json.loads((model / "config.json").read_text())
    check_model_type(config, backend, flag)
    for f in sorted(model.glob("*.safetensors")):
        check_safetensors(f, flag)
    return config


def check_lengths_fit(lengths: list[int], config: dict, device: str | None) -> None:
    from longctx.lengths import format_length
    from longctx.memory import check_fits, model_width

    hidden, _ = model_width(config)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    n = max(lengths)
    check_fits(
        n,
        hidden,
        device,
        what=f"--lengths {format_length(n)}: one prompt of {format_length(n)}",
        hint="give lengths this machine can hold",
    )
