"""Writing a cache crash-safely: ``CacheWriter`` and its background thread.

A writer never opens the final file for writing. Videos go into part files in
``<out>.parts/``: a part is built in memory (an HDF5 file in a BytesIO) and written to disk in
one go, atomically, when it closes, after ``PART_VIDEOS`` videos, ``PART_SECONDS`` seconds or
``PART_BYTES`` bytes, whichever comes first. ``close()`` joins the existing cache and the parts
into a new file that is renamed onto ``<out>`` (``avstm.cache.merge``). A killed run therefore
leaves a cache that opens (the last finished one) plus the finished parts, which the next run
keeps; at most the videos of the part being built (a few videos or seconds of work) are
computed again. One writer at a time per output (``avstm.cache.lock``).

Filesystem faults: HDF5 never writes a part to the disk itself (a full disk inside HDF5 ends in
a cascade of errors and a segmentation fault), so a part that cannot be written (read-only, no
space, quota) is an ``OSError`` of plain file I/O: the part is abandoned (its videos are
computed again next time), the closed parts are kept, and the error is raised in the main thread
as :class:`avstm.errors.StorageError`. The join checks the free space it needs first.
"""

from __future__ import annotations

import glob
import io
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
import torch

from avstm.cache.format import (VideoRecord, _complete_groups, _mismatch, _read_root, _root_attrs,
                                compare_configs, fp16_scale, open_cache_file, video_key)
from avstm.cache.lock import acquire_lock, release_lock
from avstm.cache.merge import _join
from avstm.errors import CacheError, ConfigMismatch, StorageError
from avstm.io import is_storage_error, storage_error, write_bytes

# A part closes after this many videos, seconds or stored bytes (what a kill can cost, and the
# memory a part takes while it is built)
PART_VIDEOS = 8
PART_SECONDS = 10.0
PART_BYTES = 256 * 2**20


