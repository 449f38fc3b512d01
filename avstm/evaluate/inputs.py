"""Evaluate's inputs besides the annotations: maps files (``.npz`` of maps from anywhere),
the memory network's maps over a cached video, and the files that put videos into groups
(e.g. the normal and hard videos of ``avstm synth``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avstm.cache import FeatureCache, check_fits
from avstm.device import resolve_device  # noqa: F401  (evaluate.run reads it from here)
from avstm.errors import AnnotationError
from avstm.maps import MapsFile, maps_key, write_maps  # noqa: F401 (evaluate's names too)
from avstm.memnet.data import model_input

MAPS_TOLERANCE = 0.0005  # seconds: the rounding of a maps key's 3 decimals


# ---- maps files ----------------------------------------------------------------------------


def match_time(times: np.ndarray, t: float, tolerance: float) -> int | None:
    """Index of the entry of ``times`` nearest ``t`` (ties: the later one) if within
    ``tolerance`` seconds, else None."""
    if not len(times):
        return None
    d = np.abs(np.asarray(times, dtype=np.float64) - t)
    i = int(len(d) - 1 - np.argmin(d[::-1]))  # the last of equal distances
    return i if d[i] <= tolerance + 1e-9 else None


# single-image benchmarks: their one annotated frame (time 0.0) is scored on the last step or
# map of the video (``avstm extract --dataset vggss|flickr`` puts the annotated frame there)
IMAGE_FORMATS = ("vggss", "flickr")


def annotated_step(times: np.ndarray, t: float, tolerance: float, *, image: bool) -> int | None:
    """The step (index into ``times``) an annotated frame at ``t`` is scored on: the last one
    for a single-image benchmark's frame (``image``), else ``match_time``."""
    if image and len(times):
        return len(times) - 1
    return match_time(times, t, tolerance)


# ---- groups (e.g. normal / hard videos of avstm synth) -------------------------------------


def read_groups(path: str | os.PathLike) -> dict[str, str]:
    """Video id -> group name from ``avstm synth``'s meta.json (``{"videos": {id: {"hard":
    bool}}}`` -> "hard" / "normal"), or from a plain JSON object id -> group name or bool."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(path, f"not a readable groups JSON file ({e})") from None
    videos = data.get("videos", data) if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise AnnotationError(path, "expected {\"videos\": {id: {\"hard\": bool}}} or {id: group}")
    out = {}
    for vid, v in videos.items():
        g = v.get("hard") if isinstance(v, dict) else v
        if isinstance(g, bool):
            out[str(vid)] = "hard" if g else "normal"
        elif isinstance(g, str) and g:
            out[str(vid)] = g
        else:
            raise AnnotationError(path, f"video {vid!r}: no \"hard\" flag or group name")
    return out


def find_groups(annotations: str | os.PathLike) -> Path | None:
    """``meta.json`` beside an annotation file when it holds per-video "hard" flags, else None."""
    meta = Path(annotations).parent / "meta.json"
    try:
        videos = json.loads(meta.read_text(encoding="utf-8")).get("videos")
    except (OSError, ValueError, AttributeError):
        return None
    ok = isinstance(videos, dict) and videos and all(
        isinstance(v, dict) and isinstance(v.get("hard"), bool) for v in videos.values())
    return meta if ok else None


# ---- the model's maps -----------------------------------------------------------------------


@dataclass
class VideoMaps:
    """The maps of one video: ``times`` (N,) or None (a baseline: every time), ``get(i)`` the
    map, step classes where a model gives them."""

    times: np.ndarray | None
    get: Callable[[int], np.ndarray]
    pred_class: np.ndarray | None = None  # (N,) argmax of the step's logits
    true_class: np.ndarray | None = None  # (N,) label of the step's second
    seconds: tuple[int, int] = (0, 0)  # (correct, total) per-second classification


@torch.no_grad()
def run_model(model, cache: FeatureCache, video: str, *, device="cpu",
              audio: np.ndarray | None = None):
    """The model over a cached video's whole sequence as one causal clip.

    audio: (S, T, 6, 4, 512) float features to use instead of the cached ones (the extended
    protocol's silence, noise or another video's sound), or None.
    Returns times (S·T,) float64, maps (S·T, h, w) float32, logits (S·T, classes) float32.
    """
    vis = cache.visual(video)  # (S, T, h, w, C_v)
    aud = cache.audio(video) if audio is None else audio  # (S, T, 6, 4, 512)
    vis = model_input(vis.reshape(1, -1, *vis.shape[2:]), device=device)  # (1, S·T, C_v, h, w)
    aud = model_input(aud.reshape(1, -1, *aud.shape[2:]), device=device)  # (1, S·T, 512, 6, 4)
    out = model(vis, aud)
    return (cache.times(video).reshape(-1), out.maps[0].float().cpu().numpy(),
            out.logits[0].float().cpu().numpy())


def model_video(model, cache: FeatureCache, vid: str, device) -> VideoMaps:
    """The model's maps of one cached video, each step's predicted class and its second's
    label (background = len(classes)), and the per-second accuracy (logits averaged over the
    second's T steps)."""
    times, maps, logits = run_model(model, cache, vid, device=device)
    labels = cache.labels(vid)  # (S,)
    s = len(labels)
    per_second = logits.reshape(s, -1, logits.shape[-1]).mean(axis=1).argmax(-1)  # (S,)
    steps = maps.shape[0] // s
    return VideoMaps(times, lambda i: maps[i], logits.argmax(-1), np.repeat(labels, steps),
                     (int((per_second == labels).sum()), s))


def check_fit(info, cache: FeatureCache, checkpoint) -> None:
    """Refuse a checkpoint trained on features of another extract config or classes
    (``avstm.cache.check_fits``)."""
    check_fits(checkpoint, info.extract_config, cache.path, cache.config,
               trained_classes=info.classes, cache_classes=cache.classes)
