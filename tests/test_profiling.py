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


def test_kernel_kinds_of_a_hybrid_step():
    """Kernel names as a CUDA profile of a hybrid training step lists them (cuBLAS nvjet matmuls, cuDNN attention,
    fla's Triton kernels, PyTorch's copy and elementwise kernels) fall into their kinds, and the groups sum them."""
    from longctx.train.profiling import kernel_groups, kernel_kind

    names = {
        "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT": "matmul",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "matmul",
        "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_3": "attention",
        "chunk_gated_delta_rule_fwd_kernel_h_blockdim64": "gated delta rule",
        "recompute_w_u_fwd_kernel": "gated delta rule",
        "causal_conv1d_bwd_kernel": "short conv",
        "layer_norm_fwd_kernel": "norms",
        "swiglu_fwd_kernel": "swiglu",
        "cross_entropy_fwd_kernel": "cross-entropy",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>": "optimizer",
        "void at::native::elementwise_kernel<128, 2, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>": (
            "copies"
        ),
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>": "elementwise",
        "Memset (Device)": "copies",
        "kernel_kernel": "other",
    }
    assert {n: kernel_kind(n) for n in names} == names
    rows = [("nvjet_a", 3, 2.0), ("nvjet_b", 1, 1.5), ("causal_conv1d_fwd_kernel", 12, 0.5), ("kernel_kernel", 2, 4.0)]
    assert kernel_groups(rows) == [("other", 2, 4.0), ("matmul", 4, 3.5), ("short conv", 12, 0.5)]
