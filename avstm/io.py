"""Small file helpers shared by every stage: atomic writes, JSON, and the checks of an output
location (writable, free space) that every command makes before it starts.

Filesystem faults are one rule here: an ``OSError`` of the storage kind (read-only file system,
no space left, no permission, quota exceeded, file too large) met while writing an output
becomes a :class:`avstm.errors.StorageError` naming the output, and the temporary file of the
write is removed. Since every output is written through ``atomic_path``, a failed write never
leaves a half-written file nor loses the previous one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from avstm.errors import StorageError

# errno values that say the output's storage refused the write (not that an input is bad)
STORAGE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
                            errno.EFBIG})
PROBE_BYTES = 4096  # written (and removed) by ``check_writable``: a full disk fails it


def is_storage_error(e: BaseException) -> bool:
    """Whether ``e`` is an OSError of the storage kind (``STORAGE_ERRNOS``)."""
    return isinstance(e, OSError) and e.errno in STORAGE_ERRNOS


def storage_error(path: str | os.PathLike, e: OSError) -> StorageError:
    """The StorageError of ``e`` met while writing ``path``: one line, the OS's own words."""
    # os.strerror: h5py and PyAV put their own long text in strerror
    return StorageError(path, os.strerror(e.errno) if e.errno else (e.strerror or type(e).__name__))


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 kB"`` (powers of 1000, as ``df -H``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing ancestor."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(folder: str | os.PathLike, *, need_bytes: int = 0, what: str = "") -> Path:
    """Make sure new files of ``need_bytes`` bytes in all can be written in ``folder`` now,
    before any work: writes and removes a probe file of PROBE_BYTES in it (or in its nearest
    existing ancestor: a refused run leaves no empty folder behind), and compares the free space
    with ``need_bytes`` (a first estimate of what the command will write; ``what`` says what it
    is for the message). Raises StorageError naming ``folder``; returns it.

    A probe write, not ``os.access``: root passes ``access`` on any permission bits, and only a
    write tells that the disk is full.
    """
    folder = Path(folder)
    where = _existing(folder)
    if not where.is_dir():
        raise StorageError(where, "not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=where, prefix=".avstm-probe-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.unlink(probe)
    except OSError as e:
        if not is_storage_error(e):
            raise
        raise storage_error(folder, e) from None
    check_free_space(where, need_bytes, what=what)
    return folder


def check_free_space(folder: str | os.PathLike, need_bytes: int, *, what: str = "") -> None:
    """StorageError naming ``folder`` when its file system has less than ``need_bytes`` free."""
    if need_bytes <= 0:
        return
    free = shutil.disk_usage(_existing(Path(folder))).free
    if free < need_bytes:
        raise StorageError(folder, f"No space left on device for {what or 'the output'}: "
                                   f"{human_bytes(free)} free, about {human_bytes(need_bytes)} needed")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A killed or failed writer leaves the old ``path`` (or none) and at worst a ``*.tmp-<pid>``
    file (only a kill leaves it; the next run of the stage removes it), never a half-written
    ``path``. A storage fault (``STORAGE_ERRNOS``) in the block or the rename is raised as
    StorageError naming ``path`` (or the other file the OS named). ``fsync=False`` skips
    flushing the file to the disk before the rename: a kill cannot tear it either way (the page
    cache outlives the process), only a power cut can.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if fsync and tmp.exists():
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            if not is_storage_error(e):
                raise
            named = e.filename if e.filename not in (None, str(tmp), tmp) else path
            raise storage_error(named, e) from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def torch_load_problem(e: Exception) -> str:
    """torch.load's error as one short line for a user (torch's own text runs over several
    paragraphs and advises loading with ``weights_only=False``, which an unknown file must not be)."""
    text = " ".join(str(e).split())
    if isinstance(e, OSError) and e.filename:
        return f"cannot read ({e.strerror or text})"
    if isinstance(e, OSError):  # torch's reader seeking past the end of a cut file: EINVAL
        return f"damaged or cut short (torch's reader: {e.strerror or text})"
    if isinstance(e, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"a Python object of type {found.group(1)}" if found else "a Python object"
        return (f"refused: it holds {what}, which loading could run as code; a checkpoint or "
                f"weights file holds only tensors and plain data")
    if "zip archive" in text or "central directory" in text:
        return "damaged or cut short (not a complete torch zip archive)"
    first = re.split(r"(?<=[.!?]) ", text)[0]
    return f"not a torch file ({type(e).__name__}: {first})"


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete ``*.tmp-<pid>`` files left by writers that were killed (their pid is gone)."""
    for tmp in Path(folder).glob("*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_path``); returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically as UTF-8 (``atomic_path``); returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)
            f.write("\n")
    return Path(path)
