"""Baselines that need no model: the centre prior, the whole image, a uniform map.

Each gives a map (and, where it has one, a box) for a frame, which ``evaluate_frame`` scores
like a model's output. What the binarisations do with the flat (uniform) map is defined in
``metrics.Binarization``: value/top/max select every pixel (EZ-VSL's >= convention), median
selects none (avstm's strict >; LVS's own code keeps all of it: ``--protocol lvs``); its
peak for the pointing game is the image centre (ties go to the maximal pixel nearest the
centroid of all maximal pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from avstm.errors import AvstmError
from avstm.evaluate.annotations import frame_label
from avstm.evaluate.metrics import FrameResult, MetricsConfig, evaluate_frame

CENTRE_SIGMA = 0.25  # std of the centre prior, as a fraction of the image width/height


@dataclass(frozen=True)
class Prediction:
    """A baseline's output for one frame: a (H, W) map (float, or bool = a fixed region) and
    (N, 4) xyxy boxes in pixels of the frame's width × height, or None (no box)."""

    map: np.ndarray
    boxes: np.ndarray | None


def centre_prior(size: tuple[int, int], *, sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """(H, W) float64 in (0, 1]: a Gaussian centred on the image, std ``sigma`` × side per axis,
    evaluated at pixel centres; 1 at the centre."""
    h, w = size
    y = (np.arange(h) + 0.5) / h - 0.5
    x = (np.arange(w) + 0.5) / w - 0.5
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma**2))  # (H, W)


def whole_image(size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool, all True: the region "everywhere" under every binarisation."""
    return np.ones(size, dtype=bool)


def uniform(size: tuple[int, int]) -> np.ndarray:
    """(H, W) float64 of ones: a flat map (see the module docstring for its binarisations)."""
    return np.ones(size, dtype=np.float64)


def _centre(width: float, height: float, size: tuple[int, int], sigma: float) -> Prediction:
    # the box spans ±1 sigma around the centre: [0.25, 0.75] of each side for sigma 0.25
    box = np.array([[(0.5 - sigma) * width, (0.5 - sigma) * height,
                     (0.5 + sigma) * width, (0.5 + sigma) * height]])
    return Prediction(centre_prior(size, sigma=sigma), box)


def _whole(width: float, height: float, size: tuple[int, int], sigma: float) -> Prediction:
    return Prediction(whole_image(size), np.array([[0.0, 0.0, width, height]]))


def _uniform(width: float, height: float, size: tuple[int, int], sigma: float) -> Prediction:
    return Prediction(uniform(size), None)


BASELINES: dict[str, Callable[..., Prediction]] = {
    "centre": _centre,
    "whole-image": _whole,
    "uniform": _uniform,
}


def baseline_prediction(name: str, width: float, height: float, *,
                        size: tuple[int, int] = (256, 256),
                        sigma: float = CENTRE_SIGMA) -> Prediction:
    """The baseline ``name`` (a key of BASELINES) for a frame of ``width`` × ``height`` pixels,
    its map at ``size`` = (H, W)."""
    if name not in BASELINES:
        raise AvstmError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")
    return BASELINES[name](width, height, tuple(size), sigma)


def evaluate_baseline(name: str, truth, *, config: MetricsConfig = MetricsConfig(),
                      videos: Iterable[str] | None = None,
                      sigma: float = CENTRE_SIGMA) -> list[FrameResult]:
    """Score baseline ``name`` on every annotated frame of ``truth`` (a GroundTruth or any
    mapping video id -> VideoTruth), or of the listed ``videos``; one FrameResult per frame."""
    results = []
    for vid in (videos if videos is not None else truth):
        v = truth[vid]
        pred = baseline_prediction(name, v.width, v.height, size=config.size, sigma=sigma)
        for t, boxes in sorted(v.frames.items()):
            label = frame_label(v, boxes)
            results.append(evaluate_frame(pred.map, boxes, image_size=(v.width, v.height),
                                          config=config, pred_boxes=pred.boxes, video=vid,
                                          time=t, label=label))
    return results
