"""What every extension method shares: the Stage record, input checks and the registry."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from rope_methods.freqs import LAYER_TYPES, is_unrotated, rope_type_of

_REGISTRY: dict[str, Method] = {}
NO_ROPE = {"rope_type": "default", "rope_theta": None}  # "no RoPE" as flat keys: how transformers' Olmo Hybrid saves it


@dataclass(frozen=True)
class Stage:
    """One training stage of a method's plan: what it is for and the sequence length it trains at."""

    name: str  # "recalibrate" (short, at the base length) or "train" (the long-context run)
    seq_len: int


def register(cls):
    _REGISTRY[cls.name] = cls()
    return cls


def check_lengths(base_len, target_len) -> None:
    for key, value in (("base_len", base_len), ("target_len", target_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"invalid {key}={value!r}; accepted: a positive int")
    if target_len <= base_len:
        raise ValueError(f"invalid target_len={target_len}; accepted: an int > base_len={base_len}")


def number(name, value, *, minimum, strict=False):
    """A real number >= minimum (> minimum when strict), or a ValueError naming it."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if not bad:
        bad = value <= minimum if strict else value < minimum
    if bad:
        raise ValueError(f"invalid option {name}={value!r}; accepted: a number {'>' if strict else '>='} {minimum}")
    return float(value)


def is_nested(rope_parameters) -> bool:
    """Olmo 3 style: one dict per layer type ({"sliding_attention": {...}, "full_attention": {...}}), possibly
    beside flat keys (the mixed form). As in transformers, one layer-type key makes the dict nested."""
    return isinstance(rope_parameters, dict) and any(k in LAYER_TYPES for k in rope_parameters)


def flat_keys(rope_parameters: dict) -> dict:
    """The flat keys of a nested dict: what transformers' Olmo Hybrid runs in its full-attention layers
    (Olmo 3 runs the per-layer-type entries and ignores these; an Olmo3Config given a flat dict keeps it
    beside the entries it adds, so a saved Olmo 3 config is often mixed)."""
    return {k: v for k, v in rope_parameters.items() if k not in LAYER_TYPES}


def has_rope(flat) -> bool:
    # a null rope_theta is how a transformers OlmoHybrid config spells "no RoPE", UNROTATED how Olmo3's does
    return flat is not None and flat.get("rope_theta", 0.0) is not None and not is_unrotated(flat)


class Method:
    """A position-encoding change applied when extending a model from base_len to target_len.

    Subclasses set `name`, `layers` (the layer types whose RoPE they change), `defaults`
    (accepted options and their default values; None = computed from the lengths) and
    implement `_extend_flat`. Options not listed in `defaults` are refused.
    """

    name: str = ""
    layers: tuple[str, ...] = ("full_attention",)
    defaults: dict = {}

    def extend(self, rope_parameters: dict | None, *, base_len: int, target_len: int, **opts) -> dict | None:
        """The HF `rope_parameters` of the extended model (None = no RoPE in any attention layer).

        A nested dict (one entry per layer type) keeps the entries of layer types outside
        `self.layers` unchanged, e.g. Olmo 3's sliding-window layers keep their RoPE. In the mixed form
        the flat keys beside the entries are extended too (as the full-attention RoPE they are to Olmo
        Hybrid; None becomes NO_ROPE there), so the result is right whichever architecture reads it.
        """
        check_lengths(base_len, target_len)
        opts = self.options(**opts)
        if rope_parameters is not None and not isinstance(rope_parameters, dict):
            raise ValueError(f"invalid rope_parameters={rope_parameters!r}; accepted: a dict or None")
        if not is_nested(rope_parameters):
            return self._extend_flat(copy.deepcopy(rope_parameters), base_len, target_len, opts)
        out = copy.deepcopy(rope_parameters)
        flat = flat_keys(out)
        if flat:
            for key in flat:
                del out[key]
            out.update(self._extend_flat(flat, base_len, target_len, opts) or NO_ROPE)
        for layer_type in self.layers:
            if layer_type in out:
                out[layer_type] = self._extend_flat(out[layer_type], base_len, target_len, opts)
        return out

    def options(self, **opts) -> dict:
        """`defaults` updated with opts; a ValueError names an option not in `defaults` (subclasses
        also check the values of options that are not RoPE parameters)."""
        unknown = sorted(set(opts) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for method {self.name!r}; accepted: "
                f"{', '.join(sorted(self.defaults)) or 'none'}"
            )
        return {**self.defaults, **opts}

    def _extend_flat(self, flat: dict | None, base_len: int, target_len: int, opts: dict) -> dict | None:
        raise NotImplementedError

    def plan(self, base_len: int, target_len: int) -> list[Stage]:
        """The training stages of this method, in order."""
        check_lengths(base_len, target_len)
        return [Stage("train", target_len)]

    def max_position_embeddings(self, base_len: int, target_len: int) -> int:
        """The `max_position_embeddings` to write into the extended model's HF config."""
        check_lengths(base_len, target_len)
        return target_len

    def __repr__(self):
        return f"<rope method {self.name}>"


class ScaledRope(Method):
    """Shared by yarn, pi and ntk: rescale an existing plain RoPE by `factor` (default target/base)."""

    def _scaled_base(self, flat, base_len, target_len, opts):
        if not has_rope(flat):
            raise ValueError(
                f"invalid rope_parameters={flat!r} for method {self.name!r}: the model has no RoPE to "
                "rescale (a DRoPE model); accepted: a RoPE dict with rope_type 'default'"
            )
        rope_type = rope_type_of(flat)
        if rope_type != "default":
            # rescaling an already-rescaled RoPE has no single meaning; start from the plain one
            raise ValueError(f"invalid rope_type={rope_type!r} for method {self.name!r}; accepted: 'default'")
        prf = flat.get("partial_rotary_factor", 1.0)
        if prf not in (None, 1, 1.0):
            raise ValueError(f"invalid partial_rotary_factor={prf!r} for method {self.name!r}; accepted: 1.0")
        factor = opts["factor"]
        factor = target_len / base_len if factor is None else number("factor", factor, minimum=1.0)
        if opts["theta"] is None:
            theta = number("rope_theta", flat.get("rope_theta", 10_000.0), minimum=1.0, strict=True)
        else:
            theta = number("theta", opts["theta"], minimum=1.0, strict=True)
        return {"rope_theta": theta, "factor": float(factor)}
