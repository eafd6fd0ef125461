"""Running stages: each a `python -m longctx ...` subprocess, up to --jobs at a time on the
least-busy --devices, in study order once the stages they need are done; stopped where they resume
at the --time-budget deadline."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import longctx
from longctx.study.stage import OutOfTime, Stage, StudyError
from longctx.study.state import status

# How a stage in flight is asked to stop at the deadline: training writes a checkpoint on SIGTERM
# (after its current step), `longctx eval` keeps its journal on SIGINT. Then GRACE_S to exit.
STOP_SIGNAL = {
    "pretrain": signal.SIGTERM,
    "extend": signal.SIGTERM,
    "eval-base": signal.SIGINT,
    "gate": signal.SIGINT,
    "eval": signal.SIGINT,
}
GRACE_S = 180


def _child_env(device: str | None = None) -> dict:
    """The stage's environment: `python -m longctx` imports this same longctx (a checkout run with
    PYTHONPATH, or an installed one), and CUDA_VISIBLE_DEVICES when a device was given."""
    env = dict(os.environ)
    root = str(Path(longctx.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


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
    out = None
    where = ""
    if logs is not None:  # several stages at once: each writes its own log
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{stage.name}.log", "a")
        where = f" (log: {logs / (stage.name + '.log')})"
    on = "" if device is None else f" on device {device}"
    print(
        f"study: {stage.name}: {'resuming' if state == 'resume' else 'running'}{on}{where}: {shlex.join(cmd)}",
        flush=True,
    )
    proc = subprocess.Popen(cmd, env=_child_env(device), stdout=out, stderr=subprocess.STDOUT if out else None)
    return _Running(stage, state, proc, device, time.time(), log_file=out)


def _run_compare(stage: Stage) -> int:
    """The compare stage, inline: runs that were not evaluated (a missed gate) are left out."""
    missing = {str(p) for p in stage.inputs if not p.is_file()}
    if len(missing) == len(stage.inputs):
        raise StudyError("compare: no results JSON to compare yet")
    cmd = [a for a in stage.cmd if a not in missing]
    print(f"study: {stage.name}: running: {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, env=_child_env(), stdout=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        tmp = stage.out.with_suffix(".md.tmp")
        tmp.write_text((stage.preamble() if stage.preamble else "") + proc.stdout)
        os.replace(tmp, stage.out)
        print(proc.stdout, end="")
    return proc.returncode


def _log_row(log, stage: Stage, state: str, rc: int, out_of_time: bool, seconds: float, device=None) -> None:
    row = {
        "stage": stage.name,
        "state": state,
        "rc": rc,
        "out_of_time": out_of_time,
        "seconds": round(seconds, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if device is not None:
        row["device"] = device
    log.write(json.dumps(row) + "\n")
    log.flush()


def run_stages(
    stages: list[Stage],
    log,
    *,
    jobs: int = 1,
    devices: list[str] | None = None,
    deadline: float | None = None,
    state_of=None,
    gate=None,
    logs: Path | None = None,
) -> set[str]:
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
        return [
            n
            for n in stage.needs
            if gate is not None or not (stage.kind == "extend" and n.startswith(("eval-base-", "gate-")))
        ]

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
                    print(
                        f"study: {name}: {'finished' if rc == 0 else f'exit {rc}'} after {time.time() - r.t0:.0f} s "
                        f"({len(running)} running, {len(pending)} to go)",
                        flush=True,
                    )
                if r.stop_sent is not None:
                    if STOP_SIGNAL[r.stage.kind] == signal.SIGINT:  # an evaluation: what it finished can be read now
                        hint = shlex.join([*r.stage.cmd, "--finished-only"])
                        print(f"study: {name}: stopped; the results of its finished cells: {hint}", flush=True)
                    continue
                if rc != 0:
                    failures.append(
                        f"stage {name} failed (exit {rc})" + (f"; see {logs / (name + '.log')}" if logs else "")
                    )
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
