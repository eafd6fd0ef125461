"""`longctx doctor`: the report asks the code that picks each kernel, names each missing package's import error,
and notes what makes a GPU run slow or fail."""

from __future__ import annotations

import json

from longctx import doctor_cmd
from longctx.cli import main
from longctx.model import attention


def _report(capsys, *argv) -> dict:
    assert main(["doctor", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_cpu_report(capsys, monkeypatch):
    monkeypatch.delenv("LONGCTX_ATTN_BACKEND", raising=False)
    r = _report(capsys)
    assert r["gpu"]["available"] is False and r["kernels"]["device"] == "cpu"
    assert r["packages"]["lm-eval"]["ok"] and r["packages"]["vllm"] == {
        "ok": False,
        "error": "ModuleNotFoundError: No module named 'vllm'",
    }
    k = r["kernels"]
    assert k["attention, training, packed documents"].startswith("math (")
    assert k["attention, inference, packed documents"].startswith("sdpa_docs (")
    assert k["gated deltanet"] == "PyTorch reference" and k["rmsnorm / swiglu"] == "PyTorch"
    assert k["rope"] == "PyTorch (transformers' ops)"  # the kernel is CUDA's
    assert k["cross-entropy (loss_backend auto)"] == "chunked (PyTorch)"
    assert r["notes"] == []  # the notes are about GPU runs
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "GPU: none" in text and "vllm        missing: ModuleNotFoundError" in text


def test_forced_backend_shows_everywhere(capsys, monkeypatch):
    monkeypatch.setenv("LONGCTX_ATTN_BACKEND", "varlen")
    r = _report(capsys)
    assert r["switches"] == {"LONGCTX_ATTN_BACKEND": "varlen"}
    attn = [v for k, v in r["kernels"].items() if k.startswith("attention")]
    assert len(attn) == 6 and all(v == f"varlen ({doctor_cmd.ATTENTION['varlen']})" for v in attn)
    assert set(doctor_cmd.ATTENTION) == set(attention.BACKENDS)  # every backend has its words


def test_gpu_notes(capsys, monkeypatch):
    """A Hopper GPU without fla, with Triton 3.6 and no tilelang, no kernel cache: three notes."""
    gpu = {
        "available": True,
        "count": 1,
        "name": "H200",
        "capability": "9.0",
        "memory_gib": 139.8,
        "torch_cuda": "13.0",
    }
    monkeypatch.setattr(doctor_cmd, "_gpu", lambda: gpu)
    monkeypatch.setattr(doctor_cmd, "_kernels", lambda device: {"gated deltanet": "PyTorch reference"})
    real = doctor_cmd._package
    monkeypatch.setattr(
        doctor_cmd, "_package", lambda m: {"ok": True, "version": "3.6.0"} if m == "triton" else real(m)
    )
    for var in ("LONGCTX_KERNEL_CACHE", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    notes = _report(capsys)["notes"]
    assert len(notes) == 3
    assert "PyTorch reference" in notes[0] and "No module named 'fla'" in notes[0]
    assert "tilelang" in notes[1] and "LONGCTX_KERNEL_CACHE" in notes[2]
    assert main(["doctor"]) == 0 and "1 x H200 (sm 9.0, 139.8 GiB), CUDA 13.0" in capsys.readouterr().out


def test_kernel_cache_sizes(capsys, monkeypatch, tmp_path):
    """With LONGCTX_KERNEL_CACHE, each library's cache and what it holds (empty on a fresh machine)."""
    for var in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "TILELANG_CACHE_DIR"):
        # set, not deleted: the command sets them from LONGCTX_KERNEL_CACHE, and monkeypatch undoes only what
        # it recorded (a delenv of an unset variable records nothing, and they would leak into later tests)
        monkeypatch.setenv(var, "")
    (tmp_path / "kc" / "triton" / "k1").mkdir(parents=True)
    (tmp_path / "kc" / "triton" / "k1" / "kernel.autotune.json").write_bytes(b"x" * 3 * 2**20)
    monkeypatch.setenv("LONGCTX_KERNEL_CACHE", str(tmp_path / "kc"))
    r = _report(capsys)
    assert r["kernel_caches"]["TRITON_CACHE_DIR"] == str(tmp_path / "kc" / "triton")
    assert r["kernel_cache_sizes"]["TRITON_CACHE_DIR"] == "1 files, 3 MiB"
    assert r["kernel_cache_sizes"]["TORCHINDUCTOR_CACHE_DIR"] == "0 files, 0 MiB"


def test_vllm_without_the_plugin_is_noted(capsys, monkeypatch):
    """With vLLM importable, the report says whether longctx's vLLM plugin is registered where vLLM looks."""
    real = doctor_cmd._package
    monkeypatch.setattr(doctor_cmd, "_package", lambda m: {"ok": True, "version": "0.26.0"} if m == "vllm" else real(m))
    r = _report(capsys)
    assert r["vllm_plugin"] is True and r["notes"] == []  # installed (pip install -e .): the entry point is there
    from longctx.evaluate import vllm_compat

    monkeypatch.setattr(vllm_compat, "registered", lambda: False)
    r = _report(capsys)
    assert r["vllm_plugin"] is False and any("vllm.general_plugins" in n for n in r["notes"])


def test_rope_kernel_row(capsys, monkeypatch):
    """The rope row is rope_kernel.applies' verdict: the kernel where it serves (here made to serve CPU
    tensors), PyTorch under LONGCTX_FUSED_ROPE=0."""
    from longctx.model import rope_kernel

    monkeypatch.setattr(rope_kernel, "DEVICES", ("cpu",))
    monkeypatch.setattr(rope_kernel, "triton", object())
    monkeypatch.delenv("LONGCTX_FUSED_ROPE", raising=False)
    assert _report(capsys)["kernels"]["rope"] == "longctx's Triton kernel"
    monkeypatch.setenv("LONGCTX_FUSED_ROPE", "0")
    assert _report(capsys)["kernels"]["rope"] == "PyTorch (transformers' ops)"
