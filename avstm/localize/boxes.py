"""Attention maps to boxes: bilinear upsampling, min-max normalisation, Otsu, contours.

The paper's first way of turning a localization map α̂ (8×8) into boxes: upsample it to the
frame's own size, normalise it to [0, 1], cut it at Otsu's threshold and box each external
contour of the foreground. Coordinates are pixels of the frame, x right, y down, ``x2``/``y2``
exclusive (the convention of the box annotations in docs/ARCHITECTURE.md).

A box's score here is the share of the normalised map's mass that lies inside it (in [0, 1];
the boxes of one map can sum to at most 1 when they do not overlap).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# Two values closer than this, relative to the map's largest magnitude, count as equal: a map
# whose range is below it (e.g. the uniform attention of a silent second) gives no box.
FLAT_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Box:
    """One box in frame pixels: ``xyxy`` = (x1, y1, x2, y2), x2/y2 exclusive, and its score."""

    xyxy: tuple[float, float, float, float]
    score: float

    def to_dict(self) -> dict:
        return {"xyxy": [float(v) for v in self.xyxy], "score": float(self.score)}

    @classmethod
    def from_dict(cls, d: dict) -> "Box":
        x1, y1, x2, y2 = (float(v) for v in d["xyxy"])
        return cls(xyxy=(x1, y1, x2, y2), score=float(d["score"]))


def _check_size(size) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"frame size must be positive (H, W), got {tuple(size)}")
    return h, w


def _check_maps(amaps) -> np.ndarray:
    """(N, h, w) finite numbers → float64 array, or ValueError."""
    amaps = np.asarray(amaps, dtype=np.float64)
    if amaps.ndim != 3 or amaps.shape[1] < 1 or amaps.shape[2] < 1:
        raise ValueError(f"maps must be (N, h, w), got shape {amaps.shape}")
    if not np.isfinite(amaps).all():
        raise ValueError("maps hold NaN or infinite values")
    return amaps


def _is_flat(amaps: np.ndarray) -> np.ndarray:
    """(N, h, w) float → (N,) bool: the maps whose range is negligible against their scale."""
    flat = amaps.reshape(len(amaps), amaps.shape[1] * amaps.shape[2])
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    scale = np.maximum(np.abs(flat).max(axis=1), np.finfo(np.float64).tiny)
    return (hi - lo) <= FLAT_RTOL * scale


def _upsample_into(amap: np.ndarray, out: np.ndarray) -> None:
    """(h, w) float64, not flat → ``out`` (H, W) float32, upsampled and normalised to [0, 1]."""
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
    aligned) and min-max normalised to [0, 1]; a flat map (see ``FLAT_RTOL``) becomes zeros.
    """
    amaps = _check_maps(amaps)
    h, w = _check_size(size)
    n = len(amaps)
    out = np.zeros((n, h, w), dtype=np.float32)
    if n == 0:
        return out
    for i, flat in enumerate(_is_flat(amaps)):  # cv2's many-channel resize is no faster
        if not flat:
            _upsample_into(amaps[i], out[i])
    return out


def upsample_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One map (h, w) float → (H, W) float32 in [0, 1]; a flat map → zeros. See upsample_maps."""
    amap = np.asarray(amap)
    if amap.ndim != 2:
        raise ValueError(f"map must be (h, w), got shape {amap.shape}")
    return upsample_maps(amap[None], size)[0]


def integral_image(amap: np.ndarray) -> np.ndarray:
    """(H, W) → (H + 1, W + 1) float64 summed-area table with a zero first row and column."""
    amap = np.asarray(amap)
    if amap.dtype not in (np.float32, np.float64):
        amap = amap.astype(np.float64)
    return cv2.integral(np.ascontiguousarray(amap), sdepth=cv2.CV_64F)


def pixel_span(xyxy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(P, 4) float boxes → (P, 4) int64 [c1, r1, c2, r2]: the pixels whose centre lies inside.

    A pixel (row r, column c) belongs to a box when x1 ≤ c + 0.5 < x2 and y1 ≤ r + 0.5 < y2;
    for integer coordinates that is exactly columns x1 … x2 − 1 and rows y1 … y2 − 1.
    Clipped to the frame (H, W); an empty box gives c1 ≥ c2 or r1 ≥ r2.
    """
    h, w = _check_size(size)
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    span = np.ceil(xyxy - 0.5).astype(np.int64)
    span[:, [0, 2]] = np.clip(span[:, [0, 2]], 0, w)
    span[:, [1, 3]] = np.clip(span[:, [1, 3]], 0, h)
    return span


