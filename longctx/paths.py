"""Output paths checked before any work, and files written with the user's umask.

`check_output` answers, before a model is loaded: can this command create PATH? A parent that is
a file, a folder it cannot write in, a directory where a file is wanted (or the reverse) is a
UsageError naming the flag and the path. Files written through a temp file (mkstemp: mode 0600)
get the mode an ordinary `open()` would have given them (`honour_umask`).
"""

from __future__ import annotations

import os
from pathlib import Path

from longctx.errors import UsageError


def check_output(path: str | os.PathLike, flag: str, *, kind: str = "dir", folder_exists: bool = False) -> None:
    """PATH is to be a directory (kind="dir") or a file (kind="file") that this process can create or write;
    with folder_exists, in a folder that is already there (nothing creates it)."""
    p = Path(path)
    if folder_exists and not p.resolve().parent.exists():
        raise UsageError(f"{flag} {str(path)!r}: folder {str(p.parent)!r} does not exist")
    existing = p
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing != p:
        if not existing.is_dir():
            raise UsageError(f"{flag} {path}: {existing} is a file, not a folder")
        where = existing
    elif kind == "dir":
        if not p.is_dir():
            raise UsageError(f"{flag} {path} is a file; give a directory")
        where = p
    else:
        if p.is_dir():
            raise UsageError(f"{flag} {path} is a directory; give a file path")
        where = p.parent if str(p.parent) else Path(".")
    if not os.access(str(where), os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {where} (permission denied)")


def file_mode() -> int:
    """The mode open() gives a new file under the current umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def honour_umask(*paths: str | os.PathLike) -> None:
    mode = file_mode()
    for p in paths:
        os.chmod(p, mode)
