"""`longctx pretrain` end to end on CPU: loss, metrics, checkpoints, exact resume, the NaN guard."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import longctx.train.loop as loop
from longctx.cli import main
from longctx.config import ScheduleConfig
from longctx.train.checkpoint import list_checkpoints
from longctx.train.metrics import read_metrics
from longctx.train.schedule import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def pretrain(out, *extra):
    return main(
        ["pretrain", "--model", "hybrid-tiny", "--out", str(out), "--device", "cpu", "--no-progress", *map(str, extra)]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "base"
    rc = pretrain(
        out,
        "--seq-len",
        64,
        "--batch-size",
        8,
        "--steps",
        40,
        "--lr",
        "3e-3",
        "--warmup-steps",
        4,
        "--checkpoint-interval",
        10,
        "--keep-checkpoints",
        2,
    )
    assert rc == 0
    return out


def test_loss_falls_on_the_embedded_corpus(trained):
    losses = [r["loss"] for r in read_metrics(trained)]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert math.log(8192) - 1 < first  # starts near uniform over the vocabulary
    assert last < first - 1.5, (first, last)


def test_metrics_rows(trained):
    rows = read_metrics(trained)
    assert [r["step"] for r in rows] == list(range(1, 41))
    sched = ScheduleConfig(name="cosine", warmup_steps=4)
    for r in rows:
        assert {"step", "loss", "lr", "tokens", "tokens_per_s", "grad_norm", "seq_len"} <= set(r)
        assert r["tokens"] == r["step"] * 8 * 64
        assert r["tokens_per_s"] > 0 and r["grad_norm"] > 0 and r["seq_len"] == 64
        assert r["lr"] == pytest.approx(3e-3 * lr_factor(r["step"] - 1, 40, sched))
    # what the process did before its first step (imports, model, data): on that step's row alone
    assert rows[0]["startup_s"] > 0 and not any("startup_s" in r for r in rows[1:])
    # the loss kernel `loss_backend: auto` (the default) took here: chunked on CPU
    assert rows[0]["loss_backend"] == "chunked" and not any("loss_backend" in r for r in rows[1:])


def test_outputs_checkpoints_and_hf_export(trained):
    from transformers import AutoModelForCausalLM

    from longctx.model import HybridLM

    assert [s for s, _ in list_checkpoints(trained)] == [30, 40]  # keep the last 2
    assert not any(p.name.startswith(".tmp") for p in (trained / "checkpoints").iterdir())
    meta = json.loads((trained / "longctx_train.json").read_text())
    assert meta["seq_len"] == 64 and meta["steps"] == 40 and meta["tokens"] == 40 * 8 * 64
    assert (trained / "run_config.yaml").is_file()
    ids = torch.randint(0, 8000, (1, 48), generator=torch.Generator().manual_seed(0))
    hf = AutoModelForCausalLM.from_pretrained(str(trained)).eval()
    ours = HybridLM.from_pretrained(trained)
    assert hf.config.max_position_embeddings == 64
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)


def _same_run(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in rb] == list(range(1, len(ra) + 1))
    assert [(r["loss"], r["lr"], r["grad_norm"], r["tokens"]) for r in ra] == [
        (r["loss"], r["lr"], r["grad_norm"], r["tokens"]) for r in rb
    ]


SMALL = (
    "--seq-len",
    32,
    "--batch-size",
    2,
    "--grad-accum",
    2,
    "--lr",
    "2e-3",
    "--warmup-steps",
    2,
    "--checkpoint-interval",
    3,
    "--set",
    "z_loss=1e-3",
)


def test_n_steps_then_resume_to_2n_is_bitwise_2n(tmp_path):
    # constant after warmup: the LR of the first N steps does not depend on the run's total
    args = (*SMALL, "--schedule", "constant")
    assert pretrain(tmp_path / "a", "--steps", 6, *args) == 0
    assert pretrain(tmp_path / "b", "--steps", 3, *args) == 0
    assert pretrain(tmp_path / "b", "--steps", 6, "--resume", *args) == 0
    _same_run(tmp_path / "a", tmp_path / "b")
    sa = torch.load(tmp_path / "a/checkpoints/step_6/trainer_state.pt", weights_only=False)
    sb = torch.load(tmp_path / "b/checkpoints/step_6/trainer_state.pt", weights_only=False)
    assert sa["loader"] == sb["loader"] and sa["step"] == sb["step"] == 6


def during_step(monkeypatch, n: int, action):
    """Run action() at the start of step n of every Trainer; returns the undo."""
    real = loop.Trainer.train_step

    def patched(self):
        if self.step == n - 1:
            action()
        return real(self)

    monkeypatch.setattr(loop.Trainer, "train_step", patched)
    return lambda: monkeypatch.setattr(loop.Trainer, "train_step", real)


def interrupt():
    raise KeyboardInterrupt


def test_interrupted_run_resumes_bitwise(tmp_path, monkeypatch):
    # cosine over 6 steps, killed during step 5 (after the step-3 checkpoint), then resumed
    assert pretrain(tmp_path / "a", "--steps", 6, *SMALL) == 0
    undo = during_step(monkeypatch, 5, interrupt)
    assert pretrain(tmp_path / "b", "--steps", 6, *SMALL) == 130  # the CLI's exit code for an interrupt
    undo()
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4]
    assert pretrain(tmp_path / "b", "--steps", 6, "--resume", *SMALL) == 0  # metrics past step 3 are redone
    _same_run(tmp_path / "a", tmp_path / "b")


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    import longctx.train.loss as loss_mod

    real = loss_mod.chunked_cross_entropy
    calls = {"n": 0}

    def poisoned(hidden, weight, labels, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            hidden = hidden * float("nan")
        return real(hidden, weight, labels, **kw)

    monkeypatch.setattr(loss_mod, "chunked_cross_entropy", poisoned)
    out = tmp_path / "nan"
    rc = pretrain(out, "--seq-len", 32, "--batch-size", 2, "--steps", 5, "--checkpoint-interval", 2)
    assert rc != 0
    err = capsys.readouterr().err
    assert "non-finite loss at step 3" in err and "step_2" in err
    assert [s for s, _ in list_checkpoints(out)] == [2]
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    assert not (out / "model.safetensors").exists()  # no export of a broken model


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_scheduler_signal_saves_after_the_step_and_resume_is_bitwise(tmp_path, monkeypatch, capsys, sig):
    """A scheduler's SIGTERM/SIGUSR1 (Slurm preemption, --signal) during step 5: the step finishes,
    a checkpoint is written at 5 (not a checkpoint step), exit 128 + signal, no HF export; --resume
    then ends bitwise where an uninterrupted run ends."""
    import os
    import signal

    signum = getattr(signal, sig)
    before = signal.getsignal(signum)
    assert pretrain(tmp_path / "a", "--steps", 8, *SMALL) == 0
    undo = during_step(monkeypatch, 5, lambda: os.kill(os.getpid(), signum))  # arrives mid-step
    assert pretrain(tmp_path / "b", "--steps", 8, *SMALL) == 128 + signum
    err = capsys.readouterr().err
    assert f"stopped by {sig} after step 5" in err and "--resume" in err
    assert [s for s, _ in list_checkpoints(tmp_path / "b")][-1] == 5
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5]
    assert not (tmp_path / "b" / "model.safetensors").exists()
    undo()
    assert signal.getsignal(signum) == before  # put back, not left pointing at a finished trainer
    assert pretrain(tmp_path / "b", "--steps", 8, "--resume", *SMALL) == 0
    _same_run(tmp_path / "a", tmp_path / "b")
