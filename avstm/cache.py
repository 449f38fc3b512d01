"""The HDF5 feature cache: per-second visual and audio maps of every video, written once.

File layout (format ``avstm-cache/1``; docs in README.md "The feature cache"):

    /                      attrs: format, config (extract config, JSON), config_sha256,
                                  classes (JSON list; background = len(classes)), avstm_version
    /videos/<key>/visual   (S, T, 8, 8, C_v) float16|float32, chunk (1, T, 8, 8, C_v)
    /videos/<key>/audio    (S, T, 6, 4, 512) float16|float32, chunk (1, T, 6, 4, 512)
    /videos/<key>/times    (S, T) float64 seconds
    /videos/<key>/labels   (S,) int64 per-second class (background = len(classes))
                 attrs: id, label (int), split, source, duration, has_audio,
                        visual_scale, audio_scale (stored = value / scale), complete

``<key>`` is the id with ``/`` escaped. Stored maps are divided by a power-of-two scale per video
and modality so that float16 never overflows (random-init ResNet-152 features reach ~1e9); the
reader multiplies it back and returns float32.

Crash safety: a writer never opens the final file for writing. Videos go into part files in
``<out>.parts/``: a part is built in memory (an HDF5 file in a BytesIO) and written to disk in
one go, atomically, when it closes, after ``PART_VIDEOS`` videos, ``PART_SECONDS`` seconds or
``PART_BYTES`` bytes, whichever comes first. ``close()`` joins the existing cache and the parts
into a new file that is renamed onto ``<out>``. A killed run therefore leaves a cache that
opens (the last finished one) plus the finished parts, which the next run keeps; at most the
videos of the part being built (a few videos or seconds of work) are computed again. One writer
at a time per output (a lock file).

Filesystem faults: HDF5 never writes a part to the disk itself (a full disk inside HDF5 ends in
a cascade of errors and a segmentation fault), so a part that cannot be written (read-only, no
space, quota) is an ``OSError`` of plain file I/O: the part is abandoned (its videos are
computed again next time), the closed parts are kept, and the error is raised in the main thread
as :class:`avstm.errors.StorageError`. The join checks the free space it needs first.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import hashlib
import io
import json
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
import torch

from avstm._version import __version__
from avstm.errors import CacheError, ConfigMismatch, StorageError
from avstm.io import check_free_space, check_writable, is_storage_error, storage_error, write_bytes

FORMAT = "avstm-cache/1"
FP16_LIMIT = 16384.0  # stored |value| stays below this (float16 max is 65504)
DATASETS = ("visual", "audio", "times", "labels")  # every complete video holds these
# A part closes after this many videos, seconds or stored bytes (what a kill can cost, and the
# memory a part takes while it is built)
PART_VIDEOS = 8
PART_SECONDS = 10.0
PART_BYTES = 256 * 2**20
JOIN_MARGIN = 64 * 2**10  # bytes of free space beyond the sources' sizes that a join asks for


@dataclasses.dataclass
class VideoRecord:
    """One video's features, as the extractor hands them to the writer.

    visual (S, T, 8, 8, C_v) float32; audio (S, T, 6, 4, 512) float32; times (S, T) float64;
    labels (S,) int64 per-second classes; label the video-level class index.
    """

    id: str
    visual: np.ndarray
    audio: np.ndarray
    times: np.ndarray
    labels: np.ndarray
    label: int
    split: str
    source: str
    duration: float
    has_audio: bool = True


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """A cached video's metadata (no feature data is read)."""

    id: str
    label: int
    split: str
    num_seconds: int
    source: str
    duration: float
    fps: int
    has_audio: bool


def video_key(video_id: str) -> str:
    """The HDF5 group name of a video id (``/`` and a leading ``.`` escaped)."""
    key = video_id.replace("%", "%25").replace("/", "%2F")
    return "%2E" + key[1:] if key.startswith(".") else key


def config_sha256(config_json: str) -> str:
    return hashlib.sha256(config_json.encode("utf-8")).hexdigest()


