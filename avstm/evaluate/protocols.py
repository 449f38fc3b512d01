"""The evaluation protocols of the field, one table entry per protocol, each rule named.

Every published sound-source-localization number comes from a codebase whose steps around
the per-frame cIoU differ: how a box becomes a mask, how a map is upsampled and binarised,
how several annotators are merged, which cIoU thresholds make the AUC, and what happens to a
frame without a box. ``avstm evaluate --protocol NAME`` applies one codebase's steps, as read
in its public code (the rules below are written from that reading, not copied):

- ``avstm``: avstm's own rules (docs/annotations.md), the default.
- ``ezvsl``: stoneMo/EZ-VSL ``test.py``/``utils.py``/``datasets.py`` (also SLAVC, FNAC).
- ``lvs``: hche11/Localizing-Visual-Sounds-the-Hard-Way ``test.py``/``utils.py``.
- ``dsol``: DTaoo/Discriminative-Sounding-Objects-Localization ``tools.py``.

A protocol is a :class:`Protocol` of rule names; each name is a key of one rule table
(``RASTERISE``, ``CONSENSUS``, ``UPSAMPLE``, ``BINARISE``, ``AUC_GRID``, ``BOXLESS``) whose
entry holds the function and its one-line definition (written into metrics.json). Maps enter
the reference rules as float32, the dtype of the references' model outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from avstm.errors import AvstmError
from avstm.evaluate.regions import annotator_consensus, binarize_many, scale_boxes
from avstm.maps import boxes_to_masks, resize_bilinear

# Success-rate thresholds of avstm's AUC: 0, 0.05, ..., 1 (i / 20, so 0.15 is the float 0.15).
AUC_THRESHOLDS = np.arange(21) / 20.0


class Rule(NamedTuple):
    """One named step: the function and the sentence metrics.json gives for it."""

    fn: Callable | None
    definition: str


# ---- box -> mask ---------------------------------------------------------------------------


def _scaled(coord: float, side: float, size: int) -> float:
    """A coordinate in pixels of an image ``side`` wide, in pixels of ``size``: the same float
    the references compute (``size * v`` for a normalised v, ``size * k / 256`` for Flickr)."""
    return coord if side == size else size * coord / side


def _truncated_box(box, image_size, size) -> tuple[int, int, int, int]:
    (w, h), (sh, sw) = image_size, size
    x1, y1, x2, y2 = box.xyxy
    return (int(_scaled(x1, w, sw)), int(_scaled(y1, h, sh)),
            int(_scaled(x2, w, sw)), int(_scaled(y2, h, sh)))


def _truncated_xywh_box(box, image_size, size) -> tuple[int, int, int, int]:
    """DSOL: from the file's normalised (x, y, w, h) when the reader kept it (AudioSet-
    Instrument): ``int(S*x), int(S*x + S*w)``, else as ``_truncated_box``."""
    if box.normbox is None:
        return _truncated_box(box, image_size, size)
    x, y, w, h = box.normbox
    sh, sw = size
    return int(sw * x), int(sh * y), int(sw * x + sw * w), int(sh * y + sh * h)


def _slices(boxes: Sequence, image_size, size, corners) -> np.ndarray:
    masks = np.zeros((len(boxes), *size), dtype=bool)
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = (max(0, c) for c in corners(b, image_size, size))
        masks[i, y1:y2, x1:x2] = True
    return masks


def mask_pixel_centres(boxes, image_size, size) -> np.ndarray:
    """avstm: a box covers the pixels whose centres lie inside it (avstm.maps.boxes_to_masks)."""
    xyxy = scale_boxes([b.xyxy for b in boxes], image_size, size)
    return boxes_to_masks(xyxy, size)


def mask_truncated(boxes, image_size, size) -> np.ndarray:
    """EZ-VSL / LVS: each corner scaled to the evaluation size and truncated, ``int(224 * v)``
    (Flickr: ``int(224 * k / 256)``), then ``mask[y1:y2, x1:x2]``."""
    return _slices(boxes, image_size, size, _truncated_box)


def mask_truncated_xywh(boxes, image_size, size) -> np.ndarray:
    """DSOL: ``mask[int(S*y):int(S*y + S*h), int(S*x):int(S*x + S*w)]`` from normalised xywh."""
    return _slices(boxes, image_size, size, _truncated_xywh_box)


RASTERISE = {
    "pixel-centres": Rule(mask_pixel_centres,
                          "a box covers the pixels whose centres lie inside: x1 <= x + 0.5 < x2"),
    "truncate": Rule(mask_truncated, "corners scaled to the evaluation size and truncated, "
                     "int(S * v) (Flickr: int(S * k / 256)); mask[y1:y2, x1:x2]"),
    "truncate-xywh": Rule(mask_truncated_xywh, "from normalised x, y, w, h: mask[int(S*y):"
                          "int(S*y + S*h), int(S*x):int(S*x + S*w)]"),
}


# ---- several boxes -> the ground-truth map g ------------------------------------------------


def consensus_half(masks: np.ndarray, annotators: Sequence) -> np.ndarray:
    """EZ-VSL / LVS: boxes of a multi-annotator format (Flickr: annotator ids set) are summed
    box by box, halved and clipped at 1, so a file with one box gives 0.5 inside it; boxes
    without annotator ids (VGG-SS) give their binary union."""
    if all(a is None for a in annotators):
        return masks.any(axis=0).astype(np.float64)
    return np.minimum(masks.sum(axis=0) / 2.0, 1.0)


def consensus_union(masks: np.ndarray, annotators: Sequence) -> np.ndarray:
    """DSOL: the binary union of every box."""
    return masks.any(axis=0).astype(np.float64)


CONSENSUS = {
    "annotators": Rule(annotator_consensus, "one annotator: binary union; two or more: "
                       "clip(sum of the annotators' union masks / 2, 0, 1)"),
    "half": Rule(consensus_half, "multi-annotator files (Flickr): clip(sum of box masks / 2, "
                 "0, 1), one box gives 0.5; single-annotator files: binary union"),
    "union": Rule(consensus_union, "binary union of the boxes"),
}


# ---- map upsampling ------------------------------------------------------------------------


def upsample_half_pixel(m: np.ndarray, size) -> np.ndarray:
    """avstm: bilinear, half-pixel centres (torch align_corners=False), float64."""
    return resize_bilinear(m, size)


def upsample_align_corners(m: np.ndarray, size) -> np.ndarray:
    """EZ-VSL: ``F.interpolate(mode="bilinear", align_corners=True)`` on the float32 map."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear",
                                           align_corners=True)[0, 0].numpy()


