"""`loss_backend: chunked-fla` (our chunks, each chunk's softmax gradient in fla's fused cross-entropy
kernels) against torch's cross_entropy on full logits in float64: loss, z-loss and both gradients.

fla's kernels are Triton: on a CUDA machine they run as they would in training; on CPU they run in
Triton's interpreter (TRITON_INTERPRET=1, read when fla's kernels are defined, hence a fresh process).
Skipped where triton or fla is missing (the CPU test environment has neither; the GPU machine has both,
and tests/test_model_gpu.py checks the backend in bf16 at training shapes)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

HAVE = all(importlib.util.find_spec(m) is not None for m in ("triton", "fla"))
pytestmark = pytest.mark.skipif(not HAVE, reason="needs triton and flash-linear-attention")


def compare(chunk: int, z: float, device: str, v: int = 97) -> dict:
    """Max abs errors of the chunked-fla loss parts and gradients against full-logit float64 torch."""
    from longctx.train.loss import make_loss_fn

    g = torch.Generator().manual_seed(0)
    n, d = 53, 16
    h0 = torch.randn(n, d, generator=g)
    w0 = torch.randn(v, d, generator=g)
    y = torch.randint(0, v, (n,), generator=g)
    y[::5] = -100  # ignored: no loss, no gradient
    h = h0.to(device).clone().requires_grad_()
    w = w0.to(device).clone().requires_grad_()
    parts = make_loss_fn("chunked-fla", chunk=chunk, z_loss=z)(h, w, y.to(device))
    (parts.total / parts.count).backward()

    hr, wr = h0.double().requires_grad_(), w0.double().requires_grad_()
    logits = hr @ wr.t()
    valid = y != -100
    ce = F.cross_entropy(logits, y, ignore_index=-100, reduction="sum")
    zsum = (torch.logsumexp(logits, dim=-1)[valid] ** 2).sum()
    ((ce + z * zsum) / int(valid.sum())).backward()
    err = lambda a, b: float((a.detach().double().cpu() - b.detach()).abs().max())  # noqa: E731
    return {
        "count": [int(parts.count), int(valid.sum())],
        "ce": err(parts.ce_sum, ce) / float(ce),
        "z": err(parts.z_sum, zsum) / float(zsum),
        "grad_h": err(h.grad, hr.grad),
        "grad_w": err(w.grad, wr.grad),
        "grad_scale": float(hr.grad.abs().max()),
    }


@pytest.mark.parametrize(
    "chunk, z, v",
    [(7, 0.0, 97), (7, 1e-2, 97), (1000, 0.0, 97), (1000, 1e-2, 97), (16, 1e-2, 70_000)],  # > 65536: split vocab
)
def test_chunked_fla_matches_full_cross_entropy(chunk, z, v):
    if torch.cuda.is_available():
        got = compare(chunk, z, "cuda", v)
    else:
        code = f"import json, tests.test_train_loss_fla as t; print(json.dumps(t.compare({chunk}, {z}, 'cpu', {v})))"
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["count"][0] == got["count"][1] == 42
    assert got["ce"] < 1e-5 and got["z"] < 1e-5, got
    assert got["grad_h"] < 1e-5 * got["grad_scale"] + 1e-7 and got["grad_w"] < 1e-5 * got["grad_scale"] + 1e-7, got


def test_chunked_fla_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    from longctx.train.loss import make_loss_fn

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    h = torch.randn(4, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="CUDA only"):
        make_loss_fn("chunked-fla")(h, torch.randn(11, 8), torch.tensor([1, 2, 3, -100]))
