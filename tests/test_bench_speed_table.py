"""bench/speed_table.py: one table from several train_throughput.json files, ratios only within a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _file(path: Path, args: dict, results: list[dict]) -> Path:
    path.write_text(json.dumps({"meta": {"args": args, "device": "NVIDIA H200"}, "results": results}))
    return path


def _row(impl, tok_s, status="ok", T=16384):
    return {"config": "hybrid-1b", "seq_len": T, "impl": impl, "status": status, "tokens_per_s": tok_s,
            "mfu": tok_s / 130_000 if tok_s else None, "peak_mem_gib": 30.0}  # fmt: skip


def test_table_rows_settings_and_ratios(tmp_path):
    a = _file(
        tmp_path / "a.json",
        {"no_checkpointing": True, "batch": 1},
        [_row("ours", 50_000), _row("peer", 25_000), _row("fla", 40_000)],
    )
    b = _file(tmp_path / "b.json", {"ce": "chunked-fla", "no_checkpointing": True}, [_row("ours", 55_000)])
    c = _file(tmp_path / "c.json", {"docs": 8, "attn_backend": "varlen"}, [_row("ours", None, status="OOM")])
    # `--ce auto` (the default) reads as the kernel it took there
    d = _file(tmp_path / "d.json", {"ce": "auto", "no_checkpointing": True}, [{**_row("ours", 54_000, T=65536),
              "ours_loss_backend": "chunked-fla"}])  # fmt: skip
    out = tmp_path / "t.md"
    cmd = [sys.executable, str(REPO / "bench" / "speed_table.py"), str(a), str(b), str(c), str(d), "--md", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = out.read_text().splitlines()
    body = [line for line in lines if line.startswith("| hybrid-1b")]
    assert len(body) == 6
    assert any("| 65536 | no checkpointing, batch 1, bf16, ce chunked-fla | ours | 54,000 |" in line for line in body)
    ours = next(line for line in body if "no checkpointing, batch 1, bf16 | ours" in line)
    assert "| 50,000 |" in ours and "| 2.00x | 1.25x |" in ours  # against the peer and fla of the same file
    ce = next(line for line in body if "ce chunked-fla" in line)
    assert ce.endswith("| - | - |")  # no peer in its file: no ratio across files
    assert any("8 documents a row" in line and "attention varlen" in line and "| OOM |" in line for line in body)
    assert lines[-1] == "Device: NVIDIA H200."
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "speed_table.py"), str(tmp_path / "none.json")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "no such file" in bad.stderr
