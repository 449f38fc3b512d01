"""Decoding videos: frames at requested times and 16 kHz mono audio, from any file FFmpeg reads;
and writing them: ``Mp4Writer`` / ``write_mp4`` (H.264 + AAC), the one mp4 encoder.

Every stage decodes through this module (extract, localize, evaluate, the tests' clips), and
both localize's overlay and synth's videos are encoded by it.

Conventions (docs/ARCHITECTURE.md):
- A video of duration D has ``S = max(1, floor(D + 1e-3))`` seconds; at ``fps`` frames per second
  the frame k of second s is taken at ``t = s + (k + 0.5) / fps``.
- The frame for a time t is the one on screen at t: the last frame whose presentation time is
  ≤ t (before the first frame, the first; past the end, the last).
- Times are seconds from the first video frame. Audio is placed on the same clock.
- Frames carrying rotation metadata are turned upright.
- A file without an audio stream decodes to silence (``MediaInfo.has_audio`` is False): a
  silent video is valid input, every second of it is simply background. An audio stream that
  exists is never replaced by silence.
- Damaged media is an error, never silently shortened: a stream (video or audio) that decodes
  to much less than the file declares for it (``truncation_problem``: short by more than
  ``TRUNCATION_SLACK`` s and ``TRUNCATION_SHARE`` of it; the file's duration stands in for a
  stream without its own) raises MediaError saying both durations. A damaged tail within
  that slack is kept as decoded.
- Attached pictures (cover art: a video stream with the ``attached_pic`` disposition) are not
  the video; a file with only audio and a cover picture has no video stream.
- ``hwaccel="cuda"`` (or ``"cuda:N"``) decodes the video on the GPU's NVDEC through FFmpeg
  (PyAV's hardware decoding); frames come back to system memory and are selected, converted and
  resized exactly as in software. A codec NVDEC lacks falls back to software decoding.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
import cv2
import numpy as np

from avstm.errors import HardwareDecodeError, MediaError
from avstm.io import atomic_path

SAMPLE_RATE = 16000
AUDIO_CHUNK = 1 << 16  # samples per frame handed to the AAC encoder (it re-frames them)
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}  # channel count -> FFmpeg channel layout
TRUNCATION_SLACK = 0.5  # seconds a stream may decode short of its declared duration...
TRUNCATION_SHARE = 0.1  # ...or this share of it, whichever is larger (a damaged last GOP, AAC padding)


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What a file holds. ``duration`` in seconds; ``fps`` the native frame rate."""

    path: str
    duration: float
    fps: float
    width: int
    height: int
    has_audio: bool
    sample_rate: int  # native, 0 without audio
    channels: int  # native, 0 without audio
    rotation: int = 0  # degrees counter-clockwise applied to make frames upright

    @property
    def num_seconds(self) -> int:
        return num_seconds(self.duration)


@dataclasses.dataclass
class Clip:
    """A decoded clip.

    frames: (N, H, W, 3) uint8 RGB at ``times``; times: (N,) float64 seconds;
    audio: (M,) float32 in [-1, 1], mono, ``SAMPLE_RATE`` Hz, sample 0 at time 0.
    """

    frames: np.ndarray
    times: np.ndarray
    audio: np.ndarray
    info: MediaInfo


def num_seconds(duration: float) -> int:
    """Whole seconds of a clip of ``duration`` s (at least 1, so a 0.3 s clip has one second)."""
    return max(1, int(math.floor(duration + 1e-3)))


def frame_times(duration: float, fps: int = 4) -> np.ndarray:
    """(S, fps) float64 sample times ``s + (k + 0.5) / fps`` for the seconds of a clip."""
    s = np.arange(num_seconds(duration), dtype=np.float64)[:, None]
    k = np.arange(fps, dtype=np.float64)[None, :]
    return s + (k + 0.5) / fps


