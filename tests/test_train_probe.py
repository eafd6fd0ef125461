"""The in-training retrieval probe: an oracle that emits the reference answers scores 100, a
wrong oracle 0, a random tiny HybridLM a deterministic score in [0, 100], and the cached and
full-forward decoders agree. The oracle is built from RULER samples rendered here (not by the
probe), so a probe that feeds the model other tokens than lm-eval would gets nothing right."""

from __future__ import annotations

import math

import pytest
import torch

import eval_tasks.ruler as ruler
from longctx.data import load_tokenizer
from longctx.errors import UsageError
from longctx.model import HybridLM, load_config
from longctx.train.probe import RetrievalProbe

TASKS = ("niah_single_1", "niah_single_2", "niah_single_3")
LENGTHS = (512, 768)
SEED = 7


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


class Oracle(torch.nn.Module):
    """logits [1, T, V] whose last row points at the next token of the answer stored for the
    prompt the sequence starts with (then EOS); unknown prompts get EOS at once."""

    def __init__(self, answers: dict[tuple, list[int]], vocab: int, eos: int):
        super().__init__()
        self.answers, self.vocab, self.eos = answers, vocab, eos
        self.w = torch.nn.Parameter(torch.zeros(1))  # a device to report

    def forward(self, input_ids):
        ids = input_ids[0].tolist()
        nxt = self.eos
        for prompt, answer in self.answers.items():
            if tuple(ids[: len(prompt)]) == prompt:
                done = len(ids) - len(prompt)
                nxt = answer[done] if done < len(answer) else self.eos
                break
        logits = torch.zeros(1, len(ids), self.vocab)
        logits[0, -1, nxt] = 1.0
        return logits


def oracle(tok, answer_of) -> Oracle:
    answers = {}
    for task in TASKS:
        for n in LENGTHS:
            for s in ruler.generate(task, n, 2, tok, seed=SEED):
                # lm-eval's rendering (api/task.py): input, a " " delimiter unless either side has
                # whitespace at the joint, the answer prefix; special tokens added
                joint = s["input"][-1].isspace() or s["gen_prefix"][0].isspace()
                prompt = s["input"] + ("" if joint else " ") + s["gen_prefix"]
                answers[tuple(tok.encode(prompt))] = tok.encode(" " + answer_of(s["outputs"]), add_special_tokens=False)
    return Oracle(answers, len(tok) + 8, tok.eos_token_id)


def test_oracle_scores_100_and_wrong_answers_0(tok):
    probe = RetrievalProbe(tok, lengths=LENGTHS, tasks=TASKS, samples=2, seed=SEED)
    right = probe.probe(oracle(tok, lambda refs: " ".join(refs)), "cpu")
    scores = {f"probe/{t}@{n}" for t in TASKS for n in LENGTHS} | {"probe/mean"}
    assert set(right) == scores | {f"probe/nll/{t}@{n}" for t in TASKS for n in LENGTHS} | {"probe/nll_mean"}
    assert all(right[k] == 100.0 for k in scores)
    wrong = probe.probe(oracle(tok, lambda refs: "nothing"), "cpu")
    assert all(wrong[k] == 0.0 for k in scores)


