"""The static-buffer decoding that CUDA graphs need (longctx.model.generate), checked on CPU in fp32:
decode_step updates every cache tensor in place, and greedy_generate with cuda_graphs=True (on CPU:
the eager loop with a fixed batch, finished rows kept) gives the tokens and logits of HybridLM's
own full-forward greedy decoding, like the selecting path. The graph capture itself is CUDA-only:
tests/test_model_gpu.py."""

from __future__ import annotations

import pytest
import torch
from test_model_util import hybrid_config, max_diff, olmo3_config, random_prompts, randomize

from longctx.model import HybridLM, generate
from longctx.model.generate import decode_step, greedy_generate, prefill

TOL = 1e-4
# distinct lengths (a decode step's positions tell which prompt each row is); 2 < the conv width
# and the window, 70 and 130 cross GDN chunks of 64 and the window of 8
LENGTHS = (2, 37, 70, 130)
BUDGETS = [12, 4, 9, 12]
CASES = {
    "hybrid": lambda: hybrid_config(),
    "olmo3-sliding8": lambda: olmo3_config(sliding_window=8),
}


@pytest.fixture(scope="module", params=list(CASES))
def model(request):
    torch.manual_seed(0)
    return randomize(HybridLM(CASES[request.param]()), seed=0).eval()


@torch.no_grad()
def full_forward_greedy(model, prompt, budget, eos):
    """Greedy decoding by re-running the whole sequence each step: no cache at all."""
    out = []
    while len(out) < budget:
        t = model(torch.tensor([prompt + out]))[0, -1].argmax().item()
        if t in eos:
            break
        out.append(t)
    return out


def a_mid_sequence_eos(model, ps, budgets):
    """A token that some greedy outputs produce after their first step and others never (so one
    sequence stops at EOS while others run to their budget)."""
    free = [o for o in greedy_generate(model, ps, budgets) if o]
    seen = [set(o[1:]) for o in free]
    candidates = sorted(set().union(*seen) - set.intersection(*seen) - {o[0] for o in free})
    assert candidates, free
    return candidates[0]


def cache_tensors(cache):
    return [t for c in cache.layers for t in (c.conv + [c.state] if hasattr(c, "state") else [c.k, c.v, c.pos])]


def test_decode_step_updates_the_cache_in_place(model):
    """A captured graph replays fixed addresses: every cache tensor keeps its storage and changes."""
    ps = random_prompts(LENGTHS)
    cache, logits = prefill(model, ps, capacity=max(LENGTHS) + 4)
    tensors = cache_tensors(cache)
    before = [(t.data_ptr(), t.clone()) for t in tensors]
    positions = torch.tensor(LENGTHS)
    for s in range(3):
        logits = decode_step(model, cache, logits.argmax(-1), positions + s)
    for (ptr, old), t, new in zip(before, tensors, cache_tensors(cache), strict=True):
        assert new is t and new.data_ptr() == ptr
        assert not torch.equal(old, new)


