"""A torchrun worker dies with its launcher (PR_SET_PDEATHSIG), also when the launcher is SIGKILLed."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from longctx.distributed.launcher import die_with_launcher, under_torchrun

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")

WORKER = textwrap.dedent("""
    import signal, sys, time
    from longctx.distributed.launcher import die_with_launcher
    out = sys.argv[1]
    def on_term(signum, frame):
        open(out, "w").write(f"signal {signum}")
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    print("armed" if die_with_launcher() else "unarmed", flush=True)
    time.sleep(60)
""")

# like torchrun's agent: the worker gets a session of its own, so a signal to the launcher's
# process group does not reach it
LAUNCHER = textwrap.dedent("""
    import subprocess, sys
    p = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True,
                         stdout=subprocess.PIPE, text=True)
    print(p.pid, p.stdout.readline().strip(), flush=True)
    p.wait()
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run(tmp_path, env_extra, wait_s):
    out = tmp_path / "got"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC_")}
    env.update(env_extra, PYTHONPATH=os.pathsep.join(sys.path))
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, WORKER, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    pid, state = launcher.stdout.readline().split()
    pid = int(pid)
    launcher.kill()  # SIGKILL: the launcher cannot pass anything on
    launcher.wait()
    deadline = time.time() + wait_s
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    alive = _alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    return state, alive, out.read_text() if out.exists() else None


@linux_only
def test_worker_gets_sigterm_when_launcher_is_killed(tmp_path):
    state, alive, got = _run(tmp_path, {"TORCHELASTIC_RUN_ID": "test"}, wait_s=15)
    assert state == "armed"
    assert not alive
    assert got == f"signal {int(signal.SIGTERM)}"  # the trainer's preemption handler runs


@linux_only
def test_outside_torchrun_nothing_is_armed(tmp_path):
    # the control: without the request the orphan lives on (this is what the fix is for)
    state, alive, got = _run(tmp_path, {}, wait_s=2)
    assert state == "unarmed"
    assert alive and got is None


def test_under_torchrun_reads_the_agent_env():
    assert under_torchrun({"TORCHELASTIC_RUN_ID": "x"})
    assert not under_torchrun({"RANK": "0", "WORLD_SIZE": "2"})
    assert die_with_launcher(env={}) is False
