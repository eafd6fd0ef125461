"""`longctx summary` (longctx.train.summary_cmd): run labels and the probe learning-curve plot, on crafted metrics."""

import json

from longctx.cli import main as cli_main
from longctx.train import summary_cmd as rs


def _rows(probe_every=2, steps=6):
    rows = []
    for step in range(1, steps + 1):
        r = {
            "step": step,
            "stage": "pretrain",
            "seq_len": 64,
            "loss": 5.0 / step,
            "tokens": 128 * step,
            "tokens_per_s": 1000.0,
            "step_time_s": 0.1,
        }
        if step % probe_every == 0:
            r.update(
                {
                    "probe/niah_single_1@512": 10.0 * step,
                    "probe/niah_single_1@1024": 5.0 * step,
                    "probe/own_kv@1024": 1.0 * step,
                    "probe/mean": 0.0,
                    "probe/nll_mean": 3.0 / step,
                    "probe/nll/own_kv@1024": 9.0,
                }
            )
        rows.append(r)
    return rows


def test_labels_are_the_shortest_unique_suffixes(tmp_path):
    runs = [
        tmp_path / "s" / "hybrid" / "base",
        tmp_path / "own" / "hybrid" / "base",
        tmp_path / "t" / "transformer" / "base",
        tmp_path / "yarn",
    ]
    assert rs.labels([str(r) for r in runs]) == ["s/hybrid/base", "own/hybrid/base", "transformer/base", "yarn"]


def test_probe_series_takes_each_task_at_its_longest_length():
    series = rs.probe_series(_rows())
    assert list(series) == ["probe/niah_single_1@1024", "probe/own_kv@1024", "probe/nll_mean"]
    assert series["probe/niah_single_1@1024"] == [(256, 10.0), (512, 20.0), (768, 30.0)]
    assert series["probe/nll_mean"] == [(256, 1.5), (512, 0.75), (768, 0.5)]


def test_plot_probe_cli(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()))
    png = tmp_path / "curves.png"
    assert cli_main(["summary", str(tmp_path / "a"), str(tmp_path / "b"), "--plot-probe", str(png)]) == 0
    assert png.stat().st_size > 10_000
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.jsonl").write_text(json.dumps(_rows()[0]))
    assert cli_main(["summary", str(tmp_path / "c"), "--plot-probe", str(tmp_path / "none.png")]) == 2
    assert "no probe/* metrics" in capsys.readouterr().err and not (tmp_path / "none.png").exists()