def test_decode_step_never_reads_back_to_the_host(model):
    """What a CUDA graph capture forbids, as far as CPU dispatch shows it: no op of decode_step hands
    a value to the host (.item(), int(), nonzero, a data-dependent shape). (A .tolist() or .cpu() of
    a CUDA tensor is not visible here: tests/test_model_gpu.py captures the real graph.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        seen, overloads = set(), set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(func.__name__.split(".")[0])
            self.overloads.add(func.__name__)
            return func(*args, **(kwargs or {}))

    # without inference_mode (the functions' decorator), so that composite ops such as linear and
    # einsum reach the hook decomposed into the aten ops that actually run
    ps = random_prompts(LENGTHS)
    with torch.no_grad():
        cache, logits = prefill.__wrapped__(model, ps, capacity=max(LENGTHS) + 1)
        tokens, positions = logits.argmax(-1), torch.tensor(LENGTHS)
        with Ops() as ops:
            decode_step.__wrapped__(model, cache, tokens, positions)
    assert ops.seen & {"mm", "addmm", "bmm", "linear", "einsum", "matmul"} and "index_put_" in ops.seen
    # repeat_interleave syncs only with tensor repeats (its output size is then data-dependent)
    assert not ops.seen & {"_local_scalar_dense", "item", "nonzero", "masked_select", "unique", "_unique2"}, ops.seen
    assert not {o for o in ops.overloads if o.startswith("repeat_interleave.") and "Tensor" in o}, ops.overloads


@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["selecting", "static"])
def test_greedy_tokens_and_logits_match_full_forward(model, cuda_graphs, monkeypatch):
    """Prompts of four lengths, budgets 12/4/9/12 and an EOS that stops one sequence early: tokens
    equal full-forward greedy decoding, and every decode step's logits of a still generating row
    equal the full forward's at that position (finished rows, kept in the static batch, ignored)."""
    ps = random_prompts(LENGTHS)
    eos = a_mid_sequence_eos(model, ps, BUDGETS)
    calls = []

    def recording(model, cache, tokens, positions):
        logits = decode_step(model, cache, tokens, positions)
        calls.append((positions.clone(), logits.clone()))
        return logits

    monkeypatch.setattr(generate, "decode_step", recording)
    got = greedy_generate(model, ps, BUDGETS, eos_token_ids={eos}, cuda_graphs=cuda_graphs)
    expected = [full_forward_greedy(model, p, b, {eos}) for p, b in zip(ps, BUDGETS, strict=True)]
    assert got == expected
    assert any(len(o) < b for o, b in zip(got, BUDGETS, strict=True)) and any(
        len(o) == b for o, b in zip(got, BUDGETS, strict=True)
    )
    assert len({len(o) for o in got}) > 1  # the sequences stop at different steps

    checked = set()
    with torch.no_grad():
        full = [model(torch.tensor([p + o]))[0] for p, o in zip(ps, got, strict=True)]
    for s, (positions, logits) in enumerate(calls):
        if cuda_graphs:
            assert logits.shape[0] == len(ps)  # no row ever leaves the batch
        for row, pos in enumerate(positions.tolist()):
            i = LENGTHS.index(pos - s)
            if s < len(got[i]):  # fed token s of sequence i: its logits predict token s + 1
                assert max_diff(logits[row], full[i][pos]) <= TOL, (i, s)
                checked.add((i, s))
    # every step that produced a kept token was checked
    assert {(i, s) for i, o in enumerate(got) for s in range(len(o) - 1)} <= checked


def test_static_batch_equals_selecting_path(model, monkeypatch):
    """cuda_graphs=True on CPU runs the eager loop (no CUDA graph is ever built) with finished rows
    kept in the batch: same outputs as the selecting path, with EOS, per-prompt budgets (one 0) and
    a stop callback."""
    ps = random_prompts(LENGTHS, seed=7)
    budgets = [10, 10, 0, 6]
    eos = a_mid_sequence_eos(model, ps, budgets)
    free = greedy_generate(model, ps, budgets, eos_token_ids={eos})
    j = next(i for i in (0, 1) if len(free[i]) == budgets[i])  # this one ends by the stop callback
    stop_at = free[j][3]
    kw = dict(eos_token_ids={eos}, stop_sequences=lambda i, ids: i == j and ids[-1] == stop_at)
    selecting = greedy_generate(model, ps, budgets, **kw)

    def no_graphs(*a, **k):
        raise AssertionError("a CUDA graph on CPU")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", no_graphs)
    static = greedy_generate(model, ps, budgets, cuda_graphs=True, **kw)
    assert static == selecting
    assert static[2] == [] and static[j] == free[j][: free[j].index(stop_at) + 1]
    assert len({len(o) for o in static}) > 2, static  # stopped at different steps
    assert any(len(o) < b for i, (o, b) in enumerate(zip(static, budgets, strict=True)) if i != j and b), (
        static
    )  # by EOS
