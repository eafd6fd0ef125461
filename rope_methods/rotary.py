"""cos/sin tables and their application to q/k, in transformers' half-rotation layout.

The head is split in two halves (not interleaved pairs): dim i rotates with dim i + head_dim/2,
which is what HF checkpoints (Llama, Olmo 3, Olmo Hybrid) were trained with.
"""

from __future__ import annotations

import torch


def cos_sin(
    inv_freq: torch.Tensor,
    attention_scaling: float,
    position_ids: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [*position_ids.shape, 2 * len(inv_freq)], scaled by attention_scaling.

    Angles are computed in float32 whatever `dtype` is (bf16 angles lose whole turns at long
    positions); only the result is cast. Olmo models keep float32, Llama casts to the activations'.
    """
    freqs = position_ids[..., None].float() * inv_freq.to(device=position_ids.device, dtype=torch.float32)
    emb = torch.cat((freqs, freqs), dim=-1)
    # YaRN's temperature lives here: scaling cos and sin scales q.k by attention_scaling**2
    cos = emb.cos() * attention_scaling
    sin = emb.sin() * attention_scaling
    return cos.to(dtype), sin.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k; returns them in their own dtypes.

    cos/sin are [B, T, D] (or [T, D]); unsqueeze_dim is where the heads axis goes: 1 for q/k laid
    out [B, H, T, D] (transformers' default), 2 for [B, T, H, D].
    """
    if cos.dim() == 2:  # [T, D] shared by the batch
        cos, sin = cos[None], sin[None]
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_out = q * cos + _rotate_half(q) * sin
    k_out = k * cos + _rotate_half(k) * sin
    return q_out.to(q.dtype), k_out.to(k.dtype)
