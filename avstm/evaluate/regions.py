"""How a map becomes a predicted region (the binarisations) and how boxes become pixels of
the evaluation grid: the steps the protocols (``avstm.evaluate.protocols``) and the metrics
(``avstm.evaluate.metrics``) both take, below both of them so that imports flow one way
(regions ← protocols ← metrics). Conventions in ``avstm.evaluate.metrics``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from avstm.errors import AvstmError
from avstm.maps import is_flat

_MODE_FORMS = "'value:T' (0<=T<1), 'top:P' (0<P<=1), 'median', 'max:R' (0<=R<=1)"


# ---- binarisation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Binarization:
    """How a map becomes the predicted region A. ``name`` is how the output names it.

    kind ``value``: the min-max normalised map > param (the STM paper; param 0.5).
    kind ``top``: the pixels >= the value at sorted index int(N·(1-param)), i.e. the top
    ``param`` fraction (EZ-VSL's top 50%: ``np.sort(m)[int(N*0.5)]``, kept with >=).
    kind ``median``: the pixels > the value at sorted index N//2 (LVS's threshold, strict >).
    kind ``max``: the raw map > param · max(map) (DSOL/Qian); meant for non-negative maps.

    A flat map (no location) selects every pixel in value/top/max (EZ-VSL's rule: its
    threshold equals the constant and it keeps >=) and no pixel in median (avstm's choice:
    a strict > keeps nothing above a constant). LVS's own code differs there: it keeps every
    pixel of a flat map c >= 0 and none of c < 0, and the maximal pixels when the upper median
    is the maximum (``--protocol lvs``, ``protocols.binarise_lvs``).
    """

    kind: str
    param: float | None = None

    @property
    def name(self) -> str:
        return self.kind if self.param is None else f"{self.kind}:{self.param:g}"


def parse_binarization(mode: str | Binarization) -> Binarization:
    """Parse "value:0.5", "top:0.5", "median" or "max:0.5"; raise AvstmError naming the forms."""
    if isinstance(mode, Binarization):
        return mode
    text = str(mode).strip().lower()
    kind, _, arg = text.partition(":")
    if kind == "median" and not arg:
        return Binarization("median")
    limits = {"value": (0.0, 1.0, True, False), "top": (0.0, 1.0, False, True),
              "max": (0.0, 1.0, True, True)}
    if kind not in limits or not arg:
        raise AvstmError(f"binarisation {mode!r} is not one of {_MODE_FORMS}")
    try:
        p = float(arg)
    except ValueError:
        raise AvstmError(f"binarisation {mode!r}: {arg!r} is not a number; valid: {_MODE_FORMS}")
    lo, hi, lo_ok, hi_ok = limits[kind]
    if not ((lo < p or (lo_ok and p == lo)) and (p < hi or (hi_ok and p == hi))):
        raise AvstmError(f"binarisation {mode!r}: {p:g} is out of range; valid: {_MODE_FORMS}")
    return Binarization(kind, p)


def normalize_minmax(maps: np.ndarray) -> np.ndarray:
    """(..., H, W) -> float64 in [0, 1] per map; a flat map becomes all ones (see Binarization)."""
    m = np.asarray(maps, dtype=np.float64)
    lo = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - lo
    flat = is_flat(m)[..., None, None]
    return np.where(flat, 1.0, (m - lo) / np.where(flat, 1.0, span))


def binarize_many(maps: np.ndarray, modes: Sequence[str | Binarization]) -> dict:
    """(..., H, W) float maps -> {mode name: (..., H, W) bool region}; sorts each map once
    for the quantile modes (np.partition degrades badly on maps with many equal values)."""
    m = np.asarray(maps, dtype=np.float64)
    flat = is_flat(m)[..., None, None]
    values = m.reshape(*m.shape[:-2], -1)  # (..., N)
    n = values.shape[-1]
    ordered = None
    out = {}
    for mode in modes:
        b = parse_binarization(mode)
        if b.kind == "value":
            region = normalize_minmax(m) > b.param
        elif b.kind == "max":
            region = m > b.param * m.max(axis=(-2, -1), keepdims=True)
        else:
            if ordered is None:
                ordered = np.sort(values, axis=-1)
            k = n // 2 if b.kind == "median" else min(n - 1, max(0, int(n * (1.0 - b.param))))
            thr = ordered[..., k][..., None, None]
            region = m > thr if b.kind == "median" else m >= thr
        out[b.name] = region & ~flat if b.kind == "median" else region | flat
    return out


def binarize(maps: np.ndarray, mode: str | Binarization) -> np.ndarray:
    """(..., H, W) float maps -> (..., H, W) bool predicted regions A under ``mode``."""
    return binarize_many(maps, [mode])[parse_binarization(mode).name]


# ---- boxes on the evaluation grid -----------------------------------------------------------


def scale_boxes(boxes: np.ndarray, image_size: tuple[float, float],
                size: tuple[int, int]) -> np.ndarray:
    """(N, 4) xyxy in pixels of ``image_size`` = (width, height) -> pixels of ``size`` = (H, W)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = size[1] / image_size[0], size[0] / image_size[1]
    return b * np.array([sx, sy, sx, sy])


def annotator_consensus(masks: np.ndarray, annotators: Sequence) -> np.ndarray:
    """(N, H, W) bool box masks, one annotator id per box -> g (H, W) float64: one annotator
    (ids all equal, or all None) gives the binary union; two or more give
    ``clip(sum over annotators of their union masks / 2, 0, 1)``."""
    groups = sorted(set(annotators), key=repr)
    if len(groups) <= 1:
        return np.asarray(masks, dtype=bool).any(axis=0).astype(np.float64)
    per = np.stack([masks[[i for i, a in enumerate(annotators) if a == g]].any(axis=0)
                    for g in groups])
    return np.clip(per.sum(axis=0) / 2.0, 0.0, 1.0)
