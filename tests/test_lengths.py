"""One length parser (longctx.lengths) behind eval's --lengths, extend's --target/--base-len and the benchmarks."""

import sys
from pathlib import Path

import pytest

from longctx.errors import UsageError
from longctx.lengths import parse_length, parse_lengths

REPO = Path(__file__).resolve().parents[1]


def test_forms():
    assert [parse_length(x) for x in ("4k", "64K", "65536", " 1m ", 4096)] == [4096, 65536, 65536, 1 << 20, 4096]
    assert parse_lengths("64k,4k,8K,4096") == [4096, 8192, 65536]
    for bad in ("4q", "0", "-4k", "4.5k", "k", "", 0, -1, True):
        with pytest.raises(UsageError) as e:
            parse_length(bad, "--target")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"--target {bad!r}:") and "64k" in msg


def test_extend_uses_it():
    from longctx.train.extend_cmd import parse_len

    assert parse_len(None, "--target") is None
    assert parse_len("64k", "--target") == parse_len(65536, "--target") == 65536
    with pytest.raises(UsageError, match="^--base-len '8x':"):
        parse_len("8x", "--base-len")


def test_bench_uses_it(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from _common import parse_lengths as bench_lengths

    assert bench_lengths("16k,4096") == [4096, 16384]
    monkeypatch.setattr(sys, "argv", ["train_throughput.py"])
    with pytest.raises(SystemExit) as e:
        bench_lengths("4k,4q")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'4q'" in err
