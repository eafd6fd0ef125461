"""Output paths and inputs are checked before any model is loaded: one line, exit 2, nothing written;
files are written with the user's umask; small things (unknown --set keys, lm-eval's git chatter)."""

import json
import os
import stat

import pytest

from longctx.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 1-step hybrid-tiny run, written with umask 022."""
    out = tmp_path_factory.mktemp("checks") / "run"
    old = os.umask(0o022)
    try:
        assert (
            main(
                [
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
                    "1",
                    "--steps",
                    "1",
                ]
            )
            == 0
        )
    finally:
        os.umask(old)
    return out


def one_line(capsys, argv, *words):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for w in words:
        assert str(w) in err[0], err
    return err[0]


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def results_file(path):
    from longctx import results as R

    r = R.new_results(
        model="m",
        rope_parameters=None,
        tasks=["niah_single_1"],
        lengths=[1024],
        backend="hf",
        chat_template=False,
        samples=1,
        haystack="x",
        lm_eval_version="0",
    )
    R.set_score(r, "niah_single_1", 1024, 50.0, 1)
    R.save(r, path)
    return path


# ---------------------------------------------------------------- 5. output paths


def test_out_under_a_file(run, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    res = results_file(tmp_path / "r.json")
    before = files(tmp_path)
    one_line(
        capsys,
        ["pretrain", "--model", "hybrid-tiny", "--out", blocker / "run", "--steps", 1, "--seq-len", 32],
        "afile",
        "not a folder",
    )
    one_line(capsys, ["export", "--checkpoint", run / "checkpoints" / "step_1", "--out", blocker / "e"], "afile")
    one_line(capsys, ["eval", "--model", run, "--lengths", "1k", "--out", blocker / "r.json"], "afile")
    one_line(capsys, ["compare", res, "--csv", blocker / "t.csv"], "afile")
    one_line(capsys, ["compare", res, "--csv", tmp_path], "--csv", "directory")
    assert files(tmp_path) == before


def test_read_only_out(run, tmp_path, capsys, monkeypatch):
    # the tests run as root, for whom every folder is writable: the check asks os.access, which is faked here
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(ro) else real(p, mode, **kw))
    res = results_file(tmp_path / "r.json")
    one_line(
        capsys,
        ["pretrain", "--model", "hybrid-tiny", "--out", ro / "run", "--steps", 1, "--seq-len", 32],
        str(ro),
        "cannot write",
    )
    one_line(capsys, ["export", "--checkpoint", run / "checkpoints" / "step_1", "--out", ro / "e"], "cannot write")
    one_line(capsys, ["eval", "--model", run, "--lengths", "1k", "--out", ro / "r.json"], "cannot write")
    one_line(capsys, ["compare", res, "--csv", ro / "t.csv"], "cannot write")
    assert files(ro) == []


def test_os_errors_while_writing_are_one_line(run, tmp_path, capsys, monkeypatch):
    from longctx import results as R

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "t.csv"))

    res = results_file(tmp_path / "r.json")
    monkeypatch.setattr(R, "write_atomic", denied)
    rc = main(["compare", str(res), "--csv", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "Permission denied" in err[0], err


# ---------------------------------------------------------------- 5. inputs checked before loading


def test_eval_refuses_a_damaged_model_before_loading(run, tmp_path, capsys):
    import shutil

    bad = tmp_path / "truncated"
    shutil.copytree(run, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    one_line(
        capsys,
        ["eval", "--model", bad, "--lengths", "1k", "--out", tmp_path / "r.json"],
        "model.safetensors",
        "truncated",
    )
    alien = tmp_path / "alien"
    shutil.copytree(run, alien)
    cfg = json.loads((alien / "config.json").read_text())
    (alien / "config.json").write_text(json.dumps({**cfg, "model_type": "frobnicator"}))
    one_line(capsys, ["eval", "--model", alien, "--lengths", "1k", "--out", tmp_path / "r.json"], "frobnicator")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.json.partial.jsonl").exists()


def test_lengths_that_cannot_fit_in_memory(run, tmp_path, capsys):
    one_line(
        capsys,
        ["eval", "--model", run, "--lengths", "4k,999999999k", "--out", tmp_path / "r.json"],
        "999999999k",
        "GiB",
    )
    for dry in ([], ["--dry-run"]):
        one_line(
            capsys,
            [
                "extend",
                "--model",
                run,
                "--method",
                "yarn",
                "--target",
                "999999999999k",
                "--steps",
                1,
                "--out",
                tmp_path / "x",
                *dry,
            ],
            "GiB",
        )
    assert files(tmp_path) == []


def test_lm_eval_bad_task_and_missing_model_are_one_line(tmp_path, capsys, monkeypatch):
    # lm-eval logs its task index (our RULER tasks replacing its own) before the error line
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for argv, word in (
        (["--model", "longctx", "--model_args", "pretrained=runs/nope", "--tasks", "niah_single_1"], "runs/nope"),
        (["--model", "hf", "--model_args", f"pretrained={tmp_path}", "--tasks", "niah_foo"], "niah_foo"),
    ):
        assert main(["lm-eval", *argv]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("longctx lm-eval: error:") and word in last, err


# ---------------------------------------------------------------- 6. file modes


def test_outputs_honour_the_umask(run, tmp_path):
    from longctx import results as R

    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(run / "model.safetensors") == 0o644
    assert mode(run / "config.json") == 0o644
    old = os.umask(0o022)
    try:
        results_file(tmp_path / "r.json")
        R.write_atomic(tmp_path / "t.csv", "a,b\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "r.json") == 0o644 and mode(tmp_path / "t.csv") == 0o644


# ---------------------------------------------------------------- 7. values


def test_negative_seeds_are_refused(run, tmp_path, capsys):
    one_line(
        capsys,
        ["pretrain", "--model", "hybrid-tiny", "--out", tmp_path / "o", "--steps", 1, "--seed", -5],
        "seed",
        "-5",
    )
    one_line(
        capsys,
        ["pretrain", "--model", "hybrid-tiny", "--out", tmp_path / "o", "--steps", 1, "--set", "probe.seed=-1"],
        "probe.seed",
    )
    one_line(
        capsys, ["eval", "--model", run, "--lengths", "1k", "--out", tmp_path / "r.json", "--seed", -1], "--seed -1"
    )
    assert files(tmp_path) == []


# ---------------------------------------------------------------- 8. small things


def test_set_with_an_unknown_key_lists_the_valid_ones(tmp_path, capsys):
    line = one_line(
        capsys,
        ["pretrain", "--model", "hybrid-tiny", "--out", tmp_path / "o", "--steps", 1, "--set", "optimizer.lrr=1"],
        "optimizer.lrr",
    )
    assert "optimizer.lr" in line.split("optimizer.lrr", 1)[1] and "optimizer.weight_decay" in line
    line = one_line(
        capsys,
        ["pretrain", "--model", "hybrid-tiny", "--out", tmp_path / "o", "--steps", 1, "--set", "bogus=1"],
        "bogus",
    )
    assert "seq_len" in line and "optimizer" in line
