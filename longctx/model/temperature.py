"""An attention softmax temperature stored in the weights: softmax(beta * q.k / sqrt(d)).

DroPE sharpens the full-attention softmax past the recalibration length by beta = 1 + c ln(s)
(rope_methods.drope). Neither transformers nor vLLM reads a temperature from an Olmo config, so it
goes into the weights: q = q_norm(q_proj(x)) ends with RMSNorm's learned per-channel scale, and
scaling that scale by beta scales q, hence every logit q.k, by beta (k and v are untouched). The
model then needs no temperature code at inference: HybridLM and transformers compute
softmax(beta * q.k / sqrt(d)) from the same checkpoint (tested), and so should vLLM, whose Olmo
layers apply the same q_norm weight (not run here).

Only full-attention layers without RoPE take it: sliding-window layers never see more keys than
their window, and a rotated layer's logits are the position encoding's business (YaRN has its own).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from longctx.model.config import rope_parameters_for


def temperature_layers(config) -> list[int]:
    """Indices of the full-attention layers that have no RoPE."""
    if rope_parameters_for(config, "full_attention") is not None:
        return []
    return [i for i, t in enumerate(config.layer_types) if t == "full_attention"]


def _q_norm_weights(model, layers):
    return [model.model.layers[i].self_attn.q_norm.weight for i in layers]


@torch.no_grad()
def fold_temperature(model, beta: float) -> list[int]:
    """Multiply the attention logits of `temperature_layers` by beta, in place; returns the layers."""
    if not beta > 0:
        raise ValueError(f"invalid temperature beta={beta!r}; accepted: a number > 0")
    layers = temperature_layers(model.config)
    if beta != 1.0:
        for w in _q_norm_weights(model, layers):
            w.mul_(beta)
    return layers


@contextmanager
def temperature(model, beta: float):
    """fold_temperature for the duration of a `with` block; the weights are restored bit for bit
    afterwards (works on sharded FSDP parameters too: the scaling is elementwise)."""
    weights = _q_norm_weights(model, temperature_layers(model.config))
    saved = [w.detach().clone() for w in weights]
    try:
        with torch.no_grad():
            for w, s in zip(weights, saved, strict=True):
                w.copy_(s * beta)
        yield
    finally:
        with torch.no_grad():
            for w, s in zip(weights, saved, strict=True):
                w.copy_(s)


class PerLengthTemperature:
    """A folded DRoPE temperature set anew for each evaluated length L: beta(L) = 1 + c ln(max(1, L / base))
    on the layers the record names, in place of the beta folded for the record's target (the DroPE paper's
    s = inference length / training length, so beta = 1 up to the base length). `record` is the
    temperature record of the model's longctx_train.json (c, beta, base_len, layers); `model` has the
    Olmo layout (HybridLM or transformers' OlmoHybrid / Olmo3: model.layers[i].self_attn.q_norm)."""

    def __init__(self, model, record: dict, stored: list | None = None):
        """stored: the folded q_norm weights as the checkpoint holds them (`stored_q_norms`), when the model
        runs in a lower precision: beta = 1 then gives back the weights before the fold exactly (an fp32
        fold of bf16 weights), not the bf16 rounding of the folded ones divided by beta."""
        self.record = record
        self.weights = _q_norm_weights(model, record["layers"])
        folded = float(record["beta"])
        source = stored if stored is not None else self.weights
        # the q_norm scales at beta = 1
        self.unit = [s.detach().float().to(w.device) / folded for s, w in zip(source, self.weights, strict=True)]

    @staticmethod
    def beta_at(record: dict, length: int) -> float:
        """beta at an evaluated length L: 1 + c ln(max(1, L / base)), for the record's c and base length."""
        from rope_methods.drope import beta as beta_of

        base = int(record["base_len"])
        return beta_of(float(record["c"]), base, max(int(length), base))

    def set(self, length: int) -> float:
        beta = self.beta_at(self.record, length)
        with torch.no_grad():
            for w, u in zip(self.weights, self.unit, strict=True):
                w.copy_((u * beta).to(w.dtype))
        return beta


def stored_q_norms(model_dir, layers) -> list | None:
    """The q_norm weights of `layers` as saved in model_dir's safetensors (None when the directory has no
    such checkpoint, e.g. a Hub id), for PerLengthTemperature's `stored`."""
    from longctx.errors import UsageError
    from longctx.model.hf import read_tensors

    keys = [f"model.layers.{i}.self_attn.q_norm.weight" for i in layers]
    try:
        found = read_tensors(model_dir, keys)
    except (UsageError, OSError, ValueError):  # not a local safetensors checkpoint: the model's own weights serve
        return None
    return [found[k] for k in keys] if all(k in found for k in keys) else None
