"""Map geometry and the maps file: the rules localize and evaluate share.

- **Flat maps.** A map whose peak-to-peak range is at most ``FLAT_RTOL`` (1e-9) of its largest
  magnitude has no location (``is_flat``): localize gives it no box, evaluate scores it by the
  rules of docs/annotations.md "Flat maps". (localize used 1e-6 before, evaluate 1e-9: the
  stricter one holds for both, so a float32 map whose range lies between 1e-9 and 1e-6 of its
  magnitude now gets localize's boxes, cut from that small range.)
- **Bilinear upsampling, half-pixel centres** (torch ``align_corners=False``, which is OpenCV's
  ``INTER_LINEAR`` when upsampling): ``resize_bilinear`` computes it exactly in float64 (the
  metrics); ``upsample_maps`` computes it with OpenCV in float32 and min-max normalises, fast
  enough for every frame of a video (boxes, overlays). The two agree to float32 precision
  (tests/test_maps.py).
- **Pixel-centre boxes.** A box (x1, y1, x2, y2), x2/y2 exclusive, covers the pixels whose centre
  lies inside it: ``x1 <= c + 0.5 < x2`` (``pixel_span``; ``boxes_to_masks`` rasterises it).
- **Box**: one box in frame pixels (a predicted box with its score, or an annotated one).
- **Maps file** (``localize --save-maps``, ``evaluate --maps``): an ``.npz`` whose keys are
  ``maps_key(video, time)`` = ``"<video id>@<time with 3 decimals>"``, each a 2-D float map
  (``write_maps``, ``MapsFile``).

No torch here (OpenCV is imported when a map is upsampled); imports nothing of the stages.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from avstm.errors import AvstmError
from avstm.io import atomic_path

# A map whose peak-to-peak range is at most this fraction of its magnitude is flat.
FLAT_RTOL = 1e-9


@dataclasses.dataclass(frozen=True)
class Box:
    """One box in frame pixels: ``xyxy`` = (x1, y1, x2, y2), x2/y2 exclusive.

    A predicted box (localize) has a ``score``. An annotated one (evaluate) may say
    ``sounding=False`` (a silent distractor), its ``label``, its ``annotator`` (None: a single
    annotator) and ``normbox``, a normalised (x, y, w, h) as the file wrote it
    (AudioSet-Instrument), which DSOL's protocol rasterises from (avstm.evaluate.protocols).
    """

    xyxy: tuple[float, float, float, float]
    sounding: bool = True
    label: str | None = None
    annotator: int | None = None
    normbox: tuple[float, float, float, float] | None = None
    score: float | None = None

    def to_dict(self) -> dict:
        """The predicted box as boxes.json holds it: ``{"xyxy": [...], "score": s}``."""
        return {"xyxy": [float(v) for v in self.xyxy], "score": float(self.score)}

    @classmethod
    def from_dict(cls, d: dict) -> "Box":
        x1, y1, x2, y2 = (float(v) for v in d["xyxy"])
        return cls(xyxy=(x1, y1, x2, y2), score=float(d["score"]))


# ---- flat maps ---------------------------------------------------------------------------------


def is_flat(maps: np.ndarray) -> np.ndarray:
    """(..., H, W) float -> (...) bool: maps whose range is <= FLAT_RTOL of their magnitude."""
    m = np.asarray(maps, dtype=np.float64)
    hi, lo = m.max(axis=(-2, -1)), m.min(axis=(-2, -1))
    return (hi - lo) <= FLAT_RTOL * np.maximum(np.abs(hi), np.abs(lo))


# ---- bilinear upsampling -----------------------------------------------------------------------


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation with half-pixel centres (torch rule)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(mat, (np.arange(n_out), i1), w1)
    return mat


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) -> (..., H, W) float64 for ``size`` = (H, W); bilinear, align_corners=False."""
    m = np.asarray(maps, dtype=np.float64)
    h, w = m.shape[-2:]
    if (h, w) == tuple(size):
        return m.copy()
    ry, rx = _linear_matrix(h, size[0]), _linear_matrix(w, size[1])
    return ry @ m @ rx.T  # (..., H, W)


def check_size(size) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"frame size must be positive (H, W), got {tuple(size)}")
    return h, w


def check_maps(amaps) -> np.ndarray:
    """(N, h, w) finite numbers → float64 array, or ValueError."""
    amaps = np.asarray(amaps, dtype=np.float64)
    if amaps.ndim != 3 or amaps.shape[1] < 1 or amaps.shape[2] < 1:
        raise ValueError(f"maps must be (N, h, w), got shape {amaps.shape}")
    if not np.isfinite(amaps).all():
        raise ValueError("maps hold NaN or infinite values")
    return amaps


