"""Run a hybrid-vs-transformer long-context study stage by stage through the longctx CLI.

    python bench/study.py configs/experiments/study-64k.yaml [--only STAGE] [--dry-run] [--no-gate]
                          [--jobs N] [--devices 0,1] [--time-budget SECONDS]

For every model in the study YAML: pretrain at the base length, RULER on the base model (and the
retrieval gate: the base model must reach `gate.min` on `gate.tasks` at `gate.length`; with
`gate.samples: N` a stage of its own, gate-<arch>, measures just that with N samples per task into
base/gate.json, and decides instead of the base row), then for
every method extend to the target on the same budget and run RULER at `eval.lengths` (plus any
`extend.budgets`: the same extension with other step counts, e.g. `[{steps: 180, models: [hybrid],
methods: [yarn, drope]}]`, run as <arch>/<method>-<N>steps; and any `extend.seeds`: the same
extension with another seed, the noise cell, e.g. `[{seed: 1, models: [hybrid], methods: [yarn],
lengths: [32768]}]`, run as <arch>/<method>-seed<N> and evaluated at its own lengths); finally
`longctx compare` writes results.md (tables), ruler.csv and ruler.png into the study directory.
With `pretrain.seeds: [0, 1, 2]` all of this runs once per pretraining seed (each unit's extensions
take its seed too), in <out>/<model>-s<seed>/; the tables then show each (model, method) once, as the
mean over the seeds with their range. A study file may vary another: `base: study-20m.yaml` takes that file and overlays this one (dicts
merge, other values replace, null removes a key).

Resumable: a training stage is skipped when its HF model is complete (longctx_train.json is
written last), continued with --resume when its run directory holds a started run; an eval stage
is skipped when its results JSON exists (`longctx eval` resumes its own journal otherwise). So
rerunning the same command after a crash or a kill continues where it stopped. With
--time-budget S (machines lent for minutes at a time) the runner stops by itself after S seconds,
asking the stage in flight to stop where it resumes, and exits 75. A finished stage
is not redone when the YAML changes: delete its directory for that.

--only takes stage names or globs (comma-separated): `pretrain-hybrid`, `extend-*-yarn`, or a
kind: pretrain, eval-base, gate, extend, eval, compare. Stages still run in study order.

--jobs N runs up to N stages at once, each as soon as the stages it needs are done (a model's
eval-base after its pretraining, its extensions after the gate (with --no-gate, right after
the pretraining), each evaluation after its extension, compare last); each writes logs/STAGE.log. --devices 0,1,... gives every running stage
the least-busy GPU (CUDA_VISIBLE_DEVICES). Small models are host-bound, so several stages can
share one GPU: `--jobs 8 --devices 0,1` runs a 20m study's 8 extensions side by side on 2 GPUs.
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
KINDS = ("pretrain", "eval-base", "gate", "extend", "eval", "compare")


class StudyError(Exception):
    pass


class OutOfTime(Exception):
    """The --time-budget ran out; the stage in flight was stopped where it resumes from."""


# How a stage in flight is asked to stop at the deadline: training writes a checkpoint on SIGTERM
# (after its current step), `longctx eval` keeps its journal on SIGINT. Then GRACE_S to exit.
STOP_SIGNAL = {"pretrain": signal.SIGTERM, "extend": signal.SIGTERM, "eval-base": signal.SIGINT, "gate": signal.SIGINT,
               "eval": signal.SIGINT}
GRACE_S = 180


@dataclasses.dataclass
class Stage:
    name: str
    kind: str
    cmd: list[str]
    out: Path  # run dir (training) or results JSON (eval) or results.md (compare)
    arch: str | None = None  # the run unit: the model's label, with -s<seed> when the study has several seeds
    model: str | None = None  # the study's model label (hybrid, transformer): what the gate names
    inputs: list[Path] = dataclasses.field(default_factory=list)  # compare: the results it reads
    needs: list[str] = dataclasses.field(default_factory=list)  # stages that must finish first
    preamble: object = None  # compare: () -> markdown put above the tables (the gate's outcome)


# ---------------------------------------------------------------- the study file


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def overlay(base: dict, over: dict) -> dict:
    """`over` merged into `base` for a study's `base:` file: dicts merge key by key, other values
    replace, and a null removes the key (`models: {transformer: null}` keeps only the hybrid)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_study(path: str, chain: tuple = ()) -> dict:
    """A study YAML with its `base:` (a study file it varies, relative to it) applied, recursively."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{path}: no such study file" + (f" (base of {chain[-1]})" if chain else ""))
    if p.resolve() in chain:
        raise StudyError(f"{path}: base files loop ({' -> '.join(str(c) for c in chain + (p.resolve(),))})")
    s = yaml.safe_load(p.read_text()) or {}
    if not isinstance(s, dict):
        raise StudyError(f"{path}: a study file is a mapping of keys (name, models, pretrain, extend, eval)")
    base = s.pop("base", None)
    if base is None:
        return s
    return overlay(read_study(str(p.parent / base), chain + (p.resolve(),)), s)


def load_study(path: str) -> dict:
    s = read_study(path)
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
    pretrain_seeds(path, s["pretrain"])
    s["extend"]["budgets"] = [budget_entry(path, s, b) for b in s["extend"].get("budgets") or []]
    s["extend"]["seeds"] = [seed_entry(path, s, e) for e in s["extend"].get("seeds") or []]
    for arch in s["models"]:
        tags = [r["tag"] for r in extra_runs(s, arch)]
        twice = sorted({t for t in tags if tags.count(t) > 1})
        if twice:
            raise StudyError(f"{path}: extend.budgets/seeds name {arch}/{twice[0]} twice: give each step count or seed once")
    n = (s.get("gate") or {}).get("samples")
    if n is not None and not _positive_int(n):
        raise StudyError(f"{path}: gate.samples {n!r}: give a positive whole number (or leave it out: the base row decides)")
    s.setdefault("out", f"runs/{s['name']}")
    return s


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def pretrain_seeds(path, pre: dict) -> list[int]:
    """pretrain.seeds (a list of seeds: every model is pretrained, gated, extended and evaluated once per
    seed), else [pretrain.seed] (default 0)."""
    seeds = pre.get("seeds", [pre.get("seed", 0)])
    if not (isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                      for x in seeds) and len(set(seeds)) == len(seeds)):
        raise StudyError(f"{path}: pretrain.seeds {seeds!r}: give a list of different whole numbers >= 0, e.g. [0, 1, 2]")
    if "seeds" in pre and "seed" in pre:
        raise StudyError(f"{path}: pretrain has both seed and seeds: give one")
    return seeds


def units(study: dict) -> list[tuple[str, str, int]]:
    """(unit, model, seed) for every pretraining the study runs: one per model and pretraining seed. The
    unit names the run directory (<out>/<unit>/base, <out>/<unit>/<method>) and the stages; it is the
    model's label alone when the study has one seed, <model>-s<seed> otherwise. Row labels in the
    tables stay the model's, so the seeds of one (model, method) form one row with their spread."""
    seeds = pretrain_seeds(study.get("name", "study"), study["pretrain"])
    return [(arch if len(seeds) == 1 else f"{arch}-s{seed}", arch, seed) for arch in study["models"] for seed in seeds]


