"""How many sequences greedy generation takes at once (longctx.model.generate.generation_batch_size): the
per-sequence cache size is what prefill really allocates, and the batch is what the free memory holds."""

from __future__ import annotations

import pytest
import torch
from test_model_util import hybrid_config, olmo3_config, random_prompts

from longctx.model import HybridLM
from longctx.model.cache import GDNCache
from longctx.model.generate import (
    generation_batch_size,
    prefill,
    prefill_reserve_bytes,
    sequence_cache_bytes,
)


def _allocated(cache) -> int:
    tensors = []
    for c in cache.layers:
        tensors += [c.state, *c.conv] if isinstance(c, GDNCache) else [c.k, c.v, c.pos]
    return sum(t.untyped_storage().nbytes() for t in tensors)


@pytest.mark.parametrize(
    "make, capacity",
    [
        (hybrid_config, 100),
        (lambda: olmo3_config(sliding_window=8), 100),  # sliding layers: a window of slots
        (lambda: olmo3_config(sliding_window=64), 40),  # capacity below the window
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sequence_bytes_are_what_prefill_allocates(make, capacity, dtype):
    torch.manual_seed(0)
    model = HybridLM(make()).to(dtype).eval()
    prompts = random_prompts((5, 17, 30))
    cache, _ = prefill(model, prompts, capacity)
    assert _allocated(cache) == len(prompts) * sequence_cache_bytes(model, capacity)


def test_bytes_grow_with_capacity_only_where_attention_keeps_every_position():
    torch.manual_seed(0)
    hybrid, sliding = HybridLM(hybrid_config()).eval(), HybridLM(olmo3_config(sliding_window=8)).eval()
    assert sequence_cache_bytes(hybrid, 200) > sequence_cache_bytes(hybrid, 100)
    # olmo3: 3 sliding layers of 8 slots and one full layer: only the full layer's K/V/pos grow
    full = [m for m in sliding.model.layers if getattr(m, "self_attn", None) and m.self_attn.window is None]
    attn = full[0].self_attn
    per_position = 2 * attn.num_kv_heads * attn.head_dim * 4 + 8  # K and V in fp32, the position (int64)
    assert sequence_cache_bytes(sliding, 200) - sequence_cache_bytes(sliding, 100) == 100 * per_position * len(full)


def test_batch_is_what_the_free_memory_holds():
    torch.manual_seed(0)
    model = HybridLM(hybrid_config()).eval()
    per, reserve = sequence_cache_bytes(model, 512), prefill_reserve_bytes(model)
    for k in (1, 5, 37):
        free = int((reserve + (k + 0.5) * per) / 0.9)
        assert generation_batch_size(model, 512, free_bytes=free) == k
    assert generation_batch_size(model, 512, free_bytes=int((reserve + 500 * per) / 0.9), limit=64) == 64
    assert generation_batch_size(model, 512, free_bytes=0) == 1  # never below one
    assert generation_batch_size(model, 4096, free_bytes=int((reserve + 6 * per) / 0.9)) < 6  # longer: fewer
    assert 1 <= generation_batch_size(model, 512) <= 64  # measured on this machine


def test_a_model_on_the_meta_device_is_sized_as_a_real_one():
    """Sizing needs no weights: a model built on the meta device (a 7B planned on a laptop) gives the sizes of
    the same model in memory."""
    torch.manual_seed(0)
    real = HybridLM(hybrid_config()).to(torch.bfloat16).eval()
    with torch.device("meta"):
        planned = HybridLM(hybrid_config()).to(torch.bfloat16)
    assert sequence_cache_bytes(planned, 300) == sequence_cache_bytes(real, 300)
    assert prefill_reserve_bytes(planned) == prefill_reserve_bytes(real)
    free = 1 << 34
    assert generation_batch_size(planned, 300, free_bytes=free) == generation_batch_size(real, 300, free_bytes=free)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["hybrid-190m", "transformer-190m"])
def test_the_sized_batch_fits_in_the_memory_it_was_sized_for(name):
    """On a GPU: greedy_generate of the batch generation_batch_size picks for 12 GiB, with prompts filling the
    capacity and a CUDA-graph decode, allocates no more than those 12 GiB beyond the weights."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from longctx.model import load_config
    from longctx.model.generate import greedy_generate

    torch.manual_seed(0)
    model = HybridLM(load_config(name)).to("cuda", torch.bfloat16).eval()
    capacity, new, budget = 8192, 16, 12 << 30
    batch = generation_batch_size(model, capacity, free_bytes=budget, limit=1024)
    assert batch > 1
    prompts = [torch.randint(10, 1000, (capacity - new,)).tolist() for _ in range(batch)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    greedy_generate(model, prompts, new, cuda_graphs=True)
    torch.cuda.synchronize()
    used = torch.cuda.max_memory_allocated() - base
    print(f"{name}: batch {batch} at {capacity}: peak {used / 2**30:.2f} GiB of {budget / 2**30:.0f} GiB")
    assert used <= budget
