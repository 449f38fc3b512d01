"""Dataset readers: which videos there are, their labels, event spans and splits.

Two layouts:
- AVE (``read_ave(root)``): ``root/AVE/<id>.mp4``, ``root/Annotations.txt`` with lines
  ``Category&VideoID&Quality&StartTime&EndTime`` (with or without that header line), and
  ``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt`` in the same format. One item per annotation
  line (a video with several events gives several items).
- A folder of videos plus a CSV (``read_folder(videos, labels)``): rows ``id,label[,split][,start,end]``
  (an optional header row starting with ``id``). Without a split column each video gets a fixed
  80/10/10 train/val/test split from a hash of its id; without start/end the event spans the
  whole video.

The background class (seconds outside every event) has index ``len(classes)``.

Bad input, the same rules for both layouts: what makes the data ambiguous or unreadable is an
AnnotationError naming the file and line (wrong field count, non-numeric, NaN/inf, negative or
inverted times, an empty file, a duplicate CSV id, a CSV id outside the videos folder, a split
line unknown to Annotations.txt, one line in two split files, an unknown split, a malformed
CSV); harmless oddities are kept and counted in one warning per file (zero-length event spans:
all background; an AVE line repeated in the same file: kept once).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
import warnings
from pathlib import Path

import numpy as np

from avstm.errors import AnnotationError

DATASET_FORMATS = ("ave", "folder", "vggss", "flickr")  # what ``avstm extract --dataset`` reads

SPLITS = ("train", "val", "test")
AVE_SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
AVE_HEADER = "Category&VideoID&Quality&StartTime&EndTime"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts")


@dataclasses.dataclass(frozen=True)
class AveLine:
    category: str
    video_id: str
    quality: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class VideoItem:
    """One video of a dataset. ``segments``: (start s, end s, category) events, end exclusive."""

    id: str
    path: str
    label: str
    split: str
    segments: tuple[tuple[float, float, str], ...]
    # a benchmark's annotated frame time: extraction samples the steps anchor - k / fps (k >= 0,
    # whole seconds of them) so that this frame is the last step of the memory (None: the grid)
    anchor: float | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """The videos of a dataset and its event classes (sorted names; background not included)."""

    items: list[VideoItem]
    classes: list[str]


def read_ave_annotations(path: str | os.PathLike) -> list[AveLine]:
    """Parse an AVE ``Annotations.txt`` (or split file): one AveLine per event line.

    Accepts the header line, blank lines and Windows line ends. Raises AnnotationError naming
    the line for a malformed one (wrong field count, non-numeric or inverted times); a span of
    zero length (start == end) is kept, and a repeated line dropped, with one warning that
    counts them.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(path, f"cannot read ({e})") from None
    lines: list[AveLine] = []
    empty = repeated = 0
    seen: set[AveLine] = set()
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or (n == 1 and line.replace(" ", "") == AVE_HEADER):
            continue
        parts = [p.strip() for p in line.split("&")]
        if len(parts) != 5:
            raise AnnotationError(path, f"expected 5 '&'-separated fields "
                                        f"(Category&VideoID&Quality&StartTime&EndTime), got {len(parts)}", n)
        cat, vid, quality, start, end = parts
        try:
            s, e = float(start), float(end)
        except ValueError:
            raise AnnotationError(path, f"start/end are not numbers: {start!r}, {end!r}", n) from None
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e < s:
            raise AnnotationError(path, f"bad event span [{start}, {end})", n)
        if e == s:
            empty += 1
        if not cat or not vid:
            raise AnnotationError(path, "empty category or video id", n)
        ln = AveLine(cat, vid, quality, s, e)
        if ln in seen:
            repeated += 1  # the same event twice is one event
            continue
        seen.add(ln)
        lines.append(ln)
    if not lines:
        raise AnnotationError(path, "no annotation lines")
    if empty:
        # AVE's own Annotations.txt has one such line (VWi2ENBuTbw, 0&0): the video is all background
        warnings.warn(f"{path}: {empty} event span(s) of zero length; those videos have no event seconds",
                      stacklevel=2)
    if repeated:
        warnings.warn(f"{path}: {repeated} repeated line(s) ignored", stacklevel=2)
    return lines


def read_ave(root: str | os.PathLike) -> Dataset:
    """Read the AVE layout under ``root`` (see the module docstring).

    AVE's unit is an annotation line, not a video: 45 videos carry several events, and the
    official split puts some of their lines in different splits. So each line is one item with
    its own event; a video's first line gets the id ``<VideoID>``, its k-th further line
    ``<VideoID>#k`` (same file). A split line that Annotations.txt lacks (an unknown class or
    video), or a line in two split files, is an AnnotationError; an annotation line in no
    split file is left out. Items follow the split files' order.
    """
    root = Path(root)
    ann_path = root / "Annotations.txt"
    lines = read_ave_annotations(ann_path)
    classes = sorted({ln.category for ln in lines})
    ids: dict[AveLine, str] = {}
    per_video: dict[str, int] = {}
    for ln in lines:
        if ln in ids:
            continue  # an exact duplicate line is the same item
        k = per_video.get(ln.video_id, 0)
        per_video[ln.video_id] = k + 1
        ids[ln] = ln.video_id if k == 0 else f"{ln.video_id}#{k}"
    items: list[VideoItem] = []
    seen: dict[str, str] = {}  # item id -> the split file that listed it
    for split, name in AVE_SPLIT_FILES.items():
        split_path = root / name
        if not split_path.exists():
            continue
        for ln in read_ave_annotations(split_path):
            if ln not in ids:
                raise AnnotationError(split_path, f"line {ln.category}&{ln.video_id}&...&{ln.start:g}&{ln.end:g} "
                                                  f"is not in {ann_path.name} (unknown class or video)")
            item_id = ids[ln]
            if item_id in seen:
                raise AnnotationError(split_path, f"video {ln.video_id} ({ln.category}, {ln.start:g}-{ln.end:g} s) "
                                                  f"is also in {seen[item_id]}: a line belongs to one split")
            seen[item_id] = name
            items.append(VideoItem(
                id=item_id, path=str(root / "AVE" / f"{ln.video_id}.mp4"), label=ln.category,
                split=split, segments=((ln.start, ln.end, ln.category),)))
    if not items:
        raise AnnotationError(root, "no split files (trainSet.txt, valSet.txt, testSet.txt) with videos")
    return Dataset(items=items, classes=classes)