def budget_entry(path, s: dict, b) -> dict:
    """An extend.budgets entry {steps: N, models: [...], methods: [...]}, checked, with models and
    methods filled in (all of the study's when left out)."""
    if not isinstance(b, dict) or not _positive_int(b.get("steps")):
        raise StudyError(f"{path}: extend.budgets entry {b!r}: needs steps: a positive whole number")
    return _fill_models_methods(path, s, "extend.budgets", b)


def seed_entry(path, s: dict, e) -> dict:
    """An extend.seeds entry {seed: N, models: [...], methods: [...], lengths: [...]}, checked; models and
    methods default to all of the study's, lengths to eval.lengths."""
    seed = e.get("seed") if isinstance(e, dict) else None
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise StudyError(f"{path}: extend.seeds entry {e!r}: needs seed: a whole number >= 0")
    e = _fill_models_methods(path, s, "extend.seeds", e)
    lengths = e.setdefault("lengths", list(s["eval"]["lengths"]))
    if not isinstance(lengths, list) or not lengths or not all(_positive_int(n) for n in lengths):
        raise StudyError(f"{path}: extend.seeds lengths {lengths!r}: give a list of token counts, e.g. [32768]")
    return e


def _fill_models_methods(path, s: dict, where: str, entry: dict) -> dict:
    entry = dict(entry)
    for key, known in (("models", list(s["models"])), ("methods", s["extend"]["methods"])):
        bad = [x for x in entry.setdefault(key, known) if x not in known]
        if bad:
            raise StudyError(f"{path}: {where} {key} {bad}: give some of {', '.join(known)}")
    return entry


