"""torch.profiler over a few training steps (`--set profile.start=N`): where a step's time goes.

Writes, per rank, OUT/profile/rank<r>_steps<a>-<b>.txt — wall time of the profiled steps against the summed
kernel time (far below wall means the step waits on the host: launches, Python, syncs), the
number of host-side ops, the top ops by self time, and the same ops split by their input shapes (which
tensor a copy, cast or elementwise op works on says where in the model it runs: [T, vocab] is the
cross-entropy, [B, T, heads, dim] a mixer's heads) — and a gzipped Chrome/Perfetto trace beside it.
bench/train_throughput.py --profile writes the same summary for one benchmark step.
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import torch


def kernel_time_ms(events) -> float:
    """GPU time of the profiled kernels: the device-side events' self time, as the profiler table's
        "Self CUDA time total". The host ops that launched them carry the same time as their own device
        time, so a sum over every event counts each kernel about twice (an older header did: 589.9 ms for a 294.6 ms
    footer)."""
    from torch.autograd import DeviceType

    device = {DeviceType.CUDA, DeviceType.PrivateUse1}
    return (
        sum(
            e.self_device_time_total
            for e in events
            if e.device_type in device and not getattr(e, "is_user_annotation", False)
        )
        / 1e3
    )


def write_summary(
    prof, out_dir: Path, label: str, wall_ms: float, cuda: bool, rows: int = 30, shape_rows: int = 60
) -> dict:
    """The summary file and trace of a finished torch.profiler.profile; returns the headline figures."""
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    kernel_ms = kernel_time_ms(events) if cuda else None
    host_ops = sum(1 for e in prof.events() if e.cpu_parent is None)
    out_dir.mkdir(parents=True, exist_ok=True)
    head = (
        f"{label}: wall {wall_ms:.1f} ms"
        + (f", kernels {kernel_ms:.1f} ms ({100 * kernel_ms / wall_ms:.0f}% of wall)" if cuda else "")
        + f", {host_ops} top-level host ops\n"
    )
    by_shape = prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=shape_rows)
    (out_dir / f"{label}.txt").write_text(
        head + events.table(sort_by=key, row_limit=rows) + "\n\nBy input shapes (record_shapes):\n" + by_shape + "\n"
    )
    trace = out_dir / f"{label}.trace.json"
    prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    return {"wall_ms": wall_ms, "kernel_ms": kernel_ms, "host_ops": host_ops, "file": f"{label}.txt"}


class StepProfiler:
    """Profiles steps start .. start + steps - 1 (1-based, as metrics.jsonl counts them); the files
    are named `label` (default rank<r>_steps<a>-<b>)."""

    def __init__(
        self, start: int, steps: int, out_dir: Path, device: torch.device, rank: int = 0, label: str | None = None
    ):
        self.start, self.stop = start, start + steps - 1
        self.out_dir, self.device, self.rank, self.label = Path(out_dir), device, rank, label
        self._prof, self._t0, self.result = None, 0.0, None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def before(self, step: int) -> None:
        """Call before running step `step` (1-based)."""
        if step == self.start and self._prof is None and self.result is None:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self._sync()
            self._prof = profile(activities=acts, record_shapes=True)
            self._prof.__enter__()
            self._t0 = time.perf_counter()

    def after(self, step: int) -> None:
        if self._prof is not None and step >= self.stop:
            self._sync()
            wall_ms = (time.perf_counter() - self._t0) * 1e3
            self._prof.__exit__(None, None, None)
            label = self.label or f"rank{self.rank}_steps{self.start}-{step}"
            self.result = write_summary(self._prof, self.out_dir, label, wall_ms, self.device.type == "cuda")
            self._prof = None

    def close(self) -> None:
        """Stop an unfinished profile (the run ended or stopped inside the window) and keep what it saw."""
        if self._prof is not None:
            self.after(self.stop)
