"""Small real mp4 clips (H.264 + AAC through avstm's PyAV writer) and an untrained checkpoint
for the tests.

``index_frames`` draws each frame's index as a binary code of black/white bars, so a test can
read back exactly which source frame it got after lossy encoding.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avstm.media import write_mp4

CODE_BITS = 10


def index_frames(n: int, width: int = 128, height: int = 96) -> np.ndarray:
    """(n, height, width, 3) uint8 frames; frame i encodes i in 10 vertical bars."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    bar = width // CODE_BITS
    for i in range(n):
        for b in range(CODE_BITS):
            if (i >> b) & 1:
                frames[i, :, b * bar:(b + 1) * bar] = 255
    return frames


def read_index(frame: np.ndarray) -> int:
    """Decode the index drawn by ``index_frames`` from an (H, W, 3) frame of any size."""
    h, w = frame.shape[:2]
    bar = w / CODE_BITS
    gray = frame.mean(axis=2)
    bits = [gray[h // 4: 3 * h // 4, int((b + 0.3) * bar): int((b + 0.7) * bar)].mean() > 127
            for b in range(CODE_BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def tone(seconds: float, hz: float, sample_rate: int = 16000) -> np.ndarray:
    """(M,) float32 sine of amplitude 0.3."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_clip(path, frames: np.ndarray | None = None, *, fps: float = 24, seconds: float | None = None,
               audio: np.ndarray | None = None, sample_rate: int = 16000, layout: str = "mono",
               codec: str = "libx264", pix_fmt: str = "yuv420p", audio_stream: bool = True,
               rotation: int | None = None, width: int = 128, height: int = 96) -> Path:
    """Write an mp4 with avstm's own writer. frames (N, H, W, 3) uint8 (default: index frames
    for ``seconds``); audio (C, M) or (M,) float32 (default: a 440 Hz tone over the clip in every
    channel of ``layout`` when ``audio_stream``)."""
    if frames is None:
        frames = index_frames(int(round((seconds or 1.0) * fps)), width, height)
    if audio is None and audio_stream:
        channels = len(av.AudioLayout(layout).channels)
        t = np.arange(int(len(frames) / fps * sample_rate)) / sample_rate
        audio = np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))
    if audio is not None and audio.ndim == 1:
        audio = audio[None]
    return write_mp4(path, frames, fps, audio, sample_rate, codec=codec, pix_fmt=pix_fmt, rotation=rotation)


def write_labelled_folder(root: Path, clips: list[tuple[np.ndarray, str, str]], *,
                          fps: float) -> tuple[Path, Path]:
    """``root/videos/v<i>.mp4`` from each (frames, label, split) and ``root/labels.csv``
    (id,label,split): a ``--dataset folder`` input. Returns (videos folder, labels file)."""
    videos = root / "videos"
    videos.mkdir()
    rows = ["id,label,split"]
    for i, (frames, label, split) in enumerate(clips):
        write_clip(videos / f"v{i}.mp4", frames, fps=fps)
        rows.append(f"v{i},{label},{split}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return videos, labels


def tiny_checkpoint(path, classes=("beep", "hum")) -> Path:
    """An untrained STMNet behind random-init EfficientNet-Lite0 + VGGish (no downloads)."""
    from avstm.extract.config import ExtractConfig
    from avstm.extract.features import FeatureExtractor
    from avstm.memnet.checkpoint import save_checkpoint
    from avstm.memnet.model import ModelConfig, STMNet

    ex = FeatureExtractor(ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights="random",
                                        audio_weights="random", device="cpu"))
    net = STMNet(ModelConfig(visual_channels=ex.config.visual_channels, num_classes=len(classes) + 1,
                             dim=32, hidden=32))
    return save_checkpoint(path, net.eval(), train_config={}, classes=list(classes),
                           extract_config=ex.config.to_dict(), epoch=0)


def write_audio_only(path, seconds: float = 1.0, rate: int = 16000, *, cover: bool = False) -> Path:
    """An mp4 holding only an AAC tone; with ``cover``, also a cover picture (a one-frame MJPEG
    stream marked ``attached_pic``, as music files carry)."""
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)[None]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        if cover:
            picture_stream = out.add_stream("mjpeg", rate=1)
            picture_stream.width, picture_stream.height, picture_stream.pix_fmt = 64, 48, "yuvj420p"
            picture_stream.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")
            picture = picture.reformat(format="yuvj420p")
            picture.pts = 0
            for p in [*picture_stream.encode(picture), *picture_stream.encode(None)]:
                out.mux(p)
        for i in range(0, wave.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, i:i + 1024]), format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, i, Fraction(1, rate)
            for p in stream.encode(af):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return Path(path)
