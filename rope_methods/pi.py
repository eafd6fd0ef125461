"""Position Interpolation (Chen et al. 2023): divide every frequency by factor (rope_type 'linear')."""

from rope_methods.base import ScaledRope, register


@register
class PositionInterpolation(ScaledRope):
    name = "pi"
    layers = ("full_attention",)
    defaults = {"factor": None, "theta": None}

    def _extend_flat(self, flat, base_len, target_len, opts):
        scaled = self._scaled_base(flat, base_len, target_len, opts)
        return {"rope_type": "linear", "rope_theta": scaled["rope_theta"], "factor": scaled["factor"]}