def upsample_into(amap: np.ndarray, out: np.ndarray) -> None:
    """(h, w) float64, not flat → ``out`` (H, W) float32, upsampled and normalised to [0, 1]."""
    import cv2  # here: evaluate's config (read by `avstm --help`) imports this module

    # Centre on the minimum first: float32 keeps the detail of tiny ranges.
    centred = (amap - amap.min()).astype(np.float32)
    up = cv2.resize(centred, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(up.min()), float(up.max())
    if hi > lo:
        np.multiply(up - lo, 1.0 / (hi - lo), out=out)
        np.clip(out, 0.0, 1.0, out=out)
    else:
        out[...] = 0.0


def upsample_maps(amaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Batch of maps → frame-sized maps in [0, 1].

    amaps: (N, h, w) float, any range (finite). size: (H, W) of the frame.
    Returns (N, H, W) float32: each map upsampled bilinearly (cv2 INTER_LINEAR, pixel centres
    aligned) and min-max normalised to [0, 1]; a flat map (``is_flat``) becomes zeros.
    """
    amaps = check_maps(amaps)
    h, w = check_size(size)
    n = len(amaps)
    out = np.zeros((n, h, w), dtype=np.float32)
    if n == 0:
        return out
    for i, flat in enumerate(is_flat(amaps)):  # cv2's many-channel resize is no faster
        if not flat:
            upsample_into(amaps[i], out[i])
    return out


def upsample_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One map (h, w) float → (H, W) float32 in [0, 1]; a flat map → zeros. See upsample_maps."""
    amap = np.asarray(amap)
    if amap.ndim != 2:
        raise ValueError(f"map must be (h, w), got shape {amap.shape}")
    return upsample_maps(amap[None], size)[0]


# ---- boxes on the pixel grid -------------------------------------------------------------------


def pixel_span(xyxy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(P, 4) float boxes → (P, 4) int64 [c1, r1, c2, r2]: the pixels whose centre lies inside.

    A pixel (row r, column c) belongs to a box when x1 ≤ c + 0.5 < x2 and y1 ≤ r + 0.5 < y2;
    for integer coordinates that is exactly columns x1 … x2 − 1 and rows y1 … y2 − 1.
    Clipped to the frame (H, W); an empty box gives c1 ≥ c2 or r1 ≥ r2.
    """
    h, w = check_size(size)
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    span = np.ceil(xyxy - 0.5).astype(np.int64)
    span[:, [0, 2]] = np.clip(span[:, [0, 2]], 0, w)
    span[:, [1, 3]] = np.clip(span[:, [1, 3]], 0, h)
    return span


def boxes_to_masks(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, 4) xyxy boxes in pixels of ``size`` = (H, W) -> (N, H, W) bool masks: the pixels
    of each box's ``pixel_span``."""
    c1, r1, c2, r2 = pixel_span(boxes, size).T[:, :, None]  # each (N, 1)
    rows, cols = np.arange(size[0]), np.arange(size[1])
    inside_rows = (rows >= r1) & (rows < r2)  # (N, H)
    inside_cols = (cols >= c1) & (cols < c2)  # (N, W)
    return inside_rows[:, :, None] & inside_cols[:, None, :]  # (N, H, W)


# ---- the maps file -----------------------------------------------------------------------------


def maps_key(video: str, time: float) -> str:
    """The key of one map in a maps file: ``"<video id>@<time with 3 decimals>"``."""
    return f"{video}@{float(time):.3f}"


def write_maps(path: str | os.PathLike, maps: Mapping[tuple[str, float], np.ndarray]) -> Path:
    """Write {(video id, time): (h, w) float map} as a maps file (``.npz``) atomically."""
    arrays = {maps_key(v, t): np.asarray(m, dtype=np.float32) for (v, t), m in maps.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return Path(path)


class MapsFile:
    """A maps file opened lazily: ``times(video)`` sorted (N,) float64, ``map(video, i)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            keys = list(self._npz.files)
        except (OSError, ValueError) as e:
            raise AvstmError(f"{self.path}: not a readable .npz maps file ({e})") from None
        index: dict[str, list[tuple[float, str]]] = {}
        for key in keys:
            vid, sep, t = key.rpartition("@")
            try:
                index.setdefault(vid, []).append((float(t), key))
            except ValueError:
                vid = ""
            if not sep or not vid:
                raise AvstmError(f"{self.path}: key {key!r} is not \"<video id>@<time>\"")
        self._index = {v: sorted(items) for v, items in index.items()}

    def videos(self) -> list[str]:
        return sorted(self._index)

    def times(self, video: str) -> np.ndarray:
        return np.array([t for t, _ in self._index.get(video, [])], dtype=np.float64)

    def map(self, video: str, i: int) -> np.ndarray:
        key = self._index[video][i][1]
        m = np.asarray(self._npz[key])
        if m.ndim != 2 or min(m.shape) < 1:
            raise AvstmError(f"{self.path}: map {key!r} has shape {m.shape}, needs (h, w)")
        if m.dtype != bool and not np.isfinite(m.astype(np.float64)).all():
            raise AvstmError(f"{self.path}: map {key!r} holds NaN or infinite values")
        return m
