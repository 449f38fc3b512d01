"""Reading the feature cache for training: normalisation statistics, the one-random-second
training set, the whole-video validation set, and an in-memory copy of a split.

A ``FeatureCache`` (an open HDF5 file) is never shared between processes: the datasets keep
only the cache's path and open it lazily, once per DataLoader worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from avstm.cache import FeatureCache
from avstm.errors import CacheError
from avstm.memnet.config import LABEL_MODES



@dataclass(frozen=True)
class VideoInfo:
    """What the trainer needs to know of a video without reading its maps."""

    id: str
    label: int  # event class index
    num_seconds: int  # S


@dataclass
class NormStats:
    """Per-channel mean and std of raw cached features over a split: visual (C_v,), audio (512,),
    float64. Constant channels get std 1 so that they map to 0 and not to NaN."""

    visual_mean: np.ndarray
    visual_std: np.ndarray
    audio_mean: np.ndarray
    audio_std: np.ndarray


class _Moments:
    """Streaming per-channel mean and sum of squared deviations (Chan et al.'s merge), float64,
    exact for features as large as 1e8 where E[x²] − E[x]² would cancel."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, x: np.ndarray) -> None:
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)  # (N, C)
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total

    def std(self) -> np.ndarray:
        std = np.sqrt(self.m2 / max(self.n, 1))
        ok = np.isfinite(std) & (std > 1e-12 * max(float(np.nanmax(std, initial=0.0)), 1e-30))
        return np.where(ok, std, 1.0)


def compute_stats(cache_path: str | os.PathLike, ids: list[str], *, progress: bool = False
                  ) -> NormStats:
    """Per-channel statistics of the raw features of videos ``ids`` (all their frames)."""
    with FeatureCache(cache_path) as cache:
        vis = aud = None
        for vid in tqdm(ids, desc="feature statistics", disable=not progress, leave=False):
            v, a = cache.visual(vid), cache.audio(vid)  # (S, T, 8, 8, C_v), (S, T, 6, 4, 512)
            if vis is None:
                vis, aud = _Moments(v.shape[-1]), _Moments(a.shape[-1])
            vis.add(v)
            aud.add(a)
    if vis is None:
        raise CacheError(f"{cache_path}: no videos to compute feature statistics from")
    if not (np.all(np.isfinite(vis.mean)) and np.all(np.isfinite(aud.mean))):
        raise CacheError(f"{cache_path}: cached features contain inf or NaN")
    return NormStats(vis.mean, vis.std(), aud.mean, aud.std())


def video_infos(cache: FeatureCache, split: str) -> list[VideoInfo]:
    """The videos of ``split`` in the cache's (sorted) order."""
    out = []
    for vid in cache.ids(split):
        e = cache.entry(vid)
        out.append(VideoInfo(id=vid, label=int(e.label), num_seconds=int(e.num_seconds)))
    return out


def split_bytes(cache_path: str | os.PathLike, infos: list[VideoInfo]) -> int:
    """Bytes that ``preload`` of ``infos`` takes in memory."""
    if not infos:
        return 0
    with FeatureCache(cache_path) as cache:
        v, _ = cache.stored(infos[0].id, "visual", 0)  # (T, 8, 8, C_v) as stored
        a, _ = cache.stored(infos[0].id, "audio", 0)  # (T, 6, 4, 512)
    return (v.nbytes + a.nbytes) * sum(i.num_seconds for i in infos)


