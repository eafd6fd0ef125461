"""Bring a study's results (unpacked from a lane's x.tgz) into a docs folder under the names docs/study-20m uses.

    python3 scripts/collect_study.py <unpacked>/w/budget docs/study-20m/budget [--overwrite] [--dry-run]

Every run directory <out>/<unit>/<run> (units like hybrid-s0, runs like base, drope-180steps) gives its
metrics.jsonl, ruler.json, gate.json, their answer journals (*.partial.jsonl) and drope_temperature.json as
DEST/<unit>-<run>.<file>. A training run retrained from the same seed is checked against the metrics.jsonl
already in DEST, step by step: "exact" (every loss equal over the steps both hold) or the first step that
differs. Files already in DEST are kept unless --overwrite (then an inexact retraining is still reported).
Exit 1 when a retraining is not exact, so a lane's "the committed runs stay valid" is checked, not assumed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from longctx.train.metrics import read_metrics

FILES = (
    "metrics.jsonl",
    "ruler.json",
    "ruler.json.partial.jsonl",
    "gate.json",
    "gate.json.partial.jsonl",
    "drope_temperature.json",
)


def _losses(path: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(path) if "step" in row and "loss" in row}


def retraining(new: Path, old: Path) -> tuple[bool, str]:
    """(exact, what): the losses of two trainings over the steps both logged."""
    a, b = _losses(new), _losses(old)
    common = sorted(set(a) & set(b))
    if not common:
        return False, "no step in common"
    for step in common:
        if a[step] != b[step]:
            return False, f"differs from step {step} ({a[step]!r} vs {b[step]!r})"
    return True, f"exact over {len(common)} steps ({len(a)} new, {len(b)} kept)"


def collect(src: Path, dest: Path, *, overwrite: bool = False, dry_run: bool = False) -> tuple[list[str], bool]:
    """(report lines, every retraining exact)."""
    lines, exact = [], True
    for run in sorted(p for p in src.glob("*/*") if p.is_dir() and p.parent.name not in ("configs", "logs")):
        for name in FILES:
            f = run / name
            if not f.is_file():
                continue
            target = dest / f"{run.parent.name}-{run.name}.{name}"
            note = ""
            if name == "metrics.jsonl" and target.is_file():
                ok, what = retraining(f, target)
                exact &= ok
                note = f" (retraining {what})"
            if target.is_file() and not overwrite:
                lines.append(f"kept    {target.name}{note}")
                continue
            lines.append(f"{'would copy' if dry_run else 'copied'}  {target.name}{note}")
            if not dry_run:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
    return lines, exact


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="a study's --out folder (e.g. <unpacked>/w/budget)")
    p.add_argument("dest", type=Path, help="the docs folder (e.g. docs/study-20m/budget)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in DEST")
    p.add_argument("--dry-run", action="store_true", help="say what would be copied; copy nothing")
    args = p.parse_args(argv)
    if not args.src.is_dir():
        p.error(f"src {str(args.src)!r} is not a folder")
    lines, exact = collect(args.src, args.dest, overwrite=args.overwrite, dry_run=args.dry_run)
    print("\n".join(lines) if lines else f"nothing to collect under {args.src}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
