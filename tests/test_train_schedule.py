"""LR schedules against torch's own schedulers and the published formulas."""

import math

import pytest
import torch

from longctx.config import ScheduleConfig
from longctx.train.schedule import build_scheduler, lr_factor

PEAK = 1e-3


def _run(sched_fn, total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=PEAK)
    sched = sched_fn(opt)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _torch_reference(opt, total, warmup, after):
    # torch's warmup: LinearLR from 1/W to 1 over W-1 steps gives (k+1)/W at step k
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, after(opt)], milestones=[warmup])


@pytest.mark.parametrize("total,warmup", [(40, 5), (17, 3)])
def test_cosine_equals_torch_cosine_annealing(total, warmup):
    m = 0.1
    cfg = ScheduleConfig(name="cosine", warmup_steps=warmup, min_lr_ratio=m)
    ours = _run(lambda o: build_scheduler(o, total, cfg), total)
    ref = _run(
        lambda o: _torch_reference(
            o,
            total,
            warmup,
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warmup - 1, eta_min=m * PEAK),
        ),
        total,
    )
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert ours[warmup] == pytest.approx(PEAK) and ours[-1] == pytest.approx(m * PEAK)


def test_linear_equals_torch_linear_lr():
    total, warmup, m = 30, 4, 0.0
    cfg = ScheduleConfig(name="linear", warmup_steps=warmup, min_lr_ratio=m)
    ours = _run(lambda o: build_scheduler(o, total, cfg), total)
    ref = _run(
        lambda o: _torch_reference(
            o, total, warmup, lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, m, total_iters=total - warmup - 1)
        ),
        total,
    )
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)


def test_wsd_warmup_stable_decay_formula():
    total, warmup, m, frac = 50, 5, 0.05, 0.2
    cfg = ScheduleConfig(name="wsd", warmup_steps=warmup, min_lr_ratio=m, decay_fraction=frac)
    decay = 10  # 20% of 50
    for s in range(total):
        if s < warmup:
            want = (s + 1) / warmup
        elif s < total - decay:
            want = 1.0
        else:
            want = 1.0 - (1.0 - m) * (s - (total - decay) + 1) / decay
        assert lr_factor(s, total, cfg) == pytest.approx(want), s
    assert lr_factor(total - 1, total, cfg) == pytest.approx(m)


def test_constant_and_no_warmup():
    cfg = ScheduleConfig(name="constant", warmup_steps=0)
    assert [lr_factor(s, 10, cfg) for s in range(10)] == [1.0] * 10
    cos = ScheduleConfig(name="cosine", warmup_steps=0, min_lr_ratio=0.0)
    assert lr_factor(0, 11, cos) == 1.0
    assert lr_factor(5, 11, cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, 11, cos) == pytest.approx(0.0, abs=1e-12)
