"""The extract stage: decode videos in parallel workers, run the frozen backbones in large
batches, write per-second maps into the HDF5 cache.

    items ──(DataLoader workers: one decode pass per video + log-mel)──► frames, log-mel examples
          ──(main: fixed-size batches cut across videos, pinned memory, non-blocking copies,
             channels_last + bf16 autocast on CUDA; batch k+1 is launched before batch k is
             collected)──► maps
          ──(writer thread)──► cache parts ──(close)──► cache.h5

A video that fails (missing, corrupt, no video stream, non-finite features) is reported and
skipped; it never stops the run nor leaves a partial entry. Under ``torchrun`` each rank takes
every world-th video into its own shard and rank 0 merges the shards (a copy into one file).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
from tqdm import tqdm

from avstm import media
from avstm.cache import CONTENT_FIELDS, CacheWriter, VideoRecord, check_unlocked, lock_path, merge_caches
from avstm.datasets import Dataset, VideoItem, anchored_times, second_labels
from avstm.device import init_distributed, local_rank
from avstm.errors import HardwareDecodeError, MediaError
from avstm.io import check_free_space, check_writable, human_bytes
from avstm.extract.config import ExtractConfig
from avstm.extract.features import FeatureExtractor, _Launched, audio_examples

TIMING_KEYS = ("setup", "decode", "decode_wait", "stage", "transfer", "backbone", "write", "close")
ESTIMATE_SECONDS = 10  # the length assumed for a video in the first estimate of the space needed (AVE's)


@dataclasses.dataclass
class Decoded:
    """A decoded video ready for the backbones (or the reason it failed)."""

    item: VideoItem
    frames: torch.Tensor | None = None  # (N, H, W, 3) uint8
    logmel: torch.Tensor | None = None  # (N, 96, 64) float32
    times: np.ndarray | None = None  # (S, T)
    duration: float = 0.0
    has_audio: bool = True
    error: str | None = None
    fatal: bool = False  # the error is the machine's (no hardware decoder), not the video's
    seconds: float = 0.0  # decoding time


class _DecodeSet(torch.utils.data.Dataset):
    def __init__(self, items: list[VideoItem], config: ExtractConfig):
        self.items, self.config = items, config
        self.hwaccel = decode_device(config)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Decoded:
        item, cfg = self.items[i], self.config
        t0 = time.perf_counter()
        try:
            wanted = None if item.anchor is None else anchored_times(item.anchor, cfg.fps).ravel()
            clip = media.decode(item.path, fps=cfg.fps, size=(cfg.frame_size, cfg.frame_size),
                                times=wanted, threads=cfg.decode_threads, hwaccel=self.hwaccel)
        except HardwareDecodeError as e:  # the machine's problem, not the video's: the run stops
            return Decoded(item, error=str(e), fatal=True)
        except MediaError as e:
            return Decoded(item, error=e.problem)
        except (av.FFmpegError, OSError) as e:  # a media fault media.py did not name: this video
            return Decoded(item, error=f"cannot decode ({type(e).__name__}: {e})")
        # anything else is a bug in avstm: it stops the run (exit 1, a traceback) instead of
        # failing every video with exit 0
        times = clip.times.reshape(-1, cfg.fps)
        logmel = audio_examples(clip.audio, times)
        return Decoded(item, frames=torch.from_numpy(clip.frames), logmel=torch.from_numpy(logmel),
                       times=times, duration=clip.info.duration, has_audio=clip.info.has_audio,
                       seconds=time.perf_counter() - t0)


def _worker_init(_):
    torch.set_num_threads(1)


def _as_is(d: Decoded) -> Decoded:
    return d


def decode_device(config: ExtractConfig) -> str | None:
    """The hardware decoder of ``config`` for ``media.decode`` ("cuda:N"), or None (software).
    A bare "cuda" under torchrun is this rank's GPU."""
    index = media.decode_device_index(config.decode_device)
    if index is None:
        return None
    return f"cuda:{index or local_rank()}"  # FFmpeg's NVDEC, not torch's


