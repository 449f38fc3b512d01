"""The cache's file format and the rules every reader and writer of it shares.

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

Also here: ``CONTENT_FIELDS`` (the extract-config fields that decide a cache's content) and
``check_fits`` (the one rule of "does this cache fit this checkpoint?"). No torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from avstm._version import __version__
from avstm.errors import CacheError, ConfigMismatch

FORMAT = "avstm-cache/1"
FP16_LIMIT = 16384.0  # stored |value| stays below this (float16 max is 65504)
DATASETS = ("visual", "audio", "times", "labels")  # every complete video holds these


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
