"""Position-encoding methods for long-context extension, and the RoPE maths they share.

`inv_freq` / `dynamic_inv_freq` / `cos_sin` / `apply_rotary` reproduce transformers' RoPE;
`get(name).extend(rope_parameters, base_len=..., target_len=..., **opts)` gives the extended
model's HF `rope_parameters`, `get(name).plan(base_len, target_len)` its training stages.
"""

from rope_methods import drope, none, ntk, pi, yarn  # noqa: F401  (each registers its method)
from rope_methods.base import _REGISTRY, Method, Stage
from rope_methods.freqs import ROPE_TYPES, UNROTATED, dynamic_inv_freq, inv_freq, is_unrotated
from rope_methods.rotary import apply_rotary, cos_sin

METHODS = ("yarn", "drope", "pi", "ntk", "none")
assert set(METHODS) == set(_REGISTRY), "a method module is missing from METHODS"


def get(name: str) -> Method:
    """The method called `name` (one of METHODS)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown rope method {name!r}; accepted: {', '.join(METHODS)}")
    return _REGISTRY[name]


__all__ = [
    "METHODS",
    "ROPE_TYPES",
    "UNROTATED",
    "Method",
    "Stage",
    "get",
    "is_unrotated",
    "inv_freq",
    "dynamic_inv_freq",
    "cos_sin",
    "apply_rotary",
]