def _check_path(path: Path) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise MediaError(path, "broken symbolic link") from None
        raise MediaError(path, "no such file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MediaError(path, "symbolic link loop") from None
        raise MediaError(path, f"cannot access ({e.strerror})") from None
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")
    if st.st_size == 0:
        raise MediaError(path, "empty file")
    if not os.access(path, os.R_OK):
        raise MediaError(path, "permission denied")


def decode_device_index(device: str | None) -> str | None:
    """Check a decode-device name: None for software ("cpu" or None), else the CUDA device index
    of "cuda" ("" for the default device) or "cuda:N" ("N"). Raises ValueError for others."""
    if device in (None, "cpu"):
        return None
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index == "" or index.isdigit()):
        raise ValueError(f"decode_device must be cpu, cuda or cuda:N, not {device!r}")
    return index


def hardware_decoder(device: str | None):
    """PyAV's settings for decoding on ``device``: None for "cpu" (or None), NVDEC for "cuda"
    or "cuda:N" (software fallback for codecs NVDEC lacks)."""
    index = decode_device_index(device)
    if index is None:
        return None
    from av.codec.hwaccel import HWAccel

    return HWAccel(device_type="cuda", device=index or None, allow_software_fallback=True)


def _open(path: str | os.PathLike, hwaccel: str | None = None):
    path = Path(path)
    _check_path(path)
    hw = hardware_decoder(hwaccel)
    try:
        return av.open(str(path), metadata_errors="ignore", **({"hwaccel": hw} if hw else {}))
    except (PermissionError, av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        if hw is not None:  # is it the file, or the hardware decoder?
            with _open(path):
                pass
            raise HardwareDecodeError(
                f"cannot decode on {hwaccel}: FFmpeg could not open an NVDEC decoder there "
                f"({_reason(e)}); decode on the CPU instead (--decode-device cpu)") from None
        if isinstance(e, PermissionError):
            raise MediaError(path, "permission denied") from None
        raise MediaError(path, f"not a media file FFmpeg can read ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())[:200]


# FFmpeg's "tty" demuxer renders any .txt/.nfo/... file as a video of its characters
_TEXT_FORMATS = frozenset({"tty"})


def _streams(container, path):
    if container.format.name in _TEXT_FORMATS:
        raise MediaError(path, "a text file, not a video")
    pictures = [s for s in container.streams.video if s.disposition & av.stream.Disposition.attached_pic]
    video = next((s for s in container.streams.video if s not in pictures), None)
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None:
        raise MediaError(path, "no video stream" + (" (only an attached cover picture)" if pictures else ""))
    return video, audio


def _declared(container, stream) -> float | None:
    """The duration in seconds the file declares for ``stream`` (its own, else the file's)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1e6
    return None


def truncation_problem(what: str, decoded: float, declared: float | None) -> str | None:
    """The problem of a stream that decodes to ``decoded`` s of the ``declared`` s, or None
    when the shortfall lies within TRUNCATION_SLACK s or TRUNCATION_SHARE of it."""
    if declared is None or declared - decoded <= max(TRUNCATION_SLACK, TRUNCATION_SHARE * declared):
        return None
    return (f"damaged or cut short: its {what} decodes to {decoded:.2f} s of the {declared:.2f} s "
            f"the file declares")


def _check_decoded(path, container, stream, what: str, decoded: float) -> None:
    problem = truncation_problem(what, decoded, _declared(container, stream))
    if problem is not None:
        raise MediaError(path, problem)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read a file's header: duration, native fps, frame size, audio rate and channels.

    Raises MediaError for a missing, unreadable or non-media file, or one without video.
    Durations come from the container's metadata here; ``decode`` measures them exactly.
    """
    with _open(path) as container:
        video, audio = _streams(container, path)
        duration = _header_duration(container, video)
        fps = float(video.average_rate or video.guessed_rate or 0.0)
        return MediaInfo(
            path=str(path), duration=duration, fps=fps,
            width=video.codec_context.width, height=video.codec_context.height,
            has_audio=audio is not None,
            sample_rate=int(audio.codec_context.sample_rate) if audio is not None else 0,
            channels=int(audio.codec_context.channels) if audio is not None else 0,
        )


def _header_duration(container, video) -> float:
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return 0.0


class _FrameSelector:
    """Turns a stream of decoded frames into the frames on screen at given times.

    Only the frames that are kept are converted to RGB (and resized). ``times`` is either a
    sorted array, or None for the open-ended grid ``(j + 0.5) / fps``.
    """

    def __init__(self, times: Sequence[float] | None, fps: int, size: tuple[int, int] | None,
                 model_size: tuple[int, int] | None = None):
        self.times = None if times is None else np.asarray(times, dtype=np.float64)
        self.fps = fps
        self.size = size  # (width, height), None for native, False for the shape only
        self.model_size = model_size  # a second (width, height) of each frame, or None
        self.j = 0
        self.prev = None  # (time, av.VideoFrame)
        self._prev_rgb = None
        self.rotation = 0

    def _t(self, j: int) -> float | None:
        if self.times is None:
            return (j + 0.5) / self.fps
        return float(self.times[j]) if j < len(self.times) else None

    def _rgb(self, frame, size: tuple[int, int] | None) -> np.ndarray:
        """One frame as upright RGB, at ``size`` (width, height) by FFmpeg's bilinear scaler
        (the one rule both extraction and localize use), or native."""
        rot = _rotation(frame)
        self.rotation = rot
        if size is not None and rot in (90, 270):
            size = (size[1], size[0])
        if size is None:
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1],
                                   interpolation="BILINEAR")
        if rot:
            # the display matrix rotates counter-clockwise by ``rot`` degrees
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rot // 90))
        return rgb

    def _convert(self, frame):
        if self._prev_rgb is not None and self._prev_rgb[0] is frame:
            return self._prev_rgb[1]
        if self.size is False:  # only the upright shape (iter_frames(native=False))
            rot = _rotation(frame)
            self.rotation = rot
            rgb = (frame.width, frame.height) if rot in (90, 270) else (frame.height, frame.width)
        else:
            rgb = self._rgb(frame, self.size)
        if self.model_size is not None:
            rgb = (rgb, self._rgb(frame, self.model_size))
        self._prev_rgb = (frame, rgb)
        return rgb

    def push(self, t: float, frame) -> Iterator[tuple[float, np.ndarray]]:
        """Feed one decoded frame shown from time ``t``; yield the (time, RGB) pairs now settled."""
        while True:
            tj = self._t(self.j)
            if tj is None or tj >= t:
                break
            shown = self.prev[1] if self.prev is not None else frame
            yield tj, self._convert(shown)
            self.j += 1
        self.prev = (t, frame)

    def finish(self, count: int | None) -> Iterator[tuple[float, np.ndarray]]:
        """Yield the remaining times (up to ``count`` in all, or all given times) from the last frame."""
        if self.prev is None:
            return
        while True:
            tj = self._t(self.j)
            if tj is None or (count is not None and self.j >= count):
                break
            yield tj, self._convert(self.prev[1])
            self.j += 1