def fp16_scale(max_abs: float, dtype: str = "float16") -> float:
    """The power of two that keeps stored float16 values below FP16_LIMIT (1 for float32)."""
    if dtype != "float16" or max_abs < FP16_LIMIT:
        return 1.0
    return float(2.0 ** math.ceil(math.log2(max_abs / FP16_LIMIT)))


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
        data, scale = _encode(arr, dtype, f"{rec.source}: {name}")
        group.create_dataset(name, data=data, chunks=(1,) + arr.shape[1:])
        group.attrs[f"{name}_scale"] = scale
    group.create_dataset("times", data=rec.times.astype(np.float64))
    group.create_dataset("labels", data=rec.labels.astype(np.int64))
    group.attrs.update(id=rec.id, label=int(rec.label), split=rec.split, source=rec.source,
                       duration=float(rec.duration), has_audio=bool(rec.has_audio))
    group.attrs["complete"] = True


def _root_attrs(f: h5py.File, config_json: str, classes: list[str]) -> None:
    f.attrs.update(format=FORMAT, config=config_json, config_sha256=config_sha256(config_json),
                   classes=json.dumps(classes), avstm_version=__version__)


def _read_root(f: h5py.File, path) -> tuple[dict, list[str]]:
    if f.attrs.get("format") != FORMAT:
        raise CacheError(f"{path}: not an avstm feature cache (format attribute {f.attrs.get('format')!r})")
    try:
        return json.loads(f.attrs["config"]), json.loads(f.attrs["classes"])
    except (KeyError, ValueError) as e:
        raise CacheError(f"{path}: unreadable config or classes attribute ({e})") from None


