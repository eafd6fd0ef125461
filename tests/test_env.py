"""longctx.env: the LONGCTX_* switches are checked before any command runs: a bad value is one line,
exit 2, nothing written; the accepted spellings reach the modules that read them."""

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
