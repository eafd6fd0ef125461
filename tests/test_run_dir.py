"""Run directories never lose data: --resume only continues a run with the same settings, --force
removes only what longctx wrote, a lock keeps a second process out, a failed fresh run leaves nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from longctx.cli import main
from longctx.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ("--seq-len", 32, "--batch-size", 2, "--steps", 2, "--checkpoint-interval", 1)


def pretrain(out, *extra):
    return main(
        ["pretrain", "--model", "hybrid-tiny", "--out", str(out), "--device", "cpu", "--no-progress", *map(str, extra)]
    )


def snapshot(root):
    """Every file under root with its bytes: what a refused command must leave as it was."""
    if not root.exists():
        return None
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def refused(capsys, out, *argv, words=()):
    before = snapshot(out)
    try:
        rc = pretrain(out, *argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    for w in words:
        assert w in err[0], err
    assert snapshot(out) == before
    return err[0]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 2-step run (hybrid-tiny at 32 tokens)."""
    out = tmp_path_factory.mktemp("rundir") / "run"
    assert pretrain(out, *TINY) == 0
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- 1. --resume needs a run


def test_resume_refuses_a_folder_that_holds_no_run(tmp_path, capsys):
    user = tmp_path / "u"
    user.mkdir()
    (user / "config.json").write_text('{"mine": true}')
    (user / "metrics.jsonl").write_text('{"my": "numbers"}\n')
    refused(capsys, user, *TINY, "--resume", words=("--resume", str(user), "no longctx run"))
    absent = tmp_path / "absent"
    refused(capsys, absent, *TINY, "--resume", words=("--resume", "does not exist"))
    assert not absent.exists()
    (tmp_path / "empty").mkdir()
    refused(capsys, tmp_path / "empty", *TINY, "--resume", words=("--resume",))


# ---------------------------------------------------------------- 2. --resume with changed flags


def test_resume_refuses_flags_that_change_the_run(done, tmp_path, capsys):
    run = copy_run(done, tmp_path / "run")
    assert "seq_len" in refused(capsys, run, *TINY[:-2], "--seq-len", 64, "--resume", words=("32", "64"))
    assert "optimizer.lr" in refused(capsys, run, *TINY, "--lr", "1e-2", "--resume")
    assert "batch_size" in refused(capsys, run, *TINY, "--batch-size", 4, "--resume")
    line = refused(capsys, run, *TINY, "--model", "transformer-tiny", "--resume")
    assert "model" in line and "transformer-tiny" in line and "hybrid-tiny" in line
    assert json.loads((run / "longctx_train.json").read_text())["seq_len"] == 32
    assert json.loads((run / "config.json").read_text())["max_position_embeddings"] == 32


def test_resume_applies_and_records_a_longer_budget(done, tmp_path, capsys):
    import yaml

    run = copy_run(done, tmp_path / "run")
    assert pretrain(run, *TINY[:4], "--steps", 3, "--checkpoint-interval", 1, "--resume") == 0
    err = capsys.readouterr().err
    assert "steps: 2 -> 3" in err, err
    assert yaml.safe_load((run / "run_config.yaml").read_text())["steps"] == 3
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


# ---------------------------------------------------------------- 3. one process per run directory


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _start_slow_run(out):
    cmd = [
        sys.executable,
        "-m",
        "longctx",
        "pretrain",
        "--model",
        "hybrid-tiny",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--steps",
        "100000",
        "--checkpoint-interval",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not any((out / "checkpoints").glob("step_*")) if (out / "checkpoints").is_dir() else True:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the first run never wrote a checkpoint"
        time.sleep(0.2)
    return proc


def test_a_second_process_is_refused_and_a_killed_run_resumes(tmp_path, capsys):
    out = tmp_path / "live"
    first = _start_slow_run(out)
    try:
        for extra in (("--resume",), ("--force",), ()):
            line = refused_live(capsys, out, *TINY, *extra)
            assert "in use" in line and str(first.pid) in line, line
        assert (out / "run_config.yaml").is_file() and (out / "checkpoints").is_dir()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == list(range(1, len(steps) + 1))  # no step written twice
    # a lock left by a killed process is stale: --resume takes it over and continues
    done_steps = max(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert pretrain(out, *TINY[:4], "--steps", done_steps + 1, "--checkpoint-interval", 1, "--resume") == 0
    assert read_metrics(out)[-1]["step"] == done_steps + 1


def refused_live(capsys, out, *argv):
    """Like refused(), for a run directory that another process is writing to."""
    rc = pretrain(out, *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_stale_lock_from_a_dead_pid_is_taken_over(done, tmp_path, capsys):
    import socket

    run = copy_run(done, tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".longctx.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert pretrain(run, *TINY[:4], "--steps", 3, "--checkpoint-interval", 1, "--resume") == 0
    assert not (run / ".longctx.lock").exists()  # released at the end


# ---------------------------------------------------------------- 4. --force removes only longctx's files


def test_force_removes_only_what_longctx_wrote(done, tmp_path, capsys):
    run = copy_run(done, tmp_path / "run")
    mine = {"ruler.json": "{}", "ruler.json.partial.jsonl": "{}\n", "notes.txt": "keep me", "analysis/plot.py": "x"}
    for name, text in mine.items():
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_text(text)
    assert pretrain(run, *TINY, "--force") == 0
    err = capsys.readouterr().err
    for name, text in mine.items():
        assert (run / name).read_text() == text, name
    assert "removed" in err and "metrics.jsonl" in err and "checkpoints" in err, err
    assert "notes.txt" not in err.split("removed", 1)[1].split("kept", 1)[0]
    assert [r["step"] for r in read_metrics(run)] == [1, 2]


def test_export_force_keeps_files_it_did_not_write(done, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    mine = {"my_adapter.safetensors": b"adapter", "vocab.json": b"{}", "merges.txt": b"#"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    assert main(["export", "--checkpoint", str(done / "checkpoints" / "step_2"), "--out", str(out), "--force"]) == 0
    for name, data in mine.items():
        assert (out / name).read_bytes() == data, name
    assert (out / "model.safetensors").is_file()


# ---------------------------------------------------------------- 7. checked up front; a failed run leaves nothing


def test_a_batch_that_cannot_fit_is_refused_before_any_work(tmp_path, capsys):
    t0 = time.time()
    line = refused(
        capsys,
        tmp_path / "big",
        "--seq-len",
        256,
        "--batch-size",
        10**9,
        "--steps",
        1,
        words=("--batch-size", "1000000000"),
    )
    assert "GiB" in line and time.time() - t0 < 20
    assert not (tmp_path / "big").exists()


def test_a_fresh_run_that_fails_leaves_nothing(tmp_path, monkeypatch, capsys):
    import longctx.train.loop as loop

    def oom(self):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")

    monkeypatch.setattr(loop.Trainer, "train_step", oom)
    out = tmp_path / "fails"
    assert pretrain(out, *TINY) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "memory" in err[0] and "--batch-size" in err[0], err
    assert not out.exists()
    # a folder that existed before (empty) stays, empty
    out.mkdir()
    assert pretrain(out, *TINY) == 1
    assert out.is_dir() and not any(out.iterdir())
    capsys.readouterr()


def test_ctrl_c_says_how_to_continue(tmp_path, monkeypatch, capsys):
    import longctx.train.loop as loop

    real = loop.Trainer.train_step

    def interrupt(self):
        if self.step == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(loop.Trainer, "train_step", interrupt)
    assert pretrain(tmp_path / "r", *TINY) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and "step_1" in err, err
