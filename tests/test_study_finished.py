"""`longctx study --finished-only` (longctx.study.finished): which stages get `longctx eval --finished-only`
and what the command reports. The stages' commands are scripts that record their arguments; the scoring
itself is `longctx eval --finished-only`'s, tested in test_evaluate_e2e."""

from __future__ import annotations

import json
import sys

from longctx import results as R
from longctx.study import Stage
from longctx.study.finished import score_journals


def _stage(tmp_path, name, kind, rc=0):
    """A stage whose command records its argv in <name>.argv and prints what `longctx eval` prints."""
    script = (
        "import json, sys\n"
        f"json.dump(sys.argv[1:], open({str(tmp_path / (name + '.argv'))!r}, 'w'))\n"
        f"print('[1/1] niah_single_1 @ 1k: 50.0')\nprint('wrote {name}/ruler.json (1 not finished)')\n"
        f"sys.exit({rc})\n"
    )
    out = tmp_path / name / "ruler.json"
    out.parent.mkdir()
    return Stage(name, kind, [sys.executable, "-c", script, "--out", str(out)], out)


def _journal(stage):
    stage.out.with_name(stage.out.name + ".partial.jsonl").write_text(json.dumps({"kind": "header"}) + "\n")


def _results(stage, unfinished: bool):
    r = R.new_results(model="m", rope_parameters=None, tasks=["niah_single_1"], lengths=[1024], backend="hf",
                      chat_template=False, samples=2, haystack="essays", lm_eval_version="0.4.13")  # fmt: skip
    if unfinished:
        R.set_unavailable(r, "niah_single_1", 1024, R.NOT_FINISHED)
    else:
        R.set_score(r, "niah_single_1", 1024, 50.0, 2)
    R.save(r, stage.out)


def test_cut_evaluations_are_scored_from_their_journals(tmp_path, capsys):
    done, cut, again, bare, train, broken = (
        _stage(tmp_path, "eval-done", "eval"),
        _stage(tmp_path, "eval-cut", "eval"),
        _stage(tmp_path, "gate-again", "gate"),  # scored before, still not finished: scored anew
        _stage(tmp_path, "eval-base-bare", "eval-base"),  # never started: no journal
        _stage(tmp_path, "extend-x", "extend"),
        _stage(tmp_path, "eval-broken", "eval", rc=2),
    )
    _results(done, unfinished=False)
    _journal(done)
    for s in (cut, again, broken):
        _journal(s)
    _results(again, unfinished=True)
    _journal(train)

    assert score_journals([done, cut, again, bare, train, broken]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "study: eval-done: done, skipped",
        "study: eval-cut: wrote eval-cut/ruler.json (1 not finished)",
        "study: gate-again: wrote gate-again/ruler.json (1 not finished)",
        f"study: eval-base-bare: no journal ({bare.out}.partial.jsonl), skipped",
        "study: eval-broken: failed (exit 2): ",
        "study: 2 evaluation(s) scored from their journals; failed: eval-broken",
    ]
    for s in (cut, again, broken):
        assert json.loads((tmp_path / f"{s.name}.argv").read_text()) == ["--out", str(s.out), "--finished-only"]
    for s in (done, bare, train):
        assert not (tmp_path / f"{s.name}.argv").exists()


def test_dry_run_prints_the_commands(tmp_path, capsys):
    cut = _stage(tmp_path, "eval-cut", "eval")
    _journal(cut)
    assert score_journals([cut], dry_run=True) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("--finished-only") and "--out" in out
    assert not (tmp_path / "eval-cut.argv").exists()


def test_a_missing_study_directory_is_one_line(tmp_path, capsys):
    from pathlib import Path

    from longctx.cli import main

    tiny = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "study-tiny.yaml"
    gone = tmp_path / "not-here"
    assert main(["study", str(tiny), "--out", str(gone), "--finished-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no study directory {gone}" in err[0] and not gone.exists()