def finite_max_abs(t: torch.Tensor, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(finite, max |value|) of ``t``, overall or per index of ``dim`` (the other dims reduced),
    in one pass: ``aminmax`` propagates NaN and inf into its results. On a 2048-channel
    video it is ~25× cheaper on the CPU than ``isfinite(t).all()`` plus ``abs().max()``."""
    if dim is None:
        lo, hi = torch.aminmax(t)
    else:
        lo, hi = torch.aminmax(t.movedim(dim, 0).flatten(1), dim=1)
    return torch.isfinite(lo) & torch.isfinite(hi), torch.maximum(hi, -lo)


def _encode(arr: np.ndarray, dtype: str, what: str) -> tuple[np.ndarray, float]:
    """float32 maps → (stored array, scale). torch does the passes over the data (it releases
    the GIL): one ``aminmax`` and one cast, so the writer thread keeps up with a GPU."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    max_abs = 0.0
    if t.numel():
        finite, max_abs = finite_max_abs(t)
        if not bool(finite):
            raise CacheError(f"{what} features hold inf or NaN; not cached")
    if dtype != "float16":
        return t.numpy(), 1.0
    scale = fp16_scale(float(max_abs), dtype)
    return (t / scale if scale != 1.0 else t).half().numpy(), scale


def _write_video(group: h5py.Group, rec: VideoRecord, dtype: str) -> None:
    """Write one video into ``group`` (a new, empty group); ``complete`` is set last."""
    for name, arr in (("visual", rec.visual), ("audio", rec.audio)):
        data, scale = _encode(arr, dtype, name)
        group.create_dataset(name, data=data, chunks=(1,) + arr.shape[1:])
        group.attrs[f"{name}_scale"] = scale
    group.create_dataset("times", data=rec.times.astype(np.float64))
    group.create_dataset("labels", data=rec.labels.astype(np.int64))
    group.attrs.update(id=rec.id, label=int(rec.label), split=rec.split, source=rec.source,
                       duration=float(rec.duration), has_audio=bool(rec.has_audio))
    group.attrs["complete"] = True


class CacheWriter:
    """Writes videos into a cache crash-safely (see the module docstring). A context manager.

    ``config`` is the extract config as plain data; its ``content`` fields must match an
    existing cache (``content_fields``; all fields when None). Writes run in a background
    thread so that the extractor never waits for the disk.
    """

    def __init__(self, path: str | os.PathLike, *, config: dict, classes: list[str],
                 content_fields: Iterable[str] | None = None, part_videos: int = PART_VIDEOS,
                 part_seconds: float = PART_SECONDS, part_bytes: int = PART_BYTES):
        self.path = Path(path)
        self.config = dict(config)
        self.config_json = json.dumps(self.config, sort_keys=True)
        self.classes = list(classes)
        self.dtype = str(self.config.get("dtype", "float32"))
        self.content_fields = None if content_fields is None else list(content_fields)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.part_videos, self.part_seconds, self.part_bytes = part_videos, part_seconds, part_bytes
        self._lock_file = acquire_lock(self.path)
        self._done: set[str] = set()
        self._part: h5py.File | None = None  # in memory (a BytesIO) until it closes
        self._part_buffer: io.BytesIO | None = None
        self._part_name = ""
        self._part_ids: list[str] = []
        self._part_bytes = 0
        self._part_count = 0
        self._part_opened = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self.rejected: list[tuple[str, str]] = []  # (id, reason) of videos refused by the writer
        try:
            self._check_existing()
        except BaseException:
            self._unlock()
            raise
        self._thread = threading.Thread(target=self._run, name="avstm-cache-writer", daemon=True)
        self._thread.start()

    # ---- locking and resumption ---------------------------------------------------------
    def _unlock(self) -> None:
        if self._lock_file is not None:
            release_lock(self._lock_file)
            self._lock_file = None

    def _check_cfg(self, src, stored_cfg: dict, stored_classes: list[str]) -> None:
        diff = compare_configs(stored_cfg, self.config, fields=self.content_fields)
        if diff:
            raise _mismatch(src, stored_cfg, self.config, diff)
        if stored_classes != self.classes:
            raise ConfigMismatch(f"{src}: written with other classes ({len(stored_classes)} classes, "
                                 f"{len(self.classes)} now); use another --out")

    def _check_existing(self) -> None:
        for stale in self.path.parent.glob(glob.escape(self.path.name) + ".tmp-*"):
            stale.unlink()  # a join that a killed run left unfinished (we hold the lock)
        if self.path.exists():
            with open_cache_file(self.path) as f:
                self._check_cfg(self.path, *_read_root(f, self.path))
                self._done.update(i for i, _ in _complete_groups(f))
        if self.parts_dir.exists():
            for p in sorted(self.parts_dir.iterdir()):
                if p.suffix != ".h5":
                    p.unlink()  # a part a killed run was writing: its videos are redone
                    continue
                try:
                    with h5py.File(p, "r") as f:
                        self._check_cfg(p, *_read_root(f, p))
                        self._done.update(i for i, _ in _complete_groups(f))
                except OSError as e:
                    raise CacheError(f"{p}: unreadable part ({e}); delete it to extract its videos again") from None

    def done_ids(self) -> set[str]:
        """Ids already cached (in the file or in finished parts): their data is not read."""
        return set(self._done)

    # ---- writing (background thread) ----------------------------------------------------
    def write(self, record: VideoRecord) -> None:
        """Queue one finished video; raises the writer thread's error, if any."""
        if self._error is not None:
            raise self._error
        self._queue.put(record)

    def flush(self) -> None:
        """Wait until every queued video is in a part file; raises the writer thread's error."""
        self._queue.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is None:
                self._queue.task_done()
                return
            try:
                if self._error is None:
                    self._write_now(rec)
            except CacheError as e:  # this video only (non-finite data): listed, the rest goes on
                # (extract counts each one as failed, not done)
                self.rejected.append((rec.id, str(e)))
            except BaseException as e:  # disk full, ...: handed to the main thread by write()/close()
                self._abandon_part()
                self._error = self._named(e)
            finally:
                self._queue.task_done()

    def _open_part(self) -> None:
        self._part_name = f"part-{int(time.time() * 1000):013d}-{os.getpid()}-{self._part_count:05d}.h5"
        # in memory: HDF5 never meets the disk's errors (see the module docstring)
        self._part_buffer = io.BytesIO()
        self._part = h5py.File(self._part_buffer, "w")
        _root_attrs(self._part, self.config_json, self.classes)
        self._part.create_group("videos")
        self._part_ids, self._part_bytes = [], 0
        self._part_opened = time.monotonic()

    def _close_part(self) -> None:
        """Write the part built in memory to ``parts/`` (atomically: a temporary name, renamed)."""
        if self._part is None:
            return
        self._part.close()
        self._part = None
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        # no fsync: a part must survive kills, not power cuts (the joined cache is what lasts)
        write_bytes(self.parts_dir / self._part_name, self._part_buffer.getbuffer(), fsync=False)
        self._part_buffer = None
        self._part_ids = []
        self._part_count += 1

    def _named(self, e: BaseException) -> BaseException:
        """A storage fault of a part as a StorageError naming the parts folder (a part's own
        name, made of a time and a pid, tells the user nothing)."""
        if isinstance(e, StorageError):
            return StorageError(self.parts_dir, e.problem)
        return storage_error(self.parts_dir, e) if is_storage_error(e) else e

    def _abandon_part(self) -> None:
        """Drop the part being built (after a failed write): its videos count as not done."""
        if self._part is not None:
            try:
                self._part.close()
            except Exception:  # noqa: BLE001 - an in-memory file; nothing on disk to repair
                pass
            self._part = None
        self._part_buffer = None
        self._done.difference_update(self._part_ids)
        self._part_ids = []

    def _write_now(self, rec: VideoRecord) -> None:
        if rec.id in self._done:
            return
        if self._part is None:
            self._open_part()
        g = self._part["videos"].create_group(video_key(rec.id))
        try:
            _write_video(g, rec, self.dtype)
        except BaseException:
            del self._part["videos"][video_key(rec.id)]
            raise
        self._done.add(rec.id)
        self._part_ids.append(rec.id)
        self._part_bytes += (rec.visual.size + rec.audio.size) * (2 if self.dtype == "float16" else 4)
        if (len(self._part_ids) >= self.part_videos or self._part_bytes >= self.part_bytes
                or time.monotonic() - self._part_opened > self.part_seconds):
            self._close_part()

    # ---- finishing ----------------------------------------------------------------------
    def close(self, *, join: bool = True) -> None:
        """Wait for queued writes, close the current part and join everything into ``path``
        (``join=False``: only close the part; the next run joins).

        After a write error nothing is joined: the finished parts stay in ``parts/`` for the
        next run, and the error is raised."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        try:
            if self._error is None:
                try:
                    self._close_part()
                except BaseException as e:
                    self._abandon_part()
                    self._error = self._named(e)
            if self._error is None and join:
                self._join_parts()
        finally:
            self._unlock()
        if self._error is not None:
            raise self._error

    def _join_parts(self) -> None:
        parts = sorted(self.parts_dir.glob("*.h5")) if self.parts_dir.exists() else []
        if parts or not self.path.exists():
            sources = ([self.path] if self.path.exists() else []) + parts
            _join(sources, self.path, self.config_json, self.classes)
            for p in parts:
                p.unlink()
            if self.parts_dir.exists() and not any(self.parts_dir.iterdir()):
                self.parts_dir.rmdir()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # on an error the parts stay for the next run (a join could only mask it); on Ctrl-C
        # the finished work is joined, so that the cache holds it
        self.close(join=exc_type is None or issubclass(exc_type, KeyboardInterrupt))