def extra_runs(study: dict, arch: str) -> list[dict]:
    """The extra extensions of one model, in the study file's order: extend.budgets (other step counts),
    then extend.seeds (other seeds, evaluated at their own lengths). Each: method, tag, flags, label, lengths."""
    ext = study["extend"]
    runs = [{"method": m, "tag": f"{m}-{b['steps']}steps", "flags": ["--steps", str(b["steps"])],
             "label": f"{arch} {m} ({b['steps']} steps)", "lengths": None}
            for b in ext.get("budgets", []) if arch in b["models"] for m in b["methods"]]
    runs += [{"method": m, "tag": f"{m}-seed{e['seed']}", "flags": ["--seed", str(e["seed"])],
              "label": f"{arch} {m} (seed {e['seed']})", "lengths": e["lengths"]}
             for e in ext.get("seeds", []) if arch in e["models"] for m in e["methods"]]
    return runs


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


def pretrain_config(study: dict, arch: str, seed: int | None = None) -> dict:
    cfg = merge(study["pretrain"], {"model": model_fields(study["models"][arch])})
    seeds = cfg.pop("seeds", None) or [cfg.get("seed", 0)]
    cfg["seed"] = seeds[0] if seed is None else seed
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
    run_flags = (["--device", study["device"]] if study.get("device") else []) + [str(a) for a in ev.get("args", [])]
    eval_flags = ["--samples", str(ev.get("samples", 100)), "--tasks", ",".join(ev.get("tasks", ["all"]))] + run_flags
    lengths = ",".join(str(n) for n in ev["lengths"])
    base_lengths = ",".join(str(n) for n in ev.get("base_lengths", [study["pretrain"]["seq_len"]]))
    stages, results = [], []
    several = len(pretrain_seeds(study["name"], study["pretrain"])) > 1
    for arch, model, seed in units(study):
        base = root / arch / "base"
        cfg_file = root / "configs" / f"pretrain-{arch}.yaml"
        stages.append(Stage(f"pretrain-{arch}", "pretrain",
                            lm + ["pretrain", "--config", str(cfg_file), "--out", str(base)] + train_flags, base, arch,
                            model=model))
        res = base / "ruler.json"
        stages.append(Stage(f"eval-base-{arch}", "eval-base",
                            lm + ["eval", "--model", str(base), "--lengths", base_lengths, "--out", str(res),
                                  "--label", f"{model} base"] + eval_flags, res, arch, model=model,
                            needs=[f"pretrain-{arch}"]))
        results.append(res)
        gate = study.get("gate") or {}
        gated = gate.get("samples") and model in gate.get("models", [])
        if gated:  # the gate on its own, tighter measurement: its tasks at its length, gate.samples each
            stages.append(Stage(f"gate-{arch}", "gate",
                                lm + ["eval", "--model", str(base), "--lengths", str(gate["length"]),
                                      "--out", str(base / "gate.json"), "--label", f"{model} base (gate)",
                                      "--samples", str(gate["samples"]), "--tasks", ",".join(gate["tasks"])]
                                + run_flags, base / "gate.json", arch, model=model, needs=[f"pretrain-{arch}"]))
        gate_stage = f"gate-{arch}" if gated else f"eval-base-{arch}"
        # each method on the study's budget, then the extra runs (same config, other --steps or --seed)
        # (with several pretraining seeds, each unit's extensions also take its seed: independent replicates)
        runs = [{"method": m, "tag": m, "flags": ["--seed", str(seed)] if several else [], "label": f"{model} {m}",
                 "lengths": None} for m in study["extend"]["methods"]] + extra_runs(study, model)
        for r in runs:
            tag, run_dir = r["tag"], root / arch / r["tag"]
            cfg_file = root / "configs" / f"extend-{r['method']}.yaml"
            stages.append(Stage(f"extend-{arch}-{tag}", "extend",
                                lm + ["extend", "--config", str(cfg_file), "--model", str(base), "--out", str(run_dir)]
                                + r["flags"] + train_flags, run_dir, arch, model=model,
                                needs=[f"pretrain-{arch}", gate_stage]))
            res = run_dir / "ruler.json"
            at = lengths if r["lengths"] is None else ",".join(str(n) for n in r["lengths"])
            stages.append(Stage(f"eval-{arch}-{tag}", "eval",
                                lm + ["eval", "--model", str(run_dir), "--lengths", at, "--out", str(res),
                                      "--label", r["label"]] + eval_flags, res, arch, model=model,
                                needs=[f"extend-{arch}-{tag}"]))
            results.append(res)
    title = study.get("title", f"RULER: {study['name']}")
    stages.append(Stage("compare", "compare",
                        lm + ["compare", *map(str, results), "--per-task", "--csv", str(root / "ruler.csv"),
                              "--plot", str(root / "ruler.png"), "--title", title],
                        root / "results.md", inputs=results, needs=[s.name for s in stages if s.kind.startswith("eval")],
                        preamble=lambda: gate_summary(study)))
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


