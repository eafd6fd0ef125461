"""Tie a torchrun worker's life to its launcher.

torchrun starts every worker in a session of its own (so that it can signal each one), which also
means that when torchrun itself is killed hard (SIGKILL: a scheduler's grace period running out, a
wall-clock limit) the workers outlive it: they keep the GPUs and their memory, spin on collectives
whose TCPStore is gone, and write into a run directory that the next job may be using. On Linux a
worker can ask the kernel for a signal when its parent dies (prctl PR_SET_PDEATHSIG); SIGTERM then
takes the trainer's preemption path: finish the step, write a checkpoint, exit 128 + 15.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def under_torchrun(env=os.environ) -> bool:
    return "TORCHELASTIC_RUN_ID" in env or "TORCHELASTIC_RESTART_COUNT" in env


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel for `sig` when the parent process dies (Linux; False elsewhere or on failure).
    If the parent is already gone, the signal is sent at once. Also usable as a Popen preexec_fn."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent == 1 or os.getppid() != parent:  # orphaned before the request took effect
        os.kill(os.getpid(), sig)
    return True


def die_with_launcher(sig: int = signal.SIGTERM, env=os.environ) -> bool:
    """Under torchrun: `sig` when the agent that started this worker dies. True when armed."""
    return under_torchrun(env) and die_with_parent(sig)
