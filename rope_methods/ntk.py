"""Dynamic NTK-aware scaling (transformers' rope_type 'dynamic').

The base grows with the current sequence length past the original one. transformers takes that
original length from the model config's `max_position_embeddings`, so an extended checkpoint must
keep it at base_len (see `max_position_embeddings`); `original_max_position_embeddings` is also
written into the dict so the length travels with it (`rope_methods.dynamic_inv_freq` reads it;
transformers logs an "unrecognized key" warning for it and otherwise ignores it).
"""

from rope_methods.base import ScaledRope, check_lengths, register


@register
class DynamicNTK(ScaledRope):
    name = "ntk"
    layers = ("full_attention",)
    defaults = {"factor": None, "theta": None}

    def _extend_flat(self, flat, base_len, target_len, opts):
        scaled = self._scaled_base(flat, base_len, target_len, opts)
        return {
            "rope_type": "dynamic",
            "rope_theta": scaled["rope_theta"],
            "factor": scaled["factor"],
            "original_max_position_embeddings": base_len,
        }

    def max_position_embeddings(self, base_len, target_len):
        check_lengths(base_len, target_len)
        return base_len  # transformers' dynamic update scales relative to this
