"""The chunked lm-head cross-entropy against torch's cross_entropy on full logits."""

import pytest
import torch
import torch.nn.functional as F

from longctx.train.loss import chunked_cross_entropy


def _reference(h, w, y, z):
    logits = h @ w.t()
    valid = y != -100
    ce = F.cross_entropy(logits, y, ignore_index=-100, reduction="sum")
    lse = torch.logsumexp(logits, dim=-1)
    zsum = (lse[valid] ** 2).sum()
    return ce, zsum, int(valid.sum())


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("z", [0.0, 1e-2])
def test_values_and_gradients_match_full_cross_entropy(chunk, z):
    g = torch.Generator().manual_seed(0)
    n, d, v = 53, 16, 97
    h = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    y[::5] = -100  # ignored positions get no loss and no gradient

    parts = chunked_cross_entropy(h, w, y, chunk=chunk, z_loss=z)
    (parts.total / parts.count).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None

    ce, zsum, count = _reference(h, w, y, z)
    ((ce + z * zsum) / count).backward()
    assert int(parts.count) == count
    torch.testing.assert_close(parts.ce_sum.double(), ce, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(parts.z_sum.double(), zsum, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gh, h.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gw, w.grad, rtol=1e-6, atol=1e-9)


def test_batched_input_and_bf16_compute():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 9, 8, generator=g, requires_grad=True)
    w = torch.randn(31, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 31, (2, 9), generator=g)
    parts = chunked_cross_entropy(h, w, y, chunk=4)
    ref = F.cross_entropy((h @ w.t()).reshape(-1, 31), y.reshape(-1), reduction="sum")
    torch.testing.assert_close(parts.total, ref, rtol=1e-5, atol=1e-5)
    low = chunked_cross_entropy(h, w, y, chunk=4, compute_dtype=torch.bfloat16)
    assert low.total.dtype == torch.float32
    torch.testing.assert_close(low.total, ref, rtol=2e-2, atol=0.5)


def test_no_grad_and_all_ignored():
    h = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(5, 3, requires_grad=True)
    y = torch.full((4,), -100)
    with torch.no_grad():
        parts = chunked_cross_entropy(h, w, y)
    assert float(parts.total) == 0.0 and int(parts.count) == 0
    parts = chunked_cross_entropy(h, w, y, z_loss=1.0)
    parts.total.backward()
    assert torch.count_nonzero(h.grad) == 0 and torch.count_nonzero(w.grad) == 0


def test_fla_backend_wiring_with_a_reference_fake(monkeypatch):
    """The fla path hands fla's fused_linear_cross_entropy_loss flat [N, D] inputs in the matmul dtype,
    int64 labels and reduction="sum", and returns the Trainer's LossParts (fla itself runs on GPU only)."""
    import sys
    import types

    import torch.nn.functional as F

    from longctx.train.loss import make_loss_fn

    seen = {}

    def fake(x, target, weight, bias=None, ignore_index=-100, reduction="mean", num_chunks=8, **kw):
        seen.update(x=(x.shape, x.dtype), w=weight.dtype, target=target.dtype, reduction=reduction)
        return F.cross_entropy((x @ weight.t()).float(), target, ignore_index=ignore_index, reduction=reduction)

    mod = types.ModuleType("fla.modules.fused_linear_cross_entropy")
    mod.fused_linear_cross_entropy_loss = fake
    monkeypatch.setitem(sys.modules, "fla.modules.fused_linear_cross_entropy", mod)
    torch.manual_seed(0)
    h = torch.randn(2, 9, 16, requires_grad=True)
    w = torch.randn(40, 16, requires_grad=True)
    y = torch.randint(0, 40, (2, 9))
    y[0, :3] = -100
    got = make_loss_fn("fla")(h, w, y)
    want = chunked_cross_entropy(h, w, y, chunk=4)
    assert seen == {
        "x": (torch.Size([18, 16]), torch.float32),
        "w": torch.float32,
        "target": torch.int64,
        "reduction": "sum",
    }
    assert torch.allclose(got.total, want.total, atol=1e-4) and int(got.count) == int(want.count) == 15
    assert float(got.z_sum) == 0.0 and not got.ce_sum.requires_grad
    with pytest.raises(ValueError, match="z-loss"):
        make_loss_fn("fla", z_loss=1e-4)
    with pytest.raises(ValueError, match="unknown"):
        make_loss_fn("liger")


