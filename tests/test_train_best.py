"""checkpoint.best / checkpoint.export: keep the weights of the best-scoring step and export them.

The scores come from a scripted probe, so the best step is known in advance; the weights are held
to those of an ordinary run's checkpoint at that step, exported with `longctx export`."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train_loop import pretrain as loop_pretrain

import longctx.train.loop as loop
from longctx.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SCORES = {2: 10.0, 4: 30.0, 6: 20.0}  # probe/mean by step: the best is step 4 (highest) or 2 (lowest)
# constant after warmup: the first N steps do not depend on the run's total, so a 3-step run resumes into 6
ARGS = (
    "--seq-len",
    32,
    "--batch-size",
    2,
    "--lr",
    "2e-3",
    "--warmup-steps",
    2,
    "--schedule",
    "constant",
    "--set",
    "probe.interval=2",
    "--set",
    "probe.lengths=[512]",
    "--set",
    "probe.samples=1",
)


@pytest.fixture(autouse=True)
def scripted_probe(monkeypatch):
    monkeypatch.setattr(
        loop.Trainer, "_probe", lambda self: {"probe/mean": SCORES[self.step]} if self.step in SCORES else {}
    )


def pretrain(out, *extra):
    return loop_pretrain(out, *ARGS, *extra)


def export(ckpt, out):
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    return out


def same_weights(a, b) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An ordinary 6-step run with a checkpoint every step: the weights after steps 2, 4 and 6."""
    root = tmp_path_factory.mktemp("ref")
    mp = pytest.MonkeyPatch()
    mp.setattr(loop.Trainer, "_probe", lambda self: {})
    try:
        assert pretrain(root / "run", "--steps", 6, "--checkpoint-interval", 1, "--keep-checkpoints", 6) == 0
    finally:
        mp.undo()
    return {s: export(root / "run" / "checkpoints" / f"step_{s}", root / f"step{s}") for s in (2, 4)} | {
        6: root / "run"
    }


def test_export_best_writes_the_best_steps_weights(tmp_path, reference, capsys):
    out = tmp_path / "b"
    assert pretrain(out, "--steps", 6, "--set", "checkpoint.best=probe/mean", "--set", "checkpoint.export=best") == 0
    assert "best probe/mean = 30.0, step 4" in capsys.readouterr().out
    meta = json.loads((out / "checkpoints" / "best" / "meta.json").read_text())
    assert meta["best"] == {"key": "probe/mean", "value": 30.0, "step": 4} and meta["step"] == 4
    assert same_weights(out, reference[4]) and not same_weights(out, reference[6])
    assert same_weights(export(out / "checkpoints" / "best", tmp_path / "e"), reference[4])
    assert not (out / "checkpoints" / "best" / "trainer_state.pt").exists()  # model only: not a resume point
    assert [d.name for d in (out / "checkpoints").iterdir() if not d.name.startswith("step_")] == ["best"]


def test_lowest_with_a_minus_and_last_export_by_default(tmp_path, reference):
    out = tmp_path / "b"
    assert pretrain(out, "--steps", 6, "--set", "checkpoint.best=-probe/mean") == 0
    assert json.loads((out / "checkpoints" / "best" / "meta.json").read_text())["best"]["step"] == 2
    assert same_weights(export(out / "checkpoints" / "best", tmp_path / "e"), reference[2])
    assert same_weights(out, reference[6])  # export: last


def test_best_survives_a_resume(tmp_path, reference):
    out = tmp_path / "b"
    best = ("--set", "checkpoint.best=probe/mean", "--set", "checkpoint.export=best", "--checkpoint-interval", 3)
    assert pretrain(out, "--steps", 3, *best) == 0  # best so far: step 2
    assert pretrain(out, "--steps", 6, "--resume", *best) == 0
    assert same_weights(out, reference[4])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["checkpoint.export=best"], "checkpoint.export"),
        (["checkpoint.export=newest", "checkpoint.best=probe/mean"], "checkpoint.export"),
        (["checkpoint.best=probe/mean", "probe.interval=0"], "checkpoint.best"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, capsys, sets, message):
    extra = [x for s in sets for x in ("--set", s)]
    assert pretrain(tmp_path / "b", "--steps", 2, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "b").exists()
