"""``localize``: a video (or a cached one) → per-frame attention maps, event classes and boxes.

    video ──(media.iter_frames: each frame at the sample times scaled for the backbone by
          FFmpeg exactly as extraction scales it, native too for rpn; streamed)──► chunks of ``batch_size``
          frames ──(frozen backbones; log-mel of the centred 0.96 s)──►
          features ──(STMNet.step, one frame at a time, ring buffer of K steps)──► maps, logits
          ──(Otsu + contours, or proposals scored by the map + NMS)──► boxes

Memory is constant in the video's length except for the result itself (an 8×8 map, the class
probabilities and a few boxes per frame) and the 16 kHz waveform. The frames are decoded ahead
in a worker thread. ``overlay.mp4`` (every source frame, the source's audio; ``overlay.py``) is
drawn and encoded by a worker thread beside the model when an ``OverlayWriter`` is passed to
``localize`` (``localize_to``: fed every frame by the same decoder, so the video is decoded
once), else by ``write_result`` afterwards. ``write_result`` writes ``boxes.json`` last
(the mark of a complete folder) and removes products of an earlier run it did not rewrite.

A frame is "sounding" when the file has audio and the model's class is not background; only
sounding frames get boxes. A file without an audio stream is background throughout ("no
audio").
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from avstm import media
from avstm.cache import FeatureCache, check_fits
from avstm.errors import CheckpointError, ConfigMismatch, MediaError
from avstm.extract.config import ExtractConfig
from avstm.device import resolve_device
from avstm.extract.features import FeatureExtractor, audio_examples
from avstm.localize.config import BOX_METHODS, LocalizeConfig  # noqa: F401
from avstm.localize.boxes import Box, maps_to_boxes_batch, upsample_map
from avstm.localize.overlay import OverlaySample, OverlayWriter
from avstm.localize.proposals import ProposalDetector, ground
from avstm.maps import maps_key as map_key, write_maps  # noqa: F401 (map_key: localize's name)
from avstm.memnet.checkpoint import CheckpointInfo, load_model
from avstm.memnet.data import model_input
from avstm.memnet.model import STMNet

STATES = ("sounding", "background", "no audio")  # LocalizedFrame.state
PRODUCTS = ("boxes.json", "overlay.mp4", "maps.npz")  # what write_result writes into a folder
TIMING_KEYS = ("setup", "decode", "backbones", "memnet", "boxes", "overlay")
RESULT_FORMAT = "avstm-localize/1"
AHEAD = 2  # chunks of samples decoded ahead of the model
SHARED_DECODE_BYTES = 1 << 30  # most frames an overlay fed by localize's decoder may hold


# LocalizeConfig fields fixed when a model is loaded (LocalizeModel.localize cannot change them)
LOAD_FIELDS = ("device", "visual_weights", "audio_weights", "map")


@dataclasses.dataclass
class LocalizeModel:
    """A trained STM network with the frozen backbones it was trained behind (what
    ``avstm.load`` returns). ``extractor`` is None when the model was loaded for cached
    features only; ``config`` is the LocalizeConfig it was loaded with.
    """

    net: STMNet
    info: CheckpointInfo
    checkpoint: str
    device: torch.device
    extractor: FeatureExtractor | None = None
    config: LocalizeConfig = LocalizeConfig()

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def localize(self, video: str | os.PathLike, *, out: str | os.PathLike | None = None,
                 overlay: bool = True, save_maps: bool = False, progress: bool = False,
                 **options) -> "LocalizeResult":
        """Localize one video file; ``options`` override fields of the loading config (fps,
        boxes, min_area, max_boxes, batch_size, ...; not those of ``LOAD_FIELDS``). With
        ``out``, also write the folder ``avstm localize`` writes (boxes.json, overlay.mp4,
        maps.npz with ``save_maps``). Returns the result: ``maps`` (N, 8, 8), ``boxes``
        (B, 6), ``class_ids`` (N,), ``probabilities`` (N, K + 1), ``times`` (N,)."""
        fixed = sorted(set(options) & set(LOAD_FIELDS))
        if fixed:
            raise ValueError(f"{', '.join(fixed)} are chosen when the model is loaded "
                             f"(avstm.load(..., {fixed[0]}=...))")
        config = self.config.replace(**options)
        if out is None:
            return localize(self, video, config=config, progress=progress)
        return localize_to(self, video, out, config=config, overlay=overlay, save_maps=save_maps,
                           progress=progress)[0]


def _check_checksums(path: str, stored: dict, rebuilt: ExtractConfig) -> None:
    for modality, option in (("visual", "--visual-weights"), ("audio", "--audio-weights")):
        key = f"{modality}_weights_sha"
        want, got = stored.get(key) or "", getattr(rebuilt, key)
        if want and got != want:
            weights = getattr(rebuilt, f"{modality}_weights")
            raise CheckpointError(
                f"{path}: {modality} backbone weights {weights!r} have checksum {got}, the "
                f"checkpoint was trained on {want}; pass those weights with {option} PATH")


def load_localize_model(checkpoint: str | os.PathLike, *, config: LocalizeConfig = LocalizeConfig(),
                        backbones: bool = True) -> LocalizeModel:
    """Rebuild the network (memnet's ``load_model``) and, with ``backbones``, the frozen
    backbones named by the checkpoint's extract config (same name, tap, weights, seed).

    Raises CheckpointError when a rebuilt backbone's weights checksum differs from the one
    recorded at extraction (``config.visual_weights``/``audio_weights`` choose other files).
    """
    device = resolve_device(config.device)
    net, info = load_model(checkpoint, device=device, map=config.map)
    model = LocalizeModel(net=net, info=info, checkpoint=str(checkpoint), device=device, config=config)
    if not backbones:
        return model
    stored = info.extract_config
    if not stored:
        raise CheckpointError(f"{checkpoint}: records no extract config; cannot rebuild its backbones")
    base = ExtractConfig.from_dict(stored)
    wanted = base.replace(
        device=str(device), batch_size=config.batch_size, workers=0,
        visual_weights=config.visual_weights or base.visual_weights,
        audio_weights=config.audio_weights or base.audio_weights)
    model.extractor = FeatureExtractor(wanted)
    _check_checksums(str(checkpoint), stored, model.extractor.config)
    if model.extractor.config.visual_channels != info.model_config.visual_channels:
        raise CheckpointError(f"{checkpoint}: the visual backbone gives "
                              f"{model.extractor.config.visual_channels} channels, the model "
                              f"takes {info.model_config.visual_channels}")
    return model


@dataclasses.dataclass
class LocalizedFrame:
    """One sampled frame: its time (s), boxes in frame pixels, the event class
    (``class_index`` = len(classes) for background) with its probability, and its state
    (``STATES``): boxes only when "sounding"; "no audio" frames are background with
    probability 1."""

    time: float
    boxes: list[Box]
    class_index: int
    class_name: str
    probability: float
    state: str = "sounding"

    @property
    def label(self) -> str:
        """The overlay's text: "violin 0.87", "background 0.91" or "no audio"."""
        return "no audio" if self.state == "no audio" else f"{self.class_name} {self.probability:.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "class": self.class_name,
                "class_index": self.class_index, "probability": self.probability,
                "state": self.state, "boxes": [b.to_dict() for b in self.boxes]}