def upsample_cv2(m: np.ndarray, size) -> np.ndarray:
    """LVS / DSOL: ``cv2.resize(map, (W, H), interpolation=cv2.INTER_LINEAR)`` on float32."""
    import cv2

    return cv2.resize(np.ascontiguousarray(m, dtype=np.float32), (int(size[1]), int(size[0])),
                      interpolation=cv2.INTER_LINEAR)


UPSAMPLE = {
    "half-pixel": Rule(upsample_half_pixel, "bilinear, half-pixel centres (torch "
                       "align_corners=False), float64"),
    "align-corners": Rule(upsample_align_corners, "torch F.interpolate bilinear, "
                          "align_corners=True, float32"),
    "cv2-linear": Rule(upsample_cv2, "cv2.resize INTER_LINEAR, float32"),
}


# ---- binarisation (reference protocols fix theirs) -----------------------------------------


def _normalise32(m: np.ndarray) -> np.ndarray:
    """The references' ``normalize_img``: min-max in the map's float32; a flat map unchanged."""
    m = np.asarray(m, dtype=np.float32)
    lo, hi = m.min(), m.max()
    return m if hi - lo == 0 else (m - lo) / (hi - lo)


def binarise_ezvsl(up: np.ndarray) -> np.ndarray:
    """EZ-VSL: min-max normalise, threshold = sorted value at index int(N * 0.5), keep >=.
    A flat map stays unnormalised and keeps every pixel."""
    p = _normalise32(up)
    thr = np.sort(p.ravel())[int(p.size * 0.5)]
    return p >= thr


def binarise_lvs(up: np.ndarray) -> np.ndarray:
    """LVS: p = 1 - normalise(-map); t = sorted p at index N / 2; p > t becomes 1, then
    p < 1 becomes 0; keep p >= 0.5. So: the pixels above the upper median, plus the maximal
    pixels when the upper median is the maximum; a flat map c (left unnormalised, p = 1 + c)
    keeps every pixel when 1 + c >= 1 in float32 and none when c < 0."""
    p = np.float32(1.0) - _normalise32(-np.asarray(up, dtype=np.float32))
    thr = np.sort(p.ravel())[int(p.size / 2)]
    p = p.copy()
    p[p > thr] = 1.0
    p[p < 1] = 0.0
    return p >= 0.5


def binarise_dsol(up: np.ndarray) -> np.ndarray:
    """DSOL: the raw map > 0.1 x its maximum (a flat map: everything if positive, else none)."""
    m = np.asarray(up, dtype=np.float32)
    return m > 0.1 * float(m.max())


BINARISE = {
    "modes": Rule(None, "avstm's binarisations (--binarisation; metrics.Binarization)"),
    "ezvsl-top50": Rule(binarise_ezvsl, "min-max normalised map >= its value at sorted index "
                        "int(N * 0.5) (a flat map keeps every pixel)"),
    "lvs-median": Rule(binarise_lvs, "normalised map > its value at sorted index N / 2, or the "
                       "maximal pixels when that value is the maximum; a flat map c keeps every "
                       "pixel when c >= 0, none when c < 0"),
    "dsol-max0.1": Rule(binarise_dsol, "raw map > 0.1 x its maximum"),
}
# the binarisation name (metrics.Binarization) each fixed rule is reported under
BINARISE_MODE = {"ezvsl-top50": "top:0.5", "lvs-median": "median", "dsol-max0.1": "max:0.1"}


