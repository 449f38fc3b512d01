"""``generate``: write the synthetic dataset in the AVE layout with exact box annotations.

Output in ``out_dir``::

    AVE/<id>.mp4                       H.264 + AAC (mono, config.sample_rate)
    Annotations.txt                    Category&VideoID&Quality&StartTime&EndTime, no header
    trainSet.txt valSet.txt testSet.txt  the same lines, one file per split
    boxes.json                         avstm-boxes/1 (docs/ARCHITECTURE.md)
    meta.json                          config, classes and per-video fields

Videos are written one by one (temporary name, then rename) in parallel over ``workers``
processes; a video already present is kept, so an interrupted run resumes. The annotation
files are written at the end, each atomically.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from avstm.errors import ConfigMismatch
from avstm.io import check_writable, remove_stale_temporaries, write_json, write_text
from avstm.synth.classes import CLASSES
from avstm.synth.config import SynthConfig
from avstm.synth.render import SceneRenderer
from avstm.synth.scene import Scene, annotation_times, frame_index, sample_scene, video_id
from avstm.synth.sound import render_audio
from avstm.media import write_mp4

SPLITS = ("train", "val", "test")
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
SPLIT_BLOCK = 20  # splits are exact shares within each block of this many indices
META_FORMAT = "avstm-synth/1"


@dataclass(frozen=True)
class SynthResult:
    """What ``generate`` wrote."""

    out_dir: Path
    videos: tuple[Path, ...]
    annotations: Path
    splits: dict[str, Path]
    boxes: Path
    meta: Path
    written: int  # videos encoded by this run
    skipped: int  # videos already present and kept
    split_counts: dict[str, int]
    seconds: float  # wall-clock time of the run


def _block_split(config: SynthConfig, index: int) -> int:
    counts = [int(round(s * SPLIT_BLOCK)) for s in config.split_shares]
    counts[0] = SPLIT_BLOCK - counts[1] - counts[2]
    labels = np.repeat(np.arange(3), counts)
    perm = np.random.default_rng([config.seed, index // SPLIT_BLOCK, 13]).permutation(labels)
    return int(perm[index % SPLIT_BLOCK])


def small_dataset_splits(config: SynthConfig) -> dict[int, int]:
    """Index → split moves that give every split with a positive share a video in a dataset
    that ends inside the first block (empty when none is needed: ``config.videos`` at or past
    the first index where every split has appeared, at most SPLIT_BLOCK).

    For each missing split (val, then test) the last video of the most frequent split moves to
    it. So the splits of such a small dataset can change when it is extended; a dataset of
    SPLIT_BLOCK videos or more never depends on its size.
    """
    n = min(config.videos, SPLIT_BLOCK)
    splits = [_block_split(config, i) for i in range(n)]
    moves: dict[int, int] = {}
    for want in (1, 2, 0):
        if config.split_shares[want] <= 0 or want in splits:
            continue
        most = max(set(splits), key=lambda k: (splits.count(k), -k))
        i = max(j for j, k in enumerate(splits) if k == most)
        splits[i] = moves[i] = want
    return moves


def split_of(config: SynthConfig, index: int) -> str:
    """Deterministic split of video ``index``: within each block of SPLIT_BLOCK indices a
    seeded permutation gives exactly the configured shares (rounded); a dataset smaller than
    the first index at which every split has appeared moves a few of its videos so that every
    split holds one (``small_dataset_splits``; ``SynthConfig.videos`` is at least 3)."""
    moved = small_dataset_splits(config).get(index) if index < SPLIT_BLOCK else None
    return SPLITS[moved if moved is not None else _block_split(config, index)]


def scene_boxes(scene: Scene, renderer: SceneRenderer, times: list[float]) -> list[dict]:
    """The avstm-boxes/1 ``frames`` list of one video: every object's box at every time.
    The event objects (one, or two in a multi-sounding clip) are ``sounding`` only inside the
    event span."""
    start, end = scene.event
    frames = []
    for t in times:
        n = frame_index(t, scene.fps)
        boxes = []
        for i, obj in enumerate(scene.objects):
            box = renderer.box(i, n)
            if box is None:
                continue
            boxes.append({"xyxy": box, "sounding": bool(obj.event and start <= t < end),
                          "label": obj.spec.name})
        frames.append({"time": round(t, 6), "boxes": boxes})
    return frames


@dataclass(frozen=True)
class VideoRecord:
    """The annotations of one generated video, as ``make_video`` returns them."""

    id: str
    label: str  # event class name
    event: tuple[int, int]  # [start, end) seconds
    hard: bool
    split: str
    frames: list[dict]  # the avstm-boxes/1 "frames" list
    summary: dict  # JSON-able per-video fields for meta.json
    written: bool  # encoded by this call (False: the file was present and kept)

    def annotation_line(self) -> str:
        """``Category&VideoID&Quality&StartTime&EndTime`` (AVE)."""
        return f"{self.label}&{self.id}&good&{self.event[0]}&{self.event[1]}"


def make_video(out_dir: str | Path, config: SynthConfig, index: int, *, overwrite: bool = False,
               threads: int = 0) -> VideoRecord:
    """Write ``AVE/<id>.mp4`` of video ``index`` unless present (or ``overwrite``), and return
    its annotations; they are computed from the scene, so a kept video costs no rendering."""
    scene = sample_scene(config, index)
    path = Path(out_dir) / "AVE" / f"{scene.video_id}.mp4"
    times = annotation_times(config)
    write = overwrite or not path.exists()
    if write:
        renderer = SceneRenderer(scene)
        frames = (renderer.frame(n) for n in range(config.seconds * config.fps))
        audio = render_audio(scene, config.sample_rate)
        write_mp4(path, frames, config.fps, audio, config.sample_rate, crf=config.crf,
                  threads=threads)
    else:
        renderer = SceneRenderer(scene, frames=[frame_index(t, config.fps) for t in times])
    label = CLASSES[scene.cls].name
    summary = {
        "class": label, "hard": scene.hard, "event": list(scene.event),
        "split": split_of(config, index), "background": scene.background,
        "sounding": len(scene.sounding_indices()),  # sounding objects (1, or 2 when multi)
        "objects": [{"label": o.spec.name, "event": o.event, "size": round(o.size, 2)}
                    for o in scene.objects],
        "pitch": round(scene.pitch, 2), "snr_db": round(scene.snr_db, 2),
        "noise_dbfs": round(scene.noise_dbfs, 2)}
    return VideoRecord(id=scene.video_id, label=label, event=scene.event, hard=scene.hard,
                       split=summary["split"], frames=scene_boxes(scene, renderer, times),
                       summary=summary, written=write)


def _check_existing(out_dir: Path, config: SynthConfig) -> None:
    meta = out_dir / "meta.json"
    if not meta.exists():
        return
    try:
        old = SynthConfig.from_dict(json.loads(meta.read_text())["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigMismatch(f"{meta}: unreadable synth config ({e})") from e
    diff = old.content_differences(config)
    if diff:
        raise ConfigMismatch(f"{meta}: existing dataset was made with other {', '.join(diff)};"
                             " choose another output folder or overwrite")


def _write_lines(path: Path, lines: list[str]) -> None:
    write_text(path, "".join(line + "\n" for line in lines))


def _meta(config: SynthConfig, records: list[VideoRecord]) -> dict:
    return {"format": META_FORMAT, "config": config.to_dict(),
            "classes": [c.to_dict() for c in CLASSES],
            "videos": {r.id: r.summary for r in records}}


def generate(out_dir: str | Path, *, config: SynthConfig, workers: int = 1,
             overwrite: bool = False, progress: bool = True) -> SynthResult:
    """Generate ``config.videos`` videos with their annotations in ``out_dir``.

    workers: processes (joblib) rendering and encoding videos in parallel; -1 for all cores.
    overwrite: re-encode videos already present, and accept a folder made with another config.
    Raises ConfigMismatch if ``out_dir`` holds a dataset of another content config and not
    ``overwrite``; MediaError if encoding fails.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if not overwrite:
        _check_existing(out_dir, config)
    check_writable(out_dir / "AVE")  # before any work: a read-only or full disk fails now
    remove_stale_temporaries(out_dir / "AVE")
    write_json(out_dir / "meta.json", _meta(config, []))
    threads = 1 if workers != 1 else 0  # one encoder thread per process when parallel
    jobs = (delayed(make_video)(out_dir, config, i, overwrite=overwrite, threads=threads)
            for i in range(config.videos))
    show = progress and sys.stderr.isatty()
    if workers != 1:
        results = Parallel(n_jobs=workers, return_as="generator")(jobs)
    else:
        results = (f(*a, **kw) for f, a, kw in jobs)
    records = list(tqdm(results, total=config.videos, desc="synth", unit="video",
                        disable=not show))

    annotations = out_dir / "Annotations.txt"
    _write_lines(annotations, [r.annotation_line() for r in records])
    splits = {}
    for split in SPLITS:
        splits[split] = out_dir / SPLIT_FILES[split]
        _write_lines(splits[split], [r.annotation_line() for r in records if r.split == split])
    boxes = write_json(out_dir / "boxes.json", {
        "format": "avstm-boxes/1",
        "videos": {r.id: {"width": config.width, "height": config.height, "frames": r.frames}
                   for r in records}}, indent=None)
    meta = write_json(out_dir / "meta.json", _meta(config, records))
    written = sum(r.written for r in records)
    return SynthResult(
        out_dir=out_dir,
        videos=tuple(out_dir / "AVE" / f"{video_id(i)}.mp4" for i in range(config.videos)),
        annotations=annotations, splits=splits, boxes=boxes, meta=meta, written=written,
        skipped=len(records) - written,
        split_counts={s: sum(r.split == s for r in records) for s in SPLITS},
        seconds=time.perf_counter() - t0)