def gate_scores(study: dict, res_file: Path) -> list[tuple[str, float | None]]:
    """(task, score at the gate length) of the gate's tasks in a results file."""
    from longctx.evaluate import results

    gate = study["gate"]
    res = results.load(res_file)
    cells = [results.cell(res, task, int(gate["length"])) for task in gate["tasks"]]
    return [(task, None if c is None else c.get("score")) for task, c in zip(gate["tasks"], cells)]


def gate_file(study: dict, unit: str) -> Path:
    """The results file that decides the gate for a unit: base/gate.json with gate.samples, else the base row."""
    base = Path(study["out"]) / unit / "base"
    return base / ("gate.json" if study["gate"].get("samples") else "ruler.json")


def gate_misses(study: dict, res_file: Path) -> list[str]:
    """`task@length=score` of each gate task below gate.min (or not scored) in a results file."""
    gate = study["gate"]
    return [f"{task}@{gate['length']}={got}" for task, got in gate_scores(study, res_file)
            if got is None or got < float(gate["min"])]


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
    from longctx.evaluate.lengths import format_length

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


# ---------------------------------------------------------------- running


def write_configs(study: dict, stages: list[Stage]) -> None:
    d = Path(study["out"]) / "configs"
    d.mkdir(parents=True, exist_ok=True)
    for unit, model, seed in units(study):
        (d / f"pretrain-{unit}.yaml").write_text(yaml.safe_dump(pretrain_config(study, model, seed), sort_keys=False))
    for method in study["extend"]["methods"]:
        (d / f"extend-{method}.yaml").write_text(yaml.safe_dump(extend_config(study, method), sort_keys=False))


