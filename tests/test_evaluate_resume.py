"""The answer journal and ResumableLM: per-request persistence, resume, refusal of foreign journals."""

import json

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

from longctx.errors import UsageError
from longctx.evaluate.resume import Journal, ResumableLM

GEN = {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}


class FlakyLM(LM):
    """Answers with the reversed prompt; calls the cache hook per answer like HFLM; can fail after k answers."""

    def __init__(self, fail_after=None, use_hook=True):
        super().__init__()
        self.fail_after, self.use_hook, self.seen = fail_after, use_hook, []

    def generate_until(self, requests):
        out = []
        for r in requests:
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise KeyboardInterrupt  # as if the user hit Ctrl-C mid-run
            ctx, kw = r.args
            self.seen.append(ctx)
            out.append(ctx[::-1])
            if self.use_hook:
                # normalised kwargs, as some backends pass them: the journal must still match the prompt
                self.cache_hook.add_partial("generate_until", (ctx, dict(kw, temperature=0.0)), ctx[::-1])
        return out

    def loglikelihood(self, requests):
        args = [r.args for r in requests]
        self.seen += args
        return [(-float(len(c)), True) for c, _ in args]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


def _reqs(n, prefix="prompt"):
    return [Instance("generate_until", {}, (f"{prefix} {i}", dict(GEN)), i) for i in range(n)]


