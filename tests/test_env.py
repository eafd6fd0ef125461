"""longctx.env: the LONGCTX_* switches are checked before any command runs: a bad value is one line,
exit 2, nothing written; the accepted spellings reach the modules that read them."""

import os
import subprocess
import sys

import pytest

from longctx import env
from longctx.cli import main

RUN = [
    "pretrain",
    "--model",
    "hybrid-tiny",
    "--seq-len",
    "32",
    "--batch-size",
    "1",
    "--steps",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.mark.parametrize(
    "name, bad",
    [
        ("LONGCTX_FUSED_ELEMENTWISE", "ture"),
        ("LONGCTX_DATA_PREFETCH", "gpu"),
        ("LONGCTX_ATTN_BACKEND", "flash2"),
        ("LONGCTX_GDN_BACKEND", "cuda"),
    ],
)
def test_a_bad_switch_stops_the_command_before_it_writes(monkeypatch, tmp_path, capsys, name, bad):
    monkeypatch.setenv(name, bad)
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{name}={bad!r}" in err[0] and "expected one of" in err[0]
    assert all(v in err[0] for v in env.SWITCHES[name][0])  # every accepted value is named
    assert not out.exists()


@pytest.mark.parametrize(
    "value, want",
    [
        ("1", True),
        ("true", True),
        (" ON ", True),
        ("0", False),
        ("off", False),
        ("False", False),
        ("auto", None),
        ("", None),
        (None, None),
    ],
)
def test_fused_elementwise_spellings(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv("LONGCTX_FUSED_ELEMENTWISE", raising=False)
    else:
        monkeypatch.setenv("LONGCTX_FUSED_ELEMENTWISE", value)
    assert env.fused_elementwise() is want
    env.check()


def test_backend_switches_are_case_insensitive(monkeypatch):
    monkeypatch.setenv("LONGCTX_ATTN_BACKEND", "SDPA_docs")
    assert env.get("LONGCTX_ATTN_BACKEND") == env.peek("LONGCTX_ATTN_BACKEND") == "sdpa_docs"


def test_model_switches_are_read_when_used(monkeypatch):
    """Set after the modules are imported, LONGCTX_ATTN_BACKEND, LONGCTX_GDN_BACKEND and
    LONGCTX_FUSED_ELEMENTWISE take effect at the next call; a module attribute set by code wins."""
    from types import SimpleNamespace

    import torch

    from longctx.distributed import cp_attention
    from longctx.model import attention, fused, gdn
    from longctx.model.varlen import doc_layout

    for name in ("LONGCTX_ATTN_BACKEND", "LONGCTX_GDN_BACKEND", "LONGCTX_FUSED_ELEMENTWISE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(attention, "BACKEND", None)
    monkeypatch.setattr(gdn, "BACKEND", None)
    monkeypatch.setattr(fused, "ENABLED", None)

    q = torch.zeros(1, 8, 2, 4)
    plain = doc_layout(None, 1, 8, torch.device("cpu"))
    assert attention.select_backend(q, plain, None) == "math" and cp_attention._backend(q) == "math"
    monkeypatch.setenv("LONGCTX_ATTN_BACKEND", "Flex")
    assert attention.select_backend(q, plain, None) == "flex" and cp_attention._backend(q) == "flex"
    monkeypatch.setattr(attention, "BACKEND", "sdpa")
    assert attention.select_backend(q, plain, None) == "sdpa"

    layer = SimpleNamespace(backend=None)
    assert gdn.GatedDeltaNet.use_fla(layer, q) is False
    monkeypatch.setenv("LONGCTX_GDN_BACKEND", "fla")
    assert gdn.default_backend() == "fla"
    with pytest.raises(RuntimeError, match="'fla' needs CUDA"):
        gdn.GatedDeltaNet.use_fla(layer, q)
    monkeypatch.setattr(gdn, "BACKEND", "torch")
    assert gdn.GatedDeltaNet.use_fla(layer, q) is False

    on_cuda = SimpleNamespace(device=torch.device("cuda"))
    monkeypatch.setattr(fused, "_load", lambda: False)  # fla not installed
    assert fused.enabled() is None and fused.kernels(on_cuda) is None
    monkeypatch.setenv("LONGCTX_FUSED_ELEMENTWISE", "1")
    assert fused.enabled() is True
    with pytest.raises(RuntimeError, match="fla is not installed"):
        fused.kernels(on_cuda)
    monkeypatch.setenv("LONGCTX_FUSED_ELEMENTWISE", "0")
    assert fused.enabled() is False and fused.kernels(on_cuda) is None
    monkeypatch.setattr(fused, "ENABLED", True)
    assert fused.enabled() is True


def test_kernel_cache_sets_every_compiler_cache_under_one_directory(monkeypatch, tmp_path):
    root = tmp_path / "kernels"
    for var in env.KERNEL_CACHES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine"))  # one the user set stays theirs
    monkeypatch.setenv("LONGCTX_KERNEL_CACHE", str(root))
    env.check()
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "mine")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert os.environ["TILELANG_CACHE_DIR"] == str(root / "tilelang")
    assert (root / "inductor").is_dir() and (root / "tilelang").is_dir()


def test_kernel_cache_receives_what_torch_compiles(monkeypatch, tmp_path):
    """A process that applies the switch before importing torch keeps inductor's compiled code there."""
    for var in env.KERNEL_CACHES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LONGCTX_KERNEL_CACHE", str(tmp_path / "k"))
    code = (
        "from longctx import env; env.check()\n"
        "import torch\n"
        "f = torch.compile(lambda x: (x.sin() * 2).sum())\n"
        "print(float(f(torch.ones(8))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert abs(float(done.stdout.split()[-1]) - 16 * 0.8414709848) < 1e-4
    assert any(p.is_file() for p in (tmp_path / "k" / "inductor").rglob("*"))


def test_a_kernel_cache_that_cannot_be_made_is_one_line_exit_2(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LONGCTX_KERNEL_CACHE", str(blocker / "cache"))
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LONGCTX_KERNEL_CACHE=" in err[0] and "cannot make" in err[0]
    assert not out.exists()
