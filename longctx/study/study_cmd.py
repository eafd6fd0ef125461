"""`longctx study STUDY.yaml`: run a hybrid-vs-transformer long-context study stage by stage.

    longctx study configs/experiments/study-64k.yaml [--only STAGE] [--dry-run] [--no-gate]
                  [--jobs N] [--devices 0,1] [--time-budget SECONDS]

For every model in the study YAML: pretrain at the base length, RULER on the base model (and the
retrieval gate: the base model must reach `gate.min` on `gate.tasks` at `gate.length`; with
`gate.samples: N` a stage of its own, gate-<arch>, measures just that with N samples per task into
base/gate.json, and decides instead of the base row), then for every method extend to the target
on the same budget and run RULER at `eval.lengths` (plus any `extend.budgets`: the same extension
with other step counts, e.g. `[{steps: 180, models: [hybrid], methods: [yarn, drope]}]`, run as
<arch>/<method>-<N>steps; and any `extend.seeds`: the same extension with another seed, the noise
cell, e.g. `[{seed: 1, models: [hybrid], methods: [yarn], lengths: [32768]}]`, run as
<arch>/<method>-seed<N> and evaluated at its own lengths); finally `longctx compare` writes
results.md (tables), ruler.csv and ruler.png into the study directory. `extend.variants` names a
method with run-config keys of its own (dotted, as `longctx extend --set` takes them), e.g.
`{drope-temp: {method: drope, set: {extend.rope.temperature: auto}}}`; the name then goes in
extend.methods (and budgets and seeds) like a method's: its config, <out>/configs/extend-drope-temp.yaml,
is drope's with those keys set, and its runs, stages and table rows are named drope-temp. A variant
with `temperature: auto` (or a c > 0) instead of `set`, e.g. `{drope-temp: {method: drope, temperature:
auto}}`, trains nothing: its stage is `longctx temperature` on the unit's drope run of the same budget
and seed (drope must be listed beside it). With
`pretrain.seeds: [0, 1, 2]` all of this runs once per pretraining seed (each unit's extensions
take its seed too), in <out>/<model>-s<seed>/; the tables then show each (model, method) once, as
the mean over the seeds with their range. A study file may vary another: `base: study-20m.yaml`
takes that file and overlays this one (dicts merge, other values replace, null removes a key).
The file's keys are checked before anything runs (longctx.study.schema): an unknown key or a bad
value is one line naming it, exit code 2.

Resumable: a training stage is skipped when its HF model is complete (longctx_train.json is
written last), continued with --resume when its run directory holds a started run; an eval stage
is skipped when its results JSON exists (`longctx eval` resumes its own journal otherwise). So
rerunning the same command after a crash or a kill continues where it stopped. With
--time-budget S (machines lent for minutes at a time) the runner stops by itself after S seconds,
asking the stage in flight to stop where it resumes, and exits 75. A finished stage is not redone
when the YAML changes: delete its directory for that. A model that misses the gate exits 3.

--finished-only runs nothing: every chosen evaluation that was cut short (not done, with an answer
journal) gets the results of the cells its journal finished (longctx.study.finished), e.g. on a study
directory brought back from a machine that is gone: `longctx study X.yaml --out DIR --finished-only`.

--only takes stage names or globs (comma-separated): `pretrain-hybrid`, `extend-*-yarn`, or a
kind: pretrain, eval-base, gate, extend, eval, compare. Stages still run in study order.

--jobs N runs up to N stages at once, each as soon as the stages it needs are done (a model's
eval-base after its pretraining, its extensions after the gate (with --no-gate, right after the
pretraining), each evaluation after its extension, compare last); each writes logs/STAGE.log.
--devices 0,1,... gives every running stage the least-busy GPU (CUDA_VISIBLE_DEVICES). Small
models are host-bound, so several stages can share one GPU: `--jobs 8 --devices 0,1` runs a 20m
study's 8 extensions side by side on 2 GPUs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from longctx.study.finished import score_journals
from longctx.study.gate import gate_check
from longctx.study.plan import plan, select
from longctx.study.run_configs import load_study, write_configs
from longctx.study.runner import run_stages
from longctx.study.stage import KINDS, OutOfTime, StudyError
from longctx.study.state import status


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("study", help="study YAML (configs/experiments/*.yaml)")
    ap.add_argument(
        "--only",
        help="comma-separated stage names/globs or kinds (" + ", ".join(KINDS) + "); !GLOB leaves those out",
    )
    ap.add_argument("--dry-run", action="store_true", help="print each stage's state and command; run nothing")
    ap.add_argument("--out", help="study directory (default: the YAML's out, else runs/<name>)")
    ap.add_argument("--no-gate", action="store_true", help="extend even when a base model misses the retrieval gate")
    ap.add_argument(
        "--finished-only",
        action="store_true",
        help="run nothing: write each cut evaluation's results from its answer journal (the cells it "
        "finished; the rest 'not finished'), without the model: `longctx eval --finished-only` per stage",
    )
    ap.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="stop after this long (e.g. a 10-minute machine lease): the stage in flight is stopped "
        "where it resumes (training checkpoints its step, eval keeps its journal), exit 75; "
        "rerunning the same command continues",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run up to N stages at once, each as soon as the stages it needs are done "
        "(e.g. both models' pretraining, then every method's extension); each writes logs/STAGE.log",
    )
    ap.add_argument(
        "--devices",
        metavar="LIST",
        help="comma-separated GPU ids; each running stage gets the least-busy one as CUDA_VISIBLE_DEVICES",
    )


def parse_devices(text: str | None) -> list[str] | None:
    """--devices 0,1 -> ['0', '1']; anything but comma-separated GPU ids (whole numbers >= 0) is refused."""
    if text is None:
        return None
    devices = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in devices if not d.isdigit()]
    if bad or not devices:
        raise StudyError(f"--devices {text!r}: give comma-separated GPU ids, e.g. 0,1")
    return devices


def run(args) -> int:
    if args.jobs < 1:
        raise StudyError(f"--jobs {args.jobs}: need at least 1")
    if args.time_budget is not None and not args.time_budget >= 0:  # also refuses nan
        raise StudyError(f"--time-budget {args.time_budget:g}: give seconds >= 0, e.g. 540")
    devices = parse_devices(args.devices)
    deadline = None if args.time_budget is None else time.time() + args.time_budget
    study = load_study(args.study)  # every stage's run config is checked here, before anything runs
    if args.out:
        study["out"] = args.out
    stages = plan(study)
    chosen = select(stages, args.only)
    if args.finished_only:
        if not Path(study["out"]).is_dir():
            raise StudyError(f"--finished-only: no study directory {study['out']} (give it with --out)")
        return score_journals(chosen, dry_run=args.dry_run)
    try:
        if args.dry_run:
            for s in chosen:
                state = status(s)
                print(f"# {s.name}: {state}")
                print(shlex.join(s.cmd + (["--resume"] if state == "resume" else [])))
            return 0
        write_configs(study, stages)
        gate = None if args.no_gate else (lambda st: gate_check(study, st))
        with open(Path(study["out"]) / "study_log.jsonl", "a") as log:
            blocked = run_stages(
                chosen,
                log,
                jobs=args.jobs,
                devices=devices,
                deadline=deadline,
                gate=gate,
                logs=Path(study["out"]) / "logs",
            )
        if blocked:
            return 3
        if "compare" in {s.kind for s in chosen}:
            print(f"study: wrote {Path(study['out']) / 'results.md'} and ruler.png")
        return 0
    except OutOfTime as e:
        print(f"study: {e}; rerun the same command to continue", file=sys.stderr)
        return 75
