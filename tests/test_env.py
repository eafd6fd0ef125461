"""longctx.env: the LONGCTX_* switches are checked before any command runs: a bad value is one line,
exit 2, nothing written; the accepted spellings reach the modules that read them."""
import pytest

from longctx import env
from longctx.cli import main

RUN = ["pretrain", "--model", "hybrid-tiny", "--seq-len", "32", "--batch-size", "1", "--steps", "1",
       "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("name, bad", [("LONGCTX_FUSED_ELEMENTWISE", "ture"), ("LONGCTX_DATA_PREFETCH", "gpu"),
                                       ("LONGCTX_ATTN_BACKEND", "flash2"), ("LONGCTX_GDN_BACKEND", "cuda")])
def test_a_bad_switch_stops_the_command_before_it_writes(monkeypatch, tmp_path, capsys, name, bad):
    monkeypatch.setenv(name, bad)
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{name}={bad!r}" in err[0] and "expected one of" in err[0]
    assert all(v in err[0] for v in env.SWITCHES[name][0])  # every accepted value is named
    assert not out.exists()


@pytest.mark.parametrize("value, want", [("1", True), ("true", True), (" ON ", True), ("0", False), ("off", False),
                                         ("False", False), ("auto", None), ("", None), (None, None)])
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