def box_sums(ii: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """Sum of the map inside each box from its integral image.

    ii: (H + 1, W + 1) from ``integral_image``. xyxy: (P, 4) float frame pixels.
    Returns (P,) float64; an empty or out-of-frame box sums to 0.
    """
    span = pixel_span(xyxy, (ii.shape[0] - 1, ii.shape[1] - 1))
    c1, r1, c2, r2 = span.T
    c2, r2 = np.maximum(c2, c1), np.maximum(r2, r1)
    return ii[r2, c2] - ii[r1, c2] - ii[r2, c1] + ii[r1, c1]


def _boxes_of_normalised(norm: np.ndarray, *, min_area: float, max_boxes: int | None
                         ) -> list[Box]:
    """(H, W) float32 in [0, 1] (not flat) → Otsu + contour boxes, best first."""
    h, w = norm.shape
    u8 = np.round(norm * 255.0).astype(np.uint8)
    _, fg = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    rects = np.array([cv2.boundingRect(c) for c in contours], dtype=np.float64)  # (P, 4) x y w h
    keep = rects[:, 2] * rects[:, 3] >= min_area * h * w
    rects = rects[keep]
    if len(rects) == 0:
        return []
    xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)  # (P, 4)
    total = float(norm.sum(dtype=np.float64))
    scores = box_sums(integral_image(norm), xyxy) / total
    order = np.argsort(-scores, kind="stable")
    if max_boxes is not None:
        order = order[:max_boxes]
    return [Box(xyxy=tuple(float(v) for v in xyxy[i]), score=float(scores[i])) for i in order]


def _check_options(min_area: float, max_boxes: int | None) -> None:
    if not 0.0 <= min_area <= 1.0:
        raise ValueError(f"min_area is a fraction of the frame in [0, 1], got {min_area}")
    if max_boxes is not None and max_boxes < 1:
        raise ValueError(f"max_boxes must be at least 1 (or None for all), got {max_boxes}")


def maps_to_boxes_batch(amaps: np.ndarray, *, size: tuple[int, int], min_area: float = 0.0,
                        max_boxes: int | None = None) -> list[list[Box]]:
    """Boxes of many maps of one video.

    amaps: (N, h, w) float, any range. size: (H, W) of the frames.
    min_area: drop boxes whose area is below this fraction of H·W.
    max_boxes: keep at most this many per map (highest score first); None keeps all.
    Returns N lists of ``Box`` sorted by score (share of the normalised map's mass inside);
    a flat map gives an empty list.
    """
    _check_options(min_area, max_boxes)
    amaps = _check_maps(amaps)
    norm = np.empty(_check_size(size), dtype=np.float32)  # reused: one frame-sized buffer
    result: list[list[Box]] = []
    for amap, flat in zip(amaps, _is_flat(amaps)):
        if flat:
            result.append([])
            continue
        _upsample_into(amap, norm)
        result.append(_boxes_of_normalised(norm, min_area=min_area, max_boxes=max_boxes))
    return result


def maps_to_boxes(amap: np.ndarray, *, size: tuple[int, int], min_area: float = 0.0,
                  max_boxes: int | None = None) -> list[Box]:
    """Boxes of one map (h, w) float on a frame of ``size`` (H, W). See maps_to_boxes_batch."""
    amap = np.asarray(amap)
    if amap.ndim != 2:
        raise ValueError(f"map must be (h, w), got shape {amap.shape}")
    return maps_to_boxes_batch(amap[None], size=size, min_area=min_area, max_boxes=max_boxes)[0]
