"""RoPE frequency maths, matching transformers' `modeling_rope_utils` (5.x) for each rope_type.

The input is the flat HF `rope_parameters` dict of one layer type (e.g. `{"rope_type": "yarn",
"rope_theta": 5e5, "factor": 8.0, "original_max_position_embeddings": 8192}`). transformers reads
one more value from the model config rather than from that dict: `max_position_embeddings`
(the default for `original_max_position_embeddings`, the YaRN/LongRoPE factor when unset, and
the dynamic-NTK reference length). It is the keyword argument `max_position_embeddings=` here.

The arithmetic follows transformers' order of operations (Python floats for scalars, float32
tensors for the frequencies) so the results are bitwise equal, not just close.
"""

from __future__ import annotations

import math

import torch

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")
DEFAULT_THETA = 10_000.0  # transformers' `default_theta` when the dict has no rope_theta
LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")

# "No RoPE" for a layer type in a model whose transformers class always rotates q and k. Olmo3's
# rotary module builds one table per layer type: a null rope_theta fails there, and a null entry is
# silently replaced by the default RoPE. So a layer type without RoPE is written as llama3 RoPE that
# divides every frequency by 1e30: cos = 1 and |sin| < 1e-20 at any position below 1e10, far below
# float32's resolution, so q and k leave the rotation unchanged in transformers; llama3 (unlike
# linear) keeps vLLM's cos/sin cache at max_position_embeddings entries. `inv_freq` reads it back
# as no RoPE.
UNROTATED = {
    "rope_type": "llama3",
    "rope_theta": 10_000.0,
    "factor": 1e30,
    "low_freq_factor": 1.0,
    "high_freq_factor": 2.0,
    "original_max_position_embeddings": 1,
}


def is_unrotated(rope_parameters) -> bool:
    """True for the UNROTATED spelling of "no RoPE" (any llama3 dict dividing by >= 1e30)."""
    if not isinstance(rope_parameters, dict) or rope_parameters.get("rope_type") != "llama3":
        return False
    factor = rope_parameters.get("factor")
    return isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor >= UNROTATED["factor"]


def _bad(name, value, accepted):
    return ValueError(f"invalid rope parameter {name}={value!r}; accepted: {accepted}")


def rope_type_of(rope_parameters: dict) -> str:
    # "type" is the pre-4.45 spelling that transformers still reads
    rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise _bad("rope_type", rope_type, ", ".join(ROPE_TYPES))
    return rope_type


def _check_flat(rope_parameters):
    if not isinstance(rope_parameters, dict):
        raise _bad("rope_parameters", rope_parameters, "a dict or None")
    nested = [k for k in rope_parameters if k in LAYER_TYPES]
    if nested:
        raise ValueError(
            f"rope_parameters is nested by layer type ({', '.join(nested)}); pass the dict of one layer "
            f"type, e.g. rope_parameters['full_attention']"
        )


def _check_positive(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _bad(key, value, "a positive number")
    return value


def _positive(rope_parameters, key, default=None):
    value = rope_parameters.get(key, default)
    if value is None:
        raise ValueError(
            f"rope_parameters is missing {key!r} (required for rope_type={rope_type_of(rope_parameters)!r})"
        )
    return _check_positive(key, value)


def _original_len(rope_parameters, max_position_embeddings):
    # transformers' standardize_rope_params fills it from config.max_position_embeddings
    original = rope_parameters.get("original_max_position_embeddings", max_position_embeddings)
    if original is None:
        raise ValueError(
            f"rope_type={rope_type_of(rope_parameters)!r} needs original_max_position_embeddings in "
            "rope_parameters or the max_position_embeddings= keyword"
        )
    return _check_positive("original_max_position_embeddings", original)


def rotary_dim(rope_parameters: dict, head_dim: int) -> int:
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise _bad("head_dim", head_dim, "a positive even int")
    prf = rope_parameters.get("partial_rotary_factor", 1.0)
    # Olmo/Llama-style models rotate the whole head (their 'default' init ignores this key), so a
    # partial rotation could not match them consistently; refuse it rather than diverge silently.
    if prf not in (None, 1, 1.0):
        raise _bad("partial_rotary_factor", prf, "1.0 (partial rotation is not supported)")
    return head_dim


def _base_freqs(theta: float, dim: int) -> torch.Tensor:
    """theta ** (2i/dim), i < dim/2, computed as transformers does (int64 arange -> float32)."""
    return theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim)


def _default(p, dim, max_len, seq_len):
    return 1.0 / _base_freqs(p["theta"], dim), 1.0


def _linear(p, dim, max_len, seq_len):
    inv = 1.0 / _base_freqs(p["theta"], dim)
    inv /= _positive(p["rp"], "factor")
    return inv, 1.0


def _dynamic(p, dim, max_len, seq_len):
    rp = p["rp"]
    factor = _positive(rp, "factor")
    theta = p["theta"]
    if seq_len is not None:
        if max_len is None:
            raise ValueError("rope_type='dynamic' at a given seq_len needs the max_position_embeddings= keyword")
        seq_len = max(int(seq_len), max_len)
        # NTK-aware: grow the base so the longest wavelength covers seq_len (factor scales the growth)
        theta = theta * ((factor * seq_len / max_len) - (factor - 1)) ** (dim / (dim - 2))
    # seq_len None is transformers' init state: seq_len = max_position_embeddings, so the base is unchanged
    return 1.0 / _base_freqs(theta, dim), 1.0


