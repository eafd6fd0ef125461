"""`longctx compare` on runs that share a label (a study's pretraining seeds): one row per label, the
mean over the runs with their min–max range; --no-group keeps a row per run. Expected numbers are
computed here from the scores put in, independently of longctx.report."""

import csv
import io
from statistics import fmean

import pytest

from longctx import results as R
from longctx.cli import main

T = R.RULER_TASKS
YARN = {"rope_type": "yarn", "factor": 8.0, "rope_theta": 5e5, "original_max_position_embeddings": 8192}
LENGTHS = [4096, 8192]


def _scores(seed, length):
    """Per-task scores of seed `seed` at `length`: different per seed, task and length."""
    base = {4096: 80.0, 8192: 40.0}[length] + 3.7 * seed
    return [min(100.0, base + 1.3 * j - (5.0 if j % 3 == seed % 3 else 0.0)) for j in range(len(T))]


def _run(model, label, lengths=LENGTHS, seed=0):
    r = R.new_results(
        model=model,
        rope_parameters=YARN,
        tasks=list(T),
        lengths=lengths,
        backend="hf",
        chat_template=False,
        samples=2,
        haystack="essays",
        lm_eval_version="0.4.13",
        label=label,
    )
    for n in lengths:
        for t, s in zip(T, _scores(seed, n), strict=True):
            R.set_score(r, t, n, s, 2)
    return r


def _save(tmp_path, runs):
    paths = []
    for i, r in enumerate(runs):
        p = tmp_path / f"r{i}" / "ruler.json"
        p.parent.mkdir()
        R.save(r, p)
        paths.append(str(p))
    return paths


def _mmm(values):
    return f"{fmean(values):.1f} ({min(values):.1f}–{max(values):.1f})"


SEEDS = (0, 1, 2)


@pytest.fixture
def seeds(tmp_path):
    """Three pretraining seeds of hybrid yarn (one label) and one transformer yarn run."""
    runs = [_run(f"/s/hybrid-s{s}/yarn", "hybrid yarn", seed=s) for s in SEEDS]
    runs.append(_run("/s/transformer-s0/yarn", "transformer yarn", seed=5))
    return _save(tmp_path, runs)


def _row(out, label):
    [line] = [ln for ln in out.splitlines() if ln.startswith(f"| {label} |")]
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_runs_sharing_a_label_form_one_row_mean_and_range(seeds, capsys):
    assert main(["compare", *seeds]) == 0
    out = capsys.readouterr().out
    per_run = {n: [fmean(_scores(s, n)) for s in SEEDS] for n in LENGTHS}
    avgs = [fmean([per_run[4096][i], per_run[8192][i]]) for i in range(len(SEEDS))]  # each run's own avg
    assert _row(out, "hybrid yarn (n=3)") == [_mmm(per_run[4096]), _mmm(per_run[8192]), _mmm(avgs)]
    single = [fmean(_scores(5, n)) for n in LENGTHS]
    assert _row(out, "transformer yarn") == [f"{single[0]:.1f}", f"{single[1]:.1f}", f"{fmean(single):.1f}"]
    assert "hybrid yarn [" not in out and out.count("| hybrid yarn") == 1
    assert "n runs: mean (min–max)" in out
    assert "\\*" not in out  # every task ran: nothing partial


def test_no_group_keeps_a_numbered_row_per_run(seeds, capsys):
    assert main(["compare", "--no-group", *seeds]) == 0
    out = capsys.readouterr().out
    for i, s in enumerate(SEEDS):
        per = [fmean(_scores(s, n)) for n in LENGTHS]
        assert _row(out, f"hybrid yarn [{i + 1}]") == [f"{per[0]:.1f}", f"{per[1]:.1f}", f"{fmean(per):.1f}"]
    assert "(n=" not in out and "–" not in out and "min–max" not in out


