"""Overlays: the attention map as a heatmap over the frame, boxes, label; written as an mp4.

``render_overlay`` draws one frame at the frame's own resolution. ``OverlayWriter`` writes
``overlay.mp4`` at the source's own frame rate in a worker thread while ``localize`` pushes
its samples: every source frame, over the whole duration, shows the nearest sample's map,
boxes and label (maps are *held* between samples, not interpolated, so a frame's map and
boxes always belong together), and the source's audio stream is copied packet by packet
(re-encoded to AAC at its own rate and layout only when mp4 cannot hold its codec).

The heatmap colours only the sounding region: the map is upsampled, min-max normalised and
its part above ``HEAT_FLOOR`` is blended in with an opacity growing from 0 at the floor to
``alpha`` at the peak; the rest of the frame keeps its own pixels. A sample where nothing is
sounding (the model's background class, or a file without audio) shows no heatmap and no
boxes, only its state at the top-left ("background 0.91", "no audio").
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import cv2
import numpy as np

from avstm import media
from avstm.errors import MediaError
from avstm.io import atomic_path, write_bytes
from avstm.localize.boxes import Box, upsample_map

BOX_COLOR = (255, 255, 255)  # RGB; white is absent from the JET colormap and survives chroma
TEXT_COLOR = (255, 255, 255)
TEXT_BACKGROUND = (0, 0, 0)
QUIET_BACKGROUND = (96, 96, 96)  # label box of a frame where nothing is sounding
HEAT_FLOOR = 0.5  # the normalised map below this is left uncoloured
HEAT_ALPHA = 0.6  # opacity of the heatmap at the map's peak
# x264: visually near-lossless, so thin box edges survive 4:2:0; "ultrafast" keeps a 720p
# frame's encode near 5 ms on two cores (README, bench/bench_localize.py), at larger files.
VIDEO_CRF = 23
VIDEO_PRESET = "ultrafast"
# Audio codecs the mp4 muxer takes as they are; others are re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"})
AUDIO_BIT_RATE = 192_000  # a re-encode only
AAC_FRAME = 1024  # samples per AAC frame


def _line_width(h: int, w: int) -> int:
    return max(2, int(round(min(h, w) / 120)))


def _text_scale(h: int, w: int) -> float:
    return max(0.35, min(h, w) / 480)


# BT.601 limited range, the matrix of cv2's COLOR_RGB2YUV_I420 and of swscale's default
_YUV = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0],
                 [112.0, -93.786, -18.214]], np.float32) / 255.0
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)


def rgb_to_yuv(rgb) -> np.ndarray:
    """(..., 3) RGB in [0, 255] → (..., 3) float32 Y, U, V (BT.601 limited range)."""
    return np.asarray(rgb, np.float32) @ _YUV.T + _YUV_OFFSET


class _Canvas:
    """A frame to draw on, as planes: an (H, W, 3) RGB image (one plane), or an I420 frame
    (Y at full size, U and V at half size). Coordinates are the frame's pixels; a plane at
    ``step`` 2 covers each rectangle by the chroma pixels it touches."""

    def __init__(self, planes: Sequence[np.ndarray], steps: Sequence[int], yuv: bool):
        self.planes, self.steps, self.yuv = list(planes), list(steps), yuv
        self.h, self.w = self.planes[0].shape[:2]

    @classmethod
    def rgb(cls, img: np.ndarray) -> "_Canvas":
        return cls([img], [1], yuv=False)

    @classmethod
    def i420(cls, buf) -> "_Canvas":
        """``buf``: (3·H/2, W) uint8 I420 (H, W even), or a yuv420p ``av.VideoFrame``; drawn
        in place."""
        if isinstance(buf, av.VideoFrame):
            return cls([media.plane_view(p) for p in buf.planes], [1, 2, 2], yuv=True)
        h, w = buf.shape[0] * 2 // 3, buf.shape[1]
        flat = buf.reshape(-1)
        q = h * w // 4
        return cls([flat[:h * w].reshape(h, w), flat[h * w:h * w + q].reshape(h // 2, w // 2),
                    flat[h * w + q:].reshape(h // 2, w // 2)], [1, 2, 2], yuv=True)

    def colours(self, rgb) -> list:
        """The value of colour ``rgb`` in each plane."""
        if not self.yuv:
            return [tuple(int(c) for c in rgb)]
        return [int(round(float(v))) for v in rgb_to_yuv(rgb)]

    def fill(self, x1: int, y1: int, x2: int, y2: int, rgb) -> None:
        for plane, step, value in zip(self.planes, self.steps, self.colours(rgb)):
            plane[y1 // step:-(-y2 // step), x1 // step:-(-x2 // step)] = value

    def text(self, text: str, org: tuple[int, int], scale: float, thick: int, rgb) -> None:
        """Anti-aliased text on the first plane (luma for I420: the text and its box are grey)."""
        cv2.putText(self.planes[0], text, org, cv2.FONT_HERSHEY_SIMPLEX, scale,
                    self.colours(rgb)[0], thick, cv2.LINE_AA)

    def blend(self, layer: "HeatLayer") -> None:
        for plane, step, (keep, heat) in zip(self.planes, self.steps, layer.parts):
            region = plane[layer.y0 // step:layer.y1 // step, layer.x0 // step:layer.x1 // step]
            cv2.add(cv2.multiply(region, keep, scale=1.0 / 255.0), heat, dst=region)

    def paste(self, y: int, x: int, parts: Sequence[np.ndarray]) -> None:
        for plane, step, pixels in zip(self.planes, self.steps, parts):
            py, px = y // step, x // step
            ph, pw = plane.shape[:2]
            plane[py:py + pixels.shape[0], px:px + pixels.shape[1]] = pixels[:ph - py, :pw - px]


def _draw_text(canvas: _Canvas, text: str, org: tuple[int, int], scale: float,
               background=TEXT_BACKGROUND) -> None:
    """Text with a filled background box, its top-left corner at ``org``, kept inside the frame."""
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = canvas.h, canvas.w
    x = int(np.clip(org[0], 0, max(0, w - tw - 4)))
    y = int(np.clip(org[1], 0, max(0, h - th - base - 4)))
    canvas.fill(x, y, x + tw + 5, y + th + base + 5, background)
    canvas.text(text, (x + 2, y + th + 2), scale, thick, TEXT_COLOR)


def _draw_border(canvas: _Canvas, xyxy, width: int, color) -> None:
    """A rectangle's border ``width`` pixels thick, drawn inside [x1, x2) × [y1, y2)."""
    h, w = canvas.h, canvas.w
    x1, x2 = (int(np.clip(round(v), 0, w)) for v in (xyxy[0], xyxy[2]))
    y1, y2 = (int(np.clip(round(v), 0, h)) for v in (xyxy[1], xyxy[3]))
    if x2 <= x1 or y2 <= y1:
        return
    canvas.fill(x1, y1, x2, min(y1 + width, y2), color)
    canvas.fill(x1, max(y2 - width, y1), x2, y2, color)
    canvas.fill(x1, y1, min(x1 + width, x2), y2, color)
    canvas.fill(max(x2 - width, x1), y1, x2, y2, color)


