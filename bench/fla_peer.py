"""fla's own hybrid model as a training-throughput peer: `fla.models.GatedDeltaNetForCausalLM` built with
the shapes of one of our Olmo Hybrid configs (bench/train_throughput.py --impl fla).

Read against the fla we ship, flash-linear-attention / fla-core 0.6.0 (the wheels of
../shared/gpu/fetch-wheels.sh); paths below are inside those wheels:
- fla/models/gated_deltanet/configuration_gated_deltanet.py: GatedDeltaNetConfig(attn_mode, hidden_size,
  expand_v, use_gate, use_short_conv, allow_neg_eigval, conv_size, head_dim, num_heads, num_v_heads,
  max_position_embeddings, hidden_ratio, intermediate_size, hidden_act, num_hidden_layers, norm_eps, attn,
  use_cache, pad/bos/eos_token_id, tie_word_embeddings, initializer_range, fuse_norm, fuse_swiglu,
  fuse_cross_entropy, fuse_linear_cross_entropy, use_l2warp, vocab_size, attnres_block_size,
  output_gate_activation); fuse_cross_entropy and fuse_linear_cross_entropy may not both be True.
- fla/models/configuration_utils.py: `attn` is {'layers', 'num_heads', 'num_kv_heads', 'qkv_bias',
  'window_size', 'rope_theta'} (or a list of them); defaults num_kv_heads = num_heads, qkv_bias False,
  window_size None, rope_theta 10000.
- fla/models/modeling_utils.py: get_attention() builds fla.layers.attn.Attention for the listed layers
  (head_dim = hidden_size // num_heads, no qk_norm); the causal-LM loss shifts `labels` itself and runs
  FusedLinearCrossEntropyLoss (fuse_linear_cross_entropy), FusedCrossEntropyLoss (fuse_cross_entropy) or
  nn.CrossEntropyLoss over logits.
- fla/models/gated_deltanet/modeling_gated_deltanet.py: every block is pre-norm (attn_norm -> mixer,
  mlp_norm -> GatedMLP) and a transformers GradientCheckpointingLayer; supports_gradient_checkpointing.
- fla/layers/gated_deltanet.py: q/k [HK*Dk], v/g [HV*Dk*expand_v], a/b [HV], A_log, dt_bias, three
  depthwise short convs without bias, FusedRMSNormGated(head_v_dim, eps=norm_eps), o_proj.
- fla/layers/attn.py: Attention raises ImportError at construction when flash-attn is missing and calls
  flash_attn_func(q, k, v, causal=True, window_size=...) on [B, T, H, D] tensors.
- fla/modules/mlp.py (fla-core): GatedMLP takes hidden_act 'swish' (our 'silu') and intermediate_size.

What fla's model cannot match of ours (`differences(config)` lists those that apply to a config):
- attention blocks: ours are OLMo post-norm (h += norm(attn(h)); h += norm(mlp(h))), fla's pre-norm;
  the same norm parameters.
- QK-norm: ours RMS-normalises q and k over their full widths in every attention layer; fla's attn
  config cannot ask for any (its Attention's per-head qk_norm is not wired through the config), so the
  fla model has H*Dh + Hkv*Dh fewer parameters per attention layer and skips those two norms.
- RoPE: fla rotates with plain RoPE at rope_theta; other rope_types, or no RoPE, run as plain RoPE.
- attention bias (when a config has one): fla biases q/k/v only, not o_proj.
- the GDN output norm's eps: ours 1e-5, fla norm_eps (= our rms_norm_eps).
- the input embedding: fla passes pad_token_id as padding_idx (the pad row gets no gradient).
- attention kernel: fla's Attention calls flash-attn; where flash-attn is missing (our GPU image) the
  bench hands it torch SDPA (is_causal) under the same name, the kernel ours takes there
  (`--fla-attn`); the row records which ran.
Same in both: the layer pattern (attention at our full_attention indices), d, heads, head dims, GVA,
value expansion, conv width, allow_neg_eigval, the gated output norm, SwiGLU width, vocabulary, tying.
Olmo 3 configs (no GDN layers) are not mapped.
"""

from __future__ import annotations

