"""Run a hybrid-vs-transformer long-context study stage by stage through the longctx CLI.

    python bench/study.py configs/experiments/study-64k.yaml [--only STAGE] [--dry-run] [--no-gate]

For every model in the study YAML: pretrain at the base length, RULER on the base model (and the
retrieval gate: the base model must reach `gate.min` on `gate.tasks` at `gate.length`), then for
every method extend to the target on the same budget and run RULER at `eval.lengths`; finally
`longctx compare` writes results.md (tables), ruler.csv and ruler.png into the study directory.

Resumable: a training stage is skipped when its HF model is complete (longctx_train.json is
written last), continued with --resume when its run directory holds a started run; an eval stage
is skipped when its results JSON exists (`longctx eval` resumes its own journal otherwise). So
rerunning the same command after a crash or a kill continues where it stopped. With
--time-budget S (machines lent for minutes at a time) the runner stops by itself after S seconds,
asking the stage in flight to stop where it resumes, and exits 75. A finished stage
is not redone when the YAML changes: delete its directory for that.

--only takes stage names or globs (comma-separated): `pretrain-hybrid`, `extend-*-yarn`, or a
kind: pretrain, eval-base, extend, eval, compare. Stages still run in study order.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import fnmatch
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KINDS = ("pretrain", "eval-base", "extend", "eval", "compare")


class StudyError(Exception):
    pass


class OutOfTime(Exception):
    """The --time-budget ran out; the stage in flight was stopped where it resumes from."""


# How a stage in flight is asked to stop at the deadline: training writes a checkpoint on SIGTERM
# (after its current step), `longctx eval` keeps its journal on SIGINT. Then GRACE_S to exit.
STOP_SIGNAL = {"pretrain": signal.SIGTERM, "extend": signal.SIGTERM, "eval-base": signal.SIGINT, "eval": signal.SIGINT}
GRACE_S = 180


@dataclasses.dataclass
class Stage:
    name: str
    kind: str
    cmd: list[str]
    out: Path  # run dir (training) or results JSON (eval) or results.md (compare)
    arch: str | None = None
    inputs: list[Path] = dataclasses.field(default_factory=list)  # compare: the results it reads


# ---------------------------------------------------------------- the study file


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_study(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{path}: no such study file")
    s = yaml.safe_load(p.read_text()) or {}
    for key in ("name", "models", "pretrain", "extend", "eval"):
        if key not in s:
            raise StudyError(f"{path}: missing top-level key {key!r} (needs name, models, pretrain, extend, eval)")
    if not isinstance(s["models"], dict) or not s["models"]:
        raise StudyError(f"{path}: models must map a label (e.g. hybrid) to {{model: NAME, override: {{...}}}}")
    import rope_methods

    bad = [m for m in s["extend"].get("methods", []) if m not in rope_methods.METHODS]
    if bad or not s["extend"].get("methods"):
        raise StudyError(f"{path}: extend.methods {bad or '[]'}: give some of {', '.join(rope_methods.METHODS)}")
    if not s["extend"].get("target"):
        raise StudyError(f"{path}: extend.target is missing (e.g. 65536)")
    s.setdefault("out", f"runs/{s['name']}")
    return s


def model_fields(spec: dict) -> dict:
    """The HF config fields of a study model: a configs/models YAML (by name or path) + overrides."""
    name = spec.get("model")
    p = Path(name) if name and name.endswith((".yaml", ".yml")) else REPO / "configs" / "models" / f"{name}.yaml"
    if not p.is_file():
        raise StudyError(f"model {name!r}: no {p}")
    return merge(yaml.safe_load(p.read_text()), spec.get("override") or {})


def _probe_supported() -> bool:
    from longctx.config import RunConfig

    return "probe" in {f.name for f in dataclasses.fields(RunConfig)}


def pretrain_config(study: dict, arch: str) -> dict:
    cfg = merge(study["pretrain"], {"model": model_fields(study["models"][arch])})
    probe = cfg.pop("probe", None)
    if probe is not None and _probe_supported():  # the Trainer's in-training RULER probe, once wired
        cfg["probe"] = probe
    if study.get("device"):
        cfg["device"] = study["device"]
    return cfg


def extend_config(study: dict, method: str) -> dict:
    ext = study["extend"]
    template = ext.get("config", "configs/extend/{method}-64k.yaml").format(method=method)
    p = REPO / template if not Path(template).is_absolute() else Path(template)
    if not p.is_file():
        raise StudyError(f"extend.config {template!r} for {method}: no such file")
    cfg = merge(yaml.safe_load(p.read_text()) or {}, ext.get("overrides") or {})
    cfg.setdefault("extend", {})
    cfg["extend"].update({"method": method, "target": int(ext["target"])})
    if study.get("device"):
        cfg["device"] = study["device"]
    return cfg


# ---------------------------------------------------------------- stages


def plan(study: dict) -> list[Stage]:
    root = Path(study["out"])
    ev = study["eval"]
    lm = [sys.executable, "-m", "longctx"]
    train_flags = ["--no-progress"]
    eval_flags = ["--samples", str(ev.get("samples", 100)), "--tasks", ",".join(ev.get("tasks", ["all"]))]
    if study.get("device"):
        eval_flags += ["--device", study["device"]]
    eval_flags += [str(a) for a in ev.get("args", [])]
    lengths = ",".join(str(n) for n in ev["lengths"])
    base_lengths = ",".join(str(n) for n in ev.get("base_lengths", [study["pretrain"]["seq_len"]]))
    stages, results = [], []
    for arch in study["models"]:
        base = root / arch / "base"
        cfg_file = root / "configs" / f"pretrain-{arch}.yaml"
        stages.append(Stage(f"pretrain-{arch}", "pretrain",
                            lm + ["pretrain", "--config", str(cfg_file), "--out", str(base)] + train_flags, base, arch))
        res = base / "ruler.json"
        stages.append(Stage(f"eval-base-{arch}", "eval-base",
                            lm + ["eval", "--model", str(base), "--lengths", base_lengths, "--out", str(res),
                                  "--label", f"{arch} base"] + eval_flags, res, arch))
        results.append(res)
        for method in study["extend"]["methods"]:
            run_dir = root / arch / method
            cfg_file = root / "configs" / f"extend-{method}.yaml"
            stages.append(Stage(f"extend-{arch}-{method}", "extend",
                                lm + ["extend", "--config", str(cfg_file), "--model", str(base), "--out", str(run_dir)]
                                + train_flags, run_dir, arch))
            res = run_dir / "ruler.json"
            stages.append(Stage(f"eval-{arch}-{method}", "eval",
                                lm + ["eval", "--model", str(run_dir), "--lengths", lengths, "--out", str(res),
                                      "--label", f"{arch} {method}"] + eval_flags, res, arch))
            results.append(res)
    title = study.get("title", f"RULER: {study['name']}")
    stages.append(Stage("compare", "compare",
                        lm + ["compare", *map(str, results), "--per-task", "--csv", str(root / "ruler.csv"),
                              "--plot", str(root / "ruler.png"), "--title", title],
                        root / "results.md", inputs=results))
    return stages


def select(stages: list[Stage], only: str | None) -> list[Stage]:
    if not only:
        return stages
    pats = [p.strip() for p in only.split(",") if p.strip()]
    for p in pats:
        if p not in KINDS and not any(fnmatch.fnmatchcase(s.name, p) for s in stages):
            raise StudyError(f"--only {p!r} matches no stage; kinds: {', '.join(KINDS)}; "
                             f"stages: {', '.join(s.name for s in stages)}")
    return [s for s in stages if any(s.kind == p or fnmatch.fnmatchcase(s.name, p) for p in pats)]


def train_done(run_dir: Path) -> bool:
    meta = run_dir / "longctx_train.json"  # export_hf writes it after the weights
    if not (meta.is_file() and (run_dir / "config.json").is_file() and any(run_dir.glob("*.safetensors"))):
        return False
    try:
        return "steps" in json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False


def eval_done(res: Path) -> bool:
    if not res.is_file():
        return False
    from longctx.evaluate import results

    try:
        results.load(res)
        return True
    except Exception:  # noqa: BLE001 -- a broken file is redone
        return False


def status(stage: Stage) -> str:
    """'done', 'resume' or 'new'."""
    if stage.kind in ("pretrain", "extend"):
        if train_done(stage.out):
            return "done"
        return "resume" if stage.out.is_dir() and any(stage.out.iterdir()) else "new"
    if stage.kind == "compare":
        outs = [stage.out, stage.out.with_name("ruler.png")]
        if all(p.is_file() for p in outs) and all(i.is_file() for i in stage.inputs):
            newest = max(i.stat().st_mtime for i in stage.inputs)
            if min(p.stat().st_mtime for p in outs) >= newest:
                return "done"
        return "new"
    return "done" if eval_done(stage.out) else "new"


def gate_check(study: dict, stage: Stage) -> str | None:
    """None when the base model passes the retrieval gate, else the reason."""
    gate = study.get("gate") or {}
    if stage.arch not in gate.get("models", []):
        return None
    from longctx.evaluate import results

    res = results.load(stage.out)
    length, need = int(gate["length"]), float(gate["min"])
    low = []
    for task in gate["tasks"]:
        c = results.cell(res, task, length)
        got = None if c is None else c.get("score")
        if got is None or got < need:
            low.append(f"{task}@{length}={got}")
    return None if not low else f"base {stage.arch} below the gate ({need}): {', '.join(low)}"


# ---------------------------------------------------------------- running


def write_configs(study: dict, stages: list[Stage]) -> None:
    d = Path(study["out"]) / "configs"
    d.mkdir(parents=True, exist_ok=True)
    for arch in study["models"]:
        (d / f"pretrain-{arch}.yaml").write_text(yaml.safe_dump(pretrain_config(study, arch), sort_keys=False))
    for method in study["extend"]["methods"]:
        (d / f"extend-{method}.yaml").write_text(yaml.safe_dump(extend_config(study, method), sort_keys=False))


def _run_until(cmd: list[str], stage: Stage, deadline: float | None) -> tuple[int, bool]:
    """Run the stage's command; at the deadline ask it to stop (STOP_SIGNAL) and wait GRACE_S.
    Returns (exit code, stopped for time)."""
    proc = subprocess.Popen(cmd, cwd=REPO)
    try:
        return proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.time())), False
    except subprocess.TimeoutExpired:
        print(f"study: {stage.name}: time budget reached, stopping it where it can resume", flush=True)
        proc.send_signal(STOP_SIGNAL[stage.kind])
        try:
            return proc.wait(timeout=GRACE_S), True
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(), True
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def run_stage(stage: Stage, state: str, log, deadline: float | None = None) -> None:
    cmd = list(stage.cmd) + (["--resume"] if state == "resume" else [])
    if stage.kind == "compare":  # runs that were not evaluated (a missed gate) are left out
        missing = {str(p) for p in stage.inputs if not p.is_file()}
        cmd = [a for a in cmd if a not in missing]
        if len(missing) == len(stage.inputs):
            raise StudyError("compare: no results JSON to compare yet")
    print(f"study: {stage.name}: {'resuming' if state == 'resume' else 'running'}: {shlex.join(cmd)}", flush=True)
    t0 = time.time()
    if stage.kind == "compare":
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        if proc.returncode == 0:
            tmp = stage.out.with_suffix(".md.tmp")
            tmp.write_text(proc.stdout)
            os.replace(tmp, stage.out)
            print(proc.stdout, end="")
        rc, out_of_time = proc.returncode, False
    else:
        rc, out_of_time = _run_until(cmd, stage, deadline)
    log.write(json.dumps({"stage": stage.name, "state": state, "rc": rc, "out_of_time": out_of_time,
                          "seconds": round(time.time() - t0, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    log.flush()
    if out_of_time:
        raise OutOfTime(f"stage {stage.name} stopped at the time budget (exit {rc})")
    if rc != 0:
        raise StudyError(f"stage {stage.name} failed (exit {rc}); rerun the same command to resume")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="study", description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="study YAML (configs/experiments/*.yaml)")
    ap.add_argument("--only", help="comma-separated stage names/globs or kinds: " + ", ".join(KINDS))
    ap.add_argument("--dry-run", action="store_true", help="print each stage's state and command; run nothing")
    ap.add_argument("--out", help="study directory (default: the YAML's out, else runs/<name>)")
    ap.add_argument("--no-gate", action="store_true", help="extend even when a base model misses the retrieval gate")
    ap.add_argument("--time-budget", type=float, metavar="SECONDS",
                    help="stop after this long (e.g. a 10-minute machine lease): the stage in flight is stopped "
                         "where it resumes (training checkpoints its step, eval keeps its journal), exit 75; "
                         "rerunning the same command continues")
    args = ap.parse_args(argv)
    deadline = None if args.time_budget is None else time.time() + args.time_budget
    try:
        study = load_study(args.study)
        if args.out:
            study["out"] = args.out
        stages = plan(study)
        chosen = select(stages, args.only)
        for arch in study["models"]:  # config errors surface before anything runs
            pretrain_config(study, arch)
        for method in study["extend"]["methods"]:
            extend_config(study, method)
        if args.dry_run:
            for s in chosen:
                state = status(s)
                print(f"# {s.name}: {state}")
                print(shlex.join(s.cmd + (["--resume"] if state == "resume" else [])))
            return 0
        write_configs(study, stages)
        blocked: set[str] = set()
        with open(Path(study["out"]) / "study_log.jsonl", "a") as log:
            for s in chosen:
                if s.arch in blocked and s.kind in ("extend", "eval"):
                    print(f"study: {s.name}: skipped (base {s.arch} missed the gate)", flush=True)
                    continue
                state = status(s)
                if state == "done":
                    print(f"study: {s.name}: done, skipped", flush=True)
                elif deadline is not None and time.time() >= deadline:
                    raise OutOfTime(f"no time left to start {s.name}")
                else:
                    run_stage(s, state, log, deadline)
                if s.kind == "eval-base" and not args.no_gate and (why := gate_check(study, s)):
                    print(f"study: {why}; not extending {s.arch} (--no-gate overrides)", file=sys.stderr, flush=True)
                    blocked.add(s.arch)
        if blocked:
            return 3
        if "compare" in {s.kind for s in chosen}:
            print(f"study: wrote {Path(study['out']) / 'results.md'} and ruler.png")
        return 0
    except StudyError as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
    except OutOfTime as e:
        print(f"study: {e}; rerun the same command to continue", file=sys.stderr)
        return 75


if __name__ == "__main__":
    sys.exit(main())