def decode_loader(items: list[VideoItem], config: ExtractConfig, *, start_method: str | None = None
                  ) -> torch.utils.data.DataLoader:
    """The decoding DataLoader of ``extract``: yields one :class:`Decoded` per item, in order,
    decoded by ``config.workers`` processes (each with one torch thread) running ahead.

    Workers are forked, except with NVDEC decoding: a process forked from one that uses CUDA
    cannot use CUDA itself, so they are spawned (``start_method`` overrides the choice).
    """
    if start_method is None and config.workers and decode_device(config) is not None:
        start_method = "spawn"
    return torch.utils.data.DataLoader(
        _DecodeSet(items, config), batch_size=None, shuffle=False, num_workers=config.workers,
        collate_fn=_as_is, worker_init_fn=_worker_init if config.workers else None,
        prefetch_factor=4 if config.workers else None, persistent_workers=False,
        multiprocessing_context=start_method if config.workers else None)


def check_decode_device(items: list[VideoItem], config: ExtractConfig, tries: int = 3) -> None:
    """Raise HardwareDecodeError now, not once per video, when ``config.decode_device`` asks for
    NVDEC and FFmpeg cannot open it here (tried on the first videos that open at all)."""
    hw = decode_device(config)
    if hw is None:
        return
    for item in items[:tries]:
        try:
            media.probe_decoder(item.path, hw)
            return
        except MediaError:
            continue  # a bad file says nothing about the decoder; its turn to fail comes later


