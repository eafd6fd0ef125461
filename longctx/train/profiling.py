"""torch.profiler over a few training steps (`--set profile.start=N`): where a step's time goes.

Writes, per rank, OUT/profile/rank<r>_steps<a>-<b>.txt — wall time of the profiled steps against the summed
kernel time (far below wall means the step waits on the host: launches, Python, syncs), the
number of host-side ops, the top ops by self time, and the same ops split by their input shapes (which
tensor a copy, cast or elementwise op works on says where in the model it runs: [T, vocab] is the
cross-entropy, [B, T, heads, dim] a mixer's heads), the kernel time by kind (matmuls, attention, the
gated delta rule, ...: `kernel_groups`) — and beside it every kernel's name, calls and time
(`<label>.kernels.tsv`, small enough to come back from a GPU machine) and a gzipped Chrome/Perfetto trace.
bench/train_throughput.py --profile writes the same summary for one benchmark step.
"""

from __future__ import annotations

import gzip
import re
import shutil
import time
from pathlib import Path

import torch


def _kernel_events(events):
    """The device-side kernel events: the host ops that launched them (and a Triton launcher's annotation) carry
    the same time as their own device time, so a sum over every event counts each kernel about twice."""
    from torch.autograd import DeviceType

    device = {DeviceType.CUDA, DeviceType.PrivateUse1}
    return [e for e in events if e.device_type in device and not getattr(e, "is_user_annotation", False)]


def kernel_time_ms(events) -> float:
    """GPU time of the profiled kernels: the kernel events' self time, as the profiler table's "Self CUDA time
    total" (a sum over every event once gave 589.9 ms for a 294.6 ms footer)."""
    return sum(e.self_device_time_total for e in _kernel_events(events)) / 1e3


# Kernel kinds by name, first match wins (cuBLAS/nvjet matmuls, cuDNN/flash attention, fla's Triton kernels,
# PyTorch's own elementwise and copy kernels).
KERNEL_KINDS = (
    ("matmul", r"nvjet|gemm|cutlass|xmma|cublas"),
    ("attention", r"sdpa|flash|fmha|attn|attention"),
    ("gated delta rule", r"delta_rule|chunk_|w_u_|wy_repr|solve_tril|inverse|kkt|l2norm|cumsum"),
    ("short conv", r"conv1d|causal_conv"),
    ("cross-entropy", r"cross_entropy|logsumexp|log_softmax|softmax|nll_loss"),
    ("norms", r"norm"),
    ("swiglu", r"swiglu|swish|silu"),
    ("optimizer", r"adam|multi_tensor"),
    ("copies", r"copy|memcpy|memset|CatArray|cat_"),
    ("elementwise", r"elementwise|reduce_kernel|vectorized|unrolled|fill"),
)


def kernel_kind(name: str) -> str:
    for kind, pattern in KERNEL_KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def device_kernels(events) -> list[tuple[str, int, float]]:
    """(name, calls, self ms) of every device-side kernel of a key_averages(), longest first."""
    rows = [(e.key, e.count, e.self_device_time_total / 1e3) for e in _kernel_events(events)]
    return sorted(rows, key=lambda r: -r[2])


def kernel_groups(kernels) -> list[tuple[str, int, float]]:
    """(kind, calls, ms) of device_kernels' rows by kernel_kind, longest first."""
    groups: dict[str, list] = {}
    for name, calls, ms in kernels:
        g = groups.setdefault(kernel_kind(name), [0, 0.0])
        g[0] += calls
        g[1] += ms
    return sorted(((k, c, ms) for k, (c, ms) in groups.items()), key=lambda r: -r[2])


def write_summary(
    prof, out_dir: Path, label: str, wall_ms: float, cuda: bool, rows: int = 30, shape_rows: int = 200
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
    groups = ""
    if cuda:
        kernels = device_kernels(events)
        groups = "\n\nKernel time by kind (KERNEL_KINDS):\n" + "".join(
            f"{kind:<18} {ms:9.2f} ms {100 * ms / (kernel_ms or 1.0):5.1f}% {calls:6d} kernels\n"
            for kind, calls, ms in kernel_groups(kernels)
        )
        (out_dir / f"{label}.kernels.tsv").write_text(
            "ms\tcalls\tkind\tkernel\n"
            + "".join(f"{ms:.3f}\t{calls}\t{kernel_kind(name)}\t{name}\n" for name, calls, ms in kernels)
        )
    (out_dir / f"{label}.txt").write_text(
        head
        + events.table(sort_by=key, row_limit=rows)
        + groups
        + "\n\nBy input shapes (record_shapes):\n"
        + by_shape
        + "\n"
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
