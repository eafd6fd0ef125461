"""Learning-rate schedules: a linear warmup, then cosine, linear, WSD or constant.

`lr_factor(step, total, cfg)` is the multiplier of the peak LR used for the update that takes the
model from `step` to `step + 1` (steps count from 0):

    warmup (step < W):  (step + 1) / W
    then p = (step - W) / max(1, total - W - 1) in [0, 1] and m = min_lr_ratio:
      cosine:    m + (1 - m) * (1 + cos(pi * p)) / 2
      linear:    1 - (1 - m) * p
      wsd:       with D = round(decay_fraction * total), S = max(W, total - D):
                 1 for step < S, then 1 - (1 - m) * (step - S + 1) / max(1, total - S)
      constant:  1
so the first update after warmup runs at the peak and the last one at min_lr_ratio * peak.
"""

from __future__ import annotations

import math

import torch

from longctx.config import ScheduleConfig


def lr_factor(step: int, total: int, cfg: ScheduleConfig) -> float:
    w, m = cfg.warmup_steps, cfg.min_lr_ratio
    if step < w:
        return (step + 1) / w
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "wsd":
        d = round(cfg.decay_fraction * total)
        start = max(w, total - d)
        if step < start:
            return 1.0
        p = min(1.0, (step - start + 1) / max(1, total - start))
        return 1.0 - (1.0 - m) * p
    p = min(1.0, (step - w) / max(1, total - w - 1))
    if cfg.name == "cosine":
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))
    if cfg.name == "linear":
        return 1.0 - (1.0 - m) * p
    raise ValueError(f"unknown schedule {cfg.name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: ScheduleConfig):
    """A LambdaLR (its state_dict is the step count, so it checkpoints and resumes exactly)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
