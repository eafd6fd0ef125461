"""Baseline: keep the RoPE as it is and just train at the target length."""

from rope_methods.base import Method, register


@register
class NoChange(Method):
    name = "none"
    layers = ()
    defaults = {}

    def _extend_flat(self, flat, base_len, target_len, opts):
        return flat  # already a deep copy
