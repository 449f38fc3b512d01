"""Attention maps to boxes: bilinear upsampling, min-max normalisation, Otsu, contours
(the upsampling, flat maps, ``Box`` and pixel spans are ``avstm.maps``'s).

The paper's first way of turning a localization map α̂ (8×8) into boxes: upsample it to the
frame's own size, normalise it to [0, 1], cut it at Otsu's threshold and box each external
contour of the foreground. Coordinates are pixels of the frame, x right, y down, ``x2``/``y2``
exclusive (the convention of the box annotations in docs/ARCHITECTURE.md).

A box's score here is the share of the normalised map's mass that lies inside it (in [0, 1];
the boxes of one map can sum to at most 1 when they do not overlap).
"""

from __future__ import annotations

import cv2
import numpy as np

from avstm.maps import (FLAT_RTOL, Box, check_maps, check_size, is_flat, pixel_span,  # noqa: F401
                        upsample_into, upsample_map, upsample_maps)

def integral_image(amap: np.ndarray) -> np.ndarray:
    """(H, W) → (H + 1, W + 1) float64 summed-area table with a zero first row and column."""
    amap = np.asarray(amap)
    if amap.dtype not in (np.float32, np.float64):
        amap = amap.astype(np.float64)
    return cv2.integral(np.ascontiguousarray(amap), sdepth=cv2.CV_64F)


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
    amaps = check_maps(amaps)
    norm = np.empty(check_size(size), dtype=np.float32)  # reused: one frame-sized buffer
    result: list[list[Box]] = []
    for amap, flat in zip(amaps, is_flat(amaps)):
        if flat:
            result.append([])
            continue
        upsample_into(amap, norm)
        result.append(_boxes_of_normalised(norm, min_area=min_area, max_boxes=max_boxes))
    return result


def maps_to_boxes(amap: np.ndarray, *, size: tuple[int, int], min_area: float = 0.0,
                  max_boxes: int | None = None) -> list[Box]:
    """Boxes of one map (h, w) float on a frame of ``size`` (H, W). See maps_to_boxes_batch."""
    amap = np.asarray(amap)
    if amap.ndim != 2:
        raise ValueError(f"map must be (h, w), got shape {amap.shape}")
    return maps_to_boxes_batch(amap[None], size=size, min_area=min_area, max_boxes=max_boxes)[0]
