"""HybridLM: one plain-PyTorch decoder for Olmo Hybrid (GDN + attention) and Olmo 3 (sliding + full).

Blocks follow `config.layer_types`:
- linear_attention (GDN), pre-norm:  h += GDN(norm(h));  h += MLP(norm(h))
- full/sliding_attention, OLMo post-norm:  h += norm(Attn(h));  h += norm(MLP(h))
Parameter names follow OLMo-core's checkpoint keys (GDN norms `attention_layer_norm` / `feedforward_layer_norm`,
q/k/v convs apart); `hf.py` maps the other spellings on load and saves the GDN norms under transformers' names,
which vLLM reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import rope_methods
from longctx.model import fused
from longctx.model.attention import Attention, head_dim_of
from longctx.model.config import check_config, rope_parameters_for
from longctx.model.gdn import GatedDeltaNet
from longctx.model.norms import GatedRMSNorm, RMSNorm
from longctx.model.varlen import DocLayout, doc_layout

DYNAMIC_ROPE_TYPES = ("dynamic", "longrope")  # their frequencies depend on the sequence length


class MLP(nn.Module):
    """SwiGLU."""

    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        k = fused.kernels(x)
        if k is not None:  # silu(gate) * up in one pass (fused.py)
            return self.down_proj(k[1](self.gate_proj(x), self.up_proj(x)))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GDNBlock(nn.Module):
    def __init__(self, config, layer_idx: int, gdn_backend: str | None = None):
        super().__init__()
        self.layer_type = "linear_attention"
        self.attention_layer_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.linear_attn = GatedDeltaNet(config, layer_idx, backend=gdn_backend)
        self.feedforward_layer_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, h: torch.Tensor, ropes: dict, layout: DocLayout, cache=None) -> torch.Tensor:
        h = h + self.linear_attn(self.attention_layer_norm(h), layout, cache)
        return h + self.mlp(self.feedforward_layer_norm(h))


class AttentionBlock(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MLP(config)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, h: torch.Tensor, ropes: dict, layout: DocLayout, cache=None) -> torch.Tensor:
        h = h + self.post_attention_layernorm(self.self_attn(h, ropes[self.layer_type], layout, cache))
        return h + self.post_feedforward_layernorm(self.mlp(h))


# Recomputing a block costs its forward again: linear in T for GDN, quadratic for attention
# (bounded by the window for sliding attention). A partial setting checkpoints the cheapest first.
RECOMPUTE_ORDER = ("linear_attention", "sliding_attention", "full_attention")


def checkpointed_blocks(layer_types, setting: bool | float) -> set[int]:
    """The blocks activation checkpointing recomputes: all (True or 1), none (False or 0), or
    round(setting x blocks) of them, GDN blocks first, then sliding-window, then full attention,
    evenly spread within each kind. Checkpointing fewer blocks keeps more activations (memory)
    and recomputes less (speed): at 64k a 1B hybrid with its 12 GDN blocks checkpointed (0.75)
    keeps only the attention blocks' activations."""
    n = len(layer_types)
    if isinstance(setting, bool) or setting in (0, 1):
        return set(range(n)) if setting else set()
    want = round(float(setting) * n)
    out: set[int] = set()
    for kind in RECOMPUTE_ORDER + tuple(sorted(set(layer_types) - set(RECOMPUTE_ORDER))):
        idx = [i for i, t in enumerate(layer_types) if t == kind]
        take = min(len(idx), want - len(out))
        if take > 0:
            out.update(idx[(2 * j + 1) * len(idx) // (2 * take)] for j in range(take))
    return out


class HybridLM(nn.Module):
    """Causal LM over an `OlmoHybridConfig` or `Olmo3Config` (transformers' classes).

    gdn_backend: None (fla on CUDA when installed, torch otherwise), "fla" or "torch" (the
    reference path, also on CUDA).
    """

    def __init__(self, config, gdn_backend: str | None = None):
        super().__init__()
        check_config(config)
        self.config = config
        self.gradient_checkpointing = False
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = nn.ModuleList(
            GDNBlock(config, i, gdn_backend) if t == "linear_attention" else AttentionBlock(config, i)
            for i, t in enumerate(config.layer_types)
        )
        self.model.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        with torch.device("cpu"):  # plain tensors, also when the model is built on the meta device
            self._rope = self._rope_specs()
        self._rope_cache: dict = {}
        # longctx.distributed installs a ContextParallel here: inputs are then this rank's slice of
        # each row and cu_seqlens/positions describe the whole rows (see forward_hidden)
        self.context_parallel = None
        self.init_weights()

    # ------------------------------------------------------------ construction

    def tie_weights(self):
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _rope_specs(self) -> dict:
        """Per attention layer type: None (no RoPE) or (rope_parameters, inv_freq, attention_scaling).

        Kept off the module's buffers so that .to(bfloat16) cannot round the frequencies.
        """
        specs = {}
        for layer_type in set(self.config.layer_types) - {"linear_attention"}:
            rp = rope_parameters_for(self.config, layer_type)
            inv, scaling = rope_methods.inv_freq(
                rp, head_dim_of(self.config), max_position_embeddings=self.config.max_position_embeddings
            )
            specs[layer_type] = None if inv is None else (rp, inv, scaling)
        return specs

    @torch.no_grad()
    def init_weights(self):
        """transformers' init: normal(0, initializer_range) matrices and convs, unit norms, zero pad row."""
        if self.lm_head.weight.is_meta:
            return
        std = getattr(self.config, "initializer_range", 0.02) or 0.02
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, (RMSNorm, GatedRMSNorm)):
                module.weight.fill_(1.0)
            if isinstance(module, GatedDeltaNet):
                module.reset_gates(self.config)
        pad = self.config.pad_token_id
        if pad is not None and 0 <= pad < self.config.vocab_size:
            self.model.embed_tokens.weight[pad].zero_()

    # ------------------------------------------------------------ forward

    def _rope_tables(self, position_ids: torch.Tensor, layout: DocLayout | None = None) -> dict:
        tables, device = {}, position_ids.device
        for layer_type, spec in self._rope.items():
            if spec is None:
                tables[layer_type] = None
                continue
            rp, inv, scaling = spec
            if rp.get("rope_type") in DYNAMIC_ROPE_TYPES:
                # under context parallelism the longest position is over every rank's slice
                limit = (
                    int(position_ids.max()) + 1
                    if layout is None or layout.cp is None
                    else layout.cp.position_limit(position_ids)
                )
                inv, scaling = rope_methods.dynamic_inv_freq(
                    rp,
                    head_dim_of(self.config),
                    limit,
                    max_position_embeddings=self.config.max_position_embeddings,
                )
                inv = inv.to(device)
            else:
                key = (layer_type, device)
                if key not in self._rope_cache:
                    with torch.inference_mode(False):  # a cache filled during generation serves training too
                        self._rope_cache[key] = inv.to(device)
                inv = self._rope_cache[key]
            # float32 cos/sin whatever the activations' dtype, as Olmo 3 / Olmo Hybrid do
            tables[layer_type] = rope_methods.cos_sin(inv, scaling, position_ids, dtype=torch.float32)
        return tables

    def forward_hidden(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, T, D] (what lm_head consumes).

        cu_seqlens: int32 [N+1] document boundaries over the flattened B*T tokens, including every
        row boundary. Documents are then fully isolated (attention masked, GDN state and short
        conv reset) and default position_ids restart at 0 in each document.
        cache: a longctx.model.cache.CacheRun for generation (longctx.model.generate): a prefill of
        one packed row fills the layers' caches, a decode step (one token per row) reads and advances them.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        device = input_ids.device
        if self.context_parallel is None:
            layout = doc_layout(cu_seqlens, B, T, device)
            if position_ids is None:
                position_ids = layout.doc_pos if layout.packed else torch.arange(T, device=device)
        else:
            # input_ids/position_ids: this rank's tokens of each row; cu_seqlens: the whole rows
            layout = self.context_parallel.doc_layout(cu_seqlens, B, T, device)
            if position_ids is None:
                position_ids = layout.cp.default_positions
        position_ids = position_ids.to(device).expand(B, T)
        ropes = self._rope_tables(position_ids, layout)

        h = self.model.embed_tokens(input_ids)
        use_ckpt = self.training and torch.is_grad_enabled()
        ckpt = checkpointed_blocks(self.config.layer_types, self.gradient_checkpointing) if use_ckpt else ()
        for i, layer in enumerate(self.model.layers):
            if cache is not None:
                h = layer(h, ropes, layout, cache.layer(i))
            elif i in ckpt:
                h = checkpoint(layer, h, ropes, layout, use_reentrant=False)
            else:
                h = layer(h, ropes, layout)
        return self.model.norm(h)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, V]; see forward_hidden for the arguments."""
        return self.lm_head(self.forward_hidden(input_ids, position_ids, cu_seqlens))

    # ------------------------------------------------------------ accounting

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (a tied head counts once); exclude_embeddings drops the input embedding."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.model.embed_tokens.weight), None)
        return sum(p.numel() for p in params.values())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) at sequence length seq_len.

            6 * N_matmul
          + sum over attention layers   12 * H * Dh * ctx
          + sum over GDN layers         18 * HV * Dk * Dv

        N_matmul = parameters except the input embedding, plus the lm_head matrix even when tied
        (the lookup costs nothing, the head is a real matmul): 2 FLOPs per weight per token
        forward, x3 with backward. Attention: QK^T and AV cost 2 * 2 * H * Dh per (query, key)
        pair forward, x3 for training; ctx is the mean number of keys a query attends under the
        causal (and sliding-window) mask: (T+1)/2 for full layers, and for a window W < T,
        (W(W+1)/2 + (T-W)W)/T. GDN: per token and value head the recurrence reads, corrects and
        writes the Dk x Dv state (S^T k, k u^T, S^T q: 3 * 2 * Dk * Dv forward), x3 for training;
        the chunked kernel's intra-chunk terms are of the same order and not counted separately.
        """
        cfg = self.config
        n_matmul = self.num_params(exclude_embeddings=True)
        if cfg.tie_word_embeddings:
            n_matmul += self.lm_head.weight.numel()
        flops = 6.0 * n_matmul
        T = seq_len
        for layer in self.model.layers:
            if isinstance(layer, AttentionBlock):
                attn = layer.self_attn
                W = attn.window
                ctx = (T + 1) / 2 if W is None or W >= T else (W * (W + 1) / 2 + (T - W) * W) / T
                flops += 12.0 * attn.num_heads * attn.head_dim * ctx
            else:
                gdn = layer.linear_attn
                flops += 18.0 * gdn.num_v_heads * gdn.head_k_dim * gdn.head_v_dim
        return flops

    # ------------------------------------------------------------ checkpoints

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        gdn_backend: str | None = None,
    ) -> HybridLM:
        """Load an HF checkpoint (transformers' or the Hub's key layout); returned in eval mode.

        dtype None keeps the stored dtype. A Hub id is downloaded when it is not a local dir.
        """
        from longctx.model import hf

        ckpt_dir = hf.resolve_dir(path_or_hub_id)
        config = hf.read_config(ckpt_dir)
        with torch.device("meta"):
            model = cls(config, gdn_backend=gdn_backend)
        state = hf.read_state_dict(ckpt_dir, config, device=device or "cpu")
        if dtype is not None:
            state = {k: v.to(dtype) for k, v in state.items()}
        hf.load_into(model, state)
        model._source_dir = ckpt_dir
        return model.eval()

    def save_pretrained(self, out_dir: str | Path, tokenizer=None) -> Path:
        """Write config.json + safetensors (+ tokenizer) that `AutoModelForCausalLM` loads as is.

        The tokenizer is the one given, else the tokenizer files of the checkpoint this model was
        loaded from. Written to a temporary dir, then renamed into place.
        """
        from longctx.model import hf

        return hf.save_checkpoint(self, Path(out_dir), tokenizer, getattr(self, "_source_dir", None))
