"""`longctx answers` (longctx.evaluate.answers_cmd): a finished evaluation's answers matched back to their samples
through the
journal, rescored with NVIDIA's metric; the per-cell scores must equal lm-eval's in the results file."""

import hashlib
import json

import pytest
from test_evaluate_e2e import LENGTH, _private_sample_cache, tiny_model  # noqa: F401 (fixtures)

from longctx import results as R
from longctx.cli import main as cli_main
from longctx.evaluate.runner import EvalSpec, evaluate_ruler, journal_path

TASKS = ["niah_single_1", "niah_multikey_1", "ruler_vt"]
WRONG = "illness."


class _Answers:
    """`longctx answers ARGS` in this process, through the CLI."""

    @staticmethod
    def main(argv: list[str]) -> int:
        return cli_main(["answers", *argv])


def _load():
    return _Answers


def _half_right_lm():
    """Echoes the prompt (every reference is in it: 100) or says WRONG (0), by a hash of the prompt."""
    from lm_eval.api.model import LM

    class Half(LM):
        def generate_until(self, requests):
            return [r.args[0] if hashlib.sha256(r.args[0].encode()).digest()[0] % 2 else WRONG for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return Half()


@pytest.fixture(scope="module")
def evaluated(tiny_model, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("answers") / "ruler.json"
    spec = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=TASKS + ["ruler_qa_squad"], samples=6, out=out)
    return out, evaluate_ruler(spec, lm=_half_right_lm(), log=lambda s: None)


def test_answers_rescore_to_lm_evals_scores(evaluated, tmp_path, capsys):
    out, res = evaluated
    dump = tmp_path / "cells.json"
    assert _load().main([str(out), "--json", str(dump), "--show", "1"]) == 0
    cells = {c["task"]: c for c in json.loads(dump.read_text())}
    assert sorted(cells) == sorted(TASKS)  # the QA cell is unavailable offline: left out
    for task in TASKS:
        c, want = cells[task], R.cell(res, task, LENGTH)["score"]
        assert c["score"] == pytest.approx(want, abs=1e-9) and c["samples"] == 6
        wrong = sum(m["answer"] == WRONG for m in c["misses"])
        assert (c["right"], c["missed"], wrong) == (round(want * 6 / 100), 6 - c["right"], 6 - c["right"])
        assert all(m["references"] for m in c["misses"])
    assert 0 < sum(c["right"] for c in cells.values()) < 18  # the hash splits: some right, some wrong
    table = capsys.readouterr().out
    assert f"| niah_single_1 | 1k | {cells['niah_single_1']['score']:.1f} |" in table and "**" not in table


def test_tasks_and_lengths_choose_the_cells(evaluated, tmp_path, capsys):
    out, _ = evaluated
    dump = tmp_path / "cells.json"
    assert _load().main([str(out), "--tasks", "vt, niah_single_1", "--lengths", "1k", "--json", str(dump)]) == 0
    assert [c["task"] for c in json.loads(dump.read_text())] == ["ruler_vt", "niah_single_1"]
    assert _load().main([str(out), "--lengths", "2k", "--json", str(dump)]) == 0  # a length that did not run
    assert json.loads(dump.read_text()) == []


def test_missing_journal_and_bad_task_are_one_line_errors(evaluated, tmp_path, capsys):
    out, _ = evaluated
    mod = _load()
    assert mod.main([str(out), "--tasks", "niah_single_9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "niah_single_9" in err[0]
    lone = tmp_path / "lone.json"
    lone.write_text(out.read_text())
    assert not journal_path(lone).exists()
    assert mod.main([str(lone)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "journal" in err[0]


def test_cells_whose_answers_are_not_in_the_journal_are_left_out(evaluated, tmp_path, capsys):
    """A journal without one cell's answers (as after a RULER generator change redraws that task's samples): the
    other cells are shown, that one is named on stderr; with no cell matched, one line and exit 2."""
    out, _ = evaluated
    part = tmp_path / "part.json"
    part.write_text(out.read_text())
    lines = journal_path(out).read_text().splitlines()
    keep = [ln for ln in lines if json.loads(ln).get("task") != "ruler_vt" or json.loads(ln)["kind"] != "response"]
    assert len(keep) < len(lines)
    journal_path(part).write_text("\n".join(keep) + "\n")
    dump = tmp_path / "cells.json"
    capsys.readouterr()
    assert _load().main([str(part), "--json", str(dump)]) == 0
    assert [c["task"] for c in json.loads(dump.read_text())] == ["niah_single_1", "niah_multikey_1"]
    # stderr also holds lm-eval's progress bars and warnings: ours are the lines with these phrases
    ours = ("left out, answers not in the journal", "longctx answers: error:")
    err = [ln for ln in capsys.readouterr().err.splitlines() if any(p in ln for p in ours)]
    assert len(err) == 1 and err[0].startswith("left out") and "ruler_vt @ 1k" in err[0]
    assert "GENERATOR_VERSION" in err[0]
    only = [ln for ln in lines if json.loads(ln)["kind"] != "response"]
    journal_path(part).write_text("\n".join(only) + "\n")
    assert _load().main([str(part)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if any(p in ln for p in ours)]
    assert len(err) == 1 and err[0].startswith("longctx answers: error:") and "answers not in the journal" in err[0]


@pytest.mark.parametrize(
    "answer,refs,want",
    [
        (" 833059.", ["8330592"], True),  # the needle found, not copied out whole
        (" 7.", ["7705210"], True),
        (" 8330592.", ["8330592"], False),  # whole: not a miss to begin with
        (" 55255.", ["1441485"], False),  # another number
        (" .", ["1441485"], False),
        ("", ["1441485"], False),
        (" 833059", ["1111111", "8330592"], True),  # any reference
        (" 8330592 and 1", ["8330592"], False),
    ],
)
def test_cut_short(answer, refs, want):
    from longctx.evaluate.answers_cmd import cut_short

    assert cut_short(answer, refs) is want


def _echo_lm():
    """Echoes every prompt: each reference is in it, every sample scores 100."""
    from lm_eval.api.model import LM

    class Echo(LM):
        def generate_until(self, requests):
            return [r.args[0] for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    return Echo()


def test_against_compares_the_same_samples_one_by_one(evaluated, tiny_model, tmp_path, capsys):  # noqa: F811
    """A (right on half the samples, by a hash of the prompt) against B (right on all): B is higher exactly on
    A's misses, equal on the rest; the sign test of k misses against 0 is 2 / 2^k."""
    from longctx.evaluate.answers_paired import sign_test

    out, res = evaluated
    b = tmp_path / "echo" / "ruler.json"
    spec = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=TASKS, samples=6, out=b)
    evaluate_ruler(spec, lm=_echo_lm(), log=lambda s: None)
    dump = tmp_path / "cells.json"
    capsys.readouterr()
    assert _load().main([str(out), "--against", str(b), "--json", str(dump)]) == 0
    table = capsys.readouterr().out.split("Sample by sample")[1]
    cells = {c["task"]: c for c in json.loads(dump.read_text())}

    def journal(path):  # the answers as eval kept them, by request hash
        rows = [json.loads(line) for line in journal_path(path).read_text().splitlines()]
        return {r["key"]: (r["task"], r["response"]) for r in rows if r.get("kind") == "response"}

    ja, jb = journal(out), journal(b)
    same = {t: sum(ja[k] == jb.get(k) for k in ja if ja[k][0] == t) for t in TASKS}  # the very same text
    assert 0 < sum(same.values()) < 18  # some answers alike, some not: the column can tell
    misses = 0
    for task in TASKS:
        k = cells[task]["samples"] - cells[task]["right"]
        misses += k
        mean = -100 * k / 6
        p = f"{min(1.0, 2 / 2**k) if k else 1.0:.3g}"
        a_s, b_s = (R.load(f)["scores"][task][str(LENGTH)]["seconds"] for f in (out, b))  # each cell's wall time
        row = f"| {task} | 1k | 6 | 0 / {k} / {6 - k} | {same[task]} | {mean:+.1f} | {p} | {a_s:.1f} / {b_s:.1f} |"
        assert row in table, table
    a_all, b_all = (sum(R.load(f)["scores"][t][str(LENGTH)]["seconds"] for t in TASKS) for f in (out, b))
    assert f"| all compared cells |  | 18 | 0 / {misses} / {18 - misses} | {sum(same.values())} |" in table
    assert f"| {a_all:.1f} / {b_all:.1f} |" in table.split("all compared cells")[1]
    assert sign_test(0, misses) == pytest.approx(2 * 0.5**misses)
    # the other way round: the same counts, mirrored
    assert _load().main([str(b), "--against", str(out)]) == 0
    mirrored = f"| all compared cells |  | 18 | {misses} / 0 / {18 - misses} | {sum(same.values())} |"
    assert mirrored in capsys.readouterr().out


def test_sign_test_against_the_binomial_reference():
    from longctx.evaluate.answers_paired import sign_test

    assert sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0
    assert sign_test(1, 10) == pytest.approx(2 * 12 / 2**11)  # P(X <= 1), n = 11, doubled
    stats = pytest.importorskip("scipy.stats")
    for wins, losses in ((3, 17), (11, 0), (24, 11), (40, 45), (0, 1)):
        want = stats.binomtest(wins, wins + losses, 0.5).pvalue
        assert sign_test(wins, losses) == pytest.approx(want, rel=1e-9)


def test_against_other_samples_compares_nothing(evaluated, tiny_model, tmp_path, capsys):  # noqa: F811
    """B drawn with another seed has other samples: nothing is compared, the cells are named on stderr; B
    without its journal is one line, exit 2."""
    out, _ = evaluated
    b = tmp_path / "seed7" / "ruler.json"
    spec = EvalSpec(model=str(tiny_model), lengths=[LENGTH], tasks=["niah_single_1"], samples=6, out=b, seed=7)
    evaluate_ruler(spec, lm=_echo_lm(), log=lambda s: None)
    capsys.readouterr()
    assert _load().main([str(out), "--against", str(b), "--tasks", "niah_single_1"]) == 0
    got = capsys.readouterr()
    assert "| niah_single_1 | 1k | 6 |" not in got.out.split("Sample by sample")[1]
    assert "not compared (not in both, or other samples): niah_single_1 @ 1k" in got.err
    journal_path(b).unlink()
    assert _load().main([str(out), "--against", str(b)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "longctx answers: error:" in ln]
    assert len(err) == 1 and "journal" in err[0]


def test_lengths_past_the_models_config_are_read_back(evaluated, tiny_model, tmp_path):  # noqa: F811
    """`longctx eval` evaluates past max_position_embeddings (it sets max_length itself); reading those answers
    back must not stop at the config's length."""
    import shutil

    out, _ = evaluated
    short = tmp_path / "short"
    shutil.copytree(tiny_model, short)
    cfg = json.loads((short / "config.json").read_text())
    cfg["max_position_embeddings"] = 256
    (short / "config.json").write_text(json.dumps(cfg))
    dump, again = tmp_path / "short.json", tmp_path / "model.json"
    assert _load().main([str(out), "--tokenizer", str(short), "--json", str(dump)]) == 0
    assert _load().main([str(out), "--json", str(again)]) == 0
    assert json.loads(dump.read_text()) == json.loads(again.read_text()) != []
