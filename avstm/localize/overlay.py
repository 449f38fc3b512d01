"""Overlays: the attention map as a heatmap over the frame, boxes, label; written as an mp4.

``render_overlay`` draws one frame at the frame's own resolution; ``write_overlay_video``
streams rendered frames and the clip's audio into an H.264/AAC mp4 (PyAV), atomically.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import cv2
import numpy as np

from avstm.errors import MediaError
from avstm.io import atomic_path
from avstm.localize.boxes import Box, upsample_map

BOX_COLOR = (255, 255, 255)  # RGB; white is absent from the JET colormap and survives chroma
TEXT_COLOR = (255, 255, 255)
TEXT_BACKGROUND = (0, 0, 0)
# x264 quality: visually near-lossless, so thin box edges survive 4:2:0 and quantisation.
VIDEO_CRF = "20"
AUDIO_BIT_RATE = 64_000
AUDIO_CHUNK = 1024  # samples per AAC frame


def _line_width(h: int, w: int) -> int:
    return max(2, int(round(min(h, w) / 120)))


def _draw_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    """Text with a filled background box, its top-left corner at ``org``, kept inside img."""
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = img.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - tw - 4)))
    y = int(np.clip(org[1], 0, max(0, h - th - base - 4)))
    cv2.rectangle(img, (x, y), (x + tw + 4, y + th + base + 4), TEXT_BACKGROUND, cv2.FILLED)
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


def render_overlay(frame: np.ndarray, amap: np.ndarray | None, boxes: Sequence[Box] = (), *,
                   label: str | None = None, probability: float | None = None,
                   alpha: float = 0.5, box_color: tuple[int, int, int] = BOX_COLOR,
                   box_scores: bool = True) -> np.ndarray:
    """One overlay frame.

    frame: (H, W, 3) uint8 RGB. amap: (h, w) float attention map of any resolution and range
    (upsampled bilinearly and min-max normalised; a flat map shows as the colormap's low end),
    or None for no heatmap. boxes: ``Box`` objects in frame pixels (x2/y2 exclusive).
    label/probability: text at the top-left, e.g. "violin 0.87". alpha: heatmap opacity in
    [0, 1]. box_scores: write each box's score at its top-left corner.
    Returns (H, W, 3) uint8 RGB, a new array.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = frame.shape[:2]
    if amap is not None and alpha > 0:
        up = upsample_map(amap, (h, w))
        heat = cv2.applyColorMap(np.round(up * 255).astype(np.uint8), cv2.COLORMAP_JET)
        heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
        out = cv2.addWeighted(frame, 1.0 - alpha, heat, alpha, 0.0)
    else:
        out = frame.copy()
    lw = _line_width(h, w)
    scale = max(0.35, min(h, w) / 480)
    for box in boxes:
        _draw_border(out, box.xyxy, lw, box_color)
        if box_scores:
            corner = (int(round(box.xyxy[0])) + lw, int(round(box.xyxy[1])) + lw)
            _draw_text(out, f"{box.score:.2f}", corner, scale * 0.8)
    if label is not None or probability is not None:
        text = " ".join(s for s in (label, None if probability is None else f"{probability:.2f}")
                        if s)
        _draw_text(out, text, (0, 0), scale)
    return out


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad an odd height or width by one pixel (edge replicated) for yuv420p; content stays."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _audio_frames(audio: np.ndarray, start: int, stop: int, sample_rate: int
                  ) -> Iterable[av.AudioFrame]:
    """Samples [start, stop) of mono float32 ``audio`` (zeros past its end) as AAC-sized frames."""
    for a in range(start, stop, AUDIO_CHUNK):
        b = min(a + AUDIO_CHUNK, stop)
        chunk = np.zeros(b - a, dtype=np.float32)
        have = audio[a:b]
        chunk[:len(have)] = have
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = a
        frame.time_base = Fraction(1, sample_rate)
        yield frame


def write_overlay_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float,
                        audio: np.ndarray | None = None, *, sample_rate: int = 16000) -> Path:
    """Write an H.264 (yuv420p) + AAC mp4, streaming, atomically; returns the path.

    frames: iterable of (H, W, 3) uint8 RGB, all the same size; consumed one at a time.
    Odd H or W is padded by one replicated pixel row/column at the bottom/right (4:2:0 needs
    even sizes), so frame pixel coordinates stay valid. fps: frames per second (> 0).
    audio: (N,) float32 mono in [-1, 1] at ``sample_rate``, or None for a video without sound
    (no audio stream). The audio is cut or zero-padded to the video's duration
    (frames / fps) and interleaved with the video as it is written.
    The container is always mp4, whatever the file's extension.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (N,), got shape {audio.shape}")
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise MediaError(path, "no frames to write")
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) uint8, got {first.shape} {first.dtype}")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4",
                     options={"movflags": "+faststart"}) as container:
            vstream = container.add_stream("libx264", rate=rate)
            vstream.height, vstream.width = _even(first).shape[:2]
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": VIDEO_CRF, "preset": "veryfast"}
            # Keep our own copy: the muxer replaces the stream's time base once it starts.
            frame_tb = 1 / rate
            vstream.time_base = frame_tb
            astream = None
            if audio is not None:
                astream = container.add_stream("aac", rate=sample_rate, layout="mono")
                astream.bit_rate = AUDIO_BIT_RATE
            written = 0  # audio samples muxed so far
            n = 0
            for img in itertools.chain([first], frames):
                img = np.asarray(img)
                if img.shape != first.shape or img.dtype != np.uint8:
                    raise ValueError(f"frame {n} is {img.shape} {img.dtype}; expected "
                                     f"{first.shape} uint8 like the first")
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(img)), format="rgb24")
                vf.pts = n
                vf.time_base = frame_tb
                container.mux(vstream.encode(vf))
                n += 1
                if astream is not None:
                    # Audio up to the end of this frame's display interval: durations align.
                    upto = int(round(n / rate * sample_rate))
                    for af in _audio_frames(audio, written, upto, sample_rate):
                        container.mux(astream.encode(af))
                    written = upto
            container.mux(vstream.encode(None))
            if astream is not None:
                container.mux(astream.encode(None))
    return path
