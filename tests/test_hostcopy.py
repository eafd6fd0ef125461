"""longctx.model.hostcopy.device_tensor: host data on the device, the same values as torch.tensor, and on a GPU
without a host wait (torch's sync debug mode warns at each copy that synchronizes)."""

import warnings

import pytest
import torch

from longctx.model.hostcopy import device_tensor


def test_values_and_dtypes_as_torch_tensor():
    data = [3, 1, 4, 1, 5]
    for dtype in (torch.long, torch.int32, torch.bool, None):
        got = device_tensor(data, "cpu", dtype)
        want = torch.tensor(data, dtype=dtype)
        assert got.dtype == want.dtype and torch.equal(got, want)
    src = torch.arange(6, dtype=torch.int64)
    assert torch.equal(device_tensor(src, "cpu", torch.int32), src.int())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_wait_on_cuda():
    def waits(make):
        torch.cuda.synchronize()
        busy = torch.randn(4096, 4096, device="cuda")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                busy @ busy  # work queued ahead of the copy
                out = make()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        # c10's warning at each synchronizing call; torch's one-off notice that the debug mode is a prototype
        # ("... does not yet detect all synchronizing operations", at a process's first switch) is not one
        return out, sum("called a synchronizing CUDA operation" in str(w.message) for w in seen)

    data = list(range(1000))
    pinned, n_pinned = waits(lambda: device_tensor(data, "cuda", torch.long))
    plain, n_plain = waits(lambda: torch.tensor(data, dtype=torch.long, device="cuda"))
    print(f"host waits: device_tensor {n_pinned}, torch.tensor(device=cuda) {n_plain}")
    assert n_pinned == 0 and n_plain >= 1  # the second shows that the count sees a blocking copy
    assert torch.equal(pinned, plain)