@dataclasses.dataclass
class LocalizeResult:
    """What ``localize`` found in one video.

    maps: (N, 8, 8) float32, the map named by the model config's ``map`` (memnet.model.MAP_CHOICES:
    α̂, the scores of an attention, a class map, or one refined to [0, 1]; consumers min-max
    normalise it); probabilities:
    (N, K + 1) float32 event class probabilities, background last. ``width``/``height``: the
    frame size the boxes are in (the upright source frames; the cache's frame size when a
    cached video's source is missing). ``timings``: seconds per stage (TIMING_KEYS).
    """

    video_id: str
    source: str
    duration: float
    fps: int  # the model's sampling rate; the overlay runs at the source's own
    width: int
    height: int
    has_audio: bool
    frames: list[LocalizedFrame]
    maps: np.ndarray
    probabilities: np.ndarray
    classes: list[str]
    checkpoint: str
    config: LocalizeConfig
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # the checkpoint's record
    from_cache: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0))
    overlay: dict[str, Any] | None = None  # OverlayWriter.info once an overlay was written

    @property
    def sounding_seconds(self) -> float:
        """Seconds in which something sounds: sounding frames / sampling fps."""
        return sum(f.state == "sounding" for f in self.frames) / self.fps

    @property
    def num_boxes(self) -> int:
        return sum(len(f.boxes) for f in self.frames)

    def event(self) -> tuple[str, float]:
        """The video's event: the class (background included) with the highest mean
        probability over the sampled frames, and that mean; "no audio" (1.0) without audio."""
        if not self.has_audio:
            return "no audio", 1.0
        if len(self.probabilities) == 0:
            return "background", 1.0
        mean = self.probabilities.mean(axis=0)  # (K + 1,)
        c = int(mean.argmax())
        return (self.classes[c] if c < len(self.classes) else "background"), float(mean[c])

    @property
    def times(self) -> np.ndarray:
        """(N,) float64 sample times in seconds."""
        return np.array([f.time for f in self.frames], dtype=np.float64)

    @property
    def class_ids(self) -> np.ndarray:
        """(N,) int64 event class per frame, index into ``classes``; len(classes): background."""
        return np.array([f.class_index for f in self.frames], dtype=np.int64)

    @property
    def boxes(self) -> np.ndarray:
        """(B, 6) float32 every box: frame index, x1, y1, x2, y2 (frame pixels, x2/y2
        exclusive), score in [0, 1]; best first within a frame."""
        rows = [(i, *b.xyxy, b.score) for i, f in enumerate(self.frames) for b in f.boxes]
        return np.array(rows, dtype=np.float32).reshape(-1, 6)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``boxes.json``."""
        event, probability = self.event()
        return {
            "format": RESULT_FORMAT,
            "video": {"id": self.video_id, "source": self.source, "duration": self.duration,
                      "fps": self.fps, "width": self.width, "height": self.height,
                      "has_audio": self.has_audio, "frames": len(self.frames),
                      "features": self.from_cache},
            "model": {"checkpoint": self.checkpoint, "classes": self.classes,
                      "background": len(self.classes), **self.model},
            "config": self.config.to_dict(),
            "summary": {"event": event, "probability": probability,
                        "sounding_seconds": self.sounding_seconds, "boxes": self.num_boxes},
            # overlay.mp4: every source frame shows the nearest sample's map and boxes ("held")
            "overlay": self.overlay,
            "warnings": list(self.warnings),
            "frames": [f.to_dict() for f in self.frames],
        }


class _Stepper:
    """Steps the memory network frame by frame and turns maps into boxes, chunk by chunk."""

    def __init__(self, model: LocalizeModel, config: LocalizeConfig, size: tuple[int, int],
                 timings: dict[str, float], *, has_audio: bool = True,
                 overlay: OverlayWriter | None = None):
        self.model, self.config, self.size, self.timings = model, config, size, timings
        self.has_audio, self.overlay = has_audio, overlay
        self.state = model.net.init_state(1)
        self.classes = model.classes
        self.detector = None
        if config.boxes == "rpn":
            t0 = time.perf_counter()
            self.detector = ProposalDetector(
                weights=config.detector_weights, device=model.device,
                score_threshold=config.detector_score_threshold,
                min_size=config.detector_min_size, batch_size=config.batch_size)
            timings["setup"] += time.perf_counter() - t0
        self.maps: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.frames: list[LocalizedFrame] = []

    @torch.inference_mode()
    def _step(self, visual: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """visual (n, 8, 8, C_v), audio (n, 6, 4, 512) channels-last → maps (n, 8, 8),
        probabilities (n, K + 1), float32."""
        dev = self.model.device
        v = model_input(visual, device=dev)  # (n, C_v, 8, 8)
        a = model_input(audio, device=dev)  # (n, 512, 6, 4)
        maps, logits = [], []
        for i in range(len(v)):
            m, lg, self.state = self.model.net.step(v[i:i + 1], a[i:i + 1], self.state)
            maps.append(m)
            logits.append(lg)
        probs = torch.cat(logits).float().softmax(dim=-1)  # (n, K + 1)
        return torch.cat(maps).float().cpu().numpy(), probs.cpu().numpy()

    def _boxes(self, maps: np.ndarray, frames: np.ndarray | None, sounding: np.ndarray
               ) -> list[list[Box]]:
        """Boxes of the sounding frames (``sounding`` (n,) bool); [] for the others."""
        cfg = self.config
        out: list[list[Box]] = [[] for _ in maps]
        idx = np.flatnonzero(sounding)
        if len(idx) == 0:
            return out
        if self.detector is None:
            found = maps_to_boxes_batch(maps[idx], size=self.size, min_area=cfg.min_area,
                                        max_boxes=cfg.max_boxes)
            for i, b in zip(idx, found):
                out[i] = b
            return out
        proposals = self.detector.propose(frames[idx])
        min_px = cfg.min_area * self.size[0] * self.size[1]
        for i, (boxes, _) in zip(idx, proposals):
            amap = maps[i]
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            out[i] = ground(boxes[area >= min_px], upsample_map(amap, self.size),
                            iou_threshold=cfg.nms_iou, max_boxes=cfg.max_boxes)
        return out

    def push(self, times: np.ndarray, visual: np.ndarray, audio: np.ndarray,
             frames: np.ndarray | None) -> None:
        t0 = time.perf_counter()
        maps, probs = self._step(visual, audio)
        t1 = time.perf_counter()
        k = len(self.classes)
        cls = probs.argmax(axis=1)  # (n,)
        sounding = (cls < k) & self.has_audio
        boxes = self._boxes(maps, frames, sounding)
        self.timings["memnet"] += t1 - t0
        self.timings["boxes"] += time.perf_counter() - t1
        new = []
        for t, p, c, b in zip(times, probs, cls, boxes):
            c = int(c) if self.has_audio else k
            state = "no audio" if not self.has_audio else "sounding" if c < k else "background"
            new.append(LocalizedFrame(time=float(t), boxes=b, class_index=c,
                                      class_name=self.classes[c] if c < k else "background",
                                      probability=float(p[c]) if self.has_audio else 1.0,
                                      state=state))
        self.frames.extend(new)
        self.maps.append(maps)
        self.probs.append(probs)
        if self.overlay is not None:
            self.overlay.push(overlay_samples(new, maps))

    def result(self, **fields) -> LocalizeResult:
        k = len(self.classes) + 1
        maps = np.concatenate(self.maps) if self.maps else np.zeros((0, 8, 8), np.float32)
        probs = np.concatenate(self.probs) if self.probs else np.zeros((0, k), np.float32)
        info = self.model.info
        record = {"epoch": info.epoch, "model_config": info.model_config.to_dict(),
                  "extract_config": info.extract_config}
        return LocalizeResult(frames=self.frames, maps=maps, probabilities=probs,
                              classes=list(self.classes), timings=self.timings, model=record,
                              **fields)


def overlay_samples(frames: list[LocalizedFrame], maps: np.ndarray) -> list[OverlaySample]:
    """What the overlay draws for these frames (maps (n, 8, 8))."""
    return [OverlaySample(time=f.time, amap=m, boxes=f.boxes, label=f.label,
                          sounding=f.state == "sounding") for f, m in zip(frames, maps)]


def _ahead(it: Iterator, size: int) -> Iterator:
    """Yield from ``it``, which a worker thread runs up to ``size`` items ahead (decoding beside
    the backbones); its exceptions are re-raised here. Closing the generator stops the worker."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for x in it:
                if not put((x, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed to the consumer
            put((end, e))

    worker = threading.Thread(target=work, name="avstm-decode", daemon=True)
    worker.start()
    try:
        while True:
            x, err = q.get()
            if x is end:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()
        worker.join()


def _chunks(it: Iterator, n: int) -> Iterator[list]:
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _bar(total: int | None, progress: bool, desc: str) -> tqdm:
    return tqdm(total=total, unit="frame", desc=desc, disable=not progress or not sys.stderr.isatty())


def _timed(it: Iterator, timings: dict[str, float], key: str) -> Iterator:
    """Yield from ``it``, adding the time spent inside it to ``timings[key]``."""
    while True:
        t0 = time.perf_counter()
        try:
            x = next(it)
        except StopIteration:
            return
        finally:
            timings[key] += time.perf_counter() - t0
        yield x


def fps_warnings(model: LocalizeModel, config: LocalizeConfig) -> list[str]:
    """A warning when ``config.fps`` is not the rate the checkpoint's memory was trained at."""
    trained = int(model.info.extract_config.get("fps") or 0)
    if config.fps is None or not trained or config.fps == trained:
        return []
    return [f"--fps {config.fps} differs from the {trained} fps {model.checkpoint} was trained "
            f"at: the memory steps {1 / config.fps:.3g} s instead of {1 / trained:.3g} s; the "
            f"overlay shows every source frame at any --fps"]


@dataclasses.dataclass
class Opened:
    """A video's header and audio, read before its frames (``open_video``); ``duration`` s,
    ``wave`` (M,) float32 16 kHz mono (silence without an audio stream)."""

    path: Path
    info: media.MediaInfo
    wave: np.ndarray
    has_audio: bool


def open_video(video: str | os.PathLike) -> Opened:
    """Probe a video and decode its audio (folder mode does this for the next video ahead)."""
    video = Path(video)
    info = media.probe(video)
    wave, has_audio = media.read_audio(video, duration=info.duration)
    return Opened(path=video, info=info, wave=wave, has_audio=has_audio)


def localize(model: LocalizeModel, video: str | os.PathLike | Opened, *,
             config: LocalizeConfig = LocalizeConfig(), video_id: str | None = None,
             progress: bool = True, overlay: OverlayWriter | None = None) -> LocalizeResult:
    """Localize the sounding objects of one video file.

    The frames at the sample times (``config.fps`` per second; by default the checkpoint's
    trained rate) are decoded by a worker thread and scaled to the extract frame size for the
    visual backbone (kept at their native upright size too for ``rpn`` proposals) in chunks
    of ``config.batch_size``; the audio of each frame is the 0.96 s log-mel example centred on
    it. The memory network then steps frame by frame. ``overlay``: an ``OverlayWriter`` on
    this video, pushed each chunk's samples as it is done, and fed every decoded frame when
    it was made ``fed`` (the caller closes it). A file without an audio stream is background
    throughout ("no audio", no boxes), with a warning in ``result.warnings``.
    Raises MediaError (unreadable video) and the backbones' errors.
    """
    if model.extractor is None:
        raise CheckpointError(f"{model.checkpoint}: loaded without backbones; cannot localize a video")
    timings = dict.fromkeys(TIMING_KEYS, 0.0)
    t0 = time.perf_counter()
    opened = video if isinstance(video, Opened) else open_video(video)
    video, info, wave, has_audio = opened.path, opened.info, opened.wave, opened.has_audio
    ecfg = model.extractor.config
    fps = config.fps or ecfg.fps
    # the grid of the decoded duration, as extract samples it (a header's duration can be wrong)
    expected = len(media.frame_times(info.duration, fps).reshape(-1)) if info.duration > 0 else None
    timings["decode"] += time.perf_counter() - t0
    warnings = fps_warnings(model, config)
    if not has_audio:
        warnings.append(f"{video}: no audio stream; every frame is background (no audio), "
                        f"no boxes")
    model_size = (ecfg.frame_size, ecfg.frame_size)
    rpn = config.boxes == "rpn"  # the detector needs the frames' pixels, Otsu only their size
    feed = overlay.feed if overlay is not None and overlay.fed is not None else None
    frames_it = _timed(_ahead(media.iter_frames(video, fps=fps, model_size=model_size, native=rpn,
                                                every=feed), AHEAD * config.batch_size),
                       timings, "decode")
    stepper = None
    with _bar(expected, progress, f"localize {video.name}") as bar:
        for chunk in _chunks(frames_it, config.batch_size):
            t_chunk = np.array([t for t, _ in chunk])
            native = np.stack([f for _, (f, _) in chunk]) if rpn else None  # (n, H, W, 3) uint8
            if stepper is None:
                stepper = _Stepper(model, config, chunk[0][1][0].shape[:2] if rpn else chunk[0][1][0],
                                   timings, has_audio=has_audio, overlay=overlay)
            t1 = time.perf_counter()
            small = np.stack([f for _, (_, f) in chunk])  # (n, S, S, 3): scaled as extract does
            t2 = time.perf_counter()
            visual = model.extractor.visual(small)  # (n, 8, 8, C_v)
            audio = model.extractor.audio(audio_examples(wave, t_chunk))  # (n, 6, 4, 512)
            t3 = time.perf_counter()
            timings["decode"] += t2 - t1
            timings["backbones"] += t3 - t2
            stepper.push(t_chunk, visual, audio, native)
            bar.update(len(chunk))
    if feed is not None:
        overlay.end_frames()
    if stepper is None:
        raise MediaError(video, "no frame at the sample times")
    h, w = stepper.size
    timings["total"] = time.perf_counter() - t0
    return stepper.result(
        video_id=video_id or video.stem, source=str(video),
        duration=info.duration if info.duration > 0 else len(stepper.frames) / fps, fps=fps,
        width=w, height=h, has_audio=has_audio, checkpoint=model.checkpoint, config=config,
        warnings=warnings)


def _check_cache_fits(model: LocalizeModel, cache: FeatureCache) -> None:
    check_fits(model.checkpoint, model.info.extract_config, cache.path, cache.config)


def localize_cached(model: LocalizeModel, cache: str | os.PathLike, video_id: str, *,
                    config: LocalizeConfig = LocalizeConfig(), progress: bool = True) -> LocalizeResult:
    """Localize a video whose features are in a cache (no backbones run).

    Boxes are in pixels of the entry's source video when that file exists, else of the
    cache's frame size (with a warning). ``--boxes rpn`` needs the source video's frames.
    Raises CacheError / ConfigMismatch (cache of another extract config than the model's),
    MediaError (rpn without the source video).
    """
    timings = dict.fromkeys(TIMING_KEYS, 0.0)
    t_start = time.perf_counter()
    with FeatureCache(cache) as fc:
        _check_cache_fits(model, fc)
        entry = fc.entry(video_id)
        if config.fps is not None and config.fps != entry.fps:
            raise ConfigMismatch(f"{cache}: {video_id} is cached at {entry.fps} fps, not {config.fps}")
        times = fc.times(video_id)  # (S, T)
        source = Path(entry.source)
        warnings = fps_warnings(model, config)
        if not entry.has_audio:
            warnings.append(f"{video_id}: no audio stream in the source; every frame is "
                            f"background (no audio), no boxes")
        frames_it = None
        if source.is_file():
            first = next(media.iter_frames(source, times=times.reshape(-1)[:1]))[1]
            size = first.shape[:2]
            if config.boxes == "rpn":
                frames_it = media.iter_frames(source, times=times.reshape(-1))
        else:
            if config.boxes == "rpn":
                raise MediaError(source, "no such file; --boxes rpn needs the source video's frames")
            fs = int(fc.config.get("frame_size", 256))
            size = (fs, fs)
            warnings.append(f"{source}: source video not found; boxes are in pixels of the "
                            f"{fs}×{fs} backbone input and no overlay can be drawn")
        stepper = _Stepper(model, config, size, timings, has_audio=entry.has_audio)
        step_s = max(1, config.batch_size // entry.fps)
        with _bar(times.size, progress, f"localize {video_id}") as bar:
            for s in range(0, entry.num_seconds, step_s):
                t0 = time.perf_counter()
                sl = slice(s, s + step_s)
                visual = fc.visual(video_id, sl)  # (s, T, 8, 8, C_v)
                audio = fc.audio(video_id, sl)  # (s, T, 6, 4, 512)
                t_chunk = times[sl].reshape(-1)
                timings["decode"] += time.perf_counter() - t0
                frames = None
                if frames_it is not None:
                    t0 = time.perf_counter()
                    frames = np.stack([next(frames_it)[1] for _ in range(len(t_chunk))])
                    timings["decode"] += time.perf_counter() - t0
                stepper.push(t_chunk, visual.reshape(-1, *visual.shape[2:]),
                             audio.reshape(-1, *audio.shape[2:]), frames)
                bar.update(len(t_chunk))
        timings["total"] = time.perf_counter() - t_start
        return stepper.result(
            video_id=video_id, source=str(source), duration=entry.duration, fps=entry.fps,
            width=int(size[1]), height=int(size[0]), has_audio=entry.has_audio,
            checkpoint=model.checkpoint, config=config, from_cache=str(cache), warnings=warnings)


@dataclasses.dataclass
class WrittenFiles:
    """The paths ``write_result`` wrote (None: not written)."""

    boxes: Path
    overlay: Path | None = None
    maps: Path | None = None


def shared_decode_span(model: LocalizeModel, config: LocalizeConfig, info: media.MediaInfo
                       ) -> float | None:
    """Seconds of source frames an overlay fed by localize's own decoder may hold (``fed`` of
    ``OverlayWriter``), or None when they would take more than ``SHARED_DECODE_BYTES`` (the
    overlay then decodes the video itself). A frame waits for the chunk of ``batch_size``
    samples around it, two more samples and the second the sampler may hold back (below
    that the decode and the overlay would wait on each other), plus one chunk that the model
    computes while the overlay draws the previous one: 10 s by default, ~350 MB at 720p."""
    fps = config.fps or int(model.info.extract_config.get("fps") or 4)
    span = (2 * config.batch_size + 2) / fps + 1.5
    frame_bytes = 1.5 * (info.width + 1) * (info.height + 1)  # I420, as decoded
    if frame_bytes * (info.fps or 30.0) * span > SHARED_DECODE_BYTES:
        return None
    return span


def overlay_writer(result_source: str | os.PathLike, out_dir: str | os.PathLike, *,
                   overlay: bool = True, frames_dir: str | os.PathLike | None = None,
                   video_id: str = "frame", show_colorbar: bool = False,
                   fed: float | None = None) -> OverlayWriter | None:
    """The writer of ``out_dir/overlay.mp4`` (and PNGs in ``frames_dir``) for a source video,
    started now; None when neither is wanted or the source file is missing. ``fed``: see
    ``OverlayWriter`` (the frames come from ``localize``'s decoder)."""
    if not (overlay or frames_dir is not None) or not Path(result_source).is_file():
        return None
    return OverlayWriter(Path(out_dir) / "overlay.mp4" if overlay else None, result_source,
                         frames_dir=frames_dir, video_id=video_id, show_colorbar=show_colorbar,
                         fed=fed)


def write_result(result: LocalizeResult, out_dir: str | os.PathLike, *, overlay: bool = True,
                 save_maps: bool = False, frames_dir: str | os.PathLike | None = None,
                 show_colorbar: bool = False, writer: OverlayWriter | None = None,
                 progress: bool = True) -> WrittenFiles:
    """Write a result's folder: ``overlay.mp4`` (every source frame with the nearest sample's
    heatmap, boxes and state; the source's audio stream; see ``overlay.py``), with
    ``frames_dir`` one PNG per sample there, with ``save_maps`` the raw 8×8 maps as
    ``maps.npz``, and ``boxes.json`` last. Each file is atomic; once the new products are
    written, those of an earlier run not rewritten now are removed, so a folder holds one
    run's products; a run that fails (a full disk) leaves the earlier result as it was.

    ``writer``: the ``OverlayWriter`` that ``localize`` already fed (closed here); without it
    the overlay is drawn now from the finished result. Without the source video file, no
    overlay is written and a warning is added to ``result.warnings`` (boxes.json records it).
    """
    from avstm.io import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = WrittenFiles(boxes=out / "boxes.json")
    source = Path(result.source)
    wanted = overlay or frames_dir is not None
    if wanted and writer is None and not source.is_file():
        result.warnings.append(f"{source}: source video not found; no overlay written")
    if wanted and writer is None and result.frames:
        writer = overlay_writer(source, out, overlay=overlay, frames_dir=frames_dir,
                                video_id=result.video_id, show_colorbar=show_colorbar)
        if writer is not None:
            writer.push(overlay_samples(result.frames, result.maps))
    if writer is not None:
        t0 = time.perf_counter()
        result.overlay = writer.close()
        result.timings["overlay"] += time.perf_counter() - t0
        written.overlay = writer.path
    if save_maps:
        written.maps = out / "maps.npz"
        write_maps(written.maps, {(result.video_id, lf.time): m for lf, m in zip(result.frames, result.maps)})
    for stale, path in (("overlay.mp4", written.overlay), ("maps.npz", written.maps)):
        if path is None:
            (out / stale).unlink(missing_ok=True)
    write_json(written.boxes, result.to_dict())
    return written


def localize_to(model: LocalizeModel, video: str | os.PathLike | Opened, out_dir: str | os.PathLike,
                *, config: LocalizeConfig = LocalizeConfig(), video_id: str | None = None,
                overlay: bool = True, save_maps: bool = False,
                frames_dir: str | os.PathLike | None = None, show_colorbar: bool = False,
                progress: bool = True) -> tuple[LocalizeResult, WrittenFiles]:
    """``localize`` one video with its overlay drawn and encoded beside the model in a worker
    thread, then ``write_result`` into ``out_dir``. Returns the result and the files. The
    overlay takes its frames from the model's decoder (one decode of the video) unless they
    would hold more than ``SHARED_DECODE_BYTES`` (``shared_decode_span``)."""
    path = video.path if isinstance(video, Opened) else Path(video)
    video_id = video_id or path.stem
    writer = None
    if overlay or frames_dir is not None:
        video = video if isinstance(video, Opened) else open_video(video)
        writer = overlay_writer(path, out_dir, overlay=overlay, frames_dir=frames_dir,
                                video_id=video_id, show_colorbar=show_colorbar,
                                fed=shared_decode_span(model, config, video.info))
    try:
        result = localize(model, video, config=config, video_id=video_id, progress=progress,
                          overlay=writer)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    written = write_result(result, out_dir, overlay=overlay, save_maps=save_maps,
                           frames_dir=frames_dir, writer=writer, progress=progress)
    return result, written
