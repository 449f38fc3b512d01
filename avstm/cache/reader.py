"""Reading a cache: ``FeatureCache``."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from avstm.cache.format import DATASETS, VideoEntry, _complete_groups, _read_root, open_cache_file
from avstm.errors import CacheError


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