def _rotation(frame) -> int:
    """A decoded frame's display rotation in degrees counter-clockwise, in [0, 360)."""
    return int(getattr(frame, "rotation", 0) or 0) % 360


def _frame_time(frame, origin: float) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base) - origin


class _AudioCollector:
    """Resamples decoded audio frames to 16 kHz mono float32 and places them on the video clock."""

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        self.sample_rate = sample_rate
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self.chunks: list[np.ndarray] = []
        self.start: float | None = None

    def push(self, frame, origin: float) -> None:
        if self.start is None:
            t = _frame_time(frame, origin)
            self.start = t if t is not None else 0.0
        for out in self.resampler.resample(frame):
            self.chunks.append(out.to_ndarray().reshape(-1))

    def finish(self) -> np.ndarray:
        for out in self.resampler.resample(None):
            self.chunks.append(out.to_ndarray().reshape(-1))
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.decoded = len(audio) / self.sample_rate  # seconds the stream itself decoded to
        offset = int(round((self.start or 0.0) * self.sample_rate))
        if offset > 0:
            audio = np.concatenate([np.zeros(offset, np.float32), audio])
        elif offset < 0:
            audio = audio[-offset:]
        return np.clip(audio.astype(np.float32, copy=False), -1.0, 1.0)


def _video_origin(video) -> float:
    if video.start_time is not None and video.time_base is not None:
        return float(video.start_time * video.time_base)
    return 0.0


