"""Writing an mp4 (H.264 video, AAC audio) with PyAV, atomically."""

from __future__ import annotations

import itertools
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from avstm.errors import MediaError
from avstm.io import atomic_path

AUDIO_CHUNK = 1 << 16  # samples per frame handed to the encoder (it re-frames them)
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}  # channel count -> FFmpeg channel layout


def write_mp4(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float,
              audio: np.ndarray | None = None, sample_rate: int = 16000, *, crf: int = 23,
              preset: str = "veryfast", threads: int = 0, codec: str = "libx264",
              pix_fmt: str = "yuv420p", rotation: int | None = None) -> Path:
    """Write ``frames`` and ``audio`` to an mp4 at ``path`` (via a temporary file and a rename).

    frames: (N, H, W, 3) uint8 RGB, or an iterable of (H, W, 3) uint8 arrays; H and W even.
        Frame i is shown from i / fps to (i + 1) / fps.
    audio: (C, M) float32 in [-1, 1] with C = 1 (mono), 2 (stereo) or 6 (5.1), sample 0 at
        time 0; None writes no audio stream.
    threads: encoder threads for libx264 (0: the encoder's choice).
    codec, pix_fmt: the video encoder and its pixel format (e.g. yuv444p, yuv420p10le, gray);
    rotation: display-matrix rotation in degrees counter-clockwise (None: none).
    Returns the path. Raises MediaError if the encoder fails.
    """
    path = Path(path)
    if audio is not None:
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 2 or audio.shape[0] not in LAYOUTS:
            raise MediaError(path, f"audio must be (1, 2 or 6 channels, samples), got {audio.shape}")
    rate = Fraction(fps).limit_denominator(1001)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise MediaError(path, "no frames to write")
    try:
        with atomic_path(path) as tmp:
            with av.open(str(tmp), "w", format="mp4") as out:
                vs = out.add_stream(codec, rate=rate)
                vs.height, vs.width = first.shape[:2]
                vs.pix_fmt = pix_fmt
                if codec == "libx264":
                    vs.options = {"crf": str(crf), "preset": preset}
                vs.codec_context.thread_count = threads
                if rotation is not None:
                    vs.set_display_rotation(rotation)
                as_ = None
                if audio is not None:
                    as_ = out.add_stream("aac", rate=sample_rate, layout=LAYOUTS[audio.shape[0]])
                    as_.bit_rate = 64000 * audio.shape[0]
                for i, f in enumerate(itertools.chain([first], it)):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                    frame.pts = i
                    frame.time_base = 1 / rate
                    for packet in vs.encode(frame):
                        out.mux(packet)
                for packet in vs.encode(None):
                    out.mux(packet)
                if as_ is not None:
                    _encode_audio(out, as_, audio, sample_rate)
    except (av.FFmpegError, ValueError) as e:
        raise MediaError(path, f"cannot encode: {e}") from e
    return path


def _encode_audio(out, stream, audio: np.ndarray, sample_rate: int) -> None:
    layout = LAYOUTS[audio.shape[0]]
    for s in range(0, audio.shape[1], AUDIO_CHUNK):
        chunk = np.ascontiguousarray(audio[:, s:s + AUDIO_CHUNK])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = s
        frame.time_base = Fraction(1, sample_rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
