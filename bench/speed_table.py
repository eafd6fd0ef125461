"""One markdown table from many bench/train_throughput.py results (a speed lane's cells, or files kept in docs/):
a row per (config, length, settings, implementation), the settings read from each file's own arguments, and
the ratio of ours to each peer measured in the same file (the same call: side by side, equal settings).

    python3 bench/speed_table.py /tmp/w/speed/*/train_throughput.json [--md OUT.md]

Settings shown: activation checkpointing (every block, a fraction, none), the CE kernel that ran, a forced attention
backend, packed documents, precision and batch. A row whose status is not ok shows it (OOM, error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PEERS = ("peer", "fla")  # ratios of ours against these, within one file


def settings(args: dict, loss_backend: str | None = None) -> str:
    """The file's settings in words; `loss_backend`: what `--ce auto` resolved to there (ours_loss_backend), so
    that a row reads as the CE kernel that ran, whichever way it was asked for."""
    ckpt = (
        "no checkpointing"
        if args.get("no_checkpointing")
        else f"{args['checkpoint_fraction']:g} of the blocks checkpointed"
        if args.get("checkpoint_fraction") is not None
        else "every block checkpointed"
    )
    parts = [ckpt, f"batch {args.get('batch', 1)}", args.get("precision", "bf16")]
    ce = loss_backend or args.get("ce", "chunked")
    if ce != "chunked":
        parts.append(f"ce {ce}")
    if args.get("attn_backend"):
        parts.append(f"attention {args['attn_backend']}")
    if args.get("varlen_attention"):
        parts.append("varlen attention where packed or windowed")
    if args.get("docs", 1) > 1:
        parts.append(f"{args['docs']} documents a row")
    if args.get("compile"):
        parts.append("compiled blocks")
    return ", ".join(parts)


def rows(paths: list[Path]) -> list[dict]:
    out = []
    for path in paths:
        data = json.loads(path.read_text())
        meta = data.get("meta", {})
        resolved = next((r["ours_loss_backend"] for r in data["results"] if r.get("ours_loss_backend")), None)
        how = settings(meta.get("args", {}), resolved)
        ok = {(r["config"], r["seq_len"], r["impl"]): r for r in data["results"] if r.get("status") == "ok"}
        for r in data["results"]:
            row = {
                "file": str(path),
                "config": r["config"],
                "T": r["seq_len"],
                "settings": how,
                "impl": r["impl"],
                "status": r.get("status"),
                "tok_s": r.get("tokens_per_s"),
                "mfu": r.get("mfu"),
                "peak_gib": r.get("peak_mem_gib"),
                "device": meta.get("device"),
            }
            if r["impl"] == "ours" and r.get("status") == "ok":
                for peer in PEERS:
                    other = ok.get((r["config"], r["seq_len"], peer))
                    if other:
                        row[f"vs {peer}"] = r["tokens_per_s"] / other["tokens_per_s"]
            out.append(row)
    return sorted(out, key=lambda x: (x["config"], x["T"], x["settings"], x["impl"] != "ours", x["impl"]))


def markdown(table: list[dict]) -> str:
    head = ["config", "T", "settings", "impl", "tok/s", "MFU", "peak GiB", "ours vs peer", "ours vs fla"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        ok = r["status"] == "ok"
        cells = [
            r["config"],
            str(r["T"]),
            r["settings"],
            r["impl"],
            f"{r['tok_s']:,.0f}" if ok else str(r["status"]),
            f"{100 * r['mfu']:.1f}%" if ok and r.get("mfu") is not None else "-",
            f"{r['peak_gib']:.1f}" if ok and r.get("peak_gib") is not None else "-",
            *(f"{r[k]:.2f}x" if k in r else "-" for k in ("vs peer", "vs fla")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    devices = sorted({r["device"] for r in table if r.get("device")})
    return "\n".join(lines) + (f"\n\nDevice: {', '.join(devices)}." if devices else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="train_throughput.json files")
    p.add_argument("--md", help="also write the table to this file")
    args = p.parse_args(argv)
    paths = [Path(f) for f in args.files]
    missing = [str(f) for f in paths if not f.is_file()]
    if missing:
        print(f"speed_table: no such file: {missing[0]}", file=sys.stderr)
        return 2
    text = markdown(rows(paths))
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
