"""Localization metrics on maps and box ground truth: cIoU and its binarisations, success
rates and AUC, box IoU, the pointing game, and the ceilings a coarse map can reach.

Conventions (also in docs/annotations.md):

- These are avstm's own rules (the ``avstm`` protocol). ``MetricsConfig.protocol`` names
  another rule set of ``avstm.evaluate.protocols`` (EZ-VSL's, LVS's, DSOL's code: truncated
  box masks, their upsampling, binarisation, consensus, AUC grid and frames without a box);
  ``evaluate_frame`` and ``report.summarize`` take every such step from the protocol.
- Everything is measured at an evaluation resolution ``size`` (H×W pixels, 256×256 by
  default; 224×224 to compare with EZ-VSL/LVS). Pixel (y, x) covers [x, x+1) × [y, y+1).
- Maps of any resolution are upsampled with :func:`resize_bilinear`, which is exactly
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)``
  (and OpenCV's ``INTER_LINEAR`` when upsampling), computed as two interpolation matrices.
- A box (x1, y1, x2, y2) with x2/y2 exclusive covers the pixels whose centres lie inside it:
  ``x1 <= x + 0.5 < x2`` (integer boxes give ``mask[y1:y2, x1:x2]``; the references truncate
  fractional corners instead, ``int(224 * v)``: protocols ``ezvsl``/``lvs``).
- The ground-truth map g: the union of the sounding boxes (binary); with two or more
  annotators, the consensus ``clip(sum of the annotators' union masks / 2, 0, 1)`` as soft
  weights (LVS/EZ-VSL on Flickr-SoundNet, which also halve a file with a single box). G = {g > 0}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from avstm.errors import AvstmError
from avstm.evaluate.protocols import AUC_THRESHOLDS, get_protocol
from avstm.evaluate.regions import (Binarization, annotator_consensus, binarize, binarize_many,  # noqa: F401
                                    normalize_minmax, parse_binarization, scale_boxes)
from avstm.maps import FLAT_RTOL, boxes_to_masks, is_flat, resize_bilinear  # noqa: F401 (names of this module too)


# ---- resampling and rasterising ------------------------------------------------------------


def _area_matrix(n_cells: int, n_px: int) -> np.ndarray:
    """(n_cells, n_px): the fraction of each cell that each pixel covers (rows sum to 1)."""
    edges = np.arange(n_cells + 1) * (n_px / n_cells)
    px = np.arange(n_px)
    hi = np.minimum(edges[1:, None], px + 1)
    overlap = np.clip(hi - np.maximum(edges[:-1, None], px), 0, None)  # (n_cells, n_px)
    return overlap / (n_px / n_cells)




def truth_map(boxes: np.ndarray, annotators: Sequence, size: tuple[int, int]) -> np.ndarray:
    """(N, 4) sounding boxes in evaluation pixels, one annotator id per box -> g (H, W) in [0, 1].

    One annotator (ids all equal, or all None): the binary union of the boxes. Two or more:
    ``clip(sum over annotators of their union masks / 2, 0, 1)``.
    """
    masks = boxes_to_masks(boxes, size)
    ids = list(annotators)
    if len(ids) != len(masks):
        raise ValueError("one annotator id per box is needed")
    return annotator_consensus(masks, ids)




def cell_coverage(g: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) ground-truth map -> (h, w): the mean of g over each cell of an h×w grid."""
    ay, ax = _area_matrix(grid[0], g.shape[0]), _area_matrix(grid[1], g.shape[1])
    return ay @ np.asarray(g, dtype=np.float64) @ ax.T  # (h, w)


# ---- scores --------------------------------------------------------------------------------


def ciou(region: np.ndarray, g: np.ndarray) -> np.ndarray:
    """cIoU = Σ_{i∈A} g_i / (Σ_i g_i + |A \\ G|).

    region: (..., H, W) bool A; g: (H, W) in [0, 1]. Returns (...) float64; NaN where Σg = 0.
    """
    a = np.asarray(region, dtype=bool)
    g = np.asarray(g, dtype=np.float64)
    inter = (a * g).sum(axis=(-2, -1))
    outside = (a & (g <= 0)).sum(axis=(-2, -1))
    total = g.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inter / (total + outside), np.nan)


