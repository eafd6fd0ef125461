"""AdamW with weight decay only on matrices that are not embeddings (norms, biases, the GDN
decay parameters and the embedding table are left alone, as in OLMo)."""

from __future__ import annotations

import torch
from torch import nn

from longctx.config import OptimizerConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, device: torch.device | str) -> torch.optim.AdamW:
    fused = torch.device(device).type == "cuda"  # one kernel for all params; CPU keeps foreach
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        fused=fused or None,
    )
