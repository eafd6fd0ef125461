"""Shared helpers for the distributed tests (no tests here): spawning gloo ranks, tiny models, batches.

Workers run in fresh processes (spawn); each computes the single-process reference itself, so
ranks compare against the same model on the whole batch without shipping tensors around.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from longctx.data.packing import pack_batch

VOCAB = 97
SEQ = 72  # divisible by 2*2 and 2*3: zigzag segments of 18 (cp=2) and 12 (cp=3) tokens
# documents per row; row 1 has boundaries exactly at segment boundaries (36 for cp=2 and 3, 60 for cp=3)
DOCS = [[30, 1, 41], [36, 24, 12]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, scenarios: dict, names: list[str], out_dir: str, backend: str):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)  # 2-3 ranks share 2 cores
    import torch.distributed as dist

    if "nccl" in backend:
        torch.cuda.set_device(rank)
    # a collective one rank skips fails in a minute instead of gloo's default half hour
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=90))
    for name in names:
        try:
            scenarios[name](rank, world, out_dir)
            result = "ok"
        except Exception:  # recorded per scenario, so one failure does not hide the others
            result = traceback.format_exc()
        Path(out_dir, f"{name}.rank{rank}").write_text(result)
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown (seconds with torch loaded); results are on disk


def run_scenarios(
    world: int, scenarios: dict, out_dir: Path, names: list[str] | None = None, backend: str = "gloo"
) -> Path:
    """Run scenarios[name](rank, world, out_dir) for each name on `world` fresh gloo ranks.

    One spawn for many scenarios (process start and FSDP import cost seconds each); results land
    in out_dir/NAME.rankR ("ok" or a traceback), read by `check`.
    """
    names = list(scenarios) if names is None else names
    mp.start_processes(
        _entry, args=(world, free_port(), scenarios, names, str(out_dir), backend), nprocs=world, start_method="spawn"
    )
    return out_dir


def check(out_dir: Path, name: str, world: int) -> None:
    for rank in range(world):
        f = Path(out_dir, f"{name}.rank{rank}")
        assert f.is_file(), f"scenario {name} left no result on rank {rank}"
        text = f.read_text()
        assert text == "ok", f"scenario {name} failed on rank {rank}:\n{text}"


def hybrid_config(**kw):
    """[GDN, GDN, attn, GDN] with 5 heads everywhere: neither cp=2 nor cp=3 divides them."""
    from transformers import OlmoHybridConfig

    fields = dict(
        vocab_size=VOCAB,
        hidden_size=80,
        intermediate_size=96,
        num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
        num_attention_heads=5,
        num_key_value_heads=5,
        linear_num_key_heads=1,
        linear_num_value_heads=5,
        linear_key_head_dim=16,
        linear_value_head_dim=8,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4},
        pad_token_id=0,
        eos_token_id=1,
    )
    fields.update(kw)
    return OlmoHybridConfig(**fields)


def olmo3_config(**kw):
    """[sliding, full, sliding] with 5 query heads over 1 kv head, window 16 (longer than a segment)."""
    from transformers import Olmo3Config

    fields = dict(
        vocab_size=VOCAB,
        hidden_size=80,
        intermediate_size=96,
        num_hidden_layers=3,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        num_attention_heads=5,
        num_key_value_heads=1,
        sliding_window=16,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
    )
    fields.update(kw)
    return Olmo3Config(**fields)


@torch.no_grad()
def tiny_model(kind: str, seed: int = 0):
    """A HybridLM with O(1) activations and slow GDN decay (state matters across segments)."""
    from longctx.model import HybridLM

    torch.manual_seed(seed)
    model = HybridLM(hybrid_config() if kind == "hybrid" else olmo3_config())
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("A_log"):
            p.copy_((0.02 + 0.2 * torch.rand(p.shape, generator=gen)).log())
        elif "norm" in name:
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
        elif "conv1d" in name:
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
    return model


def make_batch(packed: bool, seed: int = 0, rows: int = 2, docs=DOCS, seq: int = SEQ) -> dict:
    """A loader batch (pack_batch format) of `rows` x seq tokens from docs (lengths per row),
    documents masked or not."""
    gen = np.random.default_rng(seed)
    lengths = [n for row in docs[:rows] for n in row] + [1]  # + the look-ahead token
    doc_ids = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    tokens = gen.integers(2, VOCAB, size=doc_ids.shape[0])
    return pack_batch(tokens, doc_ids, rows, seq, doc_mask=packed)


def loss_sum(model, hidden, labels):
    from longctx.distributed import head_weight
    from longctx.train.loss import chunked_cross_entropy

    return chunked_cross_entropy(hidden, head_weight(model), labels, chunk=64).total


def reference_step(kind: str, batch: dict, seed: int = 0):
    """Single process: (model, hidden, loss sum, {name: grad}) for the whole batch, loss / tokens."""
    model = tiny_model(kind, seed)
    hidden = model.forward_hidden(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"])
    count = int((batch["labels"] != -100).sum())
    total = loss_sum(model, hidden, batch["labels"])
    (total / count).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return model, hidden.detach(), total.detach(), grads


def full_grads(model) -> dict:
    """Parameter gradients as whole tensors (gathered from FSDP shards)."""
    out = {}
    for n, p in model.named_parameters():
        g = p.grad
        out[n] = g.full_tensor() if hasattr(g, "full_tensor") else g
    return out


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float = 2e-5, rtol: float = 1e-4):
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