class _Batcher:
    """Cuts the frames of consecutive videos into backbone batches of a fixed size, and hands a
    video back once the features of all its frames have come back."""

    def __init__(self, pin: bool):
        self.pin = pin
        self.inputs: collections.deque = collections.deque()  # (frames, logmel) not yet batched
        self.buffered = 0
        self.videos: collections.deque = collections.deque()  # Decoded waiting for features
        self.outputs: collections.deque = collections.deque()  # (visual, audio) chunks
        self.ready = 0

    def add(self, d: Decoded) -> None:
        self.inputs.append((d.frames, d.logmel))
        self.buffered += len(d.frames)
        self.videos.append(d)

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``n`` buffered frames and their log-mel examples, in (pinned) batch tensors."""
        parts = _take(self.inputs, n)
        self.buffered -= n
        first_f, first_m = parts[0]
        frames = torch.empty((n, *first_f.shape[1:]), dtype=first_f.dtype, pin_memory=self.pin)
        logmel = torch.empty((n, *first_m.shape[1:]), dtype=first_m.dtype, pin_memory=self.pin)
        torch.cat([p[0] for p in parts], out=frames)
        torch.cat([p[1] for p in parts], out=logmel)
        return frames, logmel

    def done(self, visual: torch.Tensor, audio: torch.Tensor
             ) -> Iterator[tuple[Decoded, np.ndarray, np.ndarray]]:
        """Add a batch's features; yield (video, visual (N, h, w, C), audio (N, 6, 4, 512)) for
        each video now complete."""
        self.outputs.append((visual, audio))
        self.ready += len(visual)
        while self.videos and len(self.videos[0].frames) <= self.ready:
            d = self.videos.popleft()
            n = len(d.frames)
            v, a = (torch.cat(x) if len(x) > 1 else x[0] for x in zip(*_take(self.outputs, n)))
            self.ready -= n
            yield d, v.numpy(), a.numpy()


def _take(chunks: collections.deque, n: int) -> list[tuple[torch.Tensor, ...]]:
    """Pop the first ``n`` rows off a deque of equally long tuples of tensors (splitting one)."""
    parts = []
    while n > 0:
        head = chunks.popleft()
        k = len(head[0])
        if k > n:
            chunks.appendleft(tuple(t[n:] for t in head))
            head, k = tuple(t[:n] for t in head), n
        parts.append(head)
        n -= k
    return parts


@dataclasses.dataclass
class ExtractResult:
    """What a run did. ``failed``: (id, path, reason) per video that could not be extracted.

    ``timings`` (seconds): setup (loading the backbones), decode (summed over the decoding
    workers, who run in parallel), decode_wait (the main process waiting for decoded videos),
    stage (cutting batches into pinned memory), transfer (host↔device copies; only measured
    with ``profile=True`` on CUDA, else inside backbone), backbone, write (waiting for the
    cache writer), close (the writer's final join of its parts into the cache; under torchrun
    also the merge of the shards).
    """

    out: str
    done: int = 0
    skipped: int = 0  # already in the cache
    failed: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    frames: int = 0
    wall: float = 0.0
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    config: dict = dataclasses.field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    def summary(self) -> str:
        t = self.timings
        lines = [f"{self.out}: {self.done} videos extracted, {self.skipped} already cached, "
                 f"{len(self.failed)} failed; {self.frames} frames in {self.wall:.1f} s "
                 f"({self.frames_per_second:.1f} frames/s)"]
        if self.frames:
            lines.append("  time: " + ", ".join(f"{k} {t.get(k, 0.0):.1f} s" for k in TIMING_KEYS))
        lines += [f"  failed: {path}: {reason}" for _, path, reason in self.failed]
        return "\n".join(lines)


def shard_path(out: Path, rank: int, world: int) -> Path:
    """The cache a rank writes under torchrun: ``<stem>.shard{rank}of{world}<suffix>``."""
    return out.with_name(f"{out.stem}.shard{rank}of{world}{out.suffix}")


def extract(dataset: Dataset, out: str | os.PathLike, *, config: ExtractConfig = ExtractConfig(),
            progress: bool = True, profile: bool = False) -> ExtractResult:
    """Extract the features of ``dataset``'s videos into the cache ``out`` (resumable).

    Videos already in ``out`` are skipped without reading their data; ``config.limit`` caps the
    number of new videos. Returns the run's summary; failures are listed, not raised.
    ``profile``: synchronise CUDA around copies and compute so that ``timings`` splits them
    (costs the overlap of one batch's copies with the next one's compute).
    """
    out = Path(out)
    d = init_distributed(backend="gloo")  # its collectives are barriers: gloo, also on GPUs
    rank, world = d.rank, d.world_size
    t_start = time.perf_counter()
    check_writable(out.parent)  # before loading models: a read-only or full disk fails now
    check_unlocked(out if world == 1 else shard_path(out, rank, world))
    check_decode_device(dataset.items, config)
    extractor = FeatureExtractor(config)
    with _main_threads(1 if extractor.cuda and config.workers > 0 else None):
        return _extract(dataset, out, extractor, rank, world, t_start, progress, profile)


@contextlib.contextmanager
def _main_threads(n: int | None):
    """Run with ``n`` torch threads in this process (None: unchanged), restored afterwards.

    With the model on a GPU the main process only batches and copies; its default of one
    thread per core would compete with every decoding worker for the cores (and OpenMP threads
    that lose their core spin), slowing both.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _extract(dataset: Dataset, out: Path, extractor: FeatureExtractor, rank: int, world: int,
             t_start: float, progress: bool, profile: bool) -> ExtractResult:
    cfg = extractor.config
    stored = cfg.to_dict()
    target = out if world == 1 else shard_path(out, rank, world)
    timings = dict.fromkeys(TIMING_KEYS, 0.0)
    result = ExtractResult(out=str(out), config=stored, timings=timings)
    queued: dict[str, int] = {}  # id -> frames of each video handed to the writer
    with CacheWriter(target, config=stored, classes=dataset.classes, content_fields=CONTENT_FIELDS) as writer:
        done = writer.done_ids()
        if world > 1 and out.exists():
            from avstm.cache import FeatureCache
            with FeatureCache(out) as merged:
                done |= set(merged.ids())
        mine = [it for i, it in enumerate(dataset.items) if i % world == rank]
        todo = [it for it in mine if it.id not in done]
        result.skipped = len(mine) - len(todo)
        if cfg.limit is not None:
            todo = todo[:cfg.limit]
        _check_space(target, cfg, len(todo))
        bar = tqdm(total=len(todo), unit="video", disable=not progress or not sys.stderr.isatty(),
                   desc=f"extract{'' if world == 1 else f' [rank {rank}]'}")
        batcher = _Batcher(pin=extractor.cuda)
        sync_timings = timings if profile else None
        pad_to = cfg.batch_size if cfg.compile else None

        def finish(launched: _Launched) -> None:
            t0 = time.perf_counter()
            outputs = extractor.collect(launched)
            timings["backbone"] += time.perf_counter() - t0
            for d, visual, audio in batcher.done(*outputs):
                t0 = time.perf_counter()
                _write(writer, result, dataset, d, visual, audio, queued)
                timings["write"] += time.perf_counter() - t0
                bar.update(1)
            bar.set_postfix(frames_per_s=f"{result.frames / max(time.perf_counter() - t_start, 1e-9):.1f}")

        def launch(n: int) -> _Launched:
            t0 = time.perf_counter()
            frames, logmel = batcher.take(n)
            t1 = time.perf_counter()
            timings["stage"] += t1 - t0
            launched = extractor.launch(frames, logmel, pad_to=pad_to, timings=sync_timings)
            if sync_timings is None:
                timings["backbone"] += time.perf_counter() - t1
            return launched

        timings["setup"] = time.perf_counter() - t_start
        in_flight: _Launched | None = None
        loader = iter(decode_loader(todo, cfg))
        while True:
            t0 = time.perf_counter()
            d = next(loader, None)
            timings["decode_wait"] += time.perf_counter() - t0
            if d is None:
                break
            if d.fatal:
                raise HardwareDecodeError(d.error)  # what is finished stays in the cache's parts
            if d.error is not None:
                result.failed.append((d.item.id, d.item.path, d.error))
                bar.update(1)
                continue
            timings["decode"] += d.seconds
            batcher.add(d)
            while batcher.buffered >= cfg.batch_size:
                launched = launch(cfg.batch_size)  # batch k+1 starts before batch k is written
                if in_flight is not None:
                    finish(in_flight)
                in_flight = launched
        if batcher.buffered:
            launched = launch(batcher.buffered)
            if in_flight is not None:
                finish(in_flight)
            in_flight = launched
        if in_flight is not None:
            finish(in_flight)
        bar.close()
        t0 = time.perf_counter()
    _count_rejected(writer, result, dataset, queued)  # the writer has closed: all are handled
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        if rank == 0:
            shards = [shard_path(out, r, world) for r in range(world)]
            merge_caches(([out] if out.exists() else []) + shards, out)
            for s in shards:
                s.unlink()
                lock_path(s).unlink(missing_ok=True)  # its writer has closed
        dist.barrier()
    timings["close"] += time.perf_counter() - t0  # the writer's final join (and the merge)
    result.wall = time.perf_counter() - t_start
    return result


