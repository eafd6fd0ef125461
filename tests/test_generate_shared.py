"""Prefill with shared prefixes (longctx.model.generate.prefill(share_prefixes=True)): the greedy tokens
of transformers' generate, and the logits and caches of a plain prefill (fp32, CPU, tiny models)."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_generate import NEW, TOL, hf_generate, models  # noqa: F401 (fixture)
from test_model_util import VOCAB, max_diff, random_prompts

from longctx.model import HybridLM, prefix
from longctx.model.generate import decode_step, greedy_generate, prefill


@pytest.fixture(autouse=True)
def share_small(monkeypatch):
    """Tiny prompts: every shared node gets its level."""
    monkeypatch.setattr(prefix, "MIN_SAVING", 1)
    monkeypatch.setattr(prefix, "MAX_LEVELS", 16)


def shared_prompts():
    """A haystack with a 'needle' at several depths: branches 1 token apart (shorter than the conv's
    window), past a GDN chunk (64) and past the sliding window (8); one prompt twice, one a prefix of another."""
    hay = random_prompts([150], seed=11)[0]
    tails = random_prompts([3, 5, 1, 4, 2, 6], seed=12)
    depths = [0, 1, 2, 70, 71, 140]
    ps = [hay[:d] + t + hay[d:] for d, t in zip(depths, tails, strict=True)]
    return ps + [list(ps[3]), ps[4][:72], hay[:100]]


def test_plan_shares(models):  # noqa: F811
    plan = prefix.plan_shared_prefill(shared_prompts())
    assert len(plan.levels) >= 3 and plan.shared > 0.3


def test_matches_transformers_generate(models):  # noqa: F811
    ref, ours = models
    ps = shared_prompts()
    eos = ref.config.eos_token_id
    got = greedy_generate(ours, ps, NEW, eos_token_ids={eos}, share_prefixes=True)
    assert got == [hf_generate(ref, p, NEW, eos) for p in ps]


@pytest.mark.parametrize("pack", [1 << 16, 1])
def test_logits_and_caches_equal_a_plain_prefill(models, pack):  # noqa: F811
    """Every tensor of the cache (GDN states and conv tails, attention rings and their positions) and the
    last logits as a plain prefill leaves them; then decode steps from both agree."""
    _, ours = models
    ps = shared_prompts()
    cap = max(map(len, ps)) + 4
    plain, logits = prefill(ours, ps, capacity=cap)
    shared, logits_s = prefill(ours, ps, capacity=cap, max_prefill_tokens=pack, share_prefixes=True)
    assert logits.abs().max() > 1.0
    assert max_diff(logits_s, logits) <= TOL
    for a, b in zip(plain.layers, shared.layers, strict=True):
        for name, x in vars(a).items():
            y = getattr(b, name)
            for u, w in zip(x if isinstance(x, list) else [x], y if isinstance(y, list) else [y], strict=True):
                assert max_diff(u, w) <= TOL, name
    fed = torch.randint(2, VOCAB, (len(ps),), generator=torch.Generator().manual_seed(1))
    positions = torch.tensor([len(p) for p in ps])
    for _ in range(3):
        la, lb = decode_step(ours, plain, fed, positions), decode_step(ours, shared, fed, positions)
        assert max_diff(la, lb) <= TOL
        fed, positions = la.argmax(-1), positions + 1


def test_index_tensors_made_once_per_forward_not_per_layer(models, monkeypatch):  # noqa: F811
    """What the layers of one forward derive alike (the conv fix-up's indices, rows on the host) is made once per
    forward: on a GPU each such host-to-device copy or tolist() waits for the queue, per layer per level."""
    from longctx.model.cache import LayerCache

    _, ours = models
    made, forwards = [], []
    real_derived = LayerCache.derived
    monkeypatch.setattr(LayerCache, "derived", lambda self, name, make: real_derived(
        self, name, lambda: made.append((id(self.memo), name)) or make()))  # fmt: skip
    real = ours.forward_hidden
    monkeypatch.setattr(ours, "forward_hidden", lambda *a, **k: forwards.append(id(k["cache"].memo)) or real(*a, **k))
    prefill(ours, shared_prompts(), capacity=200, share_prefixes=True)
    assert len(forwards) >= 3 and len(made) == len(set(made))  # each thing once per forward
    assert {m for m, _ in made} <= set(forwards)
    per_forward = {f: sorted(str(n) for m, n in made if m == f) for f in forwards}
    assert all("row_list" in names for names in per_forward.values())  # every model here has attention layers
    gdn = any(t == "linear_attention" for t in ours.config.layer_types)
    assert sum("going_on" in names for names in per_forward.values()) == (len(forwards) - 1 if gdn else 0)


def test_nothing_shared_is_a_plain_prefill(models):  # noqa: F811
    _, ours = models
    ps = random_prompts((2, 37, 70, 130))
    assert len(prefix.plan_shared_prefill(ps).levels) == 1
    assert greedy_generate(ours, ps, NEW, share_prefixes=True) == greedy_generate(ours, ps, NEW)


@pytest.mark.gpu
def test_gpu_shared_prefill_matches_a_plain_one():
    """On a GPU: fla's varlen kernel from the forked initial states, SDPA aligned to the last key (causal_lower_right)
    and the recomputed conv outputs, in bf16, no further from an fp32 plain prefill than a bf16 plain prefill is."""
    from test_model_gpu import fla_or_skip, gpu_config, on_gpu, rel_err
    from test_model_util import randomize

    fla_or_skip()
    base = randomize(HybridLM(gpu_config()), seed=1)
    gen = torch.Generator().manual_seed(3)
    hay = torch.randint(2, 1024, (700,), generator=gen).tolist()
    tails = [torch.randint(2, 1024, (n,), generator=gen).tolist() for n in (3, 1, 40, 2, 9, 5)]
    ps = [hay[:d] + t + hay[d:] for d, t in zip((0, 5, 300, 301, 650, 699), tails, strict=True)]
    plan = prefix.plan_shared_prefill(ps, min_saving=64)
    assert len(plan.levels) > 2

    def run(backend, dtype, share, model=None):
        model = model or on_gpu(base, backend, dtype).eval()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(prefix, "MIN_SAVING", 64)
            return prefill(model, ps, capacity=800, share_prefixes=share)

    # bf16 only, the dtype eval runs in: fla's fp32 kernels (with an initial state) are a second set to compile
    # and autotune, minutes on a fresh machine, for a path the CPU tests already check in fp32 against transformers
    exact = run("torch", torch.float32, False)[1]
    plain, shared = run("fla", torch.bfloat16, False)[1], run("fla", torch.bfloat16, True)[1]
    plain_err, shared_err = rel_err(plain, exact), rel_err(shared, exact)
    print(f"\nlogits rel err vs the fp32 torch prefill: bf16 plain {plain_err:.2e}, shared {shared_err:.2e}")
    assert shared_err <= max(2 * plain_err, 1e-2)

    # where the host waits for the GPU (torch's sync debug mode warns at each such op): a level may wait about as
    # often as a whole plain prefill does, not once per layer more
    model = on_gpu(base, "fla", torch.bfloat16).eval()  # its weights' copies to the GPU outside the count

    def syncs(share):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run("fla", torch.bfloat16, share, model)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    plain_syncs, shared_syncs = syncs(False), syncs(True)
    levels = len(prefix.plan_shared_prefill(ps, min_saving=64).levels)
    print(f"host waits: plain prefill {plain_syncs}, shared {shared_syncs} over {levels} levels")
    assert shared_syncs <= levels * max(plain_syncs, 4)