FP = {"model": "/m", "backend": "hf"}


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    path = tmp_path / "out.json.partial.jsonl"
    reference = ResumableLM(FlakyLM(), Journal(tmp_path / "ref.jsonl", FP)).generate_until(_reqs(5))

    first = FlakyLM(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        ResumableLM(first, Journal(path, FP)).generate_until(_reqs(5))
    assert len(first.seen) == 3
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    assert lines[0] == {"kind": "header", "fingerprint": FP}
    assert [ln["response"] for ln in lines[1:]] == ["0 tpmorp", "1 tpmorp", "2 tpmorp"]

    second = FlakyLM()
    lm = ResumableLM(second, Journal(path, FP))
    assert lm.generate_until(_reqs(5)) == reference
    assert second.seen == ["prompt 3", "prompt 4"]  # the three finished answers were not recomputed
    assert (lm.reused, lm.computed) == (3, 2)


def test_model_without_hook_is_journaled_after_the_call(tmp_path):
    path = tmp_path / "j.jsonl"
    ResumableLM(FlakyLM(use_hook=False), Journal(path, FP)).generate_until(_reqs(2))
    again = FlakyLM()
    assert ResumableLM(again, Journal(path, FP)).generate_until(_reqs(2)) == ["0 tpmorp", "1 tpmorp"]
    assert again.seen == []


def test_loglikelihood_types_survive_the_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    reqs = [Instance("loglikelihood", {}, ("ctx", " a"), 0), Instance("loglikelihood", {}, ("ctxx", " b"), 1)]
    fresh = ResumableLM(FlakyLM(use_hook=False), Journal(path, FP)).loglikelihood(reqs)
    again = FlakyLM()
    assert ResumableLM(again, Journal(path, FP)).loglikelihood(reqs) == fresh == [(-3.0, True), (-4.0, True)]
    assert again.seen == []


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "j.jsonl"
    ResumableLM(FlakyLM(), Journal(path, FP)).generate_until(_reqs(2))
    with open(path, "a") as f:
        f.write('{"kind": "response", "key": "abc", "resp')  # crash in the middle of a write
    lm = ResumableLM(FlakyLM(), Journal(path, FP))
    assert lm.generate_until(_reqs(3))[2] == "2 tpmorp" and lm.computed == 1
    lines = path.read_text().splitlines()
    assert all(json.loads(s) for s in lines) and len(lines) == 4


def test_cells_are_journaled(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, FP)
    j.add_cell("niah_single_1", 4096, 5, {"score": 80.0, "samples": 5})
    j.close()
    j = Journal(path, FP)
    assert j.cell("niah_single_1", 4096, 5) == {"score": 80.0, "samples": 5}
    assert j.cell("niah_single_1", 4096, 6) is None  # another sample count is another cell


def test_journal_of_another_run_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    ResumableLM(FlakyLM(), Journal(path, FP)).generate_until(_reqs(1))
    with pytest.raises(UsageError, match="another run"):
        Journal(path, {"model": "/other", "backend": "hf"})


def test_wrapper_delegates_lm_attributes():
    inner = FlakyLM()
    inner.custom_attr = 7
    lm = ResumableLM(inner, Journal("/nonexistent-never-written.jsonl", FP))
    assert (lm.rank, lm.world_size, lm.custom_attr) == (0, 1, 7)
    assert lm.gather_object("x") == ["x"]


def test_chunks_bound_the_loss_for_whole_call_backends(tmp_path):
    path = tmp_path / "j.jsonl"
    crashing = FlakyLM(fail_after=3, use_hook=False)  # answers only when a call returns, like vLLM
    with pytest.raises(KeyboardInterrupt):
        ResumableLM(crashing, Journal(path, FP), chunk=2).generate_until(_reqs(5))
    again = FlakyLM()
    lm = ResumableLM(again, Journal(path, FP), chunk=2)
    assert lm.generate_until(_reqs(5)) == [f"{i} tpmorp" for i in range(5)]
    assert again.seen == ["prompt 2", "prompt 3", "prompt 4"]  # the first chunk survived


class _PeerRank:
    """Rank 0 of two, the other process played here: it answers its share (the odd positions of each round)
    as FlakyLM would, and `gather` hands back both shares in rank order."""

    rank, world, main = 0, 2, True

    def __init__(self, requests):
        self.requests, self.rounds = requests, []

    def share(self, items):
        self.theirs = items[1::2]
        return items[0::2]

    def gather(self, answered):
        self.rounds.append([i for i, _ in answered] + self.theirs)
        return [answered, [(i, self.requests[i].args[0][::-1]) for i in self.theirs]]


def test_data_parallel_shares_each_round_and_journals_every_answer(tmp_path):
    """With ranks, this process generates its share of each round (world x chunk requests), every answer is
    returned and journaled in order, and a rerun takes them all from the journal, whatever its world."""
    reqs = _reqs(7)
    ranks = _PeerRank(reqs)
    mine = FlakyLM()  # its cache hook calls must not journal twice
    path = tmp_path / "j.jsonl"
    lm = ResumableLM(mine, Journal(path, FP), chunk=2, ranks=ranks)
    assert lm.generate_until(reqs) == [f"{i} tpmorp" for i in range(7)]
    assert mine.seen == ["prompt 0", "prompt 2", "prompt 4", "prompt 6"] and lm.computed == 4
    assert ranks.rounds == [[0, 2, 1, 3], [4, 6, 5]]  # rounds of 2 x 2
    responses = [json.loads(s) for s in path.read_text().splitlines()][1:]
    assert [r["response"] for r in responses] == [f"{i} tpmorp" for i in range(7)]
    again = FlakyLM()
    assert ResumableLM(again, Journal(path, FP)).generate_until(reqs) == [f"{i} tpmorp" for i in range(7)]
    assert again.seen == []


def test_a_read_only_journal_keeps_additions_in_memory(tmp_path):
    """The other processes of a data-parallel run read rank 0's journal and never write it, torn line included."""
    path = tmp_path / "j.jsonl"
    Journal(path, FP).add_response("k1", "a")
    path.write_bytes(path.read_bytes() + b'{"kind": "resp')  # rank 0 mid-write
    before = path.read_bytes()
    ro = Journal(path, FP, writable=False)
    ro.add_response("k2", "b")
    ro.add_cell("t", 1, 1, {"score": 1.0})
    ro.close()
    assert path.read_bytes() == before and ro.responses == {"k1": "a", "k2": "b"} and ro.cell("t", 1, 1)
