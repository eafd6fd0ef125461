"""`longctx compare --apart`: per length, whether two grouped rows' run ranges are apart, for rows that share
a model or a method. Every task of a run gets the same score, so a run's mean at a length is that score."""

import pytest
from report_util import uniform_results

from longctx.cli import main

LENGTHS = [4096, 8192, 16384]


def _run(tmp_path, name, label, means):
    return uniform_results(tmp_path, name, label, LENGTHS, means)


def test_marks_per_length(tmp_path, capsys):
    files = [
        _run(tmp_path, "a0", "hyb yarn", [60, 45, 30]),
        _run(tmp_path, "a1", "hyb yarn", [50, 40, 20]),
        _run(tmp_path, "b0", "hyb drope", [40, 44, 35]),  # 4k: apart below; 8k: overlaps; 16k: apart above
        _run(tmp_path, "b1", "hyb drope", [30, 50, 31]),
        _run(tmp_path, "c0", "tr yarn", [49, 10, None]),  # same method as hyb yarn; 16k: one run scored
        _run(tmp_path, "c1", "tr yarn", [51, 20, 5]),
        _run(tmp_path, "d0", "tr pi", [1, 1, 1]),  # shares nothing with the hyb rows, a model with tr yarn
        _run(tmp_path, "d1", "tr pi", [2, 2, 2]),
        _run(tmp_path, "e0", "hyb none", [90, 90, 90]),  # one run: no range, no pairs
    ]
    assert main(["compare", *files, "--apart"]) == 0
    out = capsys.readouterr().out
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()]
    marks = {(c[0], c[1]): c[2:] for c in cells if len(c) == 5 and c[0].endswith("(n=2)") and c[1].endswith("(n=2)")}
    assert marks == {
        ("hyb yarn (n=2)", "hyb drope (n=2)"): [">", "≈", "<"],
        ("hyb yarn (n=2)", "tr yarn (n=2)"): ["≈", ">", ""],
        ("tr yarn (n=2)", "tr pi (n=2)"): [">", ">", ""],
    }


def test_nothing_to_compare_and_no_group(tmp_path, capsys):
    files = [_run(tmp_path, "a0", "hyb yarn", [60, 45, 30]), _run(tmp_path, "b0", "hyb drope", [40, 44, 35])]
    assert main(["compare", *files, "--apart"]) == 0
    assert "nothing to set apart" in capsys.readouterr().out
    assert main(["compare", *files, "--apart", "--no-group"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and "--apart compares rows of several runs" in err.err


@pytest.mark.parametrize("lo_hi", [((10, 20), (20, 30))])
def test_touching_ranges_overlap(lo_hi):
    from longctx.report import LengthScore
    from longctx.report_apart import mark

    def group(lo, hi):
        return LengthScore(15.0, runs=[LengthScore(lo), LengthScore(hi)])

    (a, b) = (group(*lo_hi[0]), group(*lo_hi[1]))
    assert mark(a, b) == "≈" and mark(b, a) == "≈"
    assert mark(group(21, 30), group(10, 20)) == ">" and mark(group(10, 20), group(21, 30)) == "<"


def test_runs_over_different_tasks_are_not_set_apart(tmp_path, capsys):
    """A run whose evaluation was cut short at 16k averages fewer tasks there: its range is not compared
    (`≠`) until --tasks restricts every run to the tasks they share."""
    from longctx import results as R

    files = [
        _run(tmp_path, "a0", "hyb yarn", [60, 45, 90]),
        _run(tmp_path, "a1", "hyb yarn", [50, 40, 80]),
        _run(tmp_path, "b0", "hyb drope", [40, 30, 35]),
        _run(tmp_path, "b1", "hyb drope", [30, 20, 31]),
    ]
    cut = R.load(files[1])
    for task in R.RULER_TASKS[4:]:
        R.set_unavailable(cut, task, 16384, R.NOT_FINISHED)
    R.save(cut, files[1])

    def marks(*extra):
        assert main(["compare", *files, "--apart", *extra]) == 0
        out = capsys.readouterr().out
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()]
        found = [r[2:] for r in rows if len(r) == 5 and r[0] == "hyb yarn (n=2)" and r[1] == "hyb drope (n=2)"]
        assert len(found) == 1
        return found[0], out

    got, out = marks()
    assert got == [">", ">", "≠"] and "`≠`" in out
    got, _ = marks("--tasks", ",".join(R.RULER_TASKS[:4]))
    assert got == [">", ">", ">"]
