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


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of a run folder's metrics file, or of a metrics file itself (a copy under another name)."""
    path = Path(run) if Path(run).is_file() else Path(run) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def progress_bar(total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    # Shown in logs too (batch jobs), at most once a second.
    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=1.0
    )


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


def summarize(rows: list[dict], skip: int = 2) -> list[dict]:
    """One summary per stage of a run's metrics rows, in stage order: steps, seq_len, tokens per
    step, median tokens/s and MFU over the stage's steps after its first `skip` (warm-up: kernel
    compiles, allocator growth), the highest peak memory, first and last loss, the last probe mean."""
    import statistics

    stages: dict[str, list[dict]] = {}
    for r in rows:
        stages.setdefault(r["stage"], []).append(r)
    out = []
    for name, rs in stages.items():
        timed = rs[skip:] or rs
        start = rows.index(rs[0])
        prev = rows[start - 1]["tokens"] if start else 0
        per_step = (rs[-1]["tokens"] - prev) / len(rs)
        mfu = [r["mfu"] for r in timed if r.get("mfu") is not None]
        mem = [r["peak_mem_gb"] for r in rs if r.get("peak_mem_gb") is not None]
        probes = [r["probe/mean"] for r in rs if "probe/mean" in r]
        out.append(
            {
                "stage": name,
                "steps": len(rs),
                "seq_len": rs[0]["seq_len"],
                "tokens_per_step": round(per_step),
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
                "mfu": statistics.median(mfu) if mfu else None,
                "peak_mem_gb": max(mem) if mem else None,
                "loss_first": rs[0]["loss"],
                "loss_last": rs[-1]["loss"],
                "probe_mean": probes[-1] if probes else None,
            }
        )
    return out
