import subprocess
import sys

import pytest

from longctx.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("pretrain", "extend", "eval", "compare", "study", "answers", "summary", "export"):
        assert name in out and name in COMMANDS


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frobnicate" in err[0]


def test_python_m_is_the_same_cli():
    r = subprocess.run([sys.executable, "-m", "longctx", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "pretrain" in r.stdout


def test_bad_flag_is_one_line_exit_2(capsys, tmp_path):
    for argv in (
        ["pretrain", "--out", str(tmp_path / "o"), "--steps", "many"],  # our validation
        ["pretrain", "--out", str(tmp_path / "o"), "--many-steps", "3"],
    ):  # argparse's
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "many" in err[0]
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["-1e-3", "-2", "-.5", "-3.0E+2"])
def test_negative_numbers_are_values_named_in_the_error(capsys, tmp_path, value):
    out = tmp_path / "run"
    assert main(["pretrain", "--model", "hybrid-tiny", "--out", str(out), "--steps", "1", "--lr", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optimizer.lr (--lr) must be > 0" in err, err
    assert not out.exists()


@pytest.mark.parametrize("name", ["study", "answers", "summary"])
def test_moved_tools_are_subcommands_with_help(name):
    r = subprocess.run([sys.executable, "-m", "longctx", name, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: longctx {name}")


def test_no_bench_subcommand(capsys):
    """bench/ is not in the wheel: benchmarks run as `python bench/<script>.py` from a checkout."""
    assert "bench" not in COMMANDS
    assert main(["bench"]) == 2
    assert "unknown command 'bench'" in capsys.readouterr().err
