"""`longctx compare --paired`: two methods' difference per base model (runs extended from the same base), with
the sign marked where every base agrees. Every task of a run gets the same score, so a run's mean at a
length is that score and the expected differences are written out by hand."""

from __future__ import annotations

from longctx import results as R
from longctx.cli import main

LENGTHS = [4096, 8192, 16384]


def _run(tmp_path, unit, method, label, means, source=None, cut=()):
    """<tmp>/<unit>-<method>.json for the run <study>/<unit>/<method>; `cut`: lengths whose last tasks are
    not finished."""
    train = {"kind": "extend", "method": method.split("-")[0], "steps": 60, "tokens": 100}
    if source is not None:
        train["source_model"] = source
    r = R.new_results(model=f"/somewhere/study/{unit}/{method}", rope_parameters=None, tasks=list(R.RULER_TASKS),
                      lengths=LENGTHS, label=label, train=train, backend="hf", chat_template=False, samples=2,
                      haystack="essays", lm_eval_version="0.4.13")  # fmt: skip
    for n, m in zip(LENGTHS, means, strict=True):
        for i, t in enumerate(R.RULER_TASKS):
            if n in cut and i >= 4:
                R.set_unavailable(r, t, n, R.NOT_FINISHED)
            else:
                R.set_score(r, t, n, m, 2)
    path = tmp_path / f"{unit}-{method}.json"
    R.save(r, path)
    return str(path)


def _cells(out: str) -> dict:
    part = out.split("### Paired by base model")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()]
    return {(r[0], r[1]): r[2:] for r in rows if len(r) == 2 + len(LENGTHS) and r[0] not in ("row", ":---")}


def test_differences_per_base_and_their_sign(tmp_path, capsys):
    files = [
        _run(tmp_path, "hybrid-s0", "yarn", "hybrid yarn", [60, 50, 40]),
        _run(tmp_path, "hybrid-s1", "yarn", "hybrid yarn", [50, 45, 20]),
        # s0 from its train record (the study moved: the last two path parts still name the base)
        _run(tmp_path, "hybrid-s0", "drope", "hybrid drope", [55, 52, 30], source="/elsewhere/hybrid-s0/base"),
        _run(tmp_path, "hybrid-s1", "drope", "hybrid drope", [40, 44, 21]),
        # another budget: not paired with the rows above, only with its own budget's rows
        _run(tmp_path, "hybrid-s0", "yarn-180steps", "hybrid yarn (180 steps)", [70, 70, 70]),
        _run(tmp_path, "hybrid-s0", "drope-180steps", "hybrid drope (180 steps)", [71, 69, 70]),
        # another model: not paired across models
        _run(tmp_path, "transformer-s0", "yarn", "transformer yarn", [1, 1, 1]),
    ]
    assert main(["compare", *files, "--paired"]) == 0
    cells = _cells(capsys.readouterr().out)
    assert cells == {
        # yarn - drope per seed: 4k +5, +10; 8k -2, +1; 16k +10, -1
        ("hybrid yarn", "hybrid drope"): ["+7.5 (+5.0…+10.0) >", "-0.5 (-2.0…+1.0) ≈", "+4.5 (-1.0…+10.0) ≈"],
        ("hybrid yarn (180 steps)", "hybrid drope (180 steps)"): ["-1.0", "+1.0", "+0.0"],  # one base: no mark
    }


def test_runs_over_other_tasks_are_not_paired(tmp_path, capsys):
    files = [
        _run(tmp_path, "hybrid-s0", "yarn", "hybrid yarn", [60, 50, 40], cut=(16384,)),
        _run(tmp_path, "hybrid-s1", "yarn", "hybrid yarn", [50, 45, 20], cut=(16384,)),
        _run(tmp_path, "hybrid-s0", "drope", "hybrid drope", [55, 52, 30]),
        _run(tmp_path, "hybrid-s1", "drope", "hybrid drope", [40, 44, 21]),
    ]
    assert main(["compare", *files, "--paired"]) == 0
    assert _cells(capsys.readouterr().out)[("hybrid yarn", "hybrid drope")][2] == "≠"
    tasks = ",".join(R.RULER_TASKS[:4])  # the tasks both finished: paired again
    assert main(["compare", *files, "--paired", "--tasks", tasks]) == 0
    assert _cells(capsys.readouterr().out)[("hybrid yarn", "hybrid drope")][2] == "+4.5 (-1.0…+10.0) ≈"


def test_nothing_to_pair_and_no_group(tmp_path, capsys):
    files = [_run(tmp_path, "hybrid-s0", "yarn", "hybrid yarn", [1, 2, 3])]
    assert main(["compare", *files, "--paired"]) == 0
    assert "nothing to pair" in capsys.readouterr().out
    assert main(["compare", *files, "--paired", "--no-group"]) == 2
    assert "--paired compares rows of several runs" in capsys.readouterr().err