FLA_VERSION_READ = "0.6.0"
CE_CHOICES = ("linear", "fused", "plain")  # fla's fused linear CE, fused CE over logits, nn.CrossEntropyLoss
ATTN_CHOICES = ("auto", "flash", "sdpa")  # flash-attn if installed else SDPA; flash-attn; torch SDPA
GDN_NORM_EPS = 1e-5  # ours, longctx/model/norms.py GatedRMSNorm
FLA_GDN_INIT = {"linear_a_log_min": 0.0, "linear_a_log_max": 16.0, "linear_dt_min": 1e-3, "linear_dt_max": 0.1}
FLA_GDN_INIT["linear_dt_init_floor"] = 1e-4  # fla/layers/gated_deltanet.py and GatedDeltaNetPreTrainedModel


def _attention_layers(config) -> list[int]:
    return [i for i, t in enumerate(config.layer_types) if t in ("full_attention", "sliding_attention")]


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope(config) -> dict | None:
    from longctx.model.config import rope_parameters_for

    return rope_parameters_for(config, "full_attention")


def fla_config_fields(config, ce: str = "linear") -> dict:
    """GatedDeltaNetConfig keyword arguments with the shapes of our HybridLM `config` (an OlmoHybridConfig).

    ValueError where fla's model cannot take the shapes at all (no GDN layers, sliding windows, an
    attention head dim other than hidden_size / heads, a value head dim not a multiple of the key's)."""
    if getattr(config, "model_type", None) != "olmo_hybrid":
        raise ValueError(f"the fla peer maps Olmo Hybrid configs only, not model_type {config.model_type!r}")
    if ce not in CE_CHOICES:
        raise ValueError(f"fla CE {ce!r}; accepted: {', '.join(CE_CHOICES)}")
    types = list(config.layer_types)
    if "sliding_attention" in types:
        raise ValueError("sliding_attention layers: not mapped to fla (one window for all attention layers)")
    d, heads = config.hidden_size, config.num_attention_heads
    if _head_dim(config) * heads != d:
        raise ValueError(
            f"attention head_dim {_head_dim(config)}: fla's Attention fixes head_dim = hidden_size / num_heads = "
            f"{d // heads}"
        )
    dk, dv = config.linear_key_head_dim, config.linear_value_head_dim
    expand_v = dv / dk
    if int(dk * expand_v) != dv:
        raise ValueError(f"GDN value head dim {dv} is not key head dim {dk} times a float fla can take")
    rp = _rope(config)
    return {
        "attn_mode": "chunk",
        "hidden_size": d,
        "expand_v": expand_v,
        "use_gate": True,
        "use_short_conv": True,
        "allow_neg_eigval": bool(config.linear_allow_neg_eigval),
        "conv_size": config.linear_conv_kernel_dim,
        "head_dim": dk,
        "num_heads": config.linear_num_key_heads,
        "num_v_heads": config.linear_num_value_heads,
        "max_position_embeddings": config.max_position_embeddings,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "swish",  # fla's name for SiLU (GatedMLP accepts 'swish' or 'powlu')
        "num_hidden_layers": config.num_hidden_layers,
        "norm_eps": config.rms_norm_eps,
        "attn": {
            "layers": _attention_layers(config),
            "num_heads": heads,
            "num_kv_heads": config.num_key_value_heads or heads,
            "qkv_bias": bool(getattr(config, "attention_bias", False)),
            "window_size": None,
            "rope_theta": float(rp["rope_theta"]) if rp and rp.get("rope_theta") else 10000.0,
        },
        "use_cache": False,
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "initializer_range": config.initializer_range,
        "fuse_norm": True,
        "fuse_swiglu": True,
        "fuse_cross_entropy": ce == "fused",
        "fuse_linear_cross_entropy": ce == "linear",
        "use_l2warp": False,
        "vocab_size": config.vocab_size,
    }