def hash_split(video_id: str) -> str:
    """A fixed 80/10/10 train/val/test split from the id alone."""
    h = int(hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "train" if h < 8 else ("val" if h == 8 else "test")


def find_video(videos: Path, vid: str) -> Path:
    direct = videos / vid
    if direct.suffix.lower() in VIDEO_EXTENSIONS or direct.is_file():
        return direct  # a file named in full (any extension) is that file
    for ext in VIDEO_EXTENSIONS:
        cand = videos / f"{vid}{ext}"
        if cand.exists():
            return cand
    return videos / f"{vid}.mp4"  # reported as missing when extracted


def read_folder(videos: str | os.PathLike, labels: str | os.PathLike) -> Dataset:
    """Read a folder of videos and a CSV of ``id,label[,split][,start,end]`` rows.

    ``id`` is the file name with or without its extension. Raises AnnotationError for an empty
    file, a malformed row, an unknown split, a bad span, or a duplicate id; a zero-length span
    is kept (all background) with one warning that counts them.
    """
    videos, labels = Path(videos), Path(labels)
    try:
        with open(labels, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = list(reader)
    except FileNotFoundError:
        raise AnnotationError(labels, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(labels, f"cannot read ({e})") from None
    except csv.Error as e:
        raise AnnotationError(labels, f"malformed CSV ({e})", reader.line_num) from None
    items: list[VideoItem] = []
    seen: set[str] = set()
    empty = 0
    for n, row in enumerate(rows, start=1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if n == 1 and row[0].lower() == "id":
            continue
        if len(row) not in (2, 3, 4, 5):
            raise AnnotationError(labels, f"expected id,label[,split][,start,end], got {len(row)} fields", n)
        vid, label = row[0], row[1]
        if not vid or not label:
            raise AnnotationError(labels, "empty id or label", n)
        if Path(vid).is_absolute() or ".." in Path(vid).parts:
            raise AnnotationError(labels, f"id {vid!r} names a file outside {videos}", n)
        split = row[2] if len(row) in (3, 5) and row[2] else hash_split(vid)
        if split not in SPLITS:
            raise AnnotationError(labels, f"unknown split {split!r} (use one of {', '.join(SPLITS)})", n)
        span: tuple[float, float] = (0.0, math.inf)
        if len(row) >= 4:
            try:
                span = (float(row[-2]), float(row[-1]))
            except ValueError:
                raise AnnotationError(labels, f"start/end are not numbers: {row[-2]!r}, {row[-1]!r}", n) from None
            if not all(map(math.isfinite, span)) or span[0] < 0 or span[1] < span[0]:
                raise AnnotationError(labels, f"bad event span [{row[-2]}, {row[-1]})", n)
            empty += span[1] == span[0]
        vid_key = Path(vid).stem if Path(vid).suffix.lower() in VIDEO_EXTENSIONS else vid
        if vid_key in seen:
            raise AnnotationError(labels, f"duplicate id {vid_key}", n)
        seen.add(vid_key)
        items.append(VideoItem(id=vid_key, path=str(find_video(videos, vid)), label=label, split=split,
                               segments=((span[0], span[1], label),)))
    if not items:
        raise AnnotationError(labels, "no rows")
    if empty:
        warnings.warn(f"{labels}: {empty} event span(s) of zero length; those videos have no event seconds",
                      stacklevel=2)
    return Dataset(items=items, classes=sorted({it.label for it in items}))


def second_labels(item: VideoItem, num_seconds: int, classes: list[str]) -> np.ndarray:
    """(S,) int64 per-second labels: the event's class index inside an event span, else background.

    A second [s, s+1) belongs to an event [start, end) when its middle s + 0.5 lies inside.
    """
    labels = np.full(num_seconds, len(classes), np.int64)
    for start, end, cat in item.segments:
        for s in range(num_seconds):
            if start <= s + 0.5 < end:
                labels[s] = classes.index(cat)
    return labels


# ---- clips anchored on one annotated frame (avstm.benchmarks) ------------------------------


def anchored_times(anchor: float, fps: int) -> np.ndarray:
    """(S, fps) float64 step times ending exactly at ``anchor``: ``anchor - k / fps`` for the
    S·fps largest k >= 0 that fit whole seconds of steps at or after time 0."""
    n = (int(math.floor(anchor * fps + 1e-9)) + 1) // fps * fps
    if n == 0:
        raise ValueError(f"anchor {anchor:g} s leaves no whole second of steps before it")
    return (anchor - np.arange(n - 1, -1, -1, dtype=np.float64) / fps).reshape(-1, fps)