def decode(path: str | os.PathLike, *, fps: int = 4, size: tuple[int, int] | None = (256, 256),
           times: Sequence[float] | None = None, audio: bool = True, threads: int = 0,
           hwaccel: str | None = None) -> Clip:
    """Decode a whole clip in one pass over its packets.

    Args:
        path: any file FFmpeg reads.
        fps: frames kept per second (ignored when ``times`` is given): ``frame_times(D, fps)``.
        size: (width, height) of the returned frames, or None for the native (upright) size.
        times: explicit sorted sample times in seconds instead of the grid.
        audio: decode the audio too (else ``Clip.audio`` is empty).
        threads: decoder threads (0: FFmpeg's choice).
        hwaccel: "cuda" or "cuda:N" to decode the video on NVDEC (None or "cpu": software).

    Returns:
        Clip with frames (N, H, W, 3) uint8, times (N,), audio (M,) float32 16 kHz mono.
        On the grid, N = S * fps where S = ``num_seconds(duration)``.

    Raises:
        MediaError: missing/unreadable/corrupt file, no video stream, no decodable frame.
        HardwareDecodeError: ``hwaccel`` asked for a decoder this machine cannot open.
    """
    path = Path(path)
    selector = _FrameSelector(times, fps, size)
    kept_t: list[float] = []
    kept: list[np.ndarray] = []
    last_t = None
    with _open(path, hwaccel) as container:
        video, astream = _streams(container, path)
        _set_threads(video, threads)
        origin = _video_origin(video)
        collector = _AudioCollector() if (audio and astream is not None) else None
        streams = [video] + ([astream] if collector is not None else [])
        try:
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if packet.stream.type == "audio":
                        collector.push(frame, origin)  # type: ignore[union-attr]
                        continue
                    t = _frame_time(frame, origin)
                    t = t if t is not None else (last_t + 1e-6 if last_t is not None else 0.0)
                    last_t = t
                    for tj, rgb in selector.push(t, frame):
                        kept_t.append(tj)
                        kept.append(rgb)
        except av.FFmpegError as e:
            if selector.prev is None:
                raise MediaError(path, f"cannot decode ({_reason(e)})") from None
            # a damaged tail: kept if within the slack, else _check_decoded raises below
        if selector.prev is None:
            raise MediaError(path, "no decodable video frame")
        native_fps = float(video.average_rate or video.guessed_rate or 0.0)
        frame_dur = 1.0 / native_fps if native_fps > 0 else 0.0
        duration = (last_t or 0.0) + frame_dur
        _check_decoded(path, container, video, "video", duration)
        count = None if times is not None else num_seconds(duration) * fps
        for tj, rgb in selector.finish(count):
            kept_t.append(tj)
            kept.append(rgb)
        if count is not None:
            kept, kept_t = kept[:count], kept_t[:count]
        wave = collector.finish() if collector is not None else np.zeros(0, np.float32)
        if collector is not None:
            _check_decoded(path, container, astream, "audio", collector.decoded)
        wave = wave[:int(round(duration * SAMPLE_RATE))]  # AAC pads its last frame past the end
        if collector is None and audio:
            wave = np.zeros(int(round(duration * SAMPLE_RATE)), np.float32)
        h, w = kept[0].shape[:2] if size is None else (size[1], size[0])
        info = MediaInfo(
            path=str(path), duration=duration, fps=native_fps,
            width=video.codec_context.width, height=video.codec_context.height,
            has_audio=astream is not None,
            sample_rate=int(astream.codec_context.sample_rate) if astream is not None else 0,
            channels=int(astream.codec_context.channels) if astream is not None else 0,
            rotation=selector.rotation,
        )
    frames = np.stack(kept) if kept else np.zeros((0, h, w, 3), np.uint8)
    return Clip(frames=frames, times=np.asarray(kept_t, np.float64), audio=wave, info=info)


def probe_decoder(path: str | os.PathLike, hwaccel: str | None) -> str:
    """Decode the first video frame of ``path`` on ``hwaccel``; returns its pixel format as it
    reaches system memory (NVDEC gives "nv12"; a software fallback the codec's own, e.g.
    "yuv420p"). Raises HardwareDecodeError when the decoder cannot be opened, MediaError for
    a bad file."""
    path = Path(path)
    with _open(path, hwaccel) as container:
        video, _ = _streams(container, path)
        try:
            for frame in container.decode(video):
                return frame.format.name
        except av.FFmpegError as e:
            raise MediaError(path, f"cannot decode ({_reason(e)})") from None
    raise MediaError(path, "no decodable video frame")


