"""`longctx compare` and longctx.report on two crafted results files."""

import csv
import io

import pytest

from longctx import results as R
from longctx.cli import main

T = R.RULER_TASKS
YARN = {"rope_type": "yarn", "factor": 8.0, "rope_theta": 5e5, "original_max_position_embeddings": 8192}


def _run(model, rope, lengths):
    return R.new_results(
        model=model,
        rope_parameters=rope,
        tasks=list(T),
        lengths=lengths,
        backend="hf",
        chat_template=False,
        samples=2,
        haystack="essays",
        lm_eval_version="0.4.13",
    )


@pytest.fixture
def files(tmp_path):
    # Run A: all 13 tasks at 4k; at 8k ruler_qa_squad is unavailable.
    a = _run("runs/yarn-64k", YARN, [4096, 8192])
    for t, s in zip(T, [100] * 8 + [90, 80, 70, 60, 50], strict=True):
        R.set_score(a, t, 4096, s, 2)
    for t, s in zip(T, [50] * 8 + [40, 30, 20, None, 10], strict=True):
        if s is None:
            R.set_unavailable(a, t, 8192, "data unavailable offline")
        else:
            R.set_score(a, t, 8192, s, 2)
    # Run B: no RoPE (DRoPE), only 4k ran; 8k is a missing length.
    b = _run("/abs/runs/drope-64k/", None, [4096])
    for t in T:
        R.set_score(b, t, 4096, 83.0 if t == "ruler_cwe" else 70.0, 2)
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    R.save(a, pa)
    R.save(b, pb)
    return pa, pb


# A 4k: (8*100 + 90+80+70+60+50)/13 = 1150/13 = 88.46;  A 8k: (8*50 + 40+30+20+10)/12 = 500/12 = 41.67
# A avg: (88.46+41.67)/2 = 65.06;  B 4k: (12*70 + 83)/13 = 923/13 = 71.0;  B avg: 71.0 over 4k only.
EXPECTED = """\
| model (method) | 4k | 8k | avg |
|:---|---:|---:|---:|
| yarn-64k (yarn) | 88.5 | 41.7* | 65.1* |
| drope-64k (drope) | 71.0 | — | 71.0* |

\\* mean over the tasks and lengths that ran, not all 13 tasks:
- yarn-64k (yarn) 8k: 12/13 tasks; unavailable: ruler_qa_squad
- drope-64k (drope) 8k: no results
"""


def test_compare_table_exact(files, capsys):
    assert main(["compare", *map(str, files)]) == 0
    assert capsys.readouterr().out == EXPECTED


def test_summary_numbers(files):
    from longctx import report

    rows = report.summary([R.load(f) for f in files])
    assert rows[0].cells[4096].mean == pytest.approx(1150 / 13)
    assert rows[0].cells[8192].mean == pytest.approx(500 / 12)
    assert rows[0].cells[8192].unavailable == ["ruler_qa_squad"] and rows[0].cells[8192].missing == []
    assert rows[0].average == pytest.approx((1150 / 13 + 500 / 12) / 2)
    assert rows[1].cells[8192].mean is None and rows[1].average == pytest.approx(923 / 13)
    assert not rows[0].cells[4096].partial and rows[0].average_partial and rows[1].average_partial


