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

import contextlib
import dataclasses
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
VIDEO_CRF = "20"
VIDEO_PRESET = "ultrafast"
# Audio codecs the mp4 muxer takes as they are; others are re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"})
AUDIO_BIT_RATE = 192_000  # a re-encode only
AAC_FRAME = 1024  # samples per AAC frame


def _line_width(h: int, w: int) -> int:
    return max(2, int(round(min(h, w) / 120)))


def _text_scale(h: int, w: int) -> float:
    return max(0.35, min(h, w) / 480)


def _draw_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float,
               background=TEXT_BACKGROUND) -> None:
    """Text with a filled background box, its top-left corner at ``org``, kept inside img."""
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = img.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - tw - 4)))
    y = int(np.clip(org[1], 0, max(0, h - th - base - 4)))
    cv2.rectangle(img, (x, y), (x + tw + 4, y + th + base + 4), background, cv2.FILLED)
    cv2.putText(img, text, (x + 2, y + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR,
                thick, cv2.LINE_AA)


def _draw_border(img: np.ndarray, xyxy, width: int, color) -> None:
    """A rectangle's border ``width`` pixels thick, drawn inside [x1, x2) × [y1, y2)."""
    h, w = img.shape[:2]
    x1, x2 = (int(np.clip(round(v), 0, w)) for v in (xyxy[0], xyxy[2]))
    y1, y2 = (int(np.clip(round(v), 0, h)) for v in (xyxy[1], xyxy[3]))
    if x2 <= x1 or y2 <= y1:
        return
    img[y1:min(y1 + width, y2), x1:x2] = color
    img[max(y2 - width, y1):y2, x1:x2] = color
    img[y1:y2, x1:min(x1 + width, x2)] = color
    img[y1:y2, max(x2 - width, x1):x2] = color


@dataclasses.dataclass(frozen=True)
class HeatLayer:
    """A map ready to blend onto frames of one size, as two (h, w, 3) uint8 arrays over the
    coloured crop [y0:y1, x0:x1]: ``keep`` = 255·(1 − opacity) and ``heat`` = colour ·
    opacity, so that a frame's pixel becomes pixel·keep/255 + heat (two saturating uint8
    passes, no float work per frame)."""

    y0: int
    y1: int
    x0: int
    x1: int
    keep: np.ndarray
    heat: np.ndarray


def heat_layer(amap: np.ndarray, size: tuple[int, int], *, alpha: float = HEAT_ALPHA
               ) -> HeatLayer | None:
    """(h, w) map of any range → the layer for frames of ``size`` (H, W); None when nothing
    is coloured (a flat map, or alpha 0)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0:
        return None
    up = upsample_map(amap, size)  # (H, W) float32 in [0, 1]
    hot = up > HEAT_FLOOR
    rows, cols = np.flatnonzero(hot.any(axis=1)), np.flatnonzero(hot.any(axis=0))
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = up[y0:y1, x0:x1]
    opacity = np.clip((crop - HEAT_FLOOR) * (alpha / (1.0 - HEAT_FLOOR)), 0.0, alpha)  # (h, w)
    colour = cv2.cvtColor(cv2.applyColorMap(np.round(crop * 255).astype(np.uint8),
                                            cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    keep = np.round(255.0 * (1.0 - opacity)).astype(np.uint8)
    heat = np.round(colour * opacity[..., None]).astype(np.uint8)
    return HeatLayer(y0, y1, x0, x1, np.repeat(keep[..., None], 3, axis=2), heat)


def colorbar(size: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray]:
    """A vertical colour bar for frames of ``size`` (H, W): its top-left (y, x) and its
    (h, w, 3) uint8 RGB pixels, the colormap from the uncoloured floor (bottom) to the map's
    peak (top), in a white frame."""
    h, w = size
    bh, bw = max(16, h // 3), max(6, w // 80)
    ramp = np.linspace(1.0, HEAT_FLOOR, bh, dtype=np.float32)[:, None].repeat(bw, axis=1)
    bar = cv2.cvtColor(cv2.applyColorMap(np.round(ramp * 255).astype(np.uint8), cv2.COLORMAP_JET),
                       cv2.COLOR_BGR2RGB)
    bar[[0, -1]] = 255
    bar[:, [0, -1]] = 255
    margin = max(2, w // 100)
    return (margin, max(0, w - bw - margin)), bar


def compose(frame: np.ndarray, layer: HeatLayer | None, boxes: Sequence[Box] = (), *,
            text: str | None = None, quiet: bool = False,
            bar: tuple[tuple[int, int], np.ndarray] | None = None,
            box_color: tuple[int, int, int] = BOX_COLOR, box_scores: bool = True,
            copy: bool = True) -> np.ndarray:
    """Draw a prepared heat layer, boxes, a colour bar and the label onto ``frame``
    ((H, W, 3) uint8 RGB; a copy of it unless ``copy`` is False); ``quiet`` draws the label
    as a frame where nothing sounds."""
    out = frame.copy() if copy else frame
    h, w = out.shape[:2]
    if layer is not None:
        region = out[layer.y0:layer.y1, layer.x0:layer.x1]
        cv2.add(cv2.multiply(region, layer.keep, scale=1.0 / 255.0), layer.heat, dst=region)
    lw, scale = _line_width(h, w), _text_scale(h, w)
    for box in boxes:
        _draw_border(out, box.xyxy, lw, box_color)
        if box_scores:
            corner = (int(round(box.xyxy[0])) + lw, int(round(box.xyxy[1])) + lw)
            _draw_text(out, f"{box.score:.2f}", corner, scale * 0.8)
    if bar is not None:
        (y, x), pixels = bar
        out[y:y + pixels.shape[0], x:x + pixels.shape[1]] = pixels[:h - y, :w - x]
    if text:
        _draw_text(out, text, (0, 0), scale, QUIET_BACKGROUND if quiet else TEXT_BACKGROUND)
    return out


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
    return compose(frame, layer, boxes, text=text or None, quiet=quiet,
                   bar=colorbar(size) if show_colorbar else None, box_color=box_color,
                   box_scores=box_scores)


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad an odd height or width by one pixel (edge replicated) for yuv420p; content stays."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


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
    source's frame rate; the source's audio stream is copied (``MP4_AUDIO``) or re-encoded to
    AAC at its own rate and layout. With ``frames_dir``, the frame on screen at each sample
    time is also written there as ``<video_id>_<t.3f>.png``. Use ``push`` as samples come
    (in time order), then ``close`` (returns ``info``) or ``abort``. Atomic: the file appears
    complete or not at all.
    """

    def __init__(self, path: str | os.PathLike | None, source: str | os.PathLike, *,
                 frames_dir: str | os.PathLike | None = None, video_id: str = "frame",
                 show_colorbar: bool = False, alpha: float = HEAT_ALPHA):
        self.path = None if path is None else Path(path)  # None: only the PNGs
        self.source = Path(source)
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        self.video_id, self.show_colorbar, self.alpha = video_id, show_colorbar, alpha
        self.info: dict = {}
        self._samples: list[OverlaySample] = []
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
            self._error = e

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

    def _write(self, tmp: Path | None) -> None:
        info = media.probe(self.source)
        rate = Fraction(info.fps or 25).limit_denominator(1001)
        frames = media.iter_source_frames(self.source)
        first = next(frames, None)
        if first is None:
            raise MediaError(self.source, "no frames to write")
        frames = itertools.chain([first], frames)
        size = first[1].shape[:2]
        bar = colorbar(size) if self.show_colorbar else None
        layers: dict[int, HeatLayer | None] = {}

        def draw(img: np.ndarray, j: int, copy: bool = True) -> np.ndarray:
            if j < 0:
                return img
            s = self._samples[j]
            if j not in layers:
                if len(layers) > 4:
                    layers.pop(min(layers))
                layers[j] = (heat_layer(s.amap, size, alpha=self.alpha)
                             if s.sounding and s.amap is not None else None)
            return compose(img, layers[j], s.boxes if s.sounding else (), text=s.label,
                           quiet=not s.sounding, bar=bar if s.sounding else None, copy=copy)

        with contextlib.ExitStack() as stack:
            src = stack.enter_context(av.open(str(self.source), metadata_errors="ignore"))
            out = audio = None
            if tmp is not None:
                out = stack.enter_context(av.open(str(tmp), mode="w", format="mp4",
                                                  options={"movflags": "+faststart"}))
                vstream = out.add_stream("libx264", rate=rate)
                vstream.height, vstream.width = _even(first[1]).shape[:2]
                vstream.pix_fmt = "yuv420p"
                vstream.options = {"crf": VIDEO_CRF, "preset": VIDEO_PRESET}
                frame_tb = 1 / rate  # our own copy: the muxer replaces the stream's time base
                vstream.time_base = frame_tb
                origin = media._video_origin(src.streams.video[0])
                audio = _AudioCopy(src, out, origin) if src.streams.audio else None
            j, png, n, prev = 0, 0, 0, None
            for t, img in frames:
                k = self._nearest(t, j)  # -1: no sample came (the frame is drawn as it is)
                j = max(j, k)
                if self.frames_dir is not None:
                    png = self._pngs(png, t, prev if prev is not None else img, draw)
                n += 1
                prev = img
                if out is None:
                    continue
                # drawn in place (the frame is not used again), converted by cv2 (BT.601
                # limited range, as swscale does, in a fraction of its time)
                drawn = _even(draw(img, k, copy=self.frames_dir is not None))  # PNGs need prev
                vf = av.VideoFrame.from_ndarray(cv2.cvtColor(drawn, cv2.COLOR_RGB2YUV_I420),
                                                format="yuv420p")
                vf.pts, vf.time_base = n - 1, frame_tb
                if audio is not None:
                    audio.mux_until(float(n / rate))
                out.mux(vstream.encode(vf))
            if self.frames_dir is not None and prev is not None:
                self._nearest(float("inf"), j)
                self._pngs(png, float("inf"), prev, draw)
            if out is not None:
                out.mux(vstream.encode(None))
            if audio is not None:
                audio.mux_until(float("inf"))
                audio.flush()
        self.info = {"frames": n, "fps": float(rate), "maps": "held",
                     "audio": audio.describe() if audio is not None else None}

    def _pngs(self, p: int, t: float, img: np.ndarray, draw) -> int:
        """Write the PNGs of the samples before ``t`` (the frame ``img`` is on screen then)."""
        while p < len(self._samples) and self._samples[p].time < t:
            name = f"{self.video_id}_{self._samples[p].time:.3f}.png"
            ok, data = cv2.imencode(".png", cv2.cvtColor(draw(img, p), cv2.COLOR_RGB2BGR))
            if not ok:
                raise MediaError(self.frames_dir / name, "PNG encoding failed")
            write_bytes(self.frames_dir / name, data.tobytes())
            p += 1
        return p


class _AudioCopy:
    """The source's first audio stream into the overlay: packets copied when mp4 holds the
    codec, else decoded and re-encoded to AAC at the same rate and layout; shifted so that
    time 0 is the first video frame, and muxed in step with the video."""

    def __init__(self, src, out, origin: float):
        self.stream_in = src.streams.audio[0]
        ctx = self.stream_in.codec_context
        self.codec, self.rate, self.channels = ctx.name, int(ctx.sample_rate), int(ctx.channels)
        self.copy = self.codec in MP4_AUDIO
        tb = self.stream_in.time_base
        self.shift = int(round(origin / tb)) if tb else 0
        if self.copy:
            self.stream_out = out.add_stream_from_template(self.stream_in)
        else:
            layout = av.AudioLayout(f"{self.channels}c").name  # the default order ("2 channels": stereo)
            self.stream_out = out.add_stream("aac", rate=self.rate, layout=layout)
            self.stream_out.bit_rate = AUDIO_BIT_RATE
            self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate,
                                               frame_size=AAC_FRAME)
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
