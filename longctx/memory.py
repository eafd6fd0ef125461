"""Up-front refusal of work that cannot fit in memory (a typo'd --batch-size, --target or --lengths).

The bound is a floor, never an estimate: training keeps at least one hidden state per token and
layer for the backward pass (every block's input, even with activation checkpointing everywhere),
evaluation at least one hidden state per token of a prompt. Work whose floor exceeds the device's
whole memory is refused before a model is built or a batch made; anything under it is left to run.
"""

from __future__ import annotations

import os
from pathlib import Path

from longctx.errors import UsageError


def total_memory(device) -> int | None:
    """Bytes of the device's memory (CPU: RAM, capped by a cgroup limit); None when unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    if device.type != "cpu":
        return None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            ram = min(ram, int(limit))
    except OSError:
        pass
    return ram


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(tokens: int, width: int, device, *, what: str, hint: str, ranks: int = 1) -> None:
    """Refuse `tokens` (over `ranks` devices) holding `width` numbers each, at >= 2 bytes a number,
    when that alone exceeds the device's memory."""
    import torch

    have = total_memory(device)
    if have is None:
        return
    per_number = 2 if torch.device(device).type == "cuda" else 4  # bf16 autocast on CUDA, fp32 on CPU
    need = -(-tokens // max(ranks, 1)) * width * per_number
    if need > have:
        raise UsageError(
            f"{what} = {tokens:,} tokens need at least {gib(need)} of activations; "
            f"{torch.device(device).type} memory here is {gib(have)}; {hint}"
        )


def model_width(config) -> tuple[int, int]:
    """(hidden size, layers) of an HF config object or config.json dict (text_config for multimodal)."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    text = get("text_config")
    if text:
        return model_width(text)
    return int(get("hidden_size", None) or get("d_model", None) or 1), int(get("num_hidden_layers", None) or 1)


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1
