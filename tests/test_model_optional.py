"""Optional kernel packages: a CUDA run without fla says once, with the import error, that its Gated DeltaNet
layers take the slow PyTorch reference; an explicit torch backend says nothing."""

from __future__ import annotations

import types

from test_model_util import hybrid_config

from longctx.model import gdn, optional


def test_missing_fla_on_cuda_warns_once_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(optional, "_warned", set())
    monkeypatch.setattr(gdn, "fla_ops", lambda: False)
    monkeypatch.setattr(optional, "why_missing", lambda *specs: "ModuleNotFoundError: No module named 'fla'")
    monkeypatch.delenv("LONGCTX_GDN_BACKEND", raising=False)
    layer = gdn.GatedDeltaNet(hybrid_config(), layer_idx=0)
    cuda = types.SimpleNamespace(is_cuda=True)  # use_fla reads only where the tensor lives
    assert layer.use_fla(cuda) is False and layer.use_fla(cuda) is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PyTorch reference on CUDA" in err[0] and "No module named 'fla'" in err[0]
    monkeypatch.setattr(optional, "_warned", set())
    monkeypatch.setenv("LONGCTX_GDN_BACKEND", "torch")
    assert layer.use_fla(cuda) is False and capsys.readouterr().err == ""
    monkeypatch.delenv("LONGCTX_GDN_BACKEND")
    assert layer.use_fla(types.SimpleNamespace(is_cuda=False)) is False and capsys.readouterr().err == ""


def test_why_missing_names_the_import_error():
    spec = "surely_not_installed_pkg.mod:thing"
    assert optional.load(spec) is False
    assert optional.why_missing(spec) == "ModuleNotFoundError: No module named 'surely_not_installed_pkg'"
    assert optional.why_missing("json:loads") is None