# ---- AUC grid and frames without a box -----------------------------------------------------

AUC_GRID = {
    "i/20": Rule(AUC_THRESHOLDS, "success rates at i / 20, i = 0..20 (0.15 is the float 0.15)"),
    "0.05*i": Rule(np.array([0.05 * i for i in range(21)]),
                   "success rates at 0.05 * i in floating point (0.05 * 3 > 0.15), "
                   "sklearn.metrics.auc (trapezoid)"),
}

BOXLESS = {
    "skip": Rule(None, "frames without a sounding box are not scored by cIoU"),
    "zero": Rule(None, "frames without a sounding box are scored and counted: cIoU = 0 / |A| "
                 "= 0 (0 / 0 when A is empty: fails every threshold, 0 in the mean)"),
}


# ---- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """One protocol: a rule name per step (keys of the tables above)."""

    name: str
    follows: str  # the published protocol / codebase it reproduces
    size: int  # default evaluation resolution
    rasterise: str
    consensus: str
    upsample: str
    binarise: str
    auc_grid: str
    boxless: str

    @property
    def mode(self) -> str | None:
        """The binarisation name a fixed rule is reported under (None: avstm's modes)."""
        return BINARISE_MODE.get(self.binarise)

    @property
    def thresholds(self) -> np.ndarray:
        return AUC_GRID[self.auc_grid].fn

    @property
    def scores_boxless(self) -> bool:
        return self.boxless == "zero"

    def truth(self, boxes: Sequence, image_size, size) -> np.ndarray:
        """Sounding ``avstm.maps.Box`` list -> g (H, W) float64 in [0, 1]."""
        masks = RASTERISE[self.rasterise].fn(boxes, image_size, tuple(size))
        return CONSENSUS[self.consensus].fn(masks, [b.annotator for b in boxes])

    def masks(self, boxes: Sequence, image_size, size) -> np.ndarray:
        """``avstm.maps.Box`` list -> (N, H, W) bool masks by this protocol's rasterisation."""
        return RASTERISE[self.rasterise].fn(boxes, image_size, tuple(size))

    def upsampled(self, m: np.ndarray, size) -> np.ndarray:
        return UPSAMPLE[self.upsample].fn(m, tuple(size))

    def regions(self, up: np.ndarray, modes: Sequence[str]) -> dict:
        """Upsampled (H, W) map -> {binarisation name: bool region}."""
        rule = BINARISE[self.binarise].fn
        return binarize_many(up, modes) if rule is None else {self.mode: rule(up)}

    def to_dict(self) -> dict:
        tables = {"rasterise": RASTERISE, "consensus": CONSENSUS, "upsample": UPSAMPLE,
                  "binarise": BINARISE, "auc_grid": AUC_GRID, "boxless": BOXLESS}
        return {"name": self.name, "follows": self.follows, "size": self.size,
                "rules": {step: {"rule": getattr(self, step),
                                 "definition": table[getattr(self, step)].definition}
                          for step, table in tables.items()}}


PROTOCOLS: dict[str, Protocol] = {
    "avstm": Protocol("avstm", "avstm's own rules (docs/annotations.md)", 256,
                      "pixel-centres", "annotators", "half-pixel", "modes", "i/20", "skip"),
    "ezvsl": Protocol("ezvsl", "EZ-VSL (Mo & Morgado, ECCV 2022; stoneMo/EZ-VSL test.py)", 224,
                      "truncate", "half", "align-corners", "ezvsl-top50", "0.05*i", "zero"),
    "lvs": Protocol("lvs", "LVS (Chen et al., CVPR 2021; hche11/Localizing-Visual-Sounds-the-"
                    "Hard-Way test.py)", 224,
                    "truncate", "half", "cv2-linear", "lvs-median", "0.05*i", "zero"),
    "dsol": Protocol("dsol", "DSOL (Hu et al., NeurIPS 2020; DTaoo/Discriminative-Sounding-"
                     "Objects-Localization tools.py)", 224,
                     "truncate-xywh", "union", "cv2-linear", "dsol-max0.1", "0.05*i", "skip"),
}


# the evaluation resolutions the protocols use by default (the CLI's --size choices)
SIZES = tuple(sorted({p.size for p in PROTOCOLS.values()}, reverse=True))


def get_protocol(name: str | Protocol) -> Protocol:
    """The protocol called ``name``; AvstmError listing the known ones otherwise."""
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise AvstmError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
