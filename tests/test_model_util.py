"""Shared helpers for the model tests (no tests here): tiny configs and transformers references."""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM, Olmo3Config, OlmoHybridConfig

VOCAB = 257
YARN = {"rope_type": "yarn", "rope_theta": 5e5, "factor": 4.0, "original_max_position_embeddings": 64}
NO_ROPE = {"rope_type": "default", "rope_theta": None}  # transformers' saved form of "no RoPE"


def hybrid_config(**kw) -> OlmoHybridConfig:
    """4 layers [GDN, GDN, GDN, attn]; GQA attention and GVA (more value than key heads) GDN."""
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=24,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 5e5},
        pad_token_id=0,
        eos_token_id=1,
    )
    fields.update(kw)
    return OlmoHybridConfig(**fields)


def olmo3_config(**kw) -> Olmo3Config:
    """4 layers [sliding x3, full], GQA, sliding window 16."""
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=16,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
    )
    fields.update(kw)
    return Olmo3Config(**fields)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a non-trivial value (norm gains != 1, O(1) activations, slow GDN decay)
    so that a misplaced norm, a wrong split or a missing term changes the logits by >> 1e-4."""
    gen = torch.Generator().manual_seed(seed)

    def randn(p):
        return torch.randn(p.shape, generator=gen, dtype=p.dtype)

    for name, p in model.named_parameters():
        if name.endswith("A_log"):  # decay rates 0.02..0.3 per step: state survives chunk boundaries
            p.copy_((0.02 + 0.28 * torch.rand(p.shape, generator=gen)).log())
        elif name.endswith("dt_bias"):
            p.copy_(0.5 * randn(p))
        elif "norm" in name:
            p.copy_(1.0 + 0.3 * randn(p))
        elif "conv1d" in name:
            p.copy_(0.5 * randn(p))
        elif "embed_tokens" in name:
            p.copy_(randn(p))
        elif p.dim() == 2:
            p.copy_(randn(p) * (2.0 if "lm_head" in name else 1.0) / math.sqrt(p.shape[1]))
    return model


def hf_reference(config, seed: int = 0):
    """A randomised transformers model of `config`, eval mode, fp32."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    return randomize(model, seed)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def random_prompts(lengths, seed: int = 3) -> list[list[int]]:
    """One prompt of random token ids (>= 2, below VOCAB) per length."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=gen).tolist() for n in lengths]