def _set_threads(video, threads: int) -> None:
    video.thread_type = "AUTO"
    if threads:
        video.codec_context.thread_count = threads


def _decoded(container, video, path: Path) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """Every decoded frame of ``video`` in display order with its time (s from the first
    frame). A damaged tail ends the stream after the last frame that decoded; a file that
    decodes no frame raises MediaError."""
    origin = _video_origin(video)
    last_t = None
    try:
        for frame in container.decode(video):
            t = _frame_time(frame, origin)
            t = t if t is not None else (last_t + 1e-6 if last_t is not None else 0.0)
            last_t = t
            yield t, frame
    except av.FFmpegError as e:
        if last_t is None:
            raise MediaError(path, f"cannot decode ({_reason(e)})") from None
    if last_t is None:
        raise MediaError(path, "no decodable video frame")


def iter_frames(path: str | os.PathLike, *, fps: int = 4, size: tuple[int, int] | None = None,
                times: Sequence[float] | None = None, threads: int = 0,
                model_size: tuple[int, int] | None = None, native: bool = True,
                every: Callable[[float, "av.VideoFrame"], None] | None = None) -> Iterator[tuple]:
    """Stream the frames on screen at the sample times: yields (t, (H, W, 3) uint8 RGB).

    With ``model_size`` (width, height), yields (t, (frame, (height, width, 3) uint8)) instead:
    the second image converted and scaled from the same decoded frame exactly as ``decode``
    does for the feature cache, so that localize's features equal extraction's. With
    ``native`` False (``model_size`` only) the first item is the frame's upright (H, W), not
    its pixels (no full-size conversion).

    ``every``: called with (t, av.VideoFrame) for every decoded frame, in display order, before
    the samples it settles are yielded (one decode feeds both the model's samples and the
    overlay's every frame; ``i420`` converts such a frame).

    Memory stays constant in the video's length (for ``localize`` over long videos). Without
    ``times``, the times are exactly those of ``decode`` (``frame_times`` of the decoded
    duration, not the header's, which can be wrong): a frame is held back until its second is
    known to lie inside the clip, so at most about one second of frames is buffered.
    """
    path = Path(path)
    selector = _FrameSelector(times, fps, size if native or model_size is None else False,
                              model_size)
    pending: list[tuple] = []  # grid frames whose second may lie past the end

    def settled(pairs, seconds: int) -> Iterator[tuple[float, np.ndarray]]:
        if times is not None:
            yield from pairs
            return
        pending.extend(pairs)
        while pending and int(math.floor(pending[0][0])) < seconds:
            yield pending.pop(0)

    last_t = None
    with _open(path) as container:
        video, _ = _streams(container, path)
        _set_threads(video, threads)
        native_fps = float(video.average_rate or video.guessed_rate or 0.0)
        frame_dur = 1.0 / native_fps if native_fps > 0 else 0.0
        for t, frame in _decoded(container, video, path):
            last_t = t
            if every is not None:
                every(t, frame)
            # the clip lasts at least until this frame ends: its whole seconds so far are in
            yield from settled(list(selector.push(t, frame)), num_seconds(t + frame_dur))
        _check_decoded(path, container, video, "video", last_t + frame_dur)
    seconds = num_seconds(last_t + frame_dur)
    rest = list(selector.finish(seconds * fps if times is None else None))
    yield from settled(rest, seconds)


def _plain_i420(frame) -> bool:
    """Whether a decoded frame's own planes are already its upright, even-sized I420 image."""
    return (frame.format.name == "yuv420p" and not _rotation(frame)
            and frame.width % 2 == 0 and frame.height % 2 == 0)