def success_rate(values: Sequence[float], threshold: float = 0.5) -> float:
    """The fraction of values >= threshold (cIoU@0.5, AP50); NaN for no values."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.mean(v >= threshold)) if v.size else float("nan")


def success_curve(values: Sequence[float], thresholds: np.ndarray = AUC_THRESHOLDS) -> np.ndarray:
    """(K,) success rates at each threshold."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return np.full(len(thresholds), np.nan)
    return (v[None, :] >= np.asarray(thresholds)[:, None]).mean(axis=1)


def auc(values: Sequence[float], thresholds: np.ndarray = AUC_THRESHOLDS) -> float:
    """Area under the success curve over ``thresholds`` (trapezoidal, as LVS/EZ-VSL; their
    grid is ``0.05 * i``, ``protocols.AUC_GRID``)."""
    return float(np.trapezoid(success_curve(values, thresholds), np.asarray(thresholds)))


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) xyxy -> (N, M) IoU of the continuous boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    def area(x):
        return np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)

    union = area(a) + area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def union_mask_iou(pred_boxes: np.ndarray, true_mask: np.ndarray) -> float:
    """IoU of the union mask of predicted boxes (N, 4, evaluation pixels) with a bool (H, W)."""
    pred = boxes_to_masks(pred_boxes, true_mask.shape).any(axis=0)
    union = (pred | true_mask).sum()
    return float((pred & true_mask).sum() / union) if union else 0.0


def peak(m: np.ndarray) -> tuple[int, int]:
    """(H, W) map -> (y, x) of its peak: the maximal pixel nearest the centroid of all maximal
    pixels (within FLAT_RTOL), so ties are broken stably and a flat map points at its centre."""
    m = np.asarray(m, dtype=np.float64)
    top = m.max()
    ys, xs = np.nonzero(m >= top - FLAT_RTOL * max(abs(top), abs(m.min())))
    d2 = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    i = int(np.argmin(d2))
    return int(ys[i]), int(xs[i])


# ---- one frame -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsConfig:
    """What ``evaluate_frame`` measures and at which resolution."""

    size: tuple[int, int] = (256, 256)  # evaluation resolution (H, W); (224, 224) for EZ-VSL/LVS
    modes: tuple[str, ...] = ("value:0.5", "top:0.5", "median", "max:0.5")  # binarisations
    primary: str = "value:0.5"  # the binarisation of the paper's table columns
    iou_threshold: float = 0.5  # success threshold of cIoU and box IoU
    ceilings: bool = True  # also score the ground truth drawn on the map's own grid
    # the rules around cIoU: a key of avstm.evaluate.protocols.PROTOCOLS; a reference
    # protocol fixes its binarisation (modes must be that one)
    protocol: str = "avstm"

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "modes", tuple(parse_binarization(m).name for m in self.modes))
        object.__setattr__(self, "primary", parse_binarization(self.primary).name)
        if self.primary not in self.modes:
            raise AvstmError(f"primary binarisation {self.primary!r} is not among {self.modes}")
        fixed = get_protocol(self.protocol).mode
        if fixed is not None and self.modes != (fixed,):
            raise AvstmError(f"protocol {self.protocol!r} binarises with its own rule "
                             f"({fixed}); other binarisations {self.modes} do not apply")

    def to_dict(self) -> dict:
        return {"size": list(self.size), "modes": list(self.modes), "primary": self.primary,
                "iou_threshold": self.iou_threshold, "ceilings": self.ceilings,
                "protocol": self.protocol}

    @classmethod
    def from_dict(cls, d: dict) -> "MetricsConfig":
        d = dict(d)
        if "size" in d:
            d["size"] = tuple(d["size"])
        if "modes" in d:
            d["modes"] = tuple(d["modes"])
        return cls(**d)


@dataclass(frozen=True)
class FrameResult:
    """Every number of one annotated frame; ``None``/NaN where it does not apply.

    ``ciou``/``ceiling_ciou``: binarisation name -> cIoU (NaN when the frame has no sounding
    box). ``box_iou``: IoU of the union mask of the predicted boxes with G at the evaluation
    resolution; ``box_iou_best``: the best IoU of any (predicted, true sounding) box pair,
    on continuous coordinates. ``distractor``: the peak falls in a silent box and in no
    sounding box (None when the frame marks no silent box).
    """

    video: str
    time: float
    label: str | None
    has_truth: bool
    grid: tuple[int, int] | None
    ciou: dict
    ceiling_ciou: dict
    pointing: bool | None
    ceiling_pointing: bool | None
    distractor: bool | None
    box_iou: float | None
    box_iou_best: float | None
    pred_class: int | None
    true_class: int | None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["grid"] = list(self.grid) if self.grid else None
        for k in ("ciou", "ceiling_ciou"):
            d[k] = {m: (None if np.isnan(v) else float(v)) for m, v in d[k].items()}
        return d