def fla_param_count(fields: dict) -> int:
    """Parameters of GatedDeltaNetForCausalLM(GatedDeltaNetConfig(**fields)), counted from fla 0.6.0's
    module definitions (tied head once), without importing fla."""
    if not fields.get("use_gate", True) or not fields.get("use_short_conv", True):
        raise ValueError("fla_param_count covers GDN layers with output gate and short convs only")
    d, v, layers = fields["hidden_size"], fields["vocab_size"], fields["num_hidden_layers"]
    attn = fields.get("attn") or {"layers": [], "num_heads": 1}
    inter = fields["intermediate_size"]
    hk, dk = fields["num_heads"], fields["head_dim"]
    hv = fields["num_v_heads"] or hk
    key_dim, value_dim, head_v = hk * dk, hv * int(dk * fields["expand_v"]), int(dk * fields["expand_v"])
    width = fields["conv_size"]

    mlp = 3 * d * inter
    norms = 2 * d  # attn_norm, mlp_norm
    gdn = (
        2 * d * key_dim  # q_proj, k_proj
        + 3 * d * value_dim  # v_proj, g_proj, o_proj
        + 2 * d * hv  # a_proj, b_proj
        + 2 * hv  # A_log, dt_bias
        + (2 * key_dim + value_dim) * width  # q/k/v short convs (depthwise, no bias)
        + head_v  # o_norm (FusedRMSNormGated over one head)
    )
    heads = attn["num_heads"]
    kv_dim = (attn.get("num_kv_heads") or heads) * (d // heads)
    bias = attn.get("qkv_bias", False)
    attention = 2 * d * d + 2 * d * kv_dim + ((d + 2 * kv_dim) if bias else 0)  # q, o [d, d]; k, v [kv, d]
    n_attn = len(attn["layers"])
    total = n_attn * (attention + mlp + norms) + (layers - n_attn) * (gdn + mlp + norms)
    total += v * d + d  # embeddings, final norm
    if not fields["tie_word_embeddings"]:
        total += v * d
    return total


def qk_norm_params(config) -> int:
    """Our attention layers' q_norm + k_norm weights, which fla's model does not have."""
    kv = config.num_key_value_heads or config.num_attention_heads
    return len(_attention_layers(config)) * (config.num_attention_heads + kv) * _head_dim(config)


def differences(config) -> list[str]:
    """What the fla model built from fla_config_fields(config) does differently from ours, for this config."""
    n_attn = len(_attention_layers(config))
    out = [
        "attention blocks: ours OLMo post-norm (h += norm(attn(h)); h += norm(mlp(h))), fla pre-norm "
        "(h += attn(norm(h)); h += mlp(norm(h))); same norm parameter count",
        f"no QK-norm in fla: ours RMS-normalises q and k over their full widths in each of the {n_attn} attention "
        f"layers ({qk_norm_params(config)} parameters); fla's attn config has no qk_norm",
    ]
    rp = _rope(config)
    if rp is None:
        out.append("RoPE: ours none in the attention layers; fla always rotates (rope_theta 10000)")
    elif rp.get("rope_type", "default") != "default":
        out.append(f"RoPE: ours rope_type {rp['rope_type']!r}; fla plain RoPE at rope_theta {rp.get('rope_theta')}")
    if getattr(config, "attention_bias", False):
        out.append(f"attention bias: ours on q, k, v and o; fla q, k, v only ({config.hidden_size} fewer per layer)")
    if config.rms_norm_eps != GDN_NORM_EPS:
        out.append(f"GDN output norm eps: ours {GDN_NORM_EPS}, fla norm_eps = rms_norm_eps {config.rms_norm_eps}")
    init = {k: getattr(config, k, None) for k in FLA_GDN_INIT}
    if init != FLA_GDN_INIT:
        out.append(f"GDN A_log/dt_bias init: ours {init}, fla fixed {FLA_GDN_INIT}")
    pad = config.pad_token_id
    if pad is not None and 0 <= pad < config.vocab_size:
        out.append(f"input embedding: fla padding_idx={pad} (that row gets no gradient); ours trains it")
    return out


def describe(config, ce: str = "linear") -> dict:
    """For the JSON: the mapped fields, parameter counts (ours, fla analytic, their expected gap), differences;
    or {"error": why} where the config does not map."""
    import torch

    from longctx.model import HybridLM

    try:
        fields = fla_config_fields(config, ce)
    except ValueError as e:
        return {"error": str(e)}
    with torch.device("meta"):
        ours = HybridLM(config).num_params()
    fla = fla_param_count(fields)
    return {
        "fla_version_read": FLA_VERSION_READ,
        "fields": fields,
        "params": {
            "ours": ours,
            "fla_analytic": fla,
            "ours_minus_fla": ours - fla,
            "ours_minus_fla_explained": qk_norm_params(config)
            + (config.hidden_size * len(_attention_layers(config)) if getattr(config, "attention_bias", False) else 0),
        },
        "differences": differences(config),
    }


# ---------------------------------------------------------------- building (CUDA, fla installed)


def missing(device_type: str) -> str | None:
    """One line saying why fla's model cannot run here (on a `device_type` device), or None."""
    from longctx.model import optional

    if not optional.load("fla.models:GatedDeltaNetForCausalLM"):
        return "flash-linear-attention is not installed (fla.models.GatedDeltaNetForCausalLM); pip install -e .[gpu]"
    if device_type != "cuda":
        return "fla's model runs Triton kernels (CUDA only); use --device cuda"
    return None


def sdpa_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **_):
    """flash_attn_func's call as fla.layers.attn makes it ([B, T, H, D] q, [B, T, Hkv, D] k/v), run by torch SDPA."""
    import torch.nn.functional as F

    if tuple(window_size) != (-1, -1):
        raise NotImplementedError("the SDPA stand-in for flash_attn_func takes no sliding window")
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        dropout_p=dropout_p,
        is_causal=causal,
        scale=softmax_scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)