def test_per_task_tables(files, capsys):
    assert main(["compare", "--per-task", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(EXPECTED)
    eight = out.split("### 8k")[1]
    assert "| ruler_qa_squad | n/a | — |" in eight and "| ruler_cwe | 30.0 | — |" in eight
    assert "| mean | 41.7* | — |" in eight
    four = out.split("### 4k")[1].split("### 8k")[0]
    assert "| ruler_cwe | 80.0 | 83.0 |" in four and "| mean | 88.5 | 71.0 |" in four

    assert main(["compare", *map(str, files), "--per-task", "--per-task-by", "run"]) == 0
    by_run = capsys.readouterr().out
    assert "### drope-64k (drope)" in by_run and "| ruler_cwe | 83.0 | — |" in by_run.split("### drope-64k")[1]


def test_csv(files, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["compare", *map(str, files), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 2 * 2 * (13 + 1)  # runs x lengths x (tasks + mean)
    by = {(r["run"], r["length"], r["task"]): r for r in rows}
    m = by[("yarn-64k (yarn)", "8192", "mean")]
    assert float(m["score"]) == pytest.approx(500 / 12, abs=1e-4) and m["status"] == "partial"
    assert by[("yarn-64k (yarn)", "4096", "mean")]["status"] == "ok"
    assert by[("yarn-64k (yarn)", "8192", "ruler_qa_squad")]["status"] == "unavailable"
    assert by[("yarn-64k (yarn)", "4096", "ruler_vt")]["score"] == "90.0000"
    assert by[("drope-64k (drope)", "8192", "niah_single_1")]["status"] == "missing"
    assert by[("drope-64k (drope)", "8192", "mean")]["score"] == ""
    assert by[("drope-64k (drope)", "4096", "ruler_cwe")]["method"] == "drope"


def test_plot_png(files, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "ruler.png"
    assert main(["compare", *map(str, files), "--plot", str(png)]) == 0
    img = Image.open(png).convert("RGB")
    assert img.size == (840, 540)  # figsize 7x4.5 at 120 dpi
    colors = img.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50  # text, grid, lines: not a blank canvas
    present = {c for _, c in colors}
    assert (31, 119, 180) in present and (255, 127, 14) in present  # one line per run (C0, C1)


def test_a_long_legend_goes_right_of_the_axes(files, tmp_path, capsys):
    """Seven runs or more (the study's ten): the legend sits outside the axes instead of over the lines."""
    from PIL import Image

    from longctx.report import LEGEND_INSIDE_MAX

    runs = []
    for i in range(LEGEND_INSIDE_MAX + 1):
        r = R.load(files[0])
        r["label"] = f"run {i}"
        R.save(r, tmp_path / f"r{i}.json")
        runs.append(str(tmp_path / f"r{i}.json"))
    png = tmp_path / "ruler.png"
    assert main(["compare", *runs, "--plot", str(png)]) == 0
    img = Image.open(png).convert("RGB")
    assert img.size == (1140, 540)  # figsize 9.5x4.5 at 120 dpi: room for the legend
    strip = img.crop((int(img.size[0] * 0.85), 0, img.size[0], img.size[1]))
    present = {c for _, c in strip.getcolors(maxcolors=1 << 20)}
    assert (31, 119, 180) in present and (255, 127, 14) in present  # the legend's line samples are out there


def test_bad_inputs_are_usage_errors(files, tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json" in err[0] and "does not exist" in err[0]

    other = tmp_path / "other.json"
    other.write_text('{"results": {}}')
    assert main(["compare", str(files[0]), str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.json" in err[0] and "format" in err[0]

    garbage = tmp_path / "g.json"
    garbage.write_text("{not json")
    assert main(["compare", str(garbage)]) == 2
    assert "not a results JSON" in capsys.readouterr().err

    out_csv = tmp_path / "missing-dir" / "x.csv"
    assert main(["compare", str(files[0]), "--csv", str(out_csv)]) == 2
    assert not out_csv.parent.exists()
    assert capsys.readouterr().out == ""  # nothing printed before validation finished


def test_plot_points_leave_lengths_with_missing_tasks_out_of_the_line(files):
    """A length where some task never ran is drawn hollow and not joined: its mean covers fewer
    tasks. Unavailable tasks (A at 8k) do not count as missing."""
    from longctx.report import plot_points

    a, b = R.load(files[0]), R.load(files[1])
    del a["scores"]["ruler_vt"]["8192"]  # cut short: one task missing at 8k
    R.set_score(b, "niah_single_1", 8192, 100.0, 2)  # B at 8k: one task of 13 ran
    pts = dict((label, (joined, hollow)) for label, joined, hollow in plot_points([a, b]))
    (ja, ha), (jb, hb) = pts["yarn-64k (yarn)"], pts["drope-64k (drope)"]
    assert ja == [(4096, pytest.approx(1150 / 13))] and ha == [
        (8192, pytest.approx(460 / 11))
    ]  # 8*50 + 30+20+10 over 11
    assert jb == [(4096, pytest.approx((12 * 70 + 83) / 13))] and hb == [(8192, 100.0)]
    a2 = R.load(files[0])  # unchanged A: 8k has an unavailable task only, so it stays on the line
    assert [n for n, _ in plot_points([a2])[0][1]] == [4096, 8192]


def test_plot_styles_color_per_method_line_per_model_family(files):
    """The study's layout <out>/<family>/<variant>: hybrid yarn and transformer yarn share a color and
    differ in line style; one family, or a (family, variant) twice: a color per run, solid lines."""
    from longctx.report import plot_styles

    def run(model):
        r = R.load(files[0])
        r["model"] = model
        return r

    study = [run(f"/s/{f}/{v}") for f in ("hybrid", "transformer") for v in ("base", "yarn", "drope")]
    styles = plot_styles(study)
    by = {(r["model"].split("/")[2], r["model"].split("/")[3]): s for r, s in zip(study, styles, strict=True)}
    for v in ("base", "yarn", "drope"):
        assert by[("hybrid", v)]["color"] == by[("transformer", v)]["color"]
        assert by[("hybrid", v)]["linestyle"] != by[("transformer", v)]["linestyle"]
        assert by[("hybrid", v)]["marker"] != by[("transformer", v)]["marker"]
    assert len({by[("hybrid", v)]["color"] for v in ("base", "yarn", "drope")}) == 3
    assert {s["linestyle"] for s in styles[:3]} == {"-"}

    flat = [run("/abs/runs/yarn-64k/"), run("/abs/runs/drope-64k")]  # one family: as before
    assert plot_styles(flat) == [
        {"color": "C0", "linestyle": "-", "marker": "o"},
        {"color": "C1", "linestyle": "-", "marker": "o"},
    ]
    twice = [run("/s/hybrid/yarn"), run("/s/hybrid/yarn/"), run("/s/transformer/yarn")]  # same dir twice
    assert [s["color"] for s in plot_styles(twice)] == ["C0", "C1", "C2"]


def test_footnotes_merge_adjacent_lengths_with_one_reason(tmp_path, capsys):
    # 4k, 8k, 16k lack ruler_qa_squad; 32k has every task; 64k lacks it again; 128k is not run.
    lengths = [4096, 8192, 16384, 32768, 65536, 131072]
    r = _run("runs/m", YARN, lengths)
    for n in lengths[:-1]:
        for t in T:
            if t == "ruler_qa_squad" and n != 32768:
                R.set_unavailable(r, t, n, "offline")
            else:
                R.set_score(r, t, n, 50, 2)
    R.save(r, tmp_path / "r.json")
    assert main(["compare", str(tmp_path / "r.json")]) == 0
    notes = [x for x in capsys.readouterr().out.splitlines() if x.startswith("- ")]
    assert notes == [
        "- m (yarn) 4k–16k: 12/13 tasks; unavailable: ruler_qa_squad",
        "- m (yarn) 64k: 12/13 tasks; unavailable: ruler_qa_squad",
        "- m (yarn) 128k: no results",
    ]


def test_cells_an_evaluation_left_unfinished_are_named_apart(tmp_path, capsys):
    """`longctx eval --finished-only` cells: not in the mean, footnoted as not finished (not as data that is
    unavailable), `cut` in the per-task table, status `unfinished` in the CSV."""
    r = _run("runs/m", YARN, [4096])
    for i, t in enumerate(T):
        if t == "ruler_qa_squad":
            R.set_unavailable(r, t, 4096, "offline")
        elif t in ("ruler_cwe", "ruler_fwe"):
            R.set_unavailable(r, t, 4096, R.NOT_FINISHED)
        else:
            R.set_score(r, t, 4096, 5 * i, 2)
    R.save(r, tmp_path / "r.json")
    assert main(["compare", str(tmp_path / "r.json"), "--per-task", "--csv", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    scored = [5 * i for i, t in enumerate(T) if t not in ("ruler_qa_squad", "ruler_cwe", "ruler_fwe")]
    assert f"| m (yarn) | {sum(scored) / len(scored):.1f}* |" in out
    assert "- m (yarn) 4k: 10/13 tasks; unavailable: ruler_qa_squad; not finished: ruler_cwe, ruler_fwe" in out
    assert "| ruler_cwe | cut |" in out and "| ruler_qa_squad | n/a |" in out and "cut: not finished" in out
    rows = {x["task"]: x["status"] for x in csv.DictReader(open(tmp_path / "r.csv"))}
    assert rows["ruler_cwe"] == "unfinished" and rows["ruler_qa_squad"] == "unavailable"


def test_tasks_narrow_every_mean(tmp_path, capsys):
    """compare --tasks: the means, footnotes, per-task tables and CSV over those tasks alone."""
    r = _run("runs/m", YARN, [4096])
    for i, t in enumerate(T):
        if t == "ruler_cwe":
            R.set_unavailable(r, t, 4096, R.NOT_FINISHED)
        else:
            R.set_score(r, t, 4096, 5 * i, 2)
    R.save(r, tmp_path / "r.json")
    sub = ["niah_single_1", "ruler_vt", "ruler_cwe"]
    argv = ["compare", str(tmp_path / "r.json"), "--tasks", "vt,cwe,niah_single_1", "--per-task", "--csv",
            str(tmp_path / "r.csv")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    want = (5 * T.index("niah_single_1") + 5 * T.index("ruler_vt")) / 2
    assert f"| m (yarn) | {want:.1f}* | {want:.1f}* |" in out
    assert "- m (yarn) 4k: 2/3 tasks; not finished: ruler_cwe" in out
    assert f"Means over 3 tasks (--tasks): {', '.join(t for t in T if t in sub)}." in out
    assert "| niah_multikey_1 |" not in out and "| ruler_vt |" in out and "cut: not finished" in out
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert {x["task"] for x in rows} == {*sub, "mean"}
    assert main(["compare", str(tmp_path / "r.json")]) == 0  # the 13 tasks again
    assert "Means over" not in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "r.json"), "--tasks", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    # the legend names `cut` only where the tables show one
    assert main(["compare", str(tmp_path / "r.json"), "--per-task", "--tasks", "vt,niah_single_1"]) == 0
    assert "cut: not finished" not in capsys.readouterr().out
