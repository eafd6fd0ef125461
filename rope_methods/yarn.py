"""YaRN (Peng et al. 2023): interpolate low-frequency dims, keep high-frequency ones, temper attention.

Applied to full-attention layers only, as in the Olmo Hybrid YaRN ablation (factor 8, beta_fast
32, beta_slow 1, original 8192); Olmo 3's sliding-window layers keep their RoPE.
"""

from rope_methods.base import ScaledRope, number, register


@register
class Yarn(ScaledRope):
    name = "yarn"
    layers = ("full_attention",)
    # None = derived: factor = target/base, original = base_len, rope_theta kept, and
    # attention_factor left out so every reader (transformers, vLLM) derives 0.1*ln(factor)+1
    defaults = {
        "factor": None,
        "theta": None,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "original_max_position_embeddings": None,
        "attention_factor": None,
        "mscale": None,
        "mscale_all_dim": None,
        "truncate": None,
    }

    def _extend_flat(self, flat, base_len, target_len, opts):
        scaled = self._scaled_base(flat, base_len, target_len, opts)
        beta_fast = number("beta_fast", opts["beta_fast"], minimum=0.0, strict=True)
        beta_slow = number("beta_slow", opts["beta_slow"], minimum=0.0, strict=True)
        if beta_fast <= beta_slow:
            raise ValueError(
                f"invalid option beta_fast={opts['beta_fast']!r}; accepted: a number > beta_slow={beta_slow:g}"
            )
        original = opts["original_max_position_embeddings"]
        if original is None:
            original = base_len
        elif isinstance(original, bool) or not isinstance(original, int) or original <= 0:
            raise ValueError(f"invalid option original_max_position_embeddings={original!r}; accepted: a positive int")
        out = {
            "rope_type": "yarn",
            "rope_theta": scaled["rope_theta"],
            "factor": scaled["factor"],
            "original_max_position_embeddings": original,
            "beta_fast": beta_fast,
            "beta_slow": beta_slow,
        }
        if opts["attention_factor"] is not None:
            out["attention_factor"] = number("attention_factor", opts["attention_factor"], minimum=0.0, strict=True)
        for key in ("mscale", "mscale_all_dim"):
            if opts[key] is not None:
                out[key] = number(key, opts[key], minimum=0.0, strict=True)
        if opts["truncate"] is not None:
            if not isinstance(opts["truncate"], bool):
                raise ValueError(f"invalid option truncate={opts['truncate']!r}; accepted: True, False")
            out["truncate"] = opts["truncate"]
        return out