def i420(frame) -> np.ndarray:
    """A decoded frame, upright, as one (3·H/2, W) uint8 I420 array (the Y plane, then U and
    V at half size; H and W even, an odd size padded by repeating its last row or column):
    the frame's own planes copied when it is plain 4:2:0 without rotation, else converted by
    FFmpeg to RGB and by cv2 (BT.601 limited range, as swscale) to I420."""
    if _plain_i420(frame):
        return frame.to_ndarray()
    rgb = _FrameSelector(None, 1, None)._convert(frame)
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def plane_view(plane) -> np.ndarray:
    """A plane of an ``av.VideoFrame`` as a (height, width) uint8 array over its buffer (rows
    ``line_size`` apart): drawing into it draws into the frame."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]


def i420_frame(frame) -> "av.VideoFrame":
    """A new yuv420p ``av.VideoFrame`` of a decoded frame, upright and of even size, to draw
    on and encode: the decoded planes copied once when it is plain 4:2:0 without rotation
    (the decoder keeps its own), else made by ``i420``."""
    if _plain_i420(frame):
        out = av.VideoFrame(frame.width, frame.height, "yuv420p")
        for a, b in zip(out.planes, frame.planes):
            np.copyto(plane_view(a), plane_view(b))
        return out
    return av.VideoFrame.from_ndarray(i420(frame), format="yuv420p")


def iter_source_frames(path: str | os.PathLike, *, threads: int = 0
                       ) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """Every decoded frame of the video stream in display order, upright: yields
    (t seconds from the first frame, a yuv420p ``av.VideoFrame`` of even size of it, see
    ``i420_frame``). For overlays at the source's own frame rate; a damaged tail ends the
    stream after the last frame that decoded."""
    path = Path(path)
    with _open(path) as container:
        video, _ = _streams(container, path)
        _set_threads(video, threads)
        for t, frame in _decoded(container, video, path):
            yield t, i420_frame(frame)


def read_audio(path: str | os.PathLike, *, duration: float | None = None) -> tuple[np.ndarray, bool]:
    """Decode only the audio: (M,) float32 16 kHz mono on the video clock, and whether a stream existed.

    Without an audio stream, returns silence of ``duration`` seconds (0 if not given).
    """
    path = Path(path)
    with _open(path) as container:
        video, astream = _streams(container, path)
        if astream is None:
            n = int(round((duration or 0.0) * SAMPLE_RATE))
            return np.zeros(n, np.float32), False
        origin = _video_origin(video)
        collector = _AudioCollector()
        try:
            for frame in container.decode(astream):
                collector.push(frame, origin)
        except av.FFmpegError:
            pass  # a damaged tail: kept if within the slack (_check_decoded)
        wave = collector.finish()
        _check_decoded(path, container, astream, "audio", collector.decoded)
        return wave, True


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, height, width, 3) uint8, bilinear; ``size`` is (width, height)."""
    if frames.shape[1:3] == (size[1], size[0]):
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])