def install_attention(kind: str) -> str:
    """Give fla's Attention its kernel: 'flash' (flash-attn, as fla ships), 'sdpa' (the stand-in above), or
    'auto' (flash-attn when installed). Returns what fla's Attention will call."""
    import fla.layers.attn as fla_attn

    from longctx.model import optional

    has_flash = bool(optional.load("flash_attn:flash_attn_func"))
    if kind == "flash" or (kind == "auto" and has_flash):
        if not has_flash:
            raise RuntimeError("--fla-attn flash: flash-attn is not installed")
        from flash_attn import flash_attn_func

        fla_attn.flash_attn_func = flash_attn_func
        return "flash_attn.flash_attn_func"
    fla_attn.flash_attn_func = sdpa_flash_attn_func  # Attention.__init__ and forward read this module global
    return "torch SDPA (is_causal) in place of flash_attn_func"


def loss_name(cfg) -> str:
    """The criterion fla's causal LM builds from its config (fla/models/modeling_utils.py, _compute_logits_and_loss)."""
    if cfg.fuse_linear_cross_entropy:
        return "FusedLinearCrossEntropyLoss"
    return "FusedCrossEntropyLoss" if cfg.fuse_cross_entropy else "nn.CrossEntropyLoss"


def build(config, device, dtype, *, ce: str, attn: str, checkpointed: set[int] | None):
    """GatedDeltaNetForCausalLM with our config's shapes, on `device` in `dtype`, training mode; activation
    checkpointing through transformers' gradient_checkpointing_enable(use_reentrant=False), then kept
    only on the blocks in `checkpointed` (ours' set; None or empty: none). Returns (model, info for the JSON)."""
    import warnings

    import torch
    from fla.models import GatedDeltaNetConfig, GatedDeltaNetForCausalLM

    kernel = install_attention(attn)
    fields = fla_config_fields(config, ce)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fuse_linear_cross_entropy's precision warning
        cfg = GatedDeltaNetConfig(**fields)
    with torch.device(device):
        model = GatedDeltaNetForCausalLM(cfg)
    model = model.to(device=device, dtype=dtype).train()
    layers = model.model.layers
    if checkpointed:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for i, layer in enumerate(layers):
            layer.gradient_checkpointing = i in checkpointed
    info = {
        "fla_class": type(model).__name__,
        "fla_attn_kernel": kernel,
        "fla_ce": loss_name(model.config),
        "fla_checkpointed_blocks": [
            i for i, layer in enumerate(layers) if getattr(layer, "gradient_checkpointing", False)
        ],
        "fla_attention_layers": [i for i, layer in enumerate(layers) if type(layer.attn).__name__ == "Attention"],
        "fla_params": sum(p.numel() for p in model.parameters()),
        "fla_params_analytic": fla_param_count(fields),
    }
    return model, info
