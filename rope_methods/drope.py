"""DRoPE / DroPE (Gelberg et al., arXiv 2512.12167): remove RoPE from the attention layers.

As published: after pretraining, drop RoPE and recalibrate without it at the original length
(QK-norm kept); past that length, sharpen the attention softmax by

    beta = 1 + c * ln(s),   s = target length / base length,   softmax(beta * q.k / sqrt(d))

with c fitted by perplexity at the target length (0.412 for their from-scratch model, 0.103 for
SmolLM). In SakanaAI/DroPE (custom_models/attention.py) the temperature is the attention module's
`scaling`, the factor of q.k before the softmax (1/sqrt(d) by default), so beta multiplies the
logits. longctx recalibrates at the base length (extend.recalibrate_fraction of the steps, 0 for
Olmo Hybrid's own 64k stage, which drops RoPE at the start of the long run), then trains at the
target; a fraction of 1 is the paper's own recipe: the base length only, the target reached zero-shot
with the temperature.

Options (`--set extend.rope.NAME=VALUE`):
- layers: "full" (default) drops RoPE from the full-attention layers only; sliding-window layers
  keep theirs (they never see past their window). "all" drops it everywhere.
- temperature: null (default: beta = 1), a number c > 0 (beta = 1 + c * ln(target/base)), or
  "auto" (c fitted after training on held-out sequences at the target length). The result is
  folded into the exported weights (longctx.model.temperature), not into the config.
- temperature_fit: what "auto" minimises. "nll" (default, the paper's): the mean next-token NLL of
  held-out sequences of the run's data; "answer": the NLL of the answer tokens of held-out key-value
  retrieval documents (the training corpus's wording, not RULER's) at the target length.
"""

import math

from rope_methods.base import Method, Stage, check_lengths, is_nested, register

LAYER_CHOICES = ("full", "all")
TEMPERATURE_WORDS = ("auto",)
TEMPERATURE_ACCEPTED = "auto, null (no temperature), or a number c > 0 (beta = 1 + c * ln(target/base))"
FIT_CHOICES = ("nll", "answer")


def beta(c: float, base_len: int, target_len: int) -> float:
    """The softmax temperature (a factor on the attention logits) at target_len for coefficient c."""
    return 1.0 + float(c) * math.log(target_len / base_len)


@register
class DRoPE(Method):
    name = "drope"
    layers = ("full_attention",)  # with layers: all, every attention layer type
    defaults = {"layers": "full", "temperature": None, "temperature_fit": "nll"}

    def options(self, **opts):
        opts = super().options(**opts)
        if opts["layers"] not in LAYER_CHOICES:
            raise ValueError(f"invalid option layers={opts['layers']!r}; accepted: {', '.join(LAYER_CHOICES)}")
        t = opts["temperature"]
        if isinstance(t, str) and t.strip().lower() in TEMPERATURE_WORDS:
            opts["temperature"] = t.strip().lower()
        elif t is not None:
            bad = isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0
            if bad:
                raise ValueError(f"invalid option temperature={t!r}; accepted: {TEMPERATURE_ACCEPTED}")
            opts["temperature"] = float(t)
        fit = opts["temperature_fit"]
        if fit not in FIT_CHOICES:
            raise ValueError(f"invalid option temperature_fit={fit!r}; accepted: {', '.join(FIT_CHOICES)}")
        if fit != "nll" and opts["temperature"] != "auto":
            raise ValueError(
                f"invalid option temperature_fit={fit!r} with temperature={opts['temperature']!r}: "
                "a fit applies to temperature=auto"
            )
        return opts

    def _extend_flat(self, flat, base_len, target_len, opts):
        return None

    def extend(self, rope_parameters, *, base_len, target_len, **opts):
        out = super().extend(rope_parameters, base_len=base_len, target_len=target_len, **opts)
        if self.options(**opts)["layers"] == "all" or not is_nested(rope_parameters):
            # a flat dict (Olmo Hybrid) is used by the full-attention layers only
            return None
        return out

    def plan(self, base_len, target_len):
        check_lengths(base_len, target_len)
        return [Stage("recalibrate", base_len), Stage("train", target_len)]