def open_cache_file(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, or CacheError in one line (missing, truncated, not HDF5)."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"{path}: no such cache")
    try:
        return h5py.File(path, "r")
    except OSError as e:  # h5py's text: "Unable to synchronously open file (truncated file: ...)"
        reason = " ".join(str(e).split())
        inner = re.fullmatch(r".*?open file \((.*)\)", reason)
        raise CacheError(f"{path}: not a readable HDF5 file ({inner.group(1) if inner else reason})") from None


# Fields of the extract config that decide a cache's content: a cache written with other values
# is refused, by the writer (resume, merge) and by check_fits (a checkpoint's features).
CONTENT_FIELDS = ("visual_backbone", "visual_weights_sha", "visual_tap", "visual_channels",
                  "audio_weights_sha", "frame_size", "fps", "sample_rate", "dtype", "seed",
                  "cache_format")


def check_fits(checkpoint, trained_on: dict, cache_path, cache_config: dict, *,
               trained_classes: list[str] | None = None, cache_classes: list[str] | None = None) -> None:
    """Refuse a cache whose features are not those the ``checkpoint`` was trained on.

    The one rule of ``avstm train --resume``, ``avstm localize --cache`` and ``avstm evaluate``:
    every ``CONTENT_FIELDS`` value of the checkpoint's stored extract config (``trained_on``)
    equals the cache's (a float32 cache does not fit a float16-trained checkpoint), and, when
    both class lists are given, the classes are equal (localize reads maps, not labels, and
    passes none). Raises ConfigMismatch naming both files and each differing field.
    """
    diff = compare_configs(trained_on, cache_config, fields=CONTENT_FIELDS)
    if diff:
        parts = ", ".join(f"{k}: {trained_on.get(k)!r} in the checkpoint, {cache_config.get(k)!r} "
                          f"in the cache" for k in diff)
        raise ConfigMismatch(f"{checkpoint}: trained on features of another extract config than "
                             f"{cache_path} ({parts})")
    if trained_classes is not None and cache_classes is not None \
            and list(trained_classes) != list(cache_classes):
        raise ConfigMismatch(f"{checkpoint}: trained on other classes than {cache_path} holds")


def compare_configs(stored: dict, wanted: dict, *, fields: Iterable[str] | None = None) -> list[str]:
    """The names of the fields whose values differ (all keys of both, or only ``fields``)."""
    keys = sorted(set(stored) | set(wanted)) if fields is None else list(fields)
    return [k for k in keys if stored.get(k) != wanted.get(k)]


def _mismatch(path, stored: dict, wanted: dict, diff: list[str]) -> ConfigMismatch:
    parts = ", ".join(f"{k}: {stored.get(k)!r} in the file, {wanted.get(k)!r} now" for k in diff)
    return ConfigMismatch(f"{path}: written with a different extract config ({parts}); "
                          f"use another --out or the same options")


def _complete_groups(f: h5py.File) -> Iterable[tuple[str, h5py.Group]]:
    videos = f.get("videos")
    if videos is None:
        return
    for key, g in videos.items():
        if g.attrs.get("complete", False):
            yield str(g.attrs["id"]), g


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


def _join(sources: list[Path], out: Path, config_json: str, classes: list[str]) -> int:
    """Copy the complete videos of ``sources`` into a new file renamed onto ``out``; returns the count.

    Videos are copied as stored (no decoding of chunks). The first copy of an id wins. The free
    space the copy takes (the sources' sizes) is checked first: HDF5 must not meet a full disk.
    """
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    need = sum(p.stat().st_size for p in sources) + JOIN_MARGIN
    check_free_space(out.parent, need, what=f"joining {len(sources)} file(s) into {out.name}")
    n = 0
    try:
        with h5py.File(tmp, "w") as dst:
            _root_attrs(dst, config_json, classes)
            videos = dst.create_group("videos")
            seen: set[str] = set()
            for src_path in sources:
                with open_cache_file(src_path) as src:
                    for vid, g in _complete_groups(src):
                        if vid in seen:
                            continue
                        seen.add(vid)
                        src.copy(g, videos, name=video_key(vid))
                        n += 1
        os.replace(tmp, out)
    except OSError as e:
        if is_storage_error(e):
            raise storage_error(out, e) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def merge_caches(inputs: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join caches (e.g. the shards of a multi-process extraction) into one file; returns videos.

    All inputs must hold the same extract config and classes (ConfigMismatch otherwise). The
    result is a copy, self-contained (no links to the inputs). ``out`` is locked while it is
    written, and an input that a writer still holds is refused (CacheError naming its pid).
    """
    inputs, out = [Path(p) for p in inputs], Path(out)
    if not inputs:
        raise CacheError("merge: no input caches")
    check_writable(out.parent)  # the join checks the free space it needs
    lock = acquire_lock(out)
    try:
        return _merge(inputs, out)
    finally:
        release_lock(lock)


def _merge(inputs: list[Path], out: Path) -> int:
    ref = None
    for p in inputs:
        if p.resolve() != out.resolve() and lock_path(p).exists():
            check_unlocked(p)  # a shard still being written would be merged half done
        with open_cache_file(p) as f:
            cfg, classes = _read_root(f, p)
            if ref is None:
                ref = (p, cfg, classes, f.attrs["config"])
            else:
                diff = compare_configs(ref[1], cfg)
                if diff:
                    raise _mismatch(p, cfg, ref[1], diff)
                if classes != ref[2]:
                    raise ConfigMismatch(f"{p}: other classes than {ref[0]}")
    return _join(inputs, out, ref[3], ref[2])


class FeatureCache:
    """Read-only access to a cache. Open one per process (not shared across DataLoader workers).

    Feature reads return float32, channels-last: visual (S, T, 8, 8, C_v), audio (S, T, 6, 4, 512).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = open_cache_file(self.path)
        self.config, self.classes = _read_root(self._f, self.path)
        self._groups = dict(_complete_groups(self._f))
        for vid, g in self._groups.items():  # a complete entry lacking a dataset is damage
            absent = [n for n in DATASETS if not isinstance(g.get(n), h5py.Dataset)]
            if absent:
                self._f.close()
                raise CacheError(f"{self.path}: video {vid!r} lacks its {', '.join(absent)} dataset(s) "
                                 f"(a damaged cache; avstm cache verify {self.path} lists what is wrong)")
        self.fps = int(self.config.get("fps", 4))

    @property
    def background(self) -> int:
        return len(self.classes)

    def ids(self, split: str | None = None) -> list[str]:
        """Sorted ids of the cached videos, optionally of one split."""
        return sorted(i for i, g in self._groups.items() if split is None or g.attrs["split"] == split)

    def _group(self, video_id: str) -> h5py.Group:
        try:
            return self._groups[video_id]
        except KeyError:
            raise CacheError(f"{self.path}: no video {video_id!r} in the cache") from None

    def entry(self, video_id: str) -> VideoEntry:
        g = self._group(video_id)
        a = g.attrs
        return VideoEntry(id=video_id, label=int(a["label"]), split=str(a["split"]),
                          num_seconds=int(g["labels"].shape[0]), source=str(a["source"]),
                          duration=float(a["duration"]), fps=int(g["times"].shape[1]),
                          has_audio=bool(a.get("has_audio", True)))

    def stored(self, video_id: str, name: str, seconds: slice | int | None = None) -> tuple[np.ndarray, float]:
        """The maps ``name`` ("visual" or "audio") as stored, float16 or float32 and channels-last,
        with the scale that turns them into values (value = stored × scale). No conversion: the
        cheapest read, for readers that convert on the GPU."""
        g = self._group(video_id)
        return g[name][slice(None) if seconds is None else seconds], float(g.attrs.get(f"{name}_scale", 1.0))

    def _read(self, video_id: str, name: str, seconds) -> np.ndarray:
        x, scale = self.stored(video_id, name, seconds)
        x = x.astype(np.float32)
        return x * np.float32(scale) if scale != 1.0 else x

    def visual(self, video_id: str, seconds: slice | int | None = None) -> np.ndarray:
        """(S, T, 8, 8, C_v) float32 (a single second drops the S axis)."""
        return self._read(video_id, "visual", seconds)

    def audio(self, video_id: str, seconds: slice | int | None = None) -> np.ndarray:
        """(S, T, 6, 4, 512) float32 (a single second drops the S axis)."""
        return self._read(video_id, "audio", seconds)

    def times(self, video_id: str) -> np.ndarray:
        """(S, T) float64 frame times in seconds."""
        return self._group(video_id)["times"][()]

    def labels(self, video_id: str) -> np.ndarray:
        """(S,) int64 per-second labels (background = ``len(classes)``)."""
        return self._group(video_id)["labels"][()]

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._groups)


def _expected_shapes(cfg: dict, s: int) -> dict[str, tuple[int, ...]]:
    """The dataset shapes a video of ``s`` seconds must have under the extract config ``cfg``."""
    fps = int(cfg.get("fps", 4))
    side = math.ceil(int(cfg.get("frame_size", 256)) / 32)  # both backbones have stride 32 (256 → 8)
    return {"visual": (s, fps, side, side, int(cfg.get("visual_channels", 0))),
            "audio": (s, fps, 6, 4, 512), "times": (s, fps), "labels": (s,)}


def _verify_video(key: str, g, cfg: dict, classes: list[str]) -> list[str]:
    """The problems of one ``/videos/<key>`` group (an empty list when it is sound)."""
    where = f"videos/{key}"
    if not isinstance(g, h5py.Group):
        return [f"{where}: not a group"]
    a = g.attrs
    if not a.get("complete", False):
        return [f"{where}: no completion mark (a partial entry that readers ignore)"]
    problems: list[str] = []
    vid = a.get("id")
    if vid is None or video_key(str(vid)) != key:
        problems.append(f"{where}: id attribute {vid!r} does not match the group name")
    missing = [k for k in ("label", "split", "source", "duration", "visual_scale", "audio_scale") if k not in a]
    if missing:
        problems.append(f"{where}: missing attributes {', '.join(missing)}")
    absent = [n for n in DATASETS if not isinstance(g.get(n), h5py.Dataset)]
    if absent:
        return problems + [f"{where}: missing datasets {', '.join(absent)}"]
    s = g["labels"].shape[0] if g["labels"].ndim == 1 else -1
    for name, want in _expected_shapes(cfg, s).items():
        if g[name].shape != want:
            problems.append(f"{where}/{name}: shape {g[name].shape}, expected {want} from the config")
    dtype = str(cfg.get("dtype", "float32"))
    for name in ("visual", "audio"):
        ds = g[name]
        if str(ds.dtype) != dtype:
            problems.append(f"{where}/{name}: dtype {ds.dtype}, the config says {dtype}")
        bad = sum(int((~np.isfinite(ds[i:i + 1])).sum()) for i in range(ds.shape[0])) if ds.ndim else 0
        if bad:
            problems.append(f"{where}/{name}: {bad} values are inf or NaN")
        scale = a.get(f"{name}_scale", 1.0)
        if not (np.isfinite(scale) and scale > 0):
            problems.append(f"{where}: {name}_scale {scale!r} is not a positive number")
    times = g["times"][()]
    if times.size and not (np.isfinite(times).all() and (np.diff(times.reshape(-1)) > 0).all()):
        problems.append(f"{where}/times: not finite and increasing")
    labels = g["labels"][()]
    if labels.size and not ((labels >= 0) & (labels <= len(classes))).all():
        problems.append(f"{where}/labels: values outside 0..{len(classes)} (background = {len(classes)})")
    if "label" in a and not 0 <= int(a["label"]) < len(classes):
        problems.append(f"{where}: label {int(a['label'])} is not a class index (0..{len(classes) - 1})")
    if "split" in a and str(a["split"]) not in ("train", "val", "test"):
        problems.append(f"{where}: unknown split {a['split']!r}")
    return problems


def verify_cache(path: str | os.PathLike) -> list[str]:
    """Check a cache and list what is wrong (an empty list: the cache is sound).

    Checks the root attributes (format, config JSON, ``config_sha256`` against the config,
    classes), and for every video its completion mark, id, attributes, dataset shapes against
    the config (``(S, fps, ceil(frame_size / 32), same, visual_channels)``, ``(S, fps, 6, 4, 512)``,
    ``(S, fps)``, ``(S,)``), dtype, finite values, increasing times and label ranges. Parts left
    by an interrupted run are listed too. Each problem is one line starting with the path.
    Reads every feature value once, one second at a time (memory stays small).
    """
    path = Path(path)
    problems: list[str] = []
    parts = path.with_name(path.name + ".parts")
    if parts.is_dir() and any(parts.glob("*.h5")):
        problems.append(f"{len(list(parts.glob('*.h5')))} finished parts in {parts} are not joined "
                        f"(an interrupted run; run avstm extract again to finish it)")
    if not path.exists():
        return [f"{path}: no such cache"] + [f"{path}: {p}" for p in problems]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        return [f"{path}: not a readable HDF5 file ({e})"]
    with f:
        a = f.attrs
        if a.get("format") != FORMAT:
            problems.append(f"format attribute {a.get('format')!r}, expected {FORMAT!r}")
        cfg, classes = {}, []
        try:
            config_json = str(a["config"])
            cfg = json.loads(config_json)
            if a.get("config_sha256") != config_sha256(config_json):
                problems.append("config_sha256 does not match the config attribute (edited or damaged)")
            if not isinstance(cfg, dict) or int(cfg.get("visual_channels", 0)) <= 0 or int(cfg.get("fps", 0)) <= 0:
                problems.append("config lacks fps or visual_channels")
                cfg = cfg if isinstance(cfg, dict) else {}
        except (KeyError, ValueError, TypeError) as e:
            problems.append(f"unreadable config attribute ({type(e).__name__}: {e})")
        try:
            classes = json.loads(a["classes"])
            if not isinstance(classes, list) or not classes:
                problems.append("classes attribute is not a non-empty list")
                classes = classes if isinstance(classes, list) else []
        except (KeyError, ValueError) as e:
            problems.append(f"unreadable classes attribute ({type(e).__name__}: {e})")
        videos = f.get("videos")
        if not isinstance(videos, h5py.Group):
            problems.append("no /videos group")
        else:
            for key in sorted(videos):
                try:
                    problems += _verify_video(key, videos[key], cfg, classes)
                except (OSError, KeyError, ValueError, TypeError) as e:
                    problems.append(f"videos/{key}: unreadable ({type(e).__name__}: {e})")
    return [f"{path}: {p}" for p in problems]
