"""RMSNorm variants with transformers' (Olmo 3 / Olmo Hybrid) numerics.

Both compute the statistics in float32 and cast back to the input dtype at the very end, in the
same order as transformers, so fp32 runs match it to rounding and bf16 runs match its bf16 runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longctx.model import fused


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = fused.kernels(x)
        if k is not None:  # one fused pass, fp32 inside, output in x's dtype (fused.py)
            return k[0](x, self.weight, None, eps=self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GatedRMSNorm(nn.Module):
    """RMSNorm of x (over its last dim) times silu(gate): the GDN output norm ("norm before gate").

    The reference path; on CUDA with fla, `gdn.py` calls fla's fused kernel on the same weight.
    The eps is fixed at 1e-5 by the architecture (fla's FusedRMSNormGated default, which
    transformers and vLLM copy), not taken from config.rms_norm_eps.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = self.weight * x.to(dtype)
        return (x * F.silu(gate.float())).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
