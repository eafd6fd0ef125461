"""Host data onto the GPU without waiting for it.

torch copies a pageable CPU tensor to a CUDA device with cudaMemcpyAsync and then synchronizes the stream
(`at::cuda::memcpy_and_sync`, the path of every non-blocking=False copy): the host waits until the GPU has run all
it was given, and the GPU then idles until the host has queued the next kernels. A copy from pinned memory with
non_blocking=True does not wait; the caching host allocator keeps the pinned block until the copy has run. The
prefill's index tensors (token ids, rows, positions, document bounds, fork rows) are made per forward or per layer
from host lists, so each made through torch.tensor(..., device=cuda) was a host wait in the middle of the work.
"""

from __future__ import annotations

import torch


def device_tensor(data, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`data` (a list, or a CPU tensor) as a tensor on `device`; on CUDA through pinned memory, without a host wait."""
    t = data if isinstance(data, torch.Tensor) else torch.tensor(data, dtype=dtype)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