def evaluate_frame(pred_map: np.ndarray | None, boxes: Sequence, *,
                   image_size: tuple[float, float], config: MetricsConfig = MetricsConfig(),
                   pred_boxes: np.ndarray | None = None,
                   pred_image_size: tuple[float, float] | None = None,
                   video: str = "", time: float = 0.0, label: str | None = None,
                   pred_class: int | None = None, true_class: int | None = None) -> FrameResult:
    """Score one frame.

    pred_map: (h, w) float map of any resolution (upsampled to ``config.size``), or a bool
        (h, w) region used as A under every binarisation (e.g. the whole-image baseline), or
        None (no map metrics); NaN/inf raise ValueError.
    boxes: the frame's ``avstm.maps.Box`` list (sounding and silent), in pixels of
        ``image_size`` = (width, height).
    pred_boxes: (N, 4) xyxy (or objects with ``.xyxy``, e.g. ``avstm.maps.Box``)
        in pixels of ``pred_image_size`` (default ``image_size``), or None (no box metrics);
        an empty list scores box IoU 0.
    pred_class, true_class: class indices of the frame's second (background = len(classes)),
        for the classification accuracy.
    """
    proto = get_protocol(config.protocol)
    size = config.size
    sounding = [b for b in boxes if b.sounding]
    silent = [b for b in boxes if not b.sounding]
    true_xyxy = scale_boxes([b.xyxy for b in sounding], image_size, size)
    g = proto.truth(sounding, image_size, size)
    true_mask = g > 0
    has_truth = bool(true_mask.any())
    nan = float("nan")
    ciou_d, ceil_d = {m: nan for m in config.modes}, {}
    pointing = ceil_pointing = distractor = None
    grid = None
    if pred_map is not None:
        pm = np.asarray(pred_map)
        if pm.ndim != 2 or not np.isfinite(pm.astype(np.float64)).all():
            raise ValueError(f"pred_map must be a finite (h, w) array, got shape {pm.shape}")
        grid = tuple(int(s) for s in pm.shape[-2:])
        if pm.dtype == bool:
            region = resize_bilinear(pm.astype(np.float64), size) >= 0.5
            up = region.astype(np.float64)
            regions = {m: region for m in config.modes}
        else:
            up = proto.upsampled(pm, size)
            regions = proto.regions(up, config.modes)
        if has_truth:
            ciou_d = {m: float(ciou(regions[m], g)) for m in config.modes}
        elif proto.scores_boxless:  # 0 / |A|, or 0 / 0 when A is empty too
            ciou_d = {m: 0.0 if regions[m].any() else nan for m in config.modes}
        y, x = peak(up)
        if has_truth:
            pointing = bool(true_mask[y, x])
        if silent:
            silent_mask = proto.masks(silent, image_size, size).any(axis=0)
            distractor = bool(silent_mask[y, x] and not true_mask[y, x])
        if config.ceilings and has_truth:
            cm = g if grid == size else proto.upsampled(cell_coverage(g, grid), size)
            ceil_d = {m: float(ciou(a, g)) for m, a in proto.regions(cm, config.modes).items()}
            cy, cx = peak(cm)
            ceil_pointing = bool(true_mask[cy, cx])
    if config.ceilings and not ceil_d:
        ceil_d = {m: nan for m in config.modes}
    box_iou = box_best = None
    if pred_boxes is not None and has_truth:
        pb = np.array([getattr(b, "xyxy", b) for b in pred_boxes], dtype=np.float64)
        pb = scale_boxes(pb, pred_image_size or image_size, size)
        box_iou = union_mask_iou(pb, true_mask)
        box_best = float(box_iou_matrix(pb, true_xyxy).max()) if len(pb) else 0.0
    return FrameResult(video=video, time=float(time), label=label, has_truth=has_truth,
                       grid=grid, ciou=ciou_d, ceiling_ciou=ceil_d, pointing=pointing,
                       ceiling_pointing=ceil_pointing, distractor=distractor, box_iou=box_iou,
                       box_iou_best=box_best, pred_class=pred_class, true_class=true_class)