@dataclasses.dataclass(frozen=True)
class HeatLayer:
    """A map ready to blend onto frames of one size, over the coloured crop [y0:y1, x0:x1]:
    for each plane of the frame (RGB: one (h, w, 3); I420: Y (h, w), U and V (h/2, w/2)) a
    pair of uint8 arrays ``keep`` = 255·(1 − opacity) and ``heat`` = colour · opacity, so
    that a pixel becomes pixel·keep/255 + heat (two saturating uint8 passes, no float work
    per frame)."""

    y0: int
    y1: int
    x0: int
    x1: int
    parts: tuple[tuple[np.ndarray, np.ndarray], ...]


def _opacity(crop: np.ndarray, alpha: float) -> np.ndarray:
    """(h, w) normalised map → (h, w) float32 opacity: 0 up to HEAT_FLOOR, rising to ``alpha``
    at the peak."""
    return np.clip((crop - HEAT_FLOOR) * (alpha / (1.0 - HEAT_FLOOR)), 0.0, alpha).astype(np.float32)


def _levels(crop: np.ndarray) -> np.ndarray:
    """(h, w) normalised map → (h, w) uint8 colormap levels."""
    return np.round(crop * 255).astype(np.uint8)


def _heat(crop: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) normalised map → opacity (h, w) float32 and colour (h, w, 3) float32 RGB."""
    colour = cv2.cvtColor(cv2.applyColorMap(_levels(crop), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return _opacity(crop, alpha), colour.astype(np.float32)


def _hot_box(up: np.ndarray) -> tuple[int, int, int, int] | None:
    hot = up > HEAT_FLOOR
    rows, cols = np.flatnonzero(hot.any(axis=1)), np.flatnonzero(hot.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def heat_layer(amap: np.ndarray, size: tuple[int, int], *, alpha: float = HEAT_ALPHA,
               i420: bool = False) -> HeatLayer | None:
    """(h, w) map of any range → the layer for frames of ``size`` (H, W), RGB or (``i420``,
    H and W even) I420; None when nothing is coloured (a flat map, or alpha 0).

    For I420 the layer is computed on the chroma grid (H/2, W/2), where U and V are blended,
    its colours looked up in a YUV table of the colormap, and its Y planes upsampled
    bilinearly from that grid: a quarter of the float work, none at full size."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0:
        return None
    if not i420:
        up = upsample_map(amap, size)  # (H, W) float32 in [0, 1]
        box = _hot_box(up)
        if box is None:
            return None
        y0, y1, x0, x1 = box
        opacity, colour = _heat(up[y0:y1, x0:x1], alpha)
        keep = _u8(255.0 * (1.0 - opacity))
        return HeatLayer(y0, y1, x0, x1, ((np.repeat(keep[..., None], 3, axis=2),
                                           _u8(colour * opacity[..., None])),))
    h2, w2 = size[0] // 2, size[1] // 2
    up = upsample_map(amap, (h2, w2))
    box = _hot_box(up)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    crop = up[r0:r1, c0:c1]
    opacity = _opacity(crop, alpha)
    index = _levels(crop)
    yuv = cv2.LUT(cv2.merge([index] * 3), _jet_yuv())  # (h/2, w/2, 3) uint8 colours
    heat = _u8(yuv * opacity[..., None])
    keep = _u8(255.0 * (1.0 - opacity))
    full = ((c1 - c0) * 2, (r1 - r0) * 2)  # uint8 planes upsampled bilinearly for Y
    return HeatLayer(2 * r0, 2 * r1, 2 * c0, 2 * c1,
                     ((cv2.resize(keep, full, interpolation=cv2.INTER_LINEAR),
                       cv2.resize(np.ascontiguousarray(heat[..., 0]), full, interpolation=cv2.INTER_LINEAR)),
                      (keep, np.ascontiguousarray(heat[..., 1])),
                      (keep, np.ascontiguousarray(heat[..., 2]))))


