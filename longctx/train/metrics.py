"""Per-step metrics: `metrics.jsonl` in the run dir and a tqdm progress bar."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

METRICS_FILE = "metrics.jsonl"

# Dense bf16 tensor-core peak (no sparsity), FLOP/s, by device-name substring.
_PEAK_BF16 = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
)


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak, or None where unknown (then no MFU is reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in _PEAK_BF16:
        if key in name:
            return flops
    return None


class MetricsLog:
    """Appends one JSON object per step. On resume, rows past the resumed step are dropped so the
    file reads as one run."""

    def __init__(self, run_dir: str | Path, resume_step: int = 0):
        self.path = Path(run_dir) / METRICS_FILE
        if self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if row.get("step", 0) <= resume_step:
                    keep.append(line)
            self.path.write_text("".join(k + "\n" for k in keep))
        self._f = open(self.path, "a")

    def log(self, row: dict) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf
    return v


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def progress_bar(total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    # Shown in logs too (batch jobs), at most once a second.
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr,
                mininterval=1.0)


def format_postfix(row: dict) -> str:
    parts = [f"loss {row['loss']:.4f}", f"{_si(row['tokens_per_s'])} tok/s"]
    if row.get("mfu") is not None:
        parts.append(f"MFU {100 * row['mfu']:.1f}%")
    parts.append(f"lr {row['lr']:.2e}")
    return " | ".join(parts)


def _si(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"