def _yarn_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(p, dim, max_len, seq_len):
    rp, theta = p["rp"], p["theta"]
    original = _original_len(rp, max_len)
    factor = rp.get("factor")
    if factor is None:
        if max_len is None:
            raise ValueError("rope_type='yarn' without factor needs the max_position_embeddings= keyword")
        factor = max_len / original
    factor = _check_positive("factor", factor)

    attention_factor = rp.get("attention_factor")
    mscale, mscale_all_dim = rp.get("mscale"), rp.get("mscale_all_dim")
    if attention_factor is None:
        if mscale and mscale_all_dim:  # DeepSeek-style: ratio of two mscales
            attention_factor = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
        else:
            attention_factor = _yarn_mscale(factor)

    # transformers treats 0/None as unset (`or`), keep that reading
    beta_fast = rp.get("beta_fast") or 32
    beta_slow = rp.get("beta_slow") or 1
    truncate = rp.get("truncate", True)

    def correction_dim(num_rotations):
        # the dimension whose wavelength makes num_rotations turns over the original context
        return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)

    pos_freqs = _base_freqs(theta, dim)
    extrapolated = 1.0 / pos_freqs  # high-frequency dims: keep the original rotation
    interpolated = 1.0 / (factor * pos_freqs)  # low-frequency dims: position interpolation
    keep = 1 - ramp
    return interpolated * (1 - keep) + extrapolated * keep, attention_factor


def _llama3(p, dim, max_len, seq_len):
    rp = p["rp"]
    inv = 1.0 / _base_freqs(p["theta"], dim)
    factor = _positive(rp, "factor")
    low_ff = _positive(rp, "low_freq_factor")
    high_ff = _positive(rp, "high_freq_factor")
    if high_ff <= low_ff:
        raise _bad("high_freq_factor", high_ff, f"a number > low_freq_factor={low_ff}")
    original = _original_len(rp, max_len)
    low_wavelen, high_wavelen = original / low_ff, original / high_ff
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (original / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled), 1.0


def _longrope(p, dim, max_len, seq_len):
    rp = p["rp"]
    original = _original_len(rp, max_len)
    factor = rp.get("factor")
    if factor is None:
        if max_len is None:
            raise ValueError("rope_type='longrope' without factor needs the max_position_embeddings= keyword")
        factor = max_len / original
    attention_factor = rp.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    key = "long_factor" if seq_len and seq_len > original else "short_factor"
    ext = rp.get(key)
    if not isinstance(ext, (list, tuple)) or len(ext) != dim // 2:
        raise _bad(key, ext, f"a list of {dim // 2} numbers")
    ext = torch.tensor(ext, dtype=torch.float32)
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext * p["theta"] ** shape), attention_factor


_COMPUTE = {
    "default": _default,
    "linear": _linear,
    "dynamic": _dynamic,
    "yarn": _yarn,
    "llama3": _llama3,
    "longrope": _longrope,
}


def _compute(rope_parameters, head_dim, max_position_embeddings, seq_len):
    if rope_parameters is None:
        return None, 1.0
    _check_flat(rope_parameters)
    rope_type = rope_type_of(rope_parameters)
    # OlmoHybridModel builds no rotary module when rope_theta is null: the saved form of "no RoPE"
    if "rope_theta" in rope_parameters and rope_parameters["rope_theta"] is None:
        return None, 1.0
    if is_unrotated(rope_parameters):
        return None, 1.0
    theta = _positive(rope_parameters, "rope_theta", DEFAULT_THETA)
    if max_position_embeddings is not None:
        max_position_embeddings = _check_positive("max_position_embeddings", max_position_embeddings)
    dim = rotary_dim(rope_parameters, head_dim)
    params = {"rp": rope_parameters, "theta": theta}
    inv, scaling = _COMPUTE[rope_type](params, dim, max_position_embeddings, seq_len)
    return inv.to(torch.float32), float(scaling)


def inv_freq(
    rope_parameters: dict | None, head_dim: int, *, max_position_embeddings: int | None = None
) -> tuple[torch.Tensor | None, float]:
    """(inv_freq float32 [head_dim // 2], attention_scaling) as transformers computes them at init.

    rope_parameters: the flat HF dict (`rope_type`, `rope_theta`, `factor`, ...) or None for no
    RoPE, which returns (None, 1.0); so do a dict whose `rope_theta` is null and UNROTATED.
    max_position_embeddings: the model config's value. Needed only where transformers reads it:
    yarn/llama3/longrope without `original_max_position_embeddings`, yarn/longrope without
    `factor`. 'dynamic' at init equals 'default' (it rescales only past that length, see
    `dynamic_inv_freq`). cos and sin get multiplied by attention_scaling (see `cos_sin`).
    """
    return _compute(rope_parameters, head_dim, max_position_embeddings, None)


def dynamic_inv_freq(
    rope_parameters: dict | None,
    head_dim: int,
    seq_len: int,
    *,
    max_position_embeddings: int | None = None,
) -> tuple[torch.Tensor | None, float]:
    """inv_freq of dynamic NTK RoPE for a forward whose longest position is seq_len - 1.

    Matches transformers' `dynamic_rope_update` on a fresh rotary module (it also caches the
    largest seq_len seen; the caller decides whether to keep that behaviour). The reference length
    is `max_position_embeddings` (as transformers reads it from the model config); if not given,
    `rope_parameters["original_max_position_embeddings"]` (which `rope_methods.get("ntk")` writes).
    For rope types other than 'dynamic' this is `inv_freq` with the keyword taken as given (longrope
    switches to long_factor beyond its original length, as transformers does).
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise _bad("seq_len", seq_len, "a positive int")
    if (
        max_position_embeddings is None
        and isinstance(rope_parameters, dict)
        and rope_parameters.get("rope_type") == "dynamic"
    ):
        max_position_embeddings = rope_parameters.get("original_max_position_embeddings")
    return _compute(rope_parameters, head_dim, max_position_embeddings, seq_len)