@functools.lru_cache(maxsize=1)
def _jet_yuv() -> np.ndarray:
    """(1, 256, 3) uint8: the JET colormap's colour of each map level, as Y, U, V."""
    rgb = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET),
                       cv2.COLOR_BGR2RGB)
    return _u8(rgb_to_yuv(rgb))


@dataclasses.dataclass(frozen=True)
class ColourBar:
    """A vertical colour bar placed at (y, x) of frames of one size: its pixels per plane."""

    y: int
    x: int
    parts: tuple[np.ndarray, ...]


def colorbar(size: tuple[int, int], *, i420: bool = False) -> ColourBar:
    """A vertical colour bar for frames of ``size`` (H, W): the colormap from the uncoloured
    floor (bottom) to the map's peak (top), in a white frame, at the top-right; as (h, w, 3)
    uint8 RGB, or (``i420``) Y (h, w), U and V (h/2, w/2) at an even position."""
    h, w = size
    bh, bw = max(16, h // 3), max(6, w // 80)
    margin = max(2, w // 100)
    if i420:
        bh, bw, margin = bh + bh % 2, bw + bw % 2, margin + margin % 2
    ramp = np.linspace(1.0, HEAT_FLOOR, bh, dtype=np.float32)[:, None].repeat(bw, axis=1)
    bar = cv2.cvtColor(cv2.applyColorMap(np.round(ramp * 255).astype(np.uint8), cv2.COLORMAP_JET),
                       cv2.COLOR_BGR2RGB)
    bar[[0, -1]] = 255
    bar[:, [0, -1]] = 255
    x = max(0, w - bw - margin)
    if not i420:
        return ColourBar(margin, x, (bar,))
    yuv = rgb_to_yuv(bar)
    half = cv2.resize(yuv, (bw // 2, bh // 2), interpolation=cv2.INTER_AREA)
    return ColourBar(margin, x - x % 2, (_u8(yuv[..., 0]), _u8(half[..., 1]), _u8(half[..., 2])))


def _compose(canvas: _Canvas, layer: HeatLayer | None, boxes: Sequence[Box], text: str | None,
             quiet: bool, bar: ColourBar | None, box_color, box_scores: bool) -> None:
    """Draw a prepared heat layer, boxes, a colour bar and the label onto ``canvas``: the one
    drawing of the overlay, for RGB images and I420 video frames alike."""
    if layer is not None:
        canvas.blend(layer)
    lw, scale = _line_width(canvas.h, canvas.w), _text_scale(canvas.h, canvas.w)
    for box in boxes:
        _draw_border(canvas, box.xyxy, lw, box_color)
        if box_scores:
            corner = (int(round(box.xyxy[0])) + lw, int(round(box.xyxy[1])) + lw)
            _draw_text(canvas, f"{box.score:.2f}", corner, scale * 0.8)
    if bar is not None:
        canvas.paste(bar.y, bar.x, bar.parts)
    if text:
        _draw_text(canvas, text, (0, 0), scale, QUIET_BACKGROUND if quiet else TEXT_BACKGROUND)


def render_overlay(frame: np.ndarray, amap: np.ndarray | None, boxes: Sequence[Box] = (), *,
                   label: str | None = None, probability: float | None = None,
                   alpha: float = HEAT_ALPHA, box_color: tuple[int, int, int] = BOX_COLOR,
                   box_scores: bool = True, show_colorbar: bool = False,
                   quiet: bool = False) -> np.ndarray:
    """One overlay frame.

    frame: (H, W, 3) uint8 RGB. amap: (h, w) float attention map of any resolution and range
    (upsampled bilinearly and min-max normalised; only its part above ``HEAT_FLOOR`` is
    coloured, a flat map not at all), or None for no heatmap. boxes: ``Box`` objects in frame
    pixels (x2/y2 exclusive). label/probability: text at the top-left, e.g. "violin 0.87".
    alpha: heatmap opacity at the map's peak, in [0, 1]. box_scores: write each box's score
    at its top-left corner. quiet: the label marks a frame where nothing sounds.
    Returns (H, W, 3) uint8 RGB, a new array.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    size = frame.shape[:2]
    layer = heat_layer(amap, size, alpha=alpha) if amap is not None else None
    text = " ".join(s for s in (label, None if probability is None else f"{probability:.2f}") if s)
    out = frame.copy()
    _compose(_Canvas.rgb(out), layer, boxes, text or None, quiet,
             colorbar(size) if show_colorbar else None, box_color, box_scores)
    return out


@dataclasses.dataclass(frozen=True)
class OverlaySample:
    """What one sampled frame shows: its time (s), map (h, w) or None, boxes, label text,
    and whether something sounds (else the label is drawn as a quiet state)."""

    time: float
    amap: np.ndarray | None
    boxes: Sequence[Box]
    label: str
    sounding: bool


class _Aborted(Exception):
    pass


class OverlayWriter:
    """Writes ``path`` (an H.264 mp4) from the video ``source`` in a worker thread.

    Every source frame is drawn with the nearest pushed sample (held between samples; the
    first and last hold before the first and after the last sample) and encoded at the
    source's frame rate, drawn and encoded in I420 as decoded (no colour conversion); the
    source's audio stream is copied (``MP4_AUDIO``) or re-encoded to AAC at its own rate and
    layout. With ``frames_dir``, the frame on screen at each sample time is also written there
    as ``<video_id>_<t.3f>.png``. Use ``push`` as samples come (in time order), then ``close``
    (returns ``info``) or ``abort``. Atomic: the file appears complete or not at all.

    The frames come from the writer's own decode of ``source``, or with ``fed`` from the
    decoder that feeds the model (``feed`` as ``media.iter_frames``' ``every``, then
    ``end_frames``): one decode for both. The feeder then waits while the frames held span
    more than ``fed`` seconds (they wait for the samples the model has not yet pushed, so
    ``fed`` must exceed the time a chunk of samples takes to come).
    """

    def __init__(self, path: str | os.PathLike | None, source: str | os.PathLike, *,
                 frames_dir: str | os.PathLike | None = None, video_id: str = "frame",
                 show_colorbar: bool = False, alpha: float = HEAT_ALPHA,
                 fed: float | None = None):
        self.path = None if path is None else Path(path)  # None: only the PNGs
        self.source = Path(source)
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        self.video_id, self.show_colorbar, self.alpha = video_id, show_colorbar, alpha
        self.fed = fed
        self.info: dict = {}
        self._samples: list[OverlaySample] = []
        self._frames: collections.deque = collections.deque()  # fed (t, av.VideoFrame)
        self._frames_end = False
        self._done = self._aborted = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="avstm-overlay", daemon=True)
        self._thread.start()

    # ---- the caller's side ------------------------------------------------------------------

    def push(self, samples: Iterable[OverlaySample]) -> None:
        with self._cond:
            self._samples.extend(samples)
            self._cond.notify_all()

    def feed(self, t: float, frame) -> None:
        """One decoded source frame (``fed`` writers; called by the decoding thread). Waits
        while the frames held span ``fed`` seconds; once the writer failed, raises its error
        (a full disk, say), once it was aborted MediaError: either ends the decode."""
        with self._cond:
            while (not self._aborted and self._error is None and self._frames
                   and t - self._frames[0][0] > self.fed):
                self._cond.wait(0.1)
            if self._error is not None:
                raise self._error
            if self._aborted:
                raise MediaError(self.source, "the overlay writer stopped")
            self._frames.append((t, frame))
            self._cond.notify_all()

    def end_frames(self) -> None:
        """No more frames will be fed."""
        with self._cond:
            self._frames_end = True
            self._cond.notify_all()

    def close(self) -> dict:
        """Wait for the file; returns ``info`` (frames, fps, audio). Re-raises the worker's error."""
        with self._cond:
            self._done = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.info

    def abort(self) -> None:
        """Stop the worker and leave no file."""
        with self._cond:
            self._done = self._aborted = True
            self._cond.notify_all()
        self._thread.join()

    # ---- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.path is None:
                self._write(None)
                return
            with atomic_path(self.path) as tmp:
                self._write(tmp)
        except _Aborted:
            pass
        except BaseException as e:  # handed to the caller by close()
            with self._cond:
                self._error = e
                self._cond.notify_all()

    def _nearest(self, t: float, j: int) -> int:
        """The index of the pushed sample nearest ``t`` (from ``j`` on), waiting until it is
        known; -1 when no sample ever came."""
        with self._cond:
            while True:
                if self._aborted:
                    raise _Aborted
                s = self._samples
                while j + 1 < len(s) and t >= 0.5 * (s[j].time + s[j + 1].time):
                    j += 1
                if j + 1 < len(s) or self._done:
                    return j if s else -1
                self._cond.wait()

    def _fed_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        while True:
            with self._cond:
                while not self._frames and not self._frames_end:
                    if self._aborted:
                        raise _Aborted
                    self._cond.wait()
                if not self._frames:
                    return
                t, frame = self._frames.popleft()
                self._cond.notify_all()
            yield t, media.i420_frame(frame)

    def _write(self, tmp: Path | None) -> None:
        info = media.probe(self.source)
        rate = Fraction(info.fps or 25).limit_denominator(1001)
        frames = self._fed_frames() if self.fed is not None else media.iter_source_frames(self.source)
        first = next(frames, None)
        if first is None:
            raise MediaError(self.source, "no frames to write")
        frames = itertools.chain([first], frames)
        size = (first[1].height, first[1].width)  # even
        bar = colorbar(size, i420=True) if self.show_colorbar else None
        layers: dict[int, HeatLayer | None] = {}

        def draw(img, j: int):
            """Draw sample ``j`` onto the I420 frame ``img`` (an array or av.VideoFrame) in place."""
            if j < 0:
                return img
            s = self._samples[j]
            if j not in layers:
                if len(layers) > 4:
                    layers.pop(min(layers))
                layers[j] = (heat_layer(s.amap, size, alpha=self.alpha, i420=True)
                             if s.sounding and s.amap is not None else None)
            _compose(_Canvas.i420(img), layers[j], s.boxes if s.sounding else (), s.label,
                     not s.sounding, bar if s.sounding else None, BOX_COLOR, True)
            return img

        with contextlib.ExitStack() as stack:
            src = stack.enter_context(av.open(str(self.source), metadata_errors="ignore"))
            out = audio = None
            if tmp is not None:
                out = stack.enter_context(media.Mp4Writer(
                    tmp, size[1], size[0], rate, crf=VIDEO_CRF, preset=VIDEO_PRESET,
                    faststart=True))
                origin = media._video_origin(src.streams.video[0])
                audio = _AudioCopy(src, out, origin) if src.streams.audio else None
            j, png, n, prev = 0, 0, 0, None
            for t, img in frames:
                k = self._nearest(t, j)  # -1: no sample came (the frame is drawn as it is)
                j = max(j, k)
                if self.frames_dir is not None:  # the PNGs draw on a copy of the undrawn frame
                    undrawn = img.to_ndarray()
                    png = self._pngs(png, t, prev if prev is not None else undrawn, draw)
                    prev = undrawn
                n += 1
                if out is None:
                    continue
                if audio is not None:
                    audio.mux_until(float(n / rate))
                out.write(draw(img, k))
            if self.frames_dir is not None and prev is not None:
                self._nearest(float("inf"), j)
                self._pngs(png, float("inf"), prev, draw)
            if out is not None:
                out.end_video()
            if audio is not None:
                audio.mux_until(float("inf"))
                audio.flush()
        self.info = {"frames": n, "fps": float(rate), "maps": "held",
                     "decode": "shared with the model" if self.fed is not None else "own",
                     "audio": audio.describe() if audio is not None else None}

    def _pngs(self, p: int, t: float, img: np.ndarray, draw) -> int:
        """Write the PNGs of the samples before ``t`` (the I420 frame ``img`` is on screen then)."""
        while p < len(self._samples) and self._samples[p].time < t:
            name = f"{self.video_id}_{self._samples[p].time:.3f}.png"
            ok, data = cv2.imencode(".png", cv2.cvtColor(draw(img.copy(), p), cv2.COLOR_YUV2BGR_I420))
            if not ok:
                raise MediaError(self.frames_dir / name, "PNG encoding failed")
            write_bytes(self.frames_dir / name, data.tobytes())
            p += 1
        return p


class _AudioCopy:
    """The source's first audio stream into the overlay: packets copied when mp4 holds the
    codec, else decoded and re-encoded to AAC at the same rate and layout; shifted so that
    time 0 is the first video frame, and muxed in step with the video."""

    def __init__(self, src, out: media.Mp4Writer, origin: float):
        self.stream_in = src.streams.audio[0]
        ctx = self.stream_in.codec_context
        self.codec, self.rate, self.channels = ctx.name, int(ctx.sample_rate), int(ctx.channels)
        self.copy = self.codec in MP4_AUDIO
        tb = self.stream_in.time_base
        self.shift = int(round(origin / tb)) if tb else 0
        if self.copy:
            self.stream_out = out.copy_audio(self.stream_in)
        else:  # the default layout of its channel count ("2 channels": stereo)
            self.stream_out = out.add_audio(self.rate, self.channels, AUDIO_BIT_RATE)
            self.resampler = av.AudioResampler(format="fltp", layout=self.stream_out.layout.name,
                                               rate=self.rate, frame_size=AAC_FRAME)
        self.out = out
        self._packets = self._source_packets(src)
        self._next = next(self._packets, None)

    def _source_packets(self, src) -> Iterator[tuple[float, object]]:
        tb = self.stream_in.time_base
        try:
            for packet in src.demux(self.stream_in):
                if packet.dts is None:
                    continue
                if packet.pts is not None:
                    packet.pts -= self.shift
                packet.dts -= self.shift
                yield float((packet.pts if packet.pts is not None else packet.dts) * tb), packet
        except av.FFmpegError:
            return  # a damaged tail: the audio ends where it broke

    def mux_until(self, t: float) -> None:
        """Mux the source's audio that starts before ``t`` seconds."""
        while self._next is not None and self._next[0] < t:
            packet = self._next[1]
            if self.copy:
                packet.stream = self.stream_out
                self.out.mux(packet)
            else:
                try:
                    for frame in packet.decode():
                        self._encode(frame)
                except av.FFmpegError:
                    pass  # one damaged packet: its samples are missing
            self._next = next(self._packets, None)

    def _encode(self, frame) -> None:
        for f in self.resampler.resample(frame):
            f.pts = None  # the encoder counts samples from 0
            self.out.mux(self.stream_out.encode(f))

    def flush(self) -> None:
        if not self.copy:
            self._encode(None)
            self.out.mux(self.stream_out.encode(None))

    def describe(self) -> str:
        how = "copied" if self.copy else f"re-encoded from {self.codec} to aac"
        return f"{how}, {self.rate} Hz, {self.channels} channel(s)"
