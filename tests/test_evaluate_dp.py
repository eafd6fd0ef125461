"""Data-parallel `longctx eval` under torchrun (CPU, gloo, two processes): each process answers a share of every
cell, the answers and scores equal a single process's, rank 0 alone writes, and a rerun resumes from its journal."""

import json
import os
import re
import subprocess
import sys

from test_evaluate_e2e import LENGTH, _journal_answers, _private_sample_cache, _scores, tiny_model  # noqa: F401

from longctx import results as R
from longctx.cli import main
from longctx.evaluate.runner import journal_path

TASKS = "niah_single_1,ruler_vt"


def _argv(model, out):
    return ["eval", "--model", str(model), "--lengths", "1k", "--tasks", TASKS, "--samples", "3", "--device", "cpu",
            "--out", str(out)]  # fmt: skip


def test_two_processes_answer_as_one(tiny_model, tmp_path, capsys, monkeypatch):  # noqa: F811
    one = tmp_path / "one" / "ruler.json"
    assert main(_argv(tiny_model, one)) == 0, capsys.readouterr().err

    two = tmp_path / "two" / "ruler.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "longctx",
           *_argv(tiny_model, two)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = {int(r): int(n) for r, n in re.findall(r"\[rank (\d) of 2\] generated (\d+) answers", done.stderr)}
    assert set(counts) == {0, 1} and all(counts.values()) and sum(counts.values()) == 6, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # the table and the summary from rank 0 alone
    assert _scores(R.load(two)) == _scores(R.load(one))
    assert _journal_answers(two) == _journal_answers(one)
    kinds = [json.loads(line)["kind"] for line in journal_path(two).read_text().splitlines()]
    assert kinds.count("header") == 1 and kinds.count("response") == 6 and kinds.count("cell") == 2

    # one process resumes from the two's journal: every answer from it, nothing generated
    from longctx.evaluate import lm_model

    monkeypatch.setattr(lm_model, "greedy_generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    two.unlink()
    capsys.readouterr()
    assert main(_argv(tiny_model, two)) == 0
    assert _scores(R.load(two)) == _scores(R.load(one))


def test_vllm_is_refused_under_torchrun(tiny_model, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "v" / "ruler.json"
    monkeypatch.setitem(sys.modules, "vllm", type(sys)("vllm"))  # installed, as far as the check goes
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "vllm" else None)
    assert main([*_argv(tiny_model, out), "--backend", "vllm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torchrun" in err[0] and not out.parent.exists()
