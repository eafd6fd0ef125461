"""`longctx compare --budget` / `--budget-plot`: rows against the training tokens each results file records
(`train`, from the model's longctx_train.json). Every task of a run gets one score, so a run's mean at a length
is that score; expected cells are written out by hand."""

import json

import pytest
from report_util import uniform_results

from longctx import results as R
from longctx.cli import main

T = R.RULER_TASKS
LENGTHS = [4096, 8192]


def _run(tmp_path, name, label, tokens, means, kind="extend"):
    train = None if tokens is None else {"kind": kind, "method": "yarn", "steps": tokens // 100, "tokens": tokens}
    return uniform_results(tmp_path, name, label, LENGTHS, means, train=train)


def test_tables_and_plot(tmp_path, capsys):
    files = [
        _run(tmp_path, "y0", "hyb yarn", 4_000_000, [50, 40]),
        _run(tmp_path, "y1", "hyb yarn", 4_000_000, [54, 44]),
        _run(tmp_path, "y2", "hyb yarn (180 steps)", 12_000_000, [60, 50]),
        _run(tmp_path, "d0", "hyb drope (180 steps)", 12_000_000, [30, 20]),
        _run(tmp_path, "b0", "hyb base", 118_000_000, [70, 0], kind="pretrain"),  # a base: left out
    ]
    plot = tmp_path / "budget.png"
    assert main(["compare", *files, "--budget", "--budget-plot", str(plot)]) == 0
    out = capsys.readouterr().out
    section = out[out.index("### RULER by extension budget") :]
    assert "| row | 4M | 12M |" in section and "118M" not in section and "hyb base" not in section
    k4 = section[section.index("#### 4k") : section.index("#### 8k")]
    assert "| hyb yarn | 52.0 (50.0–54.0) | 60.0 |" in k4 and "| hyb drope | — | 30.0 |" in k4
    assert "| hyb yarn | 42.0 (40.0–44.0) | 50.0 |" in section[section.index("#### 8k") :]
    assert plot.stat().st_size > 0


def test_a_file_without_its_budget_is_one_line(tmp_path, capsys):
    files = [_run(tmp_path, "y0", "hyb yarn", 4_000_000, [50, 40]), _run(tmp_path, "old", "hyb pi", None, [1, 1])]
    plot = tmp_path / "budget.png"
    assert main(["compare", *files, "--budget-plot", str(plot)]) == 2
    err = capsys.readouterr()
    assert err.out == "" and "old.json: no training budget recorded" in err.err and not plot.exists()


def test_eval_records_what_longctx_trained(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    assert R.read_train(d) is None
    meta = {"kind": "extend", "method": "drope", "steps": 60, "tokens": 3932160, "base_len": 4096,
            "temperature": {"c": 0.25, "beta": 1.69}, "source_model": "runs/base"}  # fmt: skip
    (d / "longctx_train.json").write_text(json.dumps(meta))
    assert R.read_train(d) == {
        "kind": "extend",
        "method": "drope",
        "steps": 60,
        "tokens": 3932160,
        "temperature_c": 0.25,
        "source_model": "runs/base",
    }
    (d / "longctx_train.json").write_text("{not json")
    assert R.read_train(d) is None


@pytest.mark.parametrize("train", [[], {"tokens": -1}, {"steps": 1.5}, {"tokens": True}])
def test_bad_train_blocks_are_refused(train):
    r = R.new_results(model="m", rope_parameters=None, tasks=list(T), lengths=LENGTHS, backend="hf",
                      chat_template=False, samples=2, haystack="essays", lm_eval_version="0.4.13")  # fmt: skip
    r["train"] = train
    with pytest.raises(R.ResultsError, match="train"):
        R.validate(r)


def test_a_cell_whose_evaluation_was_cut_short_is_marked(tmp_path, capsys):
    """A run whose 8k evaluation stopped before two tasks (`longctx eval --finished-only`): its 8k cell is the
    mean of the tasks that finished, marked `*` and drawn hollow, off the line."""
    from longctx.report_budget import budget_cells

    y = _run(tmp_path, "y", "hyb yarn", 4_000_000, [50, 40])
    cut = _run(tmp_path, "c", "hyb yarn (180 steps)", 12_000_000, [60, 50])
    r = R.load(cut)
    for t in T[:2]:
        R.set_unavailable(r, t, 8192, R.NOT_FINISHED)
    R.set_score(r, T[2], 8192, 11.0, 2)  # the other 10 tasks score 50
    R.save(r, cut)
    assert main(["compare", y, cut, "--budget"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("### RULER by extension budget") :]
    assert "| hyb yarn | 40.0 | 46.5* |" in section[section.index("#### 8k") :]  # (11 + 10 x 50) / 11
    assert "| hyb yarn | 50.0 | 60.0 |" in section[: section.index("#### 8k")] and "\\*: some run's" in section
    runs = [R.load(y), R.load(cut)]
    assert budget_cells(runs, [y, cut])[3] == {("hyb yarn", 12_000_000, 8192)}
