"""`profile.start` / `profile.steps`: torch.profiler over exactly the chosen training steps."""

from __future__ import annotations

import gzip
import json

import torch

from longctx.cli import main
from longctx.train.profiling import StepProfiler

ARGS = ["--model", "hybrid-tiny", "--seq-len", "64", "--batch-size", "2", "--device", "cpu", "--no-progress"]


def _trace_names(path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        return [e.get("name") for e in json.load(fh)["traceEvents"]]


def test_step_profiler_covers_exactly_its_steps(tmp_path):
    prof = StepProfiler(start=3, steps=2, out_dir=tmp_path, device=torch.device("cpu"))
    for step in range(1, 7):
        prof.before(step)
        with torch.profiler.record_function(f"step-{step}"):
            torch.ones(8) @ torch.ones(8)
            torch.ones(3, 5).add_(1)
        prof.after(step)
    prof.close()
    names = _trace_names(tmp_path / "rank0_steps3-4.trace.json.gz")
    assert sorted(n for n in names if n and n.startswith("step-")) == ["step-3", "step-4"]
    head = (tmp_path / "rank0_steps3-4.txt").read_text().splitlines()[0]
    assert head.startswith("rank0_steps3-4: wall ") and "host ops" in head
    assert prof.result["host_ops"] >= 2
    text = (tmp_path / "rank0_steps3-4.txt").read_text()
    shapes = text.split("By input shapes")[1]
    assert any("aten::add_" in line and "[3, 5]" in line for line in shapes.splitlines()), shapes


def test_pretrain_writes_a_profile_of_the_chosen_steps(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                *ARGS,
                "--steps",
                "4",
                "--out",
                str(out),
                "--set",
                "profile.start=2",
                "--set",
                "profile.steps=2",
            ]
        )
        == 0
    )
    files = sorted(p.name for p in (out / "profile").iterdir())
    assert files == ["rank0_steps2-3.trace.json.gz", "rank0_steps2-3.txt"]
    names = _trace_names(out / "profile" / "rank0_steps2-3.trace.json.gz")
    # one optimizer step per profiled training step
    assert sum(1 for n in names if n and n.startswith("Optimizer.step#") and n.endswith(".step")) == 2
    assert "aten::mm" in (out / "profile" / "rank0_steps2-3.txt").read_text()


def test_bad_profile_steps_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", *ARGS, "--steps", "2", "--out", str(out), "--set", "profile.steps=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "profile.steps" in err[0] and not out.exists()


def test_kernel_time_counts_each_kernel_once():
    """The header's kernel time: device-side events only. In a kineto profile the host op that launched a
    kernel (and a Triton launcher's annotation) shows the kernel's time as its own device time too; the
    profiler's own "Self CUDA time total" counts only the kernels. A 20m profile's old header read 589.9 ms
    against a footer of 294.6 ms."""
    from types import SimpleNamespace as E

    from torch.autograd import DeviceType

    from longctx.train.profiling import kernel_time_ms

    events = [
        E(device_type=DeviceType.CPU, self_device_time_total=3000.0, is_user_annotation=False),  # aten::mm
        E(device_type=DeviceType.CUDA, self_device_time_total=3000.0, is_user_annotation=False),  # its gemm
        E(device_type=DeviceType.CPU, self_device_time_total=500.0, is_user_annotation=True),  # a launcher
        E(device_type=DeviceType.CUDA, self_device_time_total=500.0, is_user_annotation=True),  # gpu_user_annotation
        E(device_type=DeviceType.CUDA, self_device_time_total=500.0, is_user_annotation=False),  # its kernel
    ]
    assert kernel_time_ms(events) == 3.5