def test_single_runs_are_unchanged_by_grouping(seeds):
    from longctx import report

    runs = [R.load(p) for p in seeds]
    one_each = [runs[0], runs[3]]
    assert report.markdown_table(one_each) == report.markdown_table(one_each, group=False)
    assert report.per_task_markdown(one_each) == report.per_task_markdown(one_each, group=False)
    assert "(n=" not in report.markdown_table(one_each) and "min–max" not in report.markdown_table(one_each)


def test_partial_group_cells_keep_their_marker_and_the_avg_is_the_mean_of_the_runs_averages(tmp_path, capsys):
    """Seed 1 has ruler_cwe unavailable at 8k; seed 2 never ran 8k. The group's 8k covers 2 of 3 runs,
    the avg is the mean of the three runs' own averages (seed 2's: its 4k alone)."""
    runs = [_run(f"/s/hybrid-s{s}/yarn", "hybrid yarn", seed=s) for s in (0, 1)]
    R.set_unavailable(runs[1], "ruler_cwe", 8192, "data unavailable offline")
    runs.append(_run("/s/hybrid-s2/yarn", "hybrid yarn", lengths=[4096], seed=2))
    assert main(["compare", *_save(tmp_path, runs)]) == 0
    out = capsys.readouterr().out
    cwe = T.index("ruler_cwe")
    s1_8k = fmean(s for j, s in enumerate(_scores(1, 8192)) if j != cwe)
    four = [fmean(_scores(s, 4096)) for s in (0, 1, 2)]
    eight = [fmean(_scores(0, 8192)), s1_8k]
    avgs = [fmean([four[0], eight[0]]), fmean([four[1], eight[1]]), four[2]]
    m8 = f"{fmean(eight):.1f}* ({min(eight):.1f}–{max(eight):.1f})"
    ma = f"{fmean(avgs):.1f}* ({min(avgs):.1f}–{max(avgs):.1f})"
    assert _row(out, "hybrid yarn (n=3)") == [_mmm(four), m8, ma]
    assert "- hybrid yarn (n=3) 8k: 2/3 runs; 12–13/13 tasks; unavailable: ruler_cwe" in out


def test_per_task_tables_group_too(seeds, capsys):
    assert main(["compare", "--per-task", *seeds]) == 0
    out = capsys.readouterr().out
    eight = out.split("### 8k")[1]
    j = T.index("ruler_vt")
    vt = [_scores(s, 8192)[j] for s in SEEDS]
    assert f"| ruler_vt | {_mmm(vt)} | {_scores(5, 8192)[j]:.1f} |" in eight
    means = [fmean(_scores(s, 8192)) for s in SEEDS]
    assert f"| mean | {_mmm(means)} | {fmean(_scores(5, 8192)):.1f} |" in eight
    assert "| task | hybrid yarn (n=3) | transformer yarn |" in eight

    assert main(["compare", "--per-task", "--per-task-by", "run", *seeds]) == 0
    by_run = capsys.readouterr().out
    mine = by_run.split("### hybrid yarn (n=3)")[1].split("###")[0]
    vt4 = [_scores(s, 4096)[j] for s in SEEDS]
    assert f"| ruler_vt | {_mmm(vt4)} | {_mmm(vt)} |" in mine

    assert main(["compare", "--per-task", "--no-group", *seeds]) == 0
    assert (
        "| task | hybrid yarn [1] | hybrid yarn [2] | hybrid yarn [3] | transformer yarn |" in capsys.readouterr().out
    )


def test_per_task_group_cell_a_task_not_every_run_scored(tmp_path, capsys):
    runs = [_run(f"/s/hybrid-s{s}/yarn", "hybrid yarn", seed=s) for s in SEEDS]
    for r in runs[1:]:
        R.set_unavailable(r, "ruler_cwe", 8192, "data unavailable offline")
    del runs[2]["scores"]["ruler_vt"]["8192"]
    assert main(["compare", "--per-task", *_save(tmp_path, runs)]) == 0
    eight = capsys.readouterr().out.split("### 8k")[1]
    cwe = _scores(0, 8192)[T.index("ruler_cwe")]
    assert f"| ruler_cwe | {cwe:.1f}* |" in eight  # one of three runs scored it: no range
    vt = [_scores(s, 8192)[T.index("ruler_vt")] for s in (0, 1)]
    assert f"| ruler_vt | {fmean(vt):.1f}* ({min(vt):.1f}–{max(vt):.1f}) |" in eight