def bytes_per_second(config: ExtractConfig) -> int:
    """Stored bytes of one second of video in the cache (visual + audio maps) under ``config``
    as the extractor fills it in (``visual_channels``, ``visual_stride``)."""
    side = math.ceil(config.frame_size / config.visual_stride)
    values = config.fps * (side * side * int(config.visual_channels or 0) + 6 * 4 * 512)
    return values * (2 if config.dtype == "float16" else 4)


def _check_space(target: Path, config: ExtractConfig, videos: int) -> None:
    """A first estimate of the space the run needs (videos of ESTIMATE_SECONDS): refused when
    one video does not fit, a warning when the whole run (its parts, then their join: twice)
    may not fit."""
    if not videos:
        return
    one = bytes_per_second(config) * ESTIMATE_SECONDS
    check_free_space(target.parent, one, what=f"the features of one {ESTIMATE_SECONDS} s video")
    free, need = shutil.disk_usage(target.parent).free, 2 * one * videos
    if free < need:
        warnings.warn(f"{target.parent}: {human_bytes(free)} free; {videos} videos of {ESTIMATE_SECONDS} s "
                      f"may need about {human_bytes(need)} (their parts, then the joined cache)",
                      stacklevel=2)


def _write(writer: CacheWriter, result: ExtractResult, dataset: Dataset, d: Decoded,
           visual: np.ndarray, audio: np.ndarray, queued: dict[str, int]) -> None:
    """Queue one finished video for the cache (``queued``: id -> frames); it counts as done
    unless the writer refuses it (``_count_rejected``)."""
    n = len(d.frames)
    s, t = d.times.shape
    writer.write(VideoRecord(
        id=d.item.id, visual=visual.reshape(s, t, *visual.shape[1:]),
        audio=audio.reshape(s, t, *audio.shape[1:]), times=d.times,
        labels=second_labels(d.item, s, dataset.classes),
        label=dataset.classes.index(d.item.label), split=d.item.split, source=d.item.path,
        duration=d.duration, has_audio=d.has_audio))
    result.done += 1
    result.frames += n
    queued[d.item.id] = n


def _count_rejected(writer: CacheWriter, result: ExtractResult, dataset: Dataset,
                    queued: dict[str, int]) -> None:
    """Videos the writer refused (inf or NaN in their maps: the one check of finite features,
    ``avstm.cache.writer``) are failures, not done: moved from ``done`` and ``frames`` to
    ``failed``. Call once the writer has closed (every queued video handled)."""
    items = {it.id: it for it in dataset.items}
    for vid, reason in writer.rejected:
        result.done -= 1
        result.frames -= queued[vid]
        result.failed.append((vid, items[vid].path, reason))
