"""The retrieval gate: a gated base model must reach gate.min on gate.tasks at gate.length before it
is extended; its outcome opens results.md."""

from __future__ import annotations

from pathlib import Path

from longctx.study.load import units
from longctx.study.stage import Stage


def gate_scores(study: dict, res_file: Path) -> list[tuple[str, float | None]]:
    """(task, score at the gate length) of the gate's tasks in a results file."""
    from longctx import results

    gate = study["gate"]
    res = results.load(res_file)
    cells = [results.cell(res, task, int(gate["length"])) for task in gate["tasks"]]
    return [(task, None if c is None else c.get("score")) for task, c in zip(gate["tasks"], cells, strict=True)]


def gate_file(study: dict, unit: str) -> Path:
    """The results file that decides the gate for a unit: base/gate.json with gate.samples, else the base row."""
    base = Path(study["out"]) / unit / "base"
    return base / ("gate.json" if study["gate"].get("samples") else "ruler.json")


def gate_misses(study: dict, res_file: Path) -> list[str]:
    """`task@length=score` of each gate task below gate.min (or not scored) in a results file."""
    gate = study["gate"]
    return [
        f"{task}@{gate['length']}={got}"
        for task, got in gate_scores(study, res_file)
        if got is None or got < float(gate["min"])
    ]


def gate_check(study: dict, stage: Stage) -> str | None:
    """None when the base model passes the retrieval gate (or the stage does not decide it), else the reason."""
    gate = study.get("gate") or {}
    if (stage.model or stage.arch) not in gate.get("models", []) or stage.out != gate_file(study, stage.arch):
        return None
    low = gate_misses(study, stage.out)
    return None if not low else f"base {stage.arch} below the gate ({float(gate['min'])}): {', '.join(low)}"


def gate_summary(study: dict) -> str:
    """The gate's outcome per gated model, as markdown for the top of results.md ('' without a gate)."""
    gate = study.get("gate") or {}
    if not gate.get("models"):
        return ""
    from longctx.lengths import format_length

    need, at = float(gate["min"]), format_length(int(gate["length"]))
    head = f"Retrieval gate: each of {', '.join(gate['tasks'])} >= {need:g} at {at}"
    head += f" ({gate['samples']} samples per task)" if gate.get("samples") else " (the base row)"
    lines = [head + ":", ""]
    for unit, model, seed in units(study):
        if model not in gate["models"]:
            continue
        name = unit if unit == model else f"{model}, pretraining seed {seed}"
        f = gate_file(study, unit)
        if not f.is_file():
            lines.append(f"- {name}: not measured")
            continue
        shown = " / ".join("-" if v is None else f"{v:g}" for _, v in gate_scores(study, f))
        verdict = "**misses**" if gate_misses(study, f) else "passes"
        where = f"{f.parent.name}/{f.name}" if unit == model else f"{unit}/{f.parent.name}/{f.name}"
        lines.append(f"- {name}: {shown}: {verdict} ({where})")
    return "\n".join(lines) + "\n\n"
