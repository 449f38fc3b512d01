"""The evaluation figure (the layout of the paper's Figure 3): a grid of a few test videos ×
a few annotated frames, each panel the frame with the localization map as a heatmap, the
predicted boxes, the true sounding boxes and the silent distractors.

Colours: predicted boxes yellow (solid), true sounding boxes green (solid), silent
distractors white (dashed). A frame whose video file is missing is drawn on a grey canvas.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from avstm import media
from avstm.errors import MediaError
from avstm.evaluate.annotations import Box
from avstm.evaluate.metrics import normalize_minmax, resize_bilinear
from avstm.io import atomic_path

PANEL_INCHES = 3.0  # each panel is PANEL_INCHES × PANEL_INCHES
DPI = 80  # so a panel is 240 × 240 pixels
PRED_COLOUR, TRUE_COLOUR, SILENT_COLOUR = "yellow", "lime", "white"
GREY = 128


@dataclass
class Panel:
    """One frame of the figure.

    image: (H, W, 3) uint8 RGB at the annotation's width × height, or None (grey canvas).
    map: (h, w) float map of any resolution (bool: a fixed region), or None.
    pred_boxes: (N, 4) xyxy in pixels of width × height, or None.
    boxes: the frame's annotated boxes (sounding and silent), in pixels of width × height.
    """

    video: str
    time: float
    width: float
    height: float
    image: np.ndarray | None
    map: np.ndarray | None
    pred_boxes: np.ndarray | None
    boxes: Sequence[Box]
    score: float | None = None  # cIoU under the primary binarisation, shown in the title


def figure_size(rows: int, cols: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that ``draw_figure`` writes for a rows × cols grid."""
    side = int(round(PANEL_INCHES * DPI))
    return cols * side, rows * side


def load_frames(source: str | os.PathLike | None, times: Sequence[float], width: float,
                height: float) -> list[np.ndarray | None]:
    """The frames of ``source`` at ``times`` as (height, width, 3) uint8 RGB, resized to the
    annotation's size; a list of None when the file is absent or cannot be decoded (the
    figure is a picture of the numbers, not a check of the video)."""
    if not source or not Path(source).is_file() or not len(times):
        return [None] * len(times)
    try:
        clip = media.decode(source, times=sorted(times), size=None, audio=False)
    except MediaError:
        return [None] * len(times)
    size = (max(1, int(round(width))), max(1, int(round(height))))
    frames = media.resize_frames(clip.frames, size)  # (N, height, width, 3)
    order = np.argsort(np.asarray(times), kind="stable")
    out: list[np.ndarray | None] = [None] * len(times)
    for k, i in enumerate(order):
        out[int(i)] = frames[k] if k < len(frames) else None
    return out


def _draw_boxes(ax, boxes: np.ndarray, colour: str, style: str) -> None:
    from matplotlib.patches import Rectangle

    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour,
                               linewidth=2.0, linestyle=style))


def _draw_panel(ax, p: Panel) -> None:
    h, w = max(1, int(round(p.height))), max(1, int(round(p.width)))
    image = p.image if p.image is not None else np.full((h, w, 3), GREY, np.uint8)
    ax.imshow(image, extent=(0, p.width, p.height, 0), interpolation="bilinear")
    if p.map is not None:
        heat = normalize_minmax(resize_bilinear(np.asarray(p.map, dtype=np.float64), (h, w)))
        ax.imshow(heat, extent=(0, p.width, p.height, 0), cmap="jet", alpha=0.45,
                  vmin=0.0, vmax=1.0, interpolation="bilinear")
    _draw_boxes(ax, [b.xyxy for b in p.boxes if not b.sounding], SILENT_COLOUR, "--")
    _draw_boxes(ax, [b.xyxy for b in p.boxes if b.sounding], TRUE_COLOUR, "-")
    if p.pred_boxes is not None:
        _draw_boxes(ax, p.pred_boxes, PRED_COLOUR, "-")
    score = "" if p.score is None or np.isnan(p.score) else f"  cIoU {p.score:.2f}"
    ax.set_title(f"{p.video} @ {p.time:.2f}s{score}", fontsize=7)
    ax.set_xlim(0, p.width)
    ax.set_ylim(p.height, 0)
    ax.set_axis_off()


def draw_figure(rows: Sequence[Sequence[Panel]], path: str | os.PathLike, *,
                title: str = "") -> Path:
    """Write a PNG grid, one row per video (``rows[i]`` its panels), atomically; returns path.

    The image is ``figure_size(len(rows), max panels per row)`` pixels; empty cells are blank.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (imported here: the CLI starts faster)
    import matplotlib.pyplot as plt

    n_rows = max(1, len(rows))
    n_cols = max([1] + [len(r) for r in rows])
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False,
                             figsize=(n_cols * PANEL_INCHES, n_rows * PANEL_INCHES), dpi=DPI)
    try:
        for i in range(n_rows):
            for j in range(n_cols):
                ax = axes[i][j]
                if i < len(rows) and j < len(rows[i]):
                    _draw_panel(ax, rows[i][j])
                else:
                    ax.set_axis_off()
        if title:
            fig.suptitle(title, fontsize=8)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92 if title else 0.95,
                            wspace=0.04, hspace=0.12)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return Path(path)
