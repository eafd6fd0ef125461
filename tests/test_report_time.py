"""`longctx compare --time`: per results file and length, the seconds of the timed cells and samples/s."""

from longctx import results as R
from longctx.cli import main


def _timed(tmp_path, name, backend, seconds_by_length, untimed=()):
    """Every task scored at each length; each cell timed at seconds_by_length[n] / 13, except `untimed` tasks."""
    r = R.new_results(model=name, rope_parameters=None, tasks=list(R.RULER_TASKS), lengths=list(seconds_by_length),
                      backend=backend, chat_template=False, samples=4, haystack="essays", lm_eval_version="0.4.13",
                      label=name)  # fmt: skip
    for n, total in seconds_by_length.items():
        for t in R.RULER_TASKS:
            R.set_score(r, t, n, 50.0, 4, seconds=None if t in untimed else total / 13)
    path = tmp_path / f"{name}.json"
    R.save(r, path)
    return str(path)


def test_seconds_and_samples_per_second_side_by_side(tmp_path, capsys):
    a = _timed(tmp_path, "ours", "longctx", {4096: 13.0, 16384: 52.0})
    b = _timed(tmp_path, "theirs", "vllm", {4096: 26.0, 16384: 104.0}, untimed=("ruler_cwe",))
    assert main(["compare", a, b, "--time"]) == 0
    table = capsys.readouterr().out.split("| run | backend |")[1]
    # 13 cells x 4 samples = 52 samples a length
    assert "| ours | longctx | 13.0 s (4.00/s) | 52.0 s (1.00/s) | 65.0 s (1.60/s) |" in table
    # ruler_cwe untimed: 12 cells, 48 samples, marked
    assert "| theirs | vllm | 24.0 s (2.00/s)* | 96.0 s (0.50/s)* | 120.0 s (0.80/s)* |" in table
    assert main(["compare", a, b, "--time", "--tasks", "niah_single_1,cwe"]) == 0  # the means' tasks, here too
    table = capsys.readouterr().out.split("| run | backend |")[1]
    assert "| ours | longctx | 2.0 s (4.00/s) | 8.0 s (1.00/s) | 10.0 s (1.60/s) |" in table
    assert "| theirs | vllm | 2.0 s (2.00/s)* |" in table and "Means over 2 tasks" in table


def test_results_without_times_show_nothing_measured(tmp_path, capsys):
    old = _timed(tmp_path, "old", "hf", {4096: 1.0}, untimed=R.RULER_TASKS)
    assert main(["compare", old, "--time"]) == 0
    assert "| old | hf | — | — |" in capsys.readouterr().out
