"""scripts/collect_study.py: a lane's study folder into docs under docs/study-20m's names, with retrainings checked
step by step against the committed metrics (a committed run retrained from its seed, cut short as a lost machine
leaves it, reads exact; one changed loss is named by its step and fails the collection)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "collect_study.py"
COMMITTED = ROOT / "docs" / "study-20m" / "budget" / "hybrid-s0-base.metrics.jsonl"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def _study(tmp_path, metrics_lines):
    src = tmp_path / "w" / "budget"
    base, recal = src / "hybrid-s0" / "base", src / "hybrid-s0" / "drope-recal-360steps"
    for d in (base, recal, src / "configs", src / "logs" / "x"):
        d.mkdir(parents=True)
    (base / "metrics.jsonl").write_text("".join(metrics_lines))
    (base / "gate.json").write_text('{"scores": {}}')
    (base / "model.safetensors").write_bytes(b"weights stay out")
    (recal / "ruler.json").write_text('{"scores": {"x": 1}}')
    (recal / "ruler.json.partial.jsonl").write_text('{"answer": 1}\n')
    (recal / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
    return src


def test_collects_under_docs_names_and_reads_a_cut_short_retraining_as_exact(tmp_path):
    committed = COMMITTED.read_text().splitlines(keepends=True)
    src = _study(tmp_path, committed[:1731])  # what came back of a lease whose machine was taken back
    dest = tmp_path / "docs"
    dest.mkdir()
    shutil.copyfile(COMMITTED, dest / "hybrid-s0-base.metrics.jsonl")
    dry = _run(src, dest, "--dry-run")
    assert dry.returncode == 0 and "would copy  hybrid-s0-drope-recal-360steps.ruler.json" in dry.stdout
    assert sorted(p.name for p in dest.iterdir()) == ["hybrid-s0-base.metrics.jsonl"]
    run = _run(src, dest)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "kept    hybrid-s0-base.metrics.jsonl (retraining exact over 1731 steps (1731 new, 1800 kept))" in run.stdout
    assert sorted(p.name for p in dest.iterdir()) == [
        "hybrid-s0-base.gate.json",
        "hybrid-s0-base.metrics.jsonl",
        "hybrid-s0-drope-recal-360steps.metrics.jsonl",
        "hybrid-s0-drope-recal-360steps.ruler.json",
        "hybrid-s0-drope-recal-360steps.ruler.json.partial.jsonl",
    ]
    assert (dest / "hybrid-s0-base.metrics.jsonl").read_text() == COMMITTED.read_text()  # kept, not replaced


def test_a_changed_loss_is_named_by_its_step_and_fails(tmp_path):
    committed = COMMITTED.read_text().splitlines(keepends=True)
    row = json.loads(committed[99])
    row["loss"] += 1e-9
    src = _study(tmp_path, committed[:99] + [json.dumps(row) + "\n"] + committed[100:])
    dest = tmp_path / "docs"
    dest.mkdir()
    shutil.copyfile(COMMITTED, dest / "hybrid-s0-base.metrics.jsonl")
    run = _run(src, dest, "--overwrite")
    assert run.returncode == 1 and f"differs from step {row['step']}" in run.stdout, run.stdout
    assert _run(tmp_path / "nowhere", dest).returncode == 2
