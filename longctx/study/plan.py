"""A study as stages: each model's pretraining, base RULER, gate, extensions and their RULER, then
compare; and the `--only` selection of them."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

from longctx.study.gate import gate_summary
from longctx.study.load import added_temperature, extra_runs, pretrain_seeds, units, variant
from longctx.study.stage import KINDS, Stage, StudyError


def plan(study: dict) -> list[Stage]:
    root = Path(study["out"])
    ev = study["eval"]
    lm = [sys.executable, "-m", "longctx"]
    train_flags = ["--no-progress"]
    run_flags = (["--device", study["device"]] if study.get("device") else []) + [str(a) for a in ev.get("args", [])]
    eval_flags = ["--samples", str(ev.get("samples", 100)), "--tasks", ",".join(ev.get("tasks", ["all"]))] + run_flags
    lengths = ",".join(str(n) for n in ev["lengths"])
    base_lengths = ",".join(str(n) for n in ev.get("base_lengths", [study["pretrain"]["seq_len"]]))
    stages, results = [], []
    several = len(pretrain_seeds(study["name"], study["pretrain"])) > 1
    for arch, model, seed in units(study):
        base = root / arch / "base"
        cfg_file = root / "configs" / f"pretrain-{arch}.yaml"
        stages.append(
            Stage(
                f"pretrain-{arch}",
                "pretrain",
                lm + ["pretrain", "--config", str(cfg_file), "--out", str(base)] + train_flags,
                base,
                arch,
                model=model,
            )
        )
        res = base / "ruler.json"
        stages.append(
            Stage(
                f"eval-base-{arch}",
                "eval-base",
                lm
                + [
                    "eval",
                    "--model",
                    str(base),
                    "--lengths",
                    base_lengths,
                    "--out",
                    str(res),
                    "--label",
                    f"{model} base",
                ]
                + eval_flags,
                res,
                arch,
                model=model,
                needs=[f"pretrain-{arch}"],
            )
        )
        results.append(res)
        gate = study.get("gate") or {}
        gated = gate.get("samples") and model in gate.get("models", [])
        if gated:  # the gate on its own, tighter measurement: its tasks at its length, gate.samples each
            stages.append(
                Stage(
                    f"gate-{arch}",
                    "gate",
                    lm
                    + [
                        "eval",
                        "--model",
                        str(base),
                        "--lengths",
                        str(gate["length"]),
                        "--out",
                        str(base / "gate.json"),
                        "--label",
                        f"{model} base (gate)",
                        "--samples",
                        str(gate["samples"]),
                        "--tasks",
                        ",".join(gate["tasks"]),
                    ]
                    + run_flags,
                    base / "gate.json",
                    arch,
                    model=model,
                    needs=[f"pretrain-{arch}"],
                )
            )
        gate_stage = f"gate-{arch}" if gated else f"eval-base-{arch}"
        # each method on the study's budget, then the extra runs (same config, other --steps or --seed)
        # (with several pretraining seeds, each unit's extensions also take its seed: independent replicates)
        runs = [
            {
                "method": m,
                "tag": m,
                "flags": ["--seed", str(seed)] if several else [],
                "label": f"{model} {m}",
                "lengths": None,
            }
            for m in study["extend"]["methods"]
        ] + extra_runs(study, model, seed if several else None)
        for r in runs:
            tag, run_dir = r["tag"], root / arch / r["tag"]
            cfg_file = root / "configs" / f"extend-{r['method']}.yaml"
            added = added_temperature(study, r["method"])
            spec = (study["extend"].get("variants") or {}).get(r["method"]) or {}  # a variant's own keys
            if added is not None:  # DRoPE's temperature on this unit's drope run of the same budget and seed
                source = variant(study, r["method"])[0] + tag[len(r["method"]) :]
                cmd = ["temperature", "--model", str(root / arch / source), "--out", str(run_dir), "--c", str(added)]
                cmd += ["--fit", spec["fit"]] if spec.get("fit") else []
                cmd += ["--device", study["device"]] if study.get("device") else []
                needs = [f"extend-{arch}-{source}"]
            else:
                cmd = ["extend", "--config", str(cfg_file), "--model", str(base), "--out", str(run_dir)]
                cmd += r["flags"] + train_flags
                needs = [f"pretrain-{arch}", gate_stage]
            stages.append(Stage(f"extend-{arch}-{tag}", "extend", lm + cmd, run_dir, arch, model=model, needs=needs))
            res = run_dir / "ruler.json"
            at = lengths if r["lengths"] is None else ",".join(str(n) for n in r["lengths"])
            per_length = bool(spec.get("per_length"))  # the schema allows it only where a temperature is folded
            stages.append(
                Stage(
                    f"eval-{arch}-{tag}",
                    "eval",
                    lm
                    + ["eval", "--model", str(run_dir), "--lengths", at, "--out", str(res), "--label", r["label"]]
                    + (["--temperature-per-length"] if per_length else [])
                    + eval_flags,
                    res,
                    arch,
                    model=model,
                    needs=[f"extend-{arch}-{tag}"],
                )
            )
            results.append(res)
    title = study.get("title", f"RULER: {study['name']}")
    stages.append(
        Stage(
            "compare",
            "compare",
            lm
            + [
                "compare",
                *map(str, results),
                *(["--apart", "--paired"] if several else []),  # seeds: ranges apart, and differences per seed
                *(["--budget", "--budget-plot", str(root / "ruler_budget.png")] if study["extend"]["budgets"] else []),
                "--per-task",
                "--csv",
                str(root / "ruler.csv"),
                "--plot",
                str(root / "ruler.png"),
                "--title",
                title,
            ],
            root / "results.md",
            inputs=results,
            needs=[s.name for s in stages if s.kind.startswith("eval")],
            preamble=lambda: gate_summary(study),
        )
    )
    return stages


def select(stages: list[Stage], only: str | None) -> list[Stage]:
    """The stages --only names: comma-separated stage names, globs or kinds; one starting with `!` leaves
    out what it matches (`*-s1*,!*-yarn-seed1`; only exclusions: every other stage)."""
    if not only:
        return stages
    pats = [p.strip() for p in only.split(",") if p.strip()]

    def hit(s: Stage, p: str) -> bool:
        return s.kind == p or fnmatch.fnmatchcase(s.name, p)

    for p in pats:
        if not any(hit(s, p.removeprefix("!")) for s in stages):
            raise StudyError(
                f"--only {p!r} matches no stage; kinds: {', '.join(KINDS)}; stages: {', '.join(s.name for s in stages)}"
            )
    take = [p for p in pats if not p.startswith("!")]
    drop = [p[1:] for p in pats if p.startswith("!")]
    return [s for s in stages if (not take or any(hit(s, p) for p in take)) and not any(hit(s, p) for p in drop)]
