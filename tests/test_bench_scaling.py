"""bench/scaling.py: layouts, the commands it prepares, the table's arithmetic, and one CPU run
(gloo) where cp=2 through the CLI logs the same losses as one process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("scaling", REPO / "bench" / "scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


scaling = _load()


def test_parse_layouts():
    assert scaling.parse_layouts("1x1, 2X4,4x2") == [(1, 1), (2, 4), (4, 2)]
    for bad in ("2x", "0x2", "a", ""):
        with pytest.raises(SystemExit):
            scaling.parse_layouts(bad)


def test_dry_run_prepares_one_torchrun_per_layout(tmp_path, capsys):
    assert (
        scaling.main(
            [
                "--base",
                "runs/base",
                "--target",
                "131072",
                "--layouts",
                "1x1,2x4,4x2",
                "--batch-size",
                "4",
                "--steps",
                "50",
                "--out",
                str(tmp_path),
                "--dry-run",
                "--",
                "--set",
                "lr=1e-5",
            ]
        )
        == 0
    )
    cmds = [line[2:].split() for line in capsys.readouterr().err.splitlines() if line.startswith("$ ")]
    assert len(cmds) == 3
    assert "torch.distributed.run" not in cmds[0] and "--dp" not in cmds[0]
    for cmd, (d, c) in zip(cmds[1:], ((2, 4), (4, 2)), strict=True):
        assert cmd[cmd.index("--nproc-per-node") + 1] == "8"
        assert cmd[cmd.index("--dp") + 1] == str(d) and cmd[cmd.index("--cp") + 1] == str(c)
        assert cmd[cmd.index("--target") + 1] == "131072" and cmd[cmd.index("--batch-size") + 1] == "4"
        assert cmd[-2:] == ["--set", "lr=1e-5"] and "--grad-checkpointing" in cmd


def test_a_stopped_layout_resumes_from_its_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "d1c2" / "checkpoints" / "step_3"  # what a layout stopped by SIGTERM leaves
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text("{}")
    assert (
        scaling.main(["--base", "b", "--target", "8192", "--layouts", "1x1,1x2", "--out", str(tmp_path), "--dry-run"])
        == 0
    )
    cmds = [line[2:].split() for line in capsys.readouterr().err.splitlines() if line.startswith("$ ")]
    assert "--force" in cmds[0] and "--resume" not in cmds[0]
    assert "--resume" in cmds[1] and "--force" not in cmds[1]


def test_batch_not_divisible_by_dp_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        scaling.main(
            [
                "--base",
                "b",
                "--target",
                "8192",
                "--layouts",
                "1x1,4x2",
                "--batch-size",
                "2",
                "--out",
                str(tmp_path),
                "--dry-run",
            ]
        )
    assert e.value.code == 2 and "--batch-size 2: not divisible by the dp degree of 4x2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_table_efficiency_and_loss_gap():
    def run(n_gpus_tok_s, losses):
        rows = [
            {
                "step": i + 1,
                "stage": "target",
                "seq_len": 1024,
                "loss": loss,
                "tokens": 1024 * (i + 1),
                "tokens_per_s": n_gpus_tok_s,
                "mfu": 0.2,
            }
            for i, loss in enumerate(losses)
        ]
        from longctx.train.metrics import summarize

        return {"status": "ok", "rows": rows, "stages": summarize(rows, skip=0)}

    results = {
        "d1c1": run(1000.0, [3.0, 2.5, 2.0]),
        "d1c2": run(1800.0, [3.0, 2.51, 2.0]),
        "d2c2": {"status": "OOM", "rows": [], "stages": []},
    }
    table = scaling.summarise([(1, 1), (1, 2), (2, 2)], results)
    assert table[0]["efficiency"] == 1.0 and table[0]["max_loss_gap"] == 0.0
    assert table[1]["tokens_per_s_per_gpu"] == 900.0 and table[1]["efficiency"] == pytest.approx(0.9)
    assert table[1]["max_loss_gap"] == pytest.approx(0.01)
    assert table[2]["status"] == "OOM" and "efficiency" not in table[2]
    assert "| 2x2 | 4 |" in scaling.markdown(table)


def test_cpu_run_cp2_matches_one_process(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "bench" / "scaling.py"),
        "--config",
        "hybrid-tiny",
        "--target",
        "256",
        "--base-seq-len",
        "64",
        "--layouts",
        "1x1,1x2",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        "--",
        "--set",
        "optimizer.eps=1e-3",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    table = json.loads((tmp_path / "scaling.json").read_text())["table"]
    assert [r["status"] for r in table] == ["ok", "ok"]
    assert table[1]["seq_len"] == 256 and table[1]["gpus"] == 2
    # same global batch and data: the losses agree up to the order of fp32 reductions
    assert table[1]["max_loss_gap"] < 1e-4
    # rerunning the same command reuses the finished layouts: nothing is trained (or logged) again
    logs = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.log")}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and len(logs) == 2
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.log")} == logs
    assert json.loads((tmp_path / "scaling.json").read_text())["table"] == table


# a stand-in for one layout's launcher: reports SIGTERM in its log and exits as the trainer does
LAYOUT = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda s, f: (print('got', s, flush=True), sys.exit(128 + s)))\n"
    "print('running', flush=True)\n"
    "time.sleep(60)\n"
)
DRIVER = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('scaling', sys.argv[1])\n"
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
    "m.run_logged([sys.executable, '-c', sys.argv[2]], m.Path(sys.argv[3]))\n"
)


def _start_driver(tmp_path):
    import os
    import time

    log = tmp_path / "layout.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(REPO / "bench" / "scaling.py"), LAYOUT, str(log)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while not (log.exists() and "running" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    assert "running" in log.read_text()
    return proc, log


def _wait_for(log, text, seconds=15):
    import time

    deadline = time.time() + seconds
    while text not in log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    return log.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and prctl: Linux")
def test_sigterm_is_passed_to_the_layout_and_waited_for(tmp_path):
    import signal

    proc, log = _start_driver(tmp_path)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert f"got {int(signal.SIGTERM)}" in log.read_text()  # the layout was told, and finished before the script
    assert rc == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in proc.stderr.read()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and prctl: Linux")
def test_a_killed_script_leaves_no_layout_running(tmp_path):
    import signal

    proc, log = _start_driver(tmp_path)
    proc.kill()  # SIGKILL: nothing can be passed on; the kernel's parent-death signal must do it
    proc.wait()
    assert f"got {int(signal.SIGTERM)}" in _wait_for(log, "got")


def test_lengths_as_users_write_them_and_bad_flags_exit_2(tmp_path, capsys):
    args = ["--base", "b", "--layouts", "1x1", "--out", str(tmp_path), "--dry-run"]
    assert scaling.main([*args, "--target", "128k", "--base-seq-len", "4k"]) == 0
    cmd = next(line[2:].split() for line in capsys.readouterr().err.splitlines() if line.startswith("$ "))
    assert cmd[cmd.index("--target") + 1] == "131072"
    for bad in ("64q", "0", "-5"):
        with pytest.raises(SystemExit) as e:
            scaling.main([*args, "--target", bad])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and f"error: argument --target: '{bad}': give a positive token count" in err