def _fused_vs_reference(z, chunk, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    n, d, v = 41, 12, 67
    h = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    y[1::4] = -100
    parts = chunked_cross_entropy(h, w, y, chunk=chunk, z_loss=z, terms="compiled")
    (parts.total / parts.count).backward()
    got = (parts.ce_sum.double(), parts.z_sum.double(), h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    ce, zsum, count = _reference(h, w, y, z)
    ((ce + z * zsum) / count).backward()
    return got, (ce.double(), zsum.double(), h.grad, w.grad)


@pytest.mark.parametrize("chunk", [1, 16, 1000])
@pytest.mark.parametrize("z", [0.0, 1e-2])
def test_fused_chunk_terms_match_full_cross_entropy(monkeypatch, chunk, z):
    """Backend "compiled": the chunk terms it hands torch.compile give torch's cross-entropy (run here
    without the compiler, so the function itself is checked, in float64)."""
    from longctx.train import loss

    monkeypatch.setattr(loss, "_fused_terms", lambda: loss._chunk_terms)
    got, want = _fused_vs_reference(z, chunk)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.skipif(not __import__("shutil").which("cc"), reason="torch.compile on CPU needs a C compiler")
def test_compiled_backend_compiles_and_matches(monkeypatch):
    """The same through torch.compile for real (inductor's CPU backend; on CUDA it emits Triton), fp32,
    chunk sizes that differ (a remainder chunk), and through make_loss_fn("compiled")."""
    from longctx.train import loss

    monkeypatch.setattr(loss, "_compiled_terms", None)
    got, want = _fused_vs_reference(1e-2, 16, dtype=torch.float32)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)
    assert loss._compiled_terms is not None
    fn = loss.make_loss_fn("compiled", chunk=8)
    h, w, y = torch.randn(20, 12), torch.randn(67, 12), torch.randint(0, 67, (20,))
    torch.testing.assert_close(fn(h, w, y).total, F.cross_entropy(h @ w.t(), y, reduction="sum"), rtol=1e-4, atol=1e-4)


def test_auto_backend_takes_fla_kernels_on_cuda_only_when_fla_imports(monkeypatch):
    """`loss_backend: auto` (the default): chunked-fla on CUDA with fla's CE kernels importable, chunked on
    CPU or without fla; explicit names pass through."""
    from longctx.model import optional
    from longctx.train import loss

    assert loss.resolve_backend("auto", "cpu") == "chunked"
    assert loss.resolve_backend("auto", None) == "chunked"
    assert loss.resolve_backend("compiled", "cuda") == "compiled"
    monkeypatch.setattr(optional, "load", lambda *specs: (object(),))
    assert loss.resolve_backend("auto", torch.device("cuda", 0)) == "chunked-fla"
    assert loss.resolve_backend("auto", "cpu") == "chunked"
    monkeypatch.setattr(optional, "load", lambda *specs: False)
    assert loss.resolve_backend("auto", "cuda") == "chunked"
    # make_loss_fn resolves it for its device: on CPU the chunked CE, equal to the reference
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.randn(13, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 13, (9,), generator=g)
    got = loss.make_loss_fn("auto", chunk=4, device="cpu")(h, w, y)
    assert torch.allclose(got.ce_sum, _reference(h, w, y, 0.0)[0])


def _grad_w_case(device):
    from longctx.train.loss import _add_grad_w

    torch.manual_seed(0)
    chunks = [(torch.randn(64, 300, device=device).bfloat16(), torch.randn(64, 32, device=device).bfloat16())] * 3
    grad_w = torch.zeros(300, 32, device=device)
    for g, h in chunks:
        _add_grad_w(grad_w, g, h)
    exact = sum(g.double().t() @ h.double() for g, h in chunks)
    rounded = sum((g.t() @ h).float() for g, h in chunks)  # each chunk's product rounded to bf16 first
    return grad_w, exact, rounded


def test_grad_w_accumulates_chunks_on_cpu():
    """The head-weight gradient over chunks: on CPU each chunk's bf16 product is added to the float32 sum."""
    grad_w, _, rounded = _grad_w_case("cpu")
    assert grad_w.dtype == torch.float32 and torch.equal(grad_w, rounded)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grad_w_accumulates_in_the_matmul_on_cuda():
    """On CUDA the matmul adds into the float32 sum itself: float32 accuracy, not a bf16 rounding per chunk."""
    from longctx.train.loss import _mm_accumulates_in_place

    if not _mm_accumulates_in_place(torch.device("cuda"), torch.bfloat16, torch.float32):
        pytest.skip(f"torch {torch.__version__} has no addmm out_dtype on CUDA: the rounded path runs")
    grad_w, exact, rounded = _grad_w_case("cuda")
    err = ((grad_w.double() - exact).abs().max() / exact.abs().max()).item()
    assert err < 1e-5 and err < ((rounded.double() - exact).abs().max() / exact.abs().max()).item() / 10
