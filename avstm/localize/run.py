"""``localize``: a video (or a cached one) → per-frame attention maps, event classes and boxes.

    video ──(media.iter_frames: native frames at the sample times, streamed)──► chunks of
          ``batch_size`` frames ──(resize, frozen backbones; log-mel of the centred 0.96 s)──►
          features ──(STMNet.step, one frame at a time, ring buffer of K steps)──► maps, logits
          ──(Otsu + contours, or proposals scored by the map + NMS)──► boxes

Memory is constant in the video's length except for the result itself (an 8×8 map, the class
probabilities and a few boxes per frame) and the 16 kHz waveform. ``write_result`` writes
``boxes.json``, ``maps.npz`` and a streamed ``overlay.mp4`` (a second decoding pass).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from avstm import media
from avstm.cache import FeatureCache, compare_configs
from avstm.config import PlainConfig
from avstm.errors import CheckpointError, ConfigMismatch, MediaError
from avstm.extract.config import CONTENT_FIELDS, ExtractConfig
from avstm.extract.pipeline import FeatureExtractor, audio_examples, resolve_device
from avstm.localize.boxes import Box, maps_to_boxes_batch, upsample_map
from avstm.localize.proposals import ProposalDetector, ground
from avstm.memnet.checkpoint import CheckpointInfo, load_model
from avstm.memnet.model import check_map
from avstm.memnet.model import STMNet

BOX_METHODS = ("otsu", "rpn")
TIMING_KEYS = ("setup", "decode", "backbones", "memnet", "boxes", "overlay")
RESULT_FORMAT = "avstm-localize/1"


@dataclasses.dataclass(frozen=True)
class LocalizeConfig(PlainConfig):
    """How ``localize`` runs; stored in ``boxes.json``."""

    fps: int | None = None  # frames sampled per second; None: the checkpoint's extract fps
    boxes: str = "otsu"  # "otsu" (threshold + contours) or "rpn" (detector proposals + NMS)
    min_area: float = 0.0  # drop boxes smaller than this fraction of the frame
    max_boxes: int | None = 3  # boxes kept per frame, best first; None: all
    detector_weights: str = "coco"  # rpn: "coco", "random" (tests) or a state-dict path
    detector_min_size: int = 800  # rpn: the detector's own input resize (shorter side)
    detector_score_threshold: float = 0.05  # rpn: the detector's minimum proposal confidence
    nms_iou: float = 0.5  # rpn: NMS drops a box overlapping a better one by more than this
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    batch_size: int = 16  # frames per backbone (and detector) batch
    # Backbone weights overriding the checkpoint's extract config ("imagenet"/"random"/path);
    # they must have the checksum recorded in the checkpoint.
    visual_weights: str | None = None
    audio_weights: str | None = None
    map: str | None = None  # which map (memnet.model.MAPS); None: the checkpoint's own

    def __post_init__(self):
        if self.map is not None:
            check_map(self.map)
        if self.boxes not in BOX_METHODS:
            raise ValueError(f"boxes must be one of {', '.join(BOX_METHODS)}, not {self.boxes!r}")
        if self.fps is not None and self.fps < 1:
            raise ValueError(f"fps must be at least 1, got {self.fps}")
        if not 0.0 <= self.min_area <= 1.0:
            raise ValueError(f"min_area is a fraction of the frame in [0, 1], got {self.min_area}")
        if self.max_boxes is not None and self.max_boxes < 1:
            raise ValueError(f"max_boxes must be at least 1, got {self.max_boxes}")
        if self.batch_size < 1 or self.detector_min_size < 1:
            raise ValueError("batch_size and detector_min_size must be at least 1")



@dataclasses.dataclass
class LocalizeModel:
    """A trained STM network with the frozen backbones it was trained behind.

    ``extractor`` is None when the model was loaded for cached features only.
    """

    net: STMNet
    info: CheckpointInfo
    checkpoint: str
    device: torch.device
    extractor: FeatureExtractor | None = None

    @property
    def classes(self) -> list[str]:
        return self.info.classes


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
    model = LocalizeModel(net=net, info=info, checkpoint=str(checkpoint), device=device)
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
    """One sampled frame: its time (s), boxes in frame pixels, and the event class
    (``class_index`` = len(classes) for background) with its probability."""

    time: float
    boxes: list[Box]
    class_index: int
    class_name: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "class": self.class_name,
                "class_index": self.class_index, "probability": self.probability,
                "boxes": [b.to_dict() for b in self.boxes]}


@dataclasses.dataclass
class LocalizeResult:
    """What ``localize`` found in one video.

    maps: (N, 8, 8) float32, the map named by the model config's ``map`` (memnet.model.MAPS: α̂, or
    the scores of an attention; consumers min-max normalise it); probabilities:
    (N, K + 1) float32 event class probabilities, background last. ``width``/``height``: the
    frame size the boxes are in (the upright source frames; the cache's frame size when a
    cached video's source is missing). ``timings``: seconds per stage (TIMING_KEYS).
    """

    video_id: str
    source: str
    duration: float
    fps: int
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

    @property
    def times(self) -> np.ndarray:
        """(N,) float64 sample times in seconds."""
        return np.array([f.time for f in self.frames], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``boxes.json``."""
        return {
            "format": RESULT_FORMAT,
            "video": {"id": self.video_id, "source": self.source, "duration": self.duration,
                      "fps": self.fps, "width": self.width, "height": self.height,
                      "has_audio": self.has_audio, "frames": len(self.frames),
                      "features": self.from_cache},
            "model": {"checkpoint": self.checkpoint, "classes": self.classes,
                      "background": len(self.classes), **self.model},
            "config": self.config.to_dict(),
            "warnings": list(self.warnings),
            "frames": [f.to_dict() for f in self.frames],
        }


class _Stepper:
    """Steps the memory network frame by frame and turns maps into boxes, chunk by chunk."""

    def __init__(self, model: LocalizeModel, config: LocalizeConfig, size: tuple[int, int],
                 timings: dict[str, float]):
        self.model, self.config, self.size, self.timings = model, config, size, timings
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
        v = torch.from_numpy(visual).to(dev).permute(0, 3, 1, 2)  # (n, C_v, 8, 8)
        a = torch.from_numpy(audio).to(dev).permute(0, 3, 1, 2)  # (n, 512, 6, 4)
        maps, logits = [], []
        for i in range(len(v)):
            m, lg, self.state = self.model.net.step(v[i:i + 1], a[i:i + 1], self.state)
            maps.append(m)
            logits.append(lg)
        probs = torch.cat(logits).float().softmax(dim=-1)  # (n, K + 1)
        return torch.cat(maps).float().cpu().numpy(), probs.cpu().numpy()

    def _boxes(self, maps: np.ndarray, frames: np.ndarray | None) -> list[list[Box]]:
        cfg = self.config
        if self.detector is None:
            return maps_to_boxes_batch(maps, size=self.size, min_area=cfg.min_area, max_boxes=cfg.max_boxes)
        proposals = self.detector.propose(frames)
        min_px = cfg.min_area * self.size[0] * self.size[1]
        out = []
        for amap, (boxes, _) in zip(maps, proposals):
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            out.append(ground(boxes[area >= min_px], upsample_map(amap, self.size),
                              iou_threshold=cfg.nms_iou, max_boxes=cfg.max_boxes))
        return out

    def push(self, times: np.ndarray, visual: np.ndarray, audio: np.ndarray,
             frames: np.ndarray | None) -> None:
        t0 = time.perf_counter()
        maps, probs = self._step(visual, audio)
        t1 = time.perf_counter()
        boxes = self._boxes(maps, frames)
        self.timings["memnet"] += t1 - t0
        self.timings["boxes"] += time.perf_counter() - t1
        k = len(self.classes)
        for t, p, b in zip(times, probs, boxes):
            c = int(np.argmax(p))
            self.frames.append(LocalizedFrame(time=float(t), boxes=b, class_index=c,
                                              class_name=self.classes[c] if c < k else "background",
                                              probability=float(p[c])))
        self.maps.append(maps)
        self.probs.append(probs)

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


def localize(model: LocalizeModel, video: str | os.PathLike, *,
             config: LocalizeConfig = LocalizeConfig(), video_id: str | None = None,
             progress: bool = True) -> LocalizeResult:
    """Localize the sounding objects of one video file.

    The frames at the sample times (``config.fps`` per second) are decoded at their native
    (upright) size, resized to the extract frame size for the visual backbone in chunks of
    ``config.batch_size``; the audio of each frame is the 0.96 s log-mel example centred on it.
    The memory network then steps frame by frame. A file without an audio stream is localized
    over silence, with a warning in ``result.warnings``.
    Raises MediaError (unreadable video) and the backbones' errors.
    """
    if model.extractor is None:
        raise CheckpointError(f"{model.checkpoint}: loaded without backbones; cannot localize a video")
    timings = dict.fromkeys(TIMING_KEYS, 0.0)
    t0 = time.perf_counter()
    video = Path(video)
    ecfg = model.extractor.config
    fps = config.fps or ecfg.fps
    info = media.probe(video)
    # the grid of the decoded duration, as extract samples it (a header's duration can be wrong)
    expected = len(media.frame_times(info.duration, fps).reshape(-1)) if info.duration > 0 else None
    wave, has_audio = media.read_audio(video, duration=info.duration)
    timings["decode"] += time.perf_counter() - t0
    warnings = [] if has_audio else [f"{video}: no audio stream; localized over silence (no "
                                     f"sounding object: every frame should be background)"]
    frames_it = _timed(media.iter_frames(video, fps=fps), timings, "decode")
    stepper = None
    with _bar(expected, progress, f"localize {video.name}") as bar:
        for chunk in _chunks(frames_it, config.batch_size):
            t_chunk = np.array([t for t, _ in chunk])
            native = np.stack([f for _, f in chunk])  # (n, H, W, 3) uint8
            if stepper is None:
                stepper = _Stepper(model, config, native.shape[1:3], timings)
            t1 = time.perf_counter()
            small = media.resize_frames(native, (ecfg.frame_size, ecfg.frame_size))
            t2 = time.perf_counter()
            visual = model.extractor.visual(small)  # (n, 8, 8, C_v)
            audio = model.extractor.audio(audio_examples(wave, t_chunk))  # (n, 6, 4, 512)
            t3 = time.perf_counter()
            timings["decode"] += t2 - t1
            timings["backbones"] += t3 - t2
            stepper.push(t_chunk, visual, audio, native)
            bar.update(len(chunk))
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
    stored = model.info.extract_config
    fields = [f for f in CONTENT_FIELDS if f not in ("cache_format", "dtype")]
    diff = compare_configs(cache.config, stored, fields=fields)
    if diff:
        parts = ", ".join(f"{k}: {cache.config.get(k)!r} in the cache, {stored.get(k)!r} in the "
                          f"checkpoint" for k in diff)
        raise ConfigMismatch(f"{cache.path}: features of another extract config than "
                             f"{model.checkpoint} was trained on ({parts})")


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
        warnings = []
        if not entry.has_audio:
            warnings.append(f"{video_id}: no audio stream in the source; localized over silence")
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
        stepper = _Stepper(model, config, size, timings)
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


def map_key(video_id: str, t: float) -> str:
    """The maps-file key of a frame (ARCHITECTURE.md): ``"<video id>@<time, 3 decimals>"``."""
    return f"{video_id}@{t:.3f}"


def _overlay_frames(result: LocalizeResult) -> Iterator[np.ndarray]:
    from avstm.localize.overlay import render_overlay

    frames = media.iter_frames(result.source, times=result.times)
    for (t, frame), lf, amap in zip(frames, result.frames, result.maps):
        yield render_overlay(frame, amap, lf.boxes, label=lf.class_name, probability=lf.probability)


@dataclasses.dataclass
class WrittenFiles:
    """The paths ``write_result`` wrote (None: not written)."""

    boxes: Path
    overlay: Path | None = None
    maps: Path | None = None


def write_result(result: LocalizeResult, out_dir: str | os.PathLike, *, overlay: bool = True,
                 save_maps: bool = False, progress: bool = True) -> WrittenFiles:
    """Write ``boxes.json``, ``overlay.mp4`` (streamed: the source's frames at the sample times
    at native size, map as heatmap, boxes, class; fps = the sampling fps; the source's audio)
    and with ``save_maps`` the raw 8×8 maps as ``maps.npz``. All atomic.

    Without the source video file, no overlay is written and a warning is added to
    ``result.warnings`` (before boxes.json is written, so the file records it).
    """
    from avstm.io import atomic_path, write_json
    from avstm.localize.overlay import write_overlay_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = WrittenFiles(boxes=out / "boxes.json")
    source = Path(result.source)
    if overlay and not source.is_file():
        result.warnings.append(f"{source}: source video not found; no overlay written")
        overlay = False
    if save_maps:
        written.maps = out / "maps.npz"
        with atomic_path(written.maps) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **{map_key(result.video_id, lf.time): m
                                      for lf, m in zip(result.frames, result.maps)})
    if overlay and result.frames:
        t0 = time.perf_counter()
        wave, has_audio = media.read_audio(source, duration=result.duration)
        with _bar(len(result.frames), progress, "overlay") as bar:
            def counted():
                for img in _overlay_frames(result):
                    bar.update(1)
                    yield img
            written.overlay = write_overlay_video(out / "overlay.mp4", counted(), result.fps,
                                                  wave if has_audio else None)
        result.timings["overlay"] += time.perf_counter() - t0
    write_json(written.boxes, result.to_dict())
    return written
