"""One writer at a time per cache: the lock file ``<cache>.lock`` (``fcntl.flock``, released
when its process dies, so a killed run never leaves a stale lock)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from avstm.errors import CacheError


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the cache ``path``: ``<path>.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def acquire_lock(path: Path):
    """Take the writer's lock of the cache ``path`` (``<path>.lock``, held until closed).

    Raises CacheError naming the other process when one holds it. The lock dies with its
    process, so a killed run never leaves a stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path(path), "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        error = _held_by_another(path, fh)
        fh.close()
        raise error from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def release_lock(fh) -> None:
    """Give back a lock taken by ``acquire_lock``."""
    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


def check_unlocked(path: str | os.PathLike) -> None:
    """Fail early (before minutes of model loading) if another process writes ``path`` now.
    Reads the lock file only (a cache on a read-only disk can be checked)."""
    path = Path(path)
    try:
        fh = open(lock_path(path), "r")
    except FileNotFoundError:
        return  # never written: nobody holds it
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held_by_another(path, fh) from None
        fcntl.flock(fh, fcntl.LOCK_UN)


def _held_by_another(path: Path, fh) -> CacheError:
    holder = fh.read().strip() or "?"
    return CacheError(f"{path}: another avstm process (pid {holder}) is writing this cache; "
                      f"wait for it or choose another --out")
