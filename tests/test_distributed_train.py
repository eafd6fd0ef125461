"""`torchrun ... -m longctx pretrain --dp D --cp C` on CPU (gloo): a run started at (dp, cp) = (1, 2)
and resumed at (2, 1) logs the same losses and exports the same HF model as one process doing the
same (2 steps, then resume to 3); bad layouts fail with one line before OUT is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from longctx.cli import main
from longctx.train.metrics import read_metrics

# AdamW's update lr * m / (sqrt(v) + eps) magnifies fp32 noise in near-zero gradients when eps is
# tiny (see test_distributed.py); the order of reductions differs between layouts
COMMON = [
    "--model",
    "hybrid-tiny",
    "--seq-len",
    "64",
    "--batch-size",
    "2",
    "--checkpoint-interval",
    "1",
    "--device",
    "cpu",
    "--no-progress",
    "--lr",
    "1e-3",
    "--warmup-steps",
    "1",
    "--set",
    "optimizer.eps=1e-3",
]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-port",
        str(_port()),
        "-m",
        "longctx",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _port() -> int:
    from test_distributed_util import free_port

    return free_port()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-runs")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = root / "one-process"
        assert main(["pretrain", *COMMON, "--steps", "2", "--out", str(ref)]) == 0
        assert main(["pretrain", *COMMON, "--steps", "3", "--resume", "--out", str(ref)]) == 0
    finally:
        torch.set_num_threads(n)
    dist = root / "torchrun"
    first = torchrun(2, "pretrain", *COMMON, "--steps", "2", "--dp", "1", "--cp", "2", "--out", str(dist))
    assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun(2, "pretrain", *COMMON, "--steps", "3", "--dp", "2", "--cp", "1", "--resume", "--out", str(dist))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr and second.stderr.count("resuming from") == 1  # rank 0 speaks
    return ref, dist


def test_resume_across_layouts_logs_the_same_losses(runs):
    ref, dist = runs
    want, got = read_metrics(ref), read_metrics(dist)
    assert [r["step"] for r in got] == [1, 2, 3]
    for w, g in zip(want, got, strict=True):
        assert g["tokens"] == w["tokens"]
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-5), g["step"]
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=1e-4), g["step"]


def test_resume_across_layouts_exports_the_same_model(runs):
    ref, dist = runs
    ref_files = sorted(p.name for p in ref.iterdir() if p.is_file() and p.name != "metrics.jsonl")
    dist_files = sorted(p.name for p in dist.iterdir() if p.is_file() and p.name != "metrics.jsonl")
    assert dist_files == ref_files
    assert json.loads((dist / "config.json").read_text()) == json.loads((ref / "config.json").read_text())
    want, got = load_file(ref / "model.safetensors"), load_file(dist / "model.safetensors")
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    # the same checkpoints kept (rank 0 prunes), each with every rank's DCP shard
    assert sorted(p.name for p in (dist / "checkpoints").iterdir()) == sorted(
        p.name for p in (ref / "checkpoints").iterdir()
    )
    assert len(list((dist / "checkpoints" / "step_3" / "state").glob("*.distcp"))) == 2


def test_extend_under_torchrun_matches_one_process(runs, tmp_path):
    """DRoPE extension 64 -> 128 (a recalibration stage at 64, then 128) with --cp 2, and its softmax
    temperature fitted afterwards on held-out sequences by both ranks (each its half of every row)."""
    base, _ = runs
    flags = [
        "extend",
        "--method",
        "drope",
        "--target",
        "128",
        "--model",
        str(base),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "1",
        "--set",
        "optimizer.eps=1e-3",
        "--set",
        "extend.rope.temperature=auto",
    ]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*flags, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(n)
    run = torchrun(2, *flags, "--cp", "2", "--out", str(tmp_path / "cp2"))
    assert run.returncode == 0, run.stderr[-3000:]
    want, got = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "cp2")
    assert [(r["stage"], r["seq_len"]) for r in got] == [("recalibrate", 64), ("train", 128)]
    for w, g in zip(want, got, strict=True):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-5), g["step"]
    want, got = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "cp2" / "model.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    fits = [json.loads((tmp_path / d / "drope_temperature.json").read_text())["fit"]["tried"] for d in ("one", "cp2")]
    assert [r["c"] for r in fits[0]] == [r["c"] for r in fits[1]]
    for w, g in zip(*fits, strict=True):
        assert g["nll"] == pytest.approx(w["nll"], rel=1e-5), w["c"]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--seq-len", "64", "--dp", "2", "--cp", "2"], "error: --dp 2 x --cp 2 = 4 processes, but 2 were started"),
        (["--seq-len", "66", "--cp", "2"], "error: --seq-len 66 is not divisible by 2 x --cp 2 = 4"),
        (["--seq-len", "64", "--batch-size", "3", "--dp", "2"], "error: --batch-size 3 (sequences per micro-batch"),
    ],
)
def test_layout_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, flags, message):
    """As every rank of `torchrun --nproc-per-node 2` sees it: checked before joining or writing."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "never"
    argv = [
        "pretrain",
        "--model",
        "hybrid-tiny",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--device",
        "cpu",
        *flags,
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's workers through /proc")
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """SIGUSR1 to rank 1 only: both ranks finish the step, agree to stop, write one collective
    checkpoint at that step (two DCP shards) and exit 138; --resume on the same layout finishes."""
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    flags = [*COMMON, "--checkpoint-interval", "1000", "--dp", "2"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_port()),
        "-m",
        "longctx",
        "pretrain",
        *flags,
        "--steps",
        "400",
        "--out",
        str(out),
    ]
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while len(read_metrics(out)) < 3:
            assert agent.poll() is None and time.time() < deadline, "the run ended or stalled before step 3"
            time.sleep(0.2)
        workers = sorted(_children(agent.pid))
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGUSR1)  # the second worker started: rank 1 in practice, either works
        _, err = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode != 0 and "stopped by SIGUSR1 after step" in err, err[-3000:]
    stopped = read_metrics(out)[-1]["step"]
    assert 3 <= stopped < 400
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == [f"step_{stopped}"]
    assert len(list((ckpts[0] / "state").glob("*.distcp"))) == 2
    assert not (out / "model.safetensors").exists()
    done = torchrun(2, "pretrain", *flags, "--steps", str(stopped + 2), "--resume", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["step"] for r in read_metrics(out)] == list(range(1, stopped + 3))