@pytest.fixture(scope="module")
def tiny(tok):
    torch.manual_seed(0)
    cfg = load_config(
        "hybrid-tiny",
        vocab_size=-(-len(tok) // 128) * 128,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    return HybridLM(cfg).train()


def test_random_hybrid_is_deterministic_and_in_range(tok, tiny):
    kw = dict(lengths=(512,), tasks=TASKS, samples=2, seed=SEED, max_gen_toks=32)  # 128 is slow on CPU
    a = RetrievalProbe(tok, **kw).probe(tiny, "cpu")
    assert tiny.training  # the model's mode is restored
    b = RetrievalProbe(tok, **kw).probe(tiny, "cpu")
    assert a == b
    assert all(0.0 <= v <= 100.0 for v in a.values())
    assert a["probe/mean"] == pytest.approx(sum(a[f"probe/{t}@512"] for t in TASKS) / 3, abs=0.01)


def test_answer_nll_is_the_cross_entropy_of_the_reference_after_lm_evals_prompt(tok, tiny):
    # recomputed from full logits on the prompt as lm-eval renders it (see oracle()) + " " + reference
    import torch.nn.functional as F

    got = RetrievalProbe(
        tok, lengths=(512,), tasks=("niah_single_1", "niah_single_3"), samples=2, seed=SEED, max_gen_toks=2
    ).probe(tiny, "cpu")
    for task in ("niah_single_1", "niah_single_3"):
        losses = []
        for s in ruler.generate(task, 512, 2, tok, seed=SEED):
            joint = s["input"][-1].isspace() or s["gen_prefix"][0].isspace()
            prompt = tok.encode(s["input"] + ("" if joint else " ") + s["gen_prefix"])
            answer = tok.encode(" " + s["outputs"][0], add_special_tokens=False)
            with torch.no_grad():
                logits = tiny.eval()(torch.tensor([prompt + answer]))[0, len(prompt) - 1 : -1]
            losses.append(float(F.cross_entropy(logits.float(), torch.tensor(answer))))
        assert got[f"probe/nll/{task}@512"] == pytest.approx(sum(losses) / 2, abs=1e-3)
    tiny.train()
    # a random model guesses: about ln(vocab) a token
    assert 0.5 * math.log(len(tok)) < got["probe/nll_mean"] < 1.5 * math.log(len(tok))


def test_cached_and_forward_decoding_agree(tok, tiny):
    kw = dict(lengths=(512,), tasks=("niah_single_1",), samples=2, seed=SEED, max_gen_toks=12)
    cached, forward = RetrievalProbe(tok, mode="cache", **kw), RetrievalProbe(tok, mode="forward", **kw)
    items = cached.items[("niah_single_1", 512)]
    prompts, budgets = [p for p, _, _ in items], [g for _, g, _ in items]
    a = cached._decoder(tiny)(tiny.eval(), prompts, budgets, torch.device("cpu"))
    b = forward._decoder(tiny)(tiny, prompts, budgets, torch.device("cpu"))
    assert a == b and all(len(x) > 0 for x in a)


def test_bad_arguments(tok):
    with pytest.raises(UsageError, match="niah_single_9"):
        RetrievalProbe(tok, tasks=("niah_single_9",))
    with pytest.raises(UsageError, match="mode"):
        RetrievalProbe(tok, mode="beam")
    with pytest.raises(UsageError, match="too short"):
        RetrievalProbe(tok, lengths=(64,), samples=1)


def test_pretrain_logs_probe_scores_every_interval(tmp_path):
    """`--probe-interval 2`: metrics.jsonl rows of steps 2 and 4 carry probe/* scores, the others none."""
    import json

    from longctx.cli import main

    out = tmp_path / "run"
    argv = [
        "pretrain",
        "--model",
        "hybrid-tiny",
        "--out",
        str(out),
        "--steps",
        "4",
        "--seq-len",
        "64",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--probe-interval",
        "2",
        "--set",
        "probe.lengths=[512]",
        "--set",
        "probe.tasks=[niah_single_1]",
        "--set",
        "probe.samples=1",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    probed = {r["step"]: r for r in rows if "probe/mean" in r}
    assert sorted(probed) == [2, 4]
    for r in probed.values():
        assert 0 <= r["probe/niah_single_1@512"] <= 100 and r["probe/mean"] == r["probe/niah_single_1@512"]


def test_bad_probe_task_is_one_line_and_writes_nothing(tmp_path, capsys):
    from longctx.cli import main

    out = tmp_path / "run"
    argv = [
        "pretrain",
        "--model",
        "hybrid-tiny",
        "--out",
        str(out),
        "--steps",
        "2",
        "--seq-len",
        "64",
        "--device",
        "cpu",
        "--probe-interval",
        "1",
        "--set",
        "probe.tasks=[niah_single_9]",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "niah_single_9" in err[0]
    assert not out.exists()


def test_own_kv_task_scores_the_training_wording(tok):
    """own_kv: documents in the training corpus's wording. Each prompt ends with the answer prefix
    and holds every reference value in a fact sentence (the retrieval target is really there); an
    oracle answering the reference scores 100, a wrong one 0; the length is about the one asked."""
    from longctx.data import synthetic
    from longctx.train.probe import own_kv_samples

    n = 768
    own = own_kv_samples(tok, n, 4, SEED)
    assert own == own_kv_samples(tok, n, 4, SEED)  # fixed samples, every probe
    assert len({p for p, _, _ in own}) == 4
    for prompt, answer, budget in own:
        prefix = prompt.rsplit("\n", 1)[1]
        assert any(
            prefix.startswith(p.split("{")[0])
            for _, p in synthetic.ASK_ONE + synthetic.ASK_ALL_VALUES + synthetic.ASK_MANY_KEYS
        )
        values = answer.replace(" and ", ", ").split(", ")
        body = prompt.rsplit("\n\n", 1)[0]
        assert all(f" {v}." in body or f" {v} " in body for v in values), (answer, body[-300:])
        assert 0.6 * n <= len(tok.encode(prompt)) <= n
        assert budget >= len(tok.encode(" " + answer, add_special_tokens=False))

    probe = RetrievalProbe(tok, lengths=(n,), tasks=("own_kv",), samples=4, seed=SEED)
    answers = {tuple(tok.encode(p)): tok.encode(" " + a, add_special_tokens=False) for p, a, _ in own}
    right = probe.probe(Oracle(answers, len(tok) + 8, tok.eos_token_id), "cpu")
    assert right[f"probe/own_kv@{n}"] == 100.0 and right["probe/mean"] == 100.0
    wrong = {k: tok.encode(" 0000", add_special_tokens=False) for k in answers}
    assert probe.probe(Oracle(wrong, len(tok) + 8, tok.eos_token_id), "cpu")[f"probe/own_kv@{n}"] == 0.0
