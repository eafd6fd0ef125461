"""fla's fused kernels for the blocks' elementwise work: RMSNorm and SwiGLU's silu(gate) * up.

The plain-PyTorch RMSNorm (fp32 upcast, pow, mean, rsqrt, two multiplies, cast) and SwiGLU each
read and write the whole activation once per op; on the H200 profiles these elementwise kernels
were about a third of all kernel time (docs/benchmarks.md). fla's Triton kernels do each
in one pass, forward and backward, with the same arithmetic: statistics and products in fp32, one
cast to the input dtype at the end (fla computes 1/sqrt where norms.py has rsqrt; silu(g) * u is
rounded once instead of twice), so they agree with the reference to rounding.

ENABLED (set by code): None (the default; measured +17% training tok/s and +17-19% eval prefill on an H200, and held
to the plain path by the whole-model GPU test: docs/benchmarks.md) uses them on CUDA tensors when fla is
installed; False keeps the plain-PyTorch path; True requires them on CUDA (an error if fla is missing).
While ENABLED is None, LONGCTX_FUSED_ELEMENTWISE=1 / auto / 0 (also true/on, false/off), read at each
call, acts as True / None / False (longctx.env). CPU tensors always take the plain path.
"""

from __future__ import annotations

import torch

from longctx import env
from longctx.model import optional

ENABLED: bool | None = None
DEVICES = ("cuda",)  # where the Triton kernels run


def _load():
    """(rms_norm, swiglu) from fla, or False if it is not installed."""
    return optional.load("fla.modules.norm.layernorm:rms_norm", "fla.modules.activations:swiglu")


def enabled() -> bool | None:
    """ENABLED, or when that is None the LONGCTX_FUSED_ELEMENTWISE switch as it is now."""
    return env.switch("LONGCTX_FUSED_ELEMENTWISE", ENABLED)


def kernels(x: torch.Tensor):
    """fla's (rms_norm, swiglu) for this tensor, or None for the reference path."""
    on = enabled()
    if on is False or x.device.type not in DEVICES:
        return None
    found = _load()
    if not found:
        if on:
            raise RuntimeError(
                "fused elementwise kernels requested (LONGCTX_FUSED_ELEMENTWISE=1) but fla is not installed"
            )
        return None
    return found
