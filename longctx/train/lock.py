"""One process per run directory: `OUT/.longctx.lock`.

The lock is a POSIX record lock (fcntl.lockf) on that file, which the kernel drops when its
process exits in any way (SIGKILL included), so a crashed run never leaves a live lock; the file
names the holder (pid, host) for the message the second process prints. Where the filesystem has
no locks (ENOLCK on some NFS mounts) the file alone decides: a pid that no longer runs on this
host is stale and taken over; a holder on another host has to be removed by hand.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from longctx.errors import UsageError

LOCK_FILE = ".longctx.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    since = holder.get("since")
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{when}"


def _in_use(out: Path, holder: dict, extra: str = "") -> UsageError:
    return UsageError(
        f"--out {out} is in use by another longctx process ({_describe(holder)}); wait for it to "
        f"finish or stop it{extra}"
    )


def check_free(out: str | Path) -> None:
    """Refuse early (before any model is built) when a live process holds OUT's lock. Writes nothing."""
    out = Path(out)
    path = out / LOCK_FILE
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # unreadable here: RunLock.acquire decides
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            raise _in_use(out, _read(path)) from None
        _check_pid(out, _read(path))  # no locks on this filesystem
    finally:
        os.close(fd)


def _check_pid(out: Path, holder: dict) -> None:
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or pid == os.getpid():
        return
    if host == socket.gethostname():
        if _alive(pid):
            raise _in_use(out, holder)
        return  # a dead process on this host: stale
    raise _in_use(out, holder, f" (this filesystem has no locks: if that process is gone, delete {out / LOCK_FILE})")


class RunLock:
    """Held from acquire() until release() or the process's exit."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (OUT must exist) or raise UsageError naming the holder."""
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read(self.path)
                os.close(fd)
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    raise _in_use(self.out, holder) from None
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                _check_pid(self.out, holder)  # no locks on this filesystem: the pid decides
            try:  # the holder before us may have removed the file between our open and lock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(
                fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": int(time.time())}).encode()
            )
            self._fd = fd
            return self
        raise UsageError(f"--out {self.out}: cannot take its lock {self.path} (it keeps being replaced)")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the lock
        self._fd = None


@contextmanager
def writing_into(out: str | Path) -> Iterator[Path]:
    """OUT created if absent and locked (RunLock) while a command writes a model into it; released on
    the way out, and an OUT this call created is removed again if the write fails before anything is in it."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        yield out
    except BaseException:
        lock.release()
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    lock.release()
