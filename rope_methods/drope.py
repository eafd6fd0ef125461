"""DRoPE / DroPE (arXiv 2512.12167): remove RoPE from every attention layer.

Recalibrate briefly at the base length without RoPE (QK-norm kept, no temperature), then train
at the target length. Olmo Hybrid's 64k stage does the same (`rope_parameters: null`).
"""

from rope_methods.base import Method, Stage, check_lengths, register


@register
class DRoPE(Method):
    name = "drope"
    layers = ("full_attention", "sliding_attention")
    defaults = {}

    def _extend_flat(self, flat, base_len, target_len, opts):
        return None

    def extend(self, rope_parameters, *, base_len, target_len, **opts):
        super().extend(rope_parameters, base_len=base_len, target_len=target_len, **opts)  # validation
        return None  # no RoPE anywhere, nested or not

    def plan(self, base_len, target_len):
        check_lengths(base_len, target_len)
        return [Stage("recalibrate", base_len), Stage("train", target_len)]