def available_memory() -> int:
    """Bytes of RAM available now (Linux), or 0 where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def model_input(maps, scale=1.0, *, device: torch.device | str | None = None,
                channels_last: bool = True) -> torch.Tensor:
    """Cached maps → the model's input: the one rule of their layout and scale.

    maps: (..., H, W, C) channels-last as the cache stores them (``FeatureCache.stored``:
    float16|float32; or float32 values, ``FeatureCache.visual``/``audio``), a numpy array or a
    tensor; ``channels_last=False``: already (..., C, H, W) (the held copy of ``preload``).
    scale: value = stored × scale (``avstm.cache``'s rule), a number, or a (B,) tensor with one
    scale per index of the first axis.
    Returns (..., C, H, W) float32 values on ``device`` (default: where ``maps`` are), a new
    tensor (never a view of ``maps``); channels-first as a view of channels-last memory
    (``.contiguous()`` where a copy in the model's layout is wanted).
    """
    x = torch.as_tensor(maps)
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.to(torch.float32, copy=True)
    if torch.is_tensor(scale):
        x.mul_(scale.to(x.device, non_blocking=True).view(-1, *([1] * (x.dim() - 1))))
    elif scale != 1.0:
        x.mul_(float(scale))
    return x.movedim(-1, -3) if channels_last else x


@dataclass
class _Held:
    """One video in memory, channels-first: visual (S, T, C_v, 8, 8) and audio (S, T, 512, 6, 4)
    as the cache stores them: float16 and the cache's power-of-two scale (value = stored ×
    scale; half the RAM) or float32 with scale 1; labels (S,) int64."""

    visual: np.ndarray
    visual_scale: float
    audio: np.ndarray
    audio_scale: float
    labels: np.ndarray


def _channels_first(stored: np.ndarray) -> np.ndarray:
    """(S, T, H, W, C) maps as the cache stores them → a (S, T, C, H, W) copy, the layout
    ``model_input(..., channels_last=False)`` reads."""
    return np.ascontiguousarray(stored.transpose(0, 1, 4, 2, 3))


def preload(cache_path: str | os.PathLike, infos: list[VideoInfo], *, progress: bool = False
            ) -> dict[str, _Held]:
    """Read videos ``infos`` into memory (id → _Held), as the cache stores them (float16 with
    the cache's own scales, or float32): no conversion, so no second copy of its scale rule."""
    out = {}
    with FeatureCache(cache_path) as cache:
        for info in tqdm(infos, desc="loading cache", disable=not progress, leave=False):
            (v, vs), (a, as_) = cache.stored(info.id, "visual"), cache.stored(info.id, "audio")
            out[info.id] = _Held(_channels_first(v), vs, _channels_first(a), as_,
                                 np.asarray(cache.labels(info.id), dtype=np.int64))
    return out


# A modality as the cache stores it: (maps (..., H, W, C) float16|float32 channels-last, scale).
# Workers that hand these over do a tenth of the work of converting to float32 channels-first
# (measured: 0.6 against 7.7 ms per training clip of 2048 channels) and pass half the bytes;
# ``model_batch`` converts on the training device.
Stored = tuple[np.ndarray, np.float32]


class _CacheReader:
    """Reads one video's seconds, from memory or from a lazily opened per-process cache."""

    def __init__(self, cache_path, *, memory: dict | None = None):
        self.cache_path = str(cache_path)
        self.memory = memory
        self._cache: FeatureCache | None = None
        self._pid = -1

    def __getstate__(self):  # a worker gets the path, never an open HDF5 handle
        state = dict(self.__dict__)
        state["_cache"], state["_pid"] = None, -1
        return state

    def _file(self) -> FeatureCache:
        """This process's open cache (opened on first use in each worker)."""
        if self._cache is None or self._pid != os.getpid():
            self._cache = FeatureCache(self.cache_path)
            self._pid = os.getpid()
        return self._cache

    def read(self, vid: str, seconds) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """visual (S', T, C_v, 8, 8), audio (S', T, 512, 6, 4) float32 contiguous tensors,
        labels (S',) for ``seconds`` (a slice)."""
        if self.memory is not None:
            h = self.memory[vid]
            v = model_input(h.visual[seconds], h.visual_scale, channels_last=False)
            a = model_input(h.audio[seconds], h.audio_scale, channels_last=False)
            return v, a, h.labels[seconds]
        c = self._file()
        v = model_input(c.visual(vid, seconds=seconds)).contiguous()
        a = model_input(c.audio(vid, seconds=seconds)).contiguous()
        return v, a, c.labels(vid)[seconds]

    def read_stored(self, vid: str, seconds) -> tuple[Stored, Stored, np.ndarray]:
        """As ``read``, from the HDF5 file (never its in-memory copy), but each modality as
        stored (see ``Stored``)."""
        c = self._file()
        (v, vs), (a, as_) = c.stored(vid, "visual", seconds), c.stored(vid, "audio", seconds)
        return (v, np.float32(vs)), (a, np.float32(as_)), c.labels(vid)[seconds]


def model_batch(batch, device: torch.device | str) -> list[torch.Tensor]:
    """A collated batch on ``device`` as the model takes it: each modality that came as a
    ``Stored`` pair (maps (B, L, H, W, C), scales (B,)) becomes float32 (B, L, C, H, W) values;
    float32 tensors and the other entries are moved as they are."""
    out = []
    for x in batch:
        if isinstance(x, (tuple, list)):
            x = model_input(x[0], x[1], device=device).contiguous()
        else:
            x = x.to(device, non_blocking=True)
        out.append(x)
    return out


def _targets(labels: np.ndarray, video_label: int, steps: int, mode: str) -> np.ndarray:
    """Per-step targets (S'·T,) from per-second labels (S',)."""
    if mode == "video":
        return np.full(len(labels) * steps, video_label, dtype=np.int64)
    return np.repeat(np.asarray(labels, dtype=np.int64), steps)


class HeldSeconds:
    """The training split held as tensors on the training device: batches are gathered by
    indexing, with no DataLoader workers, no per-item copies and no collation.

    Each second of each video is one row: visual (N, T, C_v, 8, 8) and audio (N, T, 512, 6, 4)
    in the cache's precision (float16 divided by a per-video power-of-two scale, or float32),
    the scales (N,) and per-second labels (N,). On a GPU this keeps the input off the critical
    path: a batch is one ``index_select`` per modality.
    Iterating yields the same batches, in the same order, as a DataLoader over ``TrainSeconds``
    with this sampler and batch size: visual (B, T, C_v, 8, 8) float32, audio (B, T, 512, 6, 4)
    float32, targets (B, T) int64, all on ``device``.
    """

    def __init__(self, memory: dict[str, _Held], infos: list[VideoInfo], sampler: "SecondSampler",
                 batch_size: int, *, labels: str = "video", device: torch.device | str = "cpu"):
        if labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
        self.sampler, self.batch_size, self.labels = sampler, batch_size, labels
        self.device = torch.device(device)
        held = [memory[i.id] for i in infos]
        counts = [len(h.labels) for h in held]
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        cat = lambda xs: torch.from_numpy(np.concatenate(xs)).to(self.device)  # noqa: E731
        self.visual = cat([h.visual for h in held])  # (N, T, C_v, 8, 8)
        self.audio = cat([h.audio for h in held])  # (N, T, 512, 6, 4)
        self.visual_scale = cat([np.full(n, h.visual_scale, np.float32) for h, n in zip(held, counts)])
        self.audio_scale = cat([np.full(n, h.audio_scale, np.float32) for h, n in zip(held, counts)])
        self.second_labels = cat([h.labels for h in held])  # (N,)
        self.video_labels = cat([np.full(n, i.label, np.int64) for i, n in zip(infos, counts)])

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        keys = list(self.sampler)
        steps = self.visual.shape[1]
        for b in range(0, len(keys), self.batch_size):
            rows = torch.as_tensor([self.offsets[v] + s for v, s in keys[b:b + self.batch_size]],
                                   device=self.device)
            visual = model_input(self.visual.index_select(0, rows), self.visual_scale[rows], channels_last=False)
            audio = model_input(self.audio.index_select(0, rows), self.audio_scale[rows], channels_last=False)
            lab = self.second_labels if self.labels == "segment" else self.video_labels
            targets = lab.index_select(0, rows)[:, None].expand(-1, steps).contiguous()  # (B, T)
            yield visual, audio, targets


class SecondSampler(Sampler):
    """Yields (video index, second) keys: this rank's share of a shuffled epoch, one random
    second per video. The draw depends only on (seed, epoch), not on workers or ranks."""

    def __init__(self, num_seconds: list[int], *, seed: int, rank: int = 0, world_size: int = 1):
        self.num_seconds = np.asarray(num_seconds)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.per_rank = -(-len(num_seconds) // world_size)  # padded like DistributedSampler

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.num_seconds))
        seconds = rng.integers(0, self.num_seconds)  # one per video, (N,)
        order = np.resize(order, self.per_rank * self.world_size)  # pad by wrapping around
        for i in order[self.rank::self.world_size]:
            yield int(i), int(seconds[i])


def length_batches(infos: list[VideoInfo], batch_size: int) -> list[list[int]]:
    """Batches of indices of videos with the same number of seconds (so their clips stack)."""
    by_length: dict[int, list[int]] = {}
    for i, info in enumerate(infos):
        by_length.setdefault(info.num_seconds, []).append(i)
    return [idx[j:j + batch_size] for _, idx in sorted(by_length.items())
            for j in range(0, len(idx), batch_size)]


class _CacheItems(Dataset):
    """Items read from a cache (or its in-memory copy) for a list of videos. With ``stored``
    (HDF5 only), each modality comes as a ``Stored`` pair: the batch goes through
    ``model_batch``, which converts on the training device."""

    def __init__(self, cache_path, infos: list[VideoInfo], *, labels: str = "video",
                 memory: dict | None = None, stored: bool = False):
        if labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
        if stored and memory is not None:
            raise ValueError("stored items are read from the HDF5 cache, not from memory")
        self.infos, self.labels, self.stored = infos, labels, stored
        self.reader = _CacheReader(cache_path, memory=memory)

    def __len__(self) -> int:
        return len(self.infos)


class TrainSeconds(_CacheItems):
    """Training items: one second of a video, T steps.

    dataset[(video index, second)] → visual (T, C_v, 8, 8) float32, audio (T, 512, 6, 4)
    float32, targets (T,) int64 (the video's class, or per-second labels with background);
    ``stored``: visual (maps (T, 8, 8, C_v), scale), audio (maps (T, 6, 4, 512), scale).
    """

    def __getitem__(self, key: tuple[int, int]):
        index, second = key
        info = self.infos[index]
        seconds = slice(second, second + 1)
        if self.stored:
            (v, vs), (a, as_), lab = self.reader.read_stored(info.id, seconds)
            targets = _targets(lab, info.label, v.shape[1], self.labels)
            return (v[0], vs), (a[0], as_), torch.from_numpy(targets)
        v, a, lab = self.reader.read(info.id, seconds)
        targets = _targets(lab, info.label, v.shape[1], self.labels)
        return v[0], a[0], torch.from_numpy(targets)


class WholeVideos(_CacheItems):
    """Evaluation items: every second of a video as one clip of S·T steps.

    dataset[i] → visual (S·T, C_v, 8, 8), audio (S·T, 512, 6, 4), targets (S·T,) int64,
    video label () int64; ``stored``: visual and audio as ``Stored`` pairs of (S·T, H, W, C) maps.
    """

    def __getitem__(self, index: int):
        info = self.infos[index]
        if self.stored:
            (v, vs), (a, as_), lab = self.reader.read_stored(info.id, slice(None))
            targets = _targets(lab, info.label, v.shape[1], self.labels)
            return ((v.reshape(-1, *v.shape[2:]), vs), (a.reshape(-1, *a.shape[2:]), as_),
                    torch.from_numpy(targets), torch.tensor(info.label))
        v, a, lab = self.reader.read(info.id, slice(None))
        targets = _targets(lab, info.label, v.shape[1], self.labels)
        return (v.flatten(0, 1), a.flatten(0, 1), torch.from_numpy(targets), torch.tensor(info.label))