class Mp4Writer:
    """An mp4 being written at ``path`` (as given: callers write into an ``io.atomic_path``):
    one video stream (libx264 by default) fed frame by frame, and optionally one audio
    stream, added before the first frame (``add_audio`` to encode, ``copy_audio`` to take a
    source stream's packets as they are).

    width, height: the frames' size (even for yuv420p). fps: frame i is shown from i / fps.
    crf, preset: x264's quality and speed; threads: encoder threads (0: the encoder's
    choice); codec, pix_fmt: the encoder and its pixel format (e.g. yuv444p, gray);
    rotation: display-matrix rotation in degrees counter-clockwise (None: none);
    faststart: the index at the front of the file (playable while it downloads).
    reproducible: the same frames give the same bytes on every run. x264's macroblock-tree
    rate control is turned off for it: with it on, the same frames encoded twice gave other
    bitstreams (even with one thread; measured with this PyAV/x264).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, *,
                 crf: int = 23, preset: str = "veryfast", threads: int = 0,
                 codec: str = "libx264", pix_fmt: str = "yuv420p", rotation: int | None = None,
                 faststart: bool = False, reproducible: bool = False):
        self.rate = Fraction(fps).limit_denominator(1001)
        self.container = av.open(str(path), "w", format="mp4",
                                 **({"options": {"movflags": "+faststart"}} if faststart else {}))
        try:
            self.video = self.container.add_stream(codec, rate=self.rate)
            self.video.height, self.video.width = height, width
            self.video.pix_fmt = pix_fmt
            if codec == "libx264":
                self.video.options = {"crf": str(crf), "preset": preset,
                                      **({"x264-params": "no-mbtree=1"} if reproducible else {})}
            self.video.codec_context.thread_count = threads
            if rotation is not None:
                self.video.set_display_rotation(rotation)
        except BaseException:
            self.container.close()
            raise
        self.frames = 0
        self._time_base = 1 / self.rate  # our own: the muxer replaces the stream's time base

    def add_audio(self, rate: int, channels: int, bit_rate: int):
        """An AAC stream of ``channels`` (default layout) at ``rate`` Hz; returns it."""
        layout = LAYOUTS.get(channels) or av.AudioLayout(f"{channels}c").name
        stream = self.container.add_stream("aac", rate=rate, layout=layout)
        stream.bit_rate = bit_rate
        return stream

    def copy_audio(self, template):
        """A stream that takes ``template``'s packets (from another file) unchanged; returns it."""
        return self.container.add_stream_from_template(template)

    def write(self, image, format: str = "rgb24") -> None:
        """One frame: (H, W, 3) uint8 RGB ("rgb24"), (3·H/2, W) uint8 I420 ("yuv420p", as
        ``i420`` gives), or an ``av.VideoFrame`` (as ``i420_frame`` gives; encoded as it is)."""
        if isinstance(image, av.VideoFrame):
            frame = image
            frame.pict_type = av.video.frame.PictureType.NONE  # the encoder chooses
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=format)
        frame.pts = self.frames
        frame.time_base = self._time_base
        self.mux(self.video.encode(frame))
        self.frames += 1

    def mux(self, packets) -> None:
        """Mux a packet or a list of packets (of this file's streams)."""
        self.container.mux(packets)

    def end_video(self) -> None:
        """Flush the video encoder (no frame may follow)."""
        self.mux(self.video.encode(None))

    def encode_audio(self, stream, audio: np.ndarray, sample_rate: int) -> None:
        """(C, M) float32 audio, sample 0 at time 0, into ``stream`` (``add_audio``), flushed."""
        layout = stream.layout.name
        for s in range(0, audio.shape[1], AUDIO_CHUNK):
            chunk = np.ascontiguousarray(audio[:, s:s + AUDIO_CHUNK])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = s
            frame.time_base = Fraction(1, sample_rate)
            self.mux(stream.encode(frame))
        self.mux(stream.encode(None))

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_mp4(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float,
              audio: np.ndarray | None = None, sample_rate: int = 16000, *, crf: int = 23,
              preset: str = "veryfast", threads: int = 0, codec: str = "libx264",
              pix_fmt: str = "yuv420p", rotation: int | None = None) -> Path:
    """Write ``frames`` and ``audio`` to an mp4 at ``path`` (via a temporary file and a rename).

    frames: (N, H, W, 3) uint8 RGB, or an iterable of (H, W, 3) uint8 arrays; H and W even.
        Frame i is shown from i / fps to (i + 1) / fps.
    audio: (C, M) float32 in [-1, 1] with C = 1 (mono), 2 (stereo) or 6 (5.1), sample 0 at
        time 0, encoded to AAC at 64 kbit/s per channel after the video; None: no audio.
    The other options are ``Mp4Writer``'s; the file is ``reproducible`` (the same arguments
    give the same bytes). Returns the path. Raises MediaError if the encoder fails.
    """
    path = Path(path)
    if audio is not None:
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 2 or audio.shape[0] not in LAYOUTS:
            raise MediaError(path, f"audio must be (1, 2 or 6 channels, samples), got {audio.shape}")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise MediaError(path, "no frames to write")
    try:
        with atomic_path(path) as tmp:
            with Mp4Writer(tmp, first.shape[1], first.shape[0], fps, crf=crf, preset=preset,
                           threads=threads, codec=codec, pix_fmt=pix_fmt,
                           rotation=rotation, reproducible=True) as out:
                stream = None
                if audio is not None:
                    stream = out.add_audio(sample_rate, audio.shape[0], 64000 * audio.shape[0])
                for f in itertools.chain([first], it):
                    out.write(f)
                out.end_video()
                if stream is not None:
                    out.encode_audio(stream, audio, sample_rate)
    except (av.FFmpegError, ValueError) as e:
        raise MediaError(path, f"cannot encode: {e}") from e
    return path