def test_csv_keeps_a_row_per_run_with_the_shared_label_and_its_file(seeds, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["compare", *seeds, "--csv", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0])[-1] == "source" and list(rows[0])[:8] == [
        "run",
        "model",
        "method",
        "length",
        "task",
        "score",
        "samples",
        "status",
    ]
    assert len(rows) == 4 * 2 * (13 + 1)  # runs x lengths x (tasks + mean)
    means = [r for r in rows if r["run"] == "hybrid yarn" and r["task"] == "mean" and r["length"] == "8192"]
    assert [m["source"] for m in means] == seeds[:3]
    assert [m["model"] for m in means] == [f"/s/hybrid-s{s}/yarn" for s in SEEDS]
    assert [float(m["score"]) for m in means] == [pytest.approx(fmean(_scores(s, 8192)), abs=1e-4) for s in SEEDS]

    assert main(["compare", "--no-group", *seeds, "--csv", str(out)]) == 0
    runs = {r["run"] for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert runs == {"hybrid yarn [1]", "hybrid yarn [2]", "hybrid yarn [3]", "transformer yarn"}


def test_plot_draws_a_group_as_its_mean_with_a_band(seeds, tmp_path, capsys):
    from PIL import Image

    from longctx.report import plot_bands

    runs = [R.load(p) for p in seeds]
    bands = dict(plot_bands(runs))
    assert set(bands) == {"hybrid yarn (n=3)", "transformer yarn"}
    want = []
    for n in LENGTHS:
        per = [fmean(_scores(s, n)) for s in SEEDS]
        want.append((n, pytest.approx(fmean(per)), pytest.approx(min(per)), pytest.approx(max(per))))
    assert bands["hybrid yarn (n=3)"] == want
    m = [fmean(_scores(5, n)) for n in LENGTHS]
    assert bands["transformer yarn"] == [
        (n, pytest.approx(x), pytest.approx(x), pytest.approx(x)) for n, x in zip(LENGTHS, m, strict=True)
    ]
    assert [len(p[1]) for p in plot_bands(runs, group=False)] == [2, 2, 2, 2]

    png = tmp_path / "ruler.png"
    assert main(["compare", *seeds, "--plot", str(png)]) == 0
    img = Image.open(png).convert("RGB")
    present = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    # the band: C0 (31, 119, 180) at alpha 0.2 over white
    band = (round(255 - 0.2 * (255 - 31)), round(255 - 0.2 * (255 - 119)), round(255 - 0.2 * (255 - 180)))
    assert any(all(abs(a - b) <= 2 for a, b in zip(c, band, strict=True)) for c in present)
    assert main(["compare", "--no-group", *seeds, "--plot", str(png)]) == 0


def test_plot_styles_strip_the_pretraining_seed_from_the_family(tmp_path):
    """<out>/hybrid-s1/yarn is family hybrid: a group's style comes from its first run, so hybrid yarn and
    transformer yarn share a color as in a single-seed study."""
    from longctx.report import plot_styles

    runs = [
        _run(m, None)
        for m in ("/s/hybrid-s1/yarn", "/s/transformer-s0/yarn", "/s/hybrid-s0/base", "/s/transformer-s1/base")
    ]
    st = plot_styles(runs)
    assert st[0]["color"] == st[1]["color"] != st[2]["color"] == st[3]["color"]
    assert st[0]["linestyle"] != st[1]["linestyle"] and st[0]["linestyle"] == st[2]["linestyle"]