@dataclasses.dataclass
class _Running:
    stage: Stage
    state: str
    proc: subprocess.Popen
    device: str | None
    t0: float
    stop_sent: float | None = None  # when the deadline's stop signal went out
    log_file: object = None


def _start(stage: Stage, state: str, device: str | None, logs: Path | None) -> _Running:
    cmd = list(stage.cmd) + (["--resume"] if state == "resume" else [])
    env = None if device is None else {**os.environ, "CUDA_VISIBLE_DEVICES": device}
    out = None
    where = ""
    if logs is not None:  # several stages at once: each writes its own log
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{stage.name}.log", "a")
        where = f" (log: {logs / (stage.name + '.log')})"
    on = "" if device is None else f" on device {device}"
    print(f"study: {stage.name}: {'resuming' if state == 'resume' else 'running'}{on}{where}: {shlex.join(cmd)}",
          flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    return _Running(stage, state, proc, device, time.time(), log_file=out)


def _run_compare(stage: Stage) -> int:
    """The compare stage, inline: runs that were not evaluated (a missed gate) are left out."""
    missing = {str(p) for p in stage.inputs if not p.is_file()}
    if len(missing) == len(stage.inputs):
        raise StudyError("compare: no results JSON to compare yet")
    cmd = [a for a in stage.cmd if a not in missing]
    print(f"study: {stage.name}: running: {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        tmp = stage.out.with_suffix(".md.tmp")
        tmp.write_text((stage.preamble() if stage.preamble else "") + proc.stdout)
        os.replace(tmp, stage.out)
        print(proc.stdout, end="")
    return proc.returncode


def _log_row(log, stage: Stage, state: str, rc: int, out_of_time: bool, seconds: float, device=None) -> None:
    row = {"stage": stage.name, "state": state, "rc": rc, "out_of_time": out_of_time, "seconds": round(seconds, 1),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if device is not None:
        row["device"] = device
    log.write(json.dumps(row) + "\n")
    log.flush()


def run_stages(stages: list[Stage], log, *, jobs: int = 1, devices: list[str] | None = None,
               deadline: float | None = None, state_of=None, gate=None, logs: Path | None = None) -> set[str]:
    """Run stages in study order, up to `jobs` at a time, each once the stages it needs (among these)
    have finished. Each running stage gets the least-busy of `devices` as CUDA_VISIBLE_DEVICES. `gate`
    (stage -> reason or None) is asked after each eval-base stage; a model that misses it gets no
    extend/eval stages. Returns the models that missed the gate. At the deadline every running stage is
    asked to stop where it resumes (OutOfTime); on a failure nothing new starts, the running stages
    finish, then StudyError."""
    state_of = state_of or status
    names = {s.name for s in stages}
    pending, running = list(stages), {}
    settled: set[str] = set()  # finished, done earlier, or skipped by the gate
    blocked: set[str] = set()
    failures: list[str] = []
    stopped = False  # the deadline's stop signals went out
    load = {d: 0 for d in devices or []}

    def waits(stage: Stage) -> list[str]:
        """What a stage waits for: an extension waits for its base's RULER (or gate stage) only to apply the gate."""
        return [n for n in stage.needs
                if gate is not None or not (stage.kind == "extend" and n.startswith(("eval-base-", "gate-")))]

    def check_gate(stage: Stage) -> None:
        if stage.kind in ("eval-base", "gate") and gate and (why := gate(stage)):
            print(f"study: {why}; not extending {stage.arch} (--no-gate overrides)", file=sys.stderr, flush=True)
            blocked.add(stage.arch)

    try:
        while pending or running:
            for name, r in list(running.items()):
                rc = r.proc.poll()
                if rc is None:
                    if r.stop_sent is not None and time.time() - r.stop_sent > GRACE_S:
                        r.proc.kill()
                    continue
                del running[name]
                if r.device is not None:
                    load[r.device] -= 1
                if r.log_file:
                    r.log_file.close()
                _log_row(log, r.stage, r.state, rc, r.stop_sent is not None, time.time() - r.t0, r.device)
                if jobs > 1:  # several in flight: say which one ended
                    print(f"study: {name}: {'finished' if rc == 0 else f'exit {rc}'} after {time.time() - r.t0:.0f} s "
                          f"({len(running)} running, {len(pending)} to go)", flush=True)
                if r.stop_sent is not None:
                    continue
                if rc != 0:
                    failures.append(f"stage {name} failed (exit {rc})" + (f"; see {logs / (name + '.log')}" if logs else ""))
                    continue
                settled.add(name)
                check_gate(r.stage)
            past = deadline is not None and time.time() >= deadline
            if past and running and not stopped:
                stopped = True
                for r in running.values():
                    print(f"study: {r.stage.name}: time budget reached, stopping it where it can resume", flush=True)
                    r.proc.send_signal(STOP_SIGNAL[r.stage.kind])
                    r.stop_sent = time.time()
            while pending and not failures and not stopped and len(running) < jobs:
                ready = [s for s in pending if all(n not in names or n in settled for n in waits(s))]
                if not ready:
                    if not running:
                        raise StudyError(f"stages {', '.join(s.name for s in pending)} wait on stages that cannot run")
                    break
                s = ready[0]
                pending.remove(s)
                if s.arch in blocked and s.kind in ("extend", "eval"):
                    print(f"study: {s.name}: skipped (base {s.arch} missed the gate)", flush=True)
                    settled.add(s.name)
                    continue
                state = state_of(s)
                if state == "done":
                    print(f"study: {s.name}: done, skipped", flush=True)
                    settled.add(s.name)
                    check_gate(s)
                    continue
                if past:  # nothing is running (it would have been stopped above)
                    raise OutOfTime(f"no time left to start {s.name}")
                if s.kind == "compare":
                    t0 = time.time()
                    rc = _run_compare(s)
                    _log_row(log, s, state, rc, False, time.time() - t0)
                    if rc != 0:
                        failures.append(f"stage {s.name} failed (exit {rc})")
                    settled.add(s.name)
                    continue
                device = min(load, key=load.get) if load else None
                if device is not None:
                    load[device] += 1
                running[s.name] = _start(s, state, device, logs if jobs > 1 else None)
            if (failures or stopped) and not running:
                break
            if running:
                time.sleep(0.2)
    except BaseException:  # Ctrl-C or an error of ours: no stage is left running behind us
        for r in running.values():
            r.proc.kill()
            r.proc.wait()
        raise
    if stopped:
        raise OutOfTime("the time budget ran out; stages in flight were stopped where they resume from")
    if failures:
        raise StudyError("; ".join(failures) + "; rerun the same command to resume")
    return blocked


def run_stage(stage: Stage, state: str, log, deadline: float | None = None) -> None:
    """One stage in the foreground (state: 'new' or 'resume')."""
    run_stages([stage], log, deadline=deadline, state_of=lambda _: state)


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
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run up to N stages at once, each as soon as the stages it needs are done "
                         "(e.g. both models' pretraining, then every method's extension); each writes logs/STAGE.log")
    ap.add_argument("--devices", metavar="LIST",
                    help="comma-separated GPU ids; each running stage gets the least-busy one as CUDA_VISIBLE_DEVICES")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        print(f"study: error: --jobs {args.jobs}: need at least 1", file=sys.stderr)
        return 2
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
        devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
        gate = None if args.no_gate else (lambda st: gate_check(study, st))
        with open(Path(study["out"]) / "study_log.jsonl", "a") as log:
            blocked = run_stages(chosen, log, jobs=args.jobs, devices=devices, deadline=deadline, gate=gate,
                                 logs=Path(study["out"]) / "logs")
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
