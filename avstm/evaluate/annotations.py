"""Ground-truth readers: avstm's box JSON and the public formats of the field, all returned
as one structure, :class:`GroundTruth` (video id -> :class:`VideoTruth`) with a record of
what was repaired or dropped (:class:`AnnotationWarnings`).

Coordinates are pixels, x right, y down, x2/y2 exclusive. Readers of normalised formats
(VGG-SS, AudioSet-Instrument) multiply by a stated ``size`` (256 by default, the evaluation
resolution; the value is lossless since metrics rescale boxes from ``width``×``height``).
Bad values (docs/annotations.md): a coordinate that is NaN/inf or absurd (|v| > 1000 × the
image side, e.g. VGG-SS's -2.9e16) drops its box ("corrupt"); a box with x2 <= x1 or
y2 <= y1 is dropped ("degenerate"); a box reaching outside the image is clipped
("clipped"), and dropped if nothing is left ("outside"). Each count is kept in
``GroundTruth.warnings`` and announced once per file with an :class:`AnnotationWarning`.
Empty files and malformed entries raise :class:`avstm.errors.AnnotationError`.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from avstm.errors import AnnotationError
from avstm.maps import Box

AVSTM_FORMAT = "avstm-boxes/1"
CORRUPT_FACTOR = 1000.0  # |coordinate| beyond this many image sides is corrupt, not "outside"
MAX_SIDE = 100_000  # pixels: a width or height beyond it is refused (no video is that large)


class AnnotationWarning(UserWarning):
    """Boxes of an annotation file were repaired or dropped; the message gives the counts."""


@dataclass
class VideoTruth:
    """The boxes of one video (or image): frame time in seconds -> boxes; ``label`` the
    video's class where the format gives one (per-class tables)."""

    width: float
    height: float
    frames: dict[float, list[Box]] = field(default_factory=dict)
    label: str | None = None


@dataclass
class AnnotationWarnings:
    """Counts of repaired or dropped values, by kind, with a few example locations."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(where)

    def summary(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": dict(self.examples)}


@dataclass
class GroundTruth(Mapping):
    """video id -> VideoTruth, plus the warnings of the reader, the source path and format."""

    videos: dict[str, VideoTruth]
    warnings: AnnotationWarnings = field(default_factory=AnnotationWarnings)
    source: str = ""
    format: str = ""

    def __getitem__(self, key: str) -> VideoTruth:
        return self.videos[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def n_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos.values())

    def n_frames_without_box(self) -> int:
        return sum(1 for v in self.videos.values() for b in v.frames.values() if not b)


def frame_label(video: VideoTruth, boxes: Sequence[Box]) -> str | None:
    """The class a frame is grouped under in per-class tables: the video's label, else the
    label of its first labelled sounding box, else None."""
    return video.label or next((b.label for b in boxes if b.sounding and b.label), None)


def _clean_box(xyxy: Sequence, width: float, height: float, where: str,
               log: AnnotationWarnings) -> tuple[float, float, float, float] | None:
    """Apply the bad-value rules of the module docstring; None when the box is dropped.
    A box that is not 4 numbers raises TypeError/ValueError (the reader's AnnotationError)."""
    if len(xyxy) != 4:  # malformed, not a bad value: the caller raises AnnotationError
        raise ValueError(f"box {where} has {len(xyxy)} coordinates, needs 4")
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    limit = CORRUPT_FACTOR * max(width, height)
    if not all(math.isfinite(v) and abs(v) <= limit for v in (x1, y1, x2, y2)):
        log.add("corrupt", where)
        return None
    if x2 <= x1 or y2 <= y1:
        log.add("degenerate", where)
        return None
    c = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
         min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    if c != (x1, y1, x2, y2):
        if c[2] <= c[0] or c[3] <= c[1]:
            log.add("outside", where)
            return None
        log.add("clipped", where)
    return c


def _finish(path, fmt: str, videos: dict, log: AnnotationWarnings) -> GroundTruth:
    if log.counts:
        warnings.warn(f"{path}: {log.summary()} box(es) repaired or dropped", AnnotationWarning,
                      stacklevel=3)
    return GroundTruth(videos, log, str(path), fmt)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _load_json(path):
    """Parse a JSON file; empty, undecodable, invalid or duplicate-key files raise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise AnnotationError(path, f"cannot read: {e.strerror or e}")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not UTF-8 text (byte {e.start})")
    if not text.strip():
        raise AnnotationError(path, "file is empty")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise AnnotationError(path, f"duplicate key {e.args[0]!r}: ambiguous annotation")
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"not valid JSON: {e.msg}", e.lineno)


def _num(path, value, what: str, *, positive: bool = False) -> float:
    """A finite number (> 0 when ``positive``, else >= 0), or AnnotationError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(path, f"{what}: {value!r} is not a number")
    if isinstance(value, bool) or not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise AnnotationError(path, f"{what}: {value!r} is not a valid value")
    return v


def _side(path, value, what: str) -> float:
    """An image width or height: a number in (0, MAX_SIDE], or AnnotationError naming ``what``."""
    v = _num(path, value, what, positive=True)
    if v > MAX_SIDE:
        raise AnnotationError(path, f"{what}: {value!r} is not a valid value (more than {MAX_SIDE:,} pixels)")
    return v


# ---- avstm's own JSON ----------------------------------------------------------------------


def read_avstm_boxes(path: str | os.PathLike) -> GroundTruth:
    """Read avstm's box JSON (docs/ARCHITECTURE.md, "avstm-boxes/1")."""
    data, log, videos = _load_json(path), AnnotationWarnings(), {}
    if not isinstance(data, dict) or data.get("format") != AVSTM_FORMAT:
        raise AnnotationError(path, f"not an avstm box file (needs \"format\": \"{AVSTM_FORMAT}\")")
    if not isinstance(data.get("videos"), dict):
        raise AnnotationError(path, "\"videos\" must be an object of video id -> video")
    for vid, v in data["videos"].items():
        try:
            w = _side(path, v["width"], f"video {vid!r} width")
            h = _side(path, v["height"], f"video {vid!r} height")
            truth = VideoTruth(w, h, {}, v.get("label"))
            for fr in v["frames"]:
                t = _num(path, fr["time"], f"video {vid!r} frame time")
                if t in truth.frames:
                    raise AnnotationError(path, f"video {vid!r}: duplicate frame time {t:g}")
                boxes = truth.frames[t] = []
                for i, b in enumerate(fr["boxes"]):
                    sounding, ann = b.get("sounding", True), b.get("annotator")
                    if not isinstance(sounding, bool):
                        raise ValueError(f"sounding must be true or false, got {sounding!r}")
                    if ann is not None and (isinstance(ann, bool) or not isinstance(ann, int)):
                        raise ValueError(f"annotator must be an integer, got {ann!r}")
                    xyxy = _clean_box(b["xyxy"], w, h, f"{vid}@{t:.3f}#{i}", log)
                    if xyxy is not None:
                        boxes.append(Box(xyxy, sounding, b.get("label"), ann))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise AnnotationError(path, f"video {vid!r}: malformed entry ({type(e).__name__}: {e})")
        videos[vid] = truth
    return _finish(path, AVSTM_FORMAT, videos, log)


def to_avstm_json(truth: Mapping[str, VideoTruth]) -> dict:
    """GroundTruth -> the JSON-able "avstm-boxes/1" document (inverse of read_avstm_boxes)."""
    out = {}
    for vid, v in truth.items():
        frames = [{"time": t, "boxes": [
            {k: val for k, val in (("xyxy", list(b.xyxy)), ("sounding", b.sounding),
                                   ("label", b.label), ("annotator", b.annotator))
             if val is not None} for b in boxes]} for t, boxes in sorted(v.frames.items())]
        out[vid] = {"width": v.width, "height": v.height, "frames": frames}
        if v.label is not None:
            out[vid]["label"] = v.label
    return {"format": AVSTM_FORMAT, "videos": out}


# ---- public formats ------------------------------------------------------------------------


def read_vggss(path: str | os.PathLike, *, size: int = 256) -> GroundTruth:
    """VGG-SS ``vggss.json``: [{"file", "class", "bbox": [[x1, y1, x2, y2] normalised]}].

    One image per entry at time 0.0, ``width = height = size``; the corrupt coordinates
    (about -2.9e16) drop their box and are counted as "corrupt".
    """
    data, log, videos = _load_json(path), AnnotationWarnings(), {}
    if not isinstance(data, list):
        raise AnnotationError(path, "expected a JSON list of {file, class, bbox} entries")
    for i, e in enumerate(data):
        try:
            vid, boxes = str(e["file"]), []
            for j, b in enumerate(e["bbox"]):
                if len(b) != 4:
                    raise ValueError(f"box {j} has {len(b)} values, needs 4")
                xyxy = _clean_box([float(c) * size for c in b], size, size, f"{vid}#{j}", log)
                if xyxy is not None:
                    boxes.append(Box(xyxy, True, e.get("class")))
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationError(path, f"entry {i}: malformed ({type(err).__name__}: {err})")
        if vid in videos:
            raise AnnotationError(path, f"entry {i}: duplicate file {vid!r}: ambiguous boxes")
        videos[vid] = VideoTruth(size, size, {0.0: boxes}, e.get("class"))
    return _finish(path, "vggss", videos, log)


def read_flickr_ids(path: str | os.PathLike) -> list[str]:
    """Flickr-SoundNet ``flickr_test.csv`` (rows ``id,<int>``) -> the image ids, in order."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise AnnotationError(path, "file is empty")
    ids = []
    for n, row in enumerate(rows, 1):
        if not row or not row[0].strip().isdigit():
            raise AnnotationError(path, f"expected 'id,<int>', got {','.join(row)!r}", n)
        ids.append(row[0].strip())
    return ids


def read_flickr(xml_dir: str | os.PathLike, ids: Sequence[str] | str | os.PathLike | None = None
                ) -> GroundTruth:
    """Flickr-SoundNet: one ``<id>.xml`` per image in ``xml_dir``, in 256×256 pixels.

    Each ``<bbox>`` element (any depth) is one annotator's box (annotator = its index in the
    file); its first child is skipped, then xmin, ymin, xmax, ymax. ids: a list, the
    ``flickr_test.csv`` path, or None (every XML in the folder). A missing XML raises.
    """
    xml_dir = Path(xml_dir)
    if ids is None:
        ids = sorted(p.stem for p in xml_dir.glob("*.xml"))
    elif isinstance(ids, (str, os.PathLike)):
        ids = read_flickr_ids(ids)
    log, videos = AnnotationWarnings(), {}
    for vid in ids:
        path = xml_dir / f"{vid}.xml"
        try:
            root = ET.parse(path).getroot()
        except OSError as e:
            raise AnnotationError(path, f"cannot read: {e.strerror or e}")
        except ET.ParseError as e:
            raise AnnotationError(path, f"not valid XML: {e}", e.position[0])
        boxes = []
        for k, el in enumerate(root.iter("bbox")):
            vals = [c.text for c in list(el)[1:5]]
            if len(vals) != 4:
                raise AnnotationError(path, f"<bbox> {k} has {len(vals)} coordinates, needs 4")
            try:
                xyxy = [float(v) for v in vals]
            except (TypeError, ValueError):
                raise AnnotationError(path, f"<bbox> {k}: coordinates {vals!r} are not numbers")
            xyxy = _clean_box(xyxy, 256, 256, f"{vid}#{k}", log)
            if xyxy is not None:
                boxes.append(Box(xyxy, True, None, k))
        videos[str(vid)] = VideoTruth(256, 256, {0.0: boxes})
    return _finish(xml_dir, "flickr", videos, log)


def read_audioset_instrument(path: str | os.PathLike, *, size: int = 256) -> GroundTruth:
    """AudioSet-Instrument ``audioset_box.json``: {"<ytid>/<second>": {"bbox": [{"category",
    "normbox": [x, y, w, h] normalised]}]}} -> frames at time = float(second), boxes scaled
    by ``size``, label = str(category). Key frames without a box are kept with no boxes."""
    data, log, videos = _load_json(path), AnnotationWarnings(), {}
    if not isinstance(data, dict):
        raise AnnotationError(path, "expected a JSON object of \"<id>/<second>\" -> {bbox}")
    for key, entry in data.items():
        vid, _, sec = key.rpartition("/")
        try:
            t = _num(path, sec, f"entry {key!r} second")
            boxes = []
            for j, b in enumerate(entry["bbox"]):
                norm = tuple(float(c) for c in b["normbox"])
                x, y, w, h = (c * size for c in norm)
                xyxy = _clean_box((x, y, x + w, y + h), size, size, f"{key}#{j}", log)
                if xyxy is not None:
                    boxes.append(Box(xyxy, True, str(b.get("category")), normbox=norm))
        except (KeyError, TypeError, ValueError) as err:
            raise AnnotationError(path, f"entry {key!r}: malformed ({type(err).__name__}: {err})")
        if not vid:
            raise AnnotationError(path, f"entry {key!r}: key is not \"<id>/<second>\"")
        videos.setdefault(vid, VideoTruth(size, size, {})).frames[t] = boxes
    return _finish(path, "audioset-instrument", videos, log)


def read_coco_boxes(path: str | os.PathLike) -> GroundTruth:
    """COCO-style JSON: images [{id, file_name, width, height[, video_id, time]}],
    annotations [{image_id, bbox: [x, y, w, h] pixels, category_id[, sounding]}], categories.

    Video id: the image's ``video_id`` if present, else its file name without extension;
    frame time: the image's ``time`` if present, else 0.0. Label: the category's name.
    """
    data, log = _load_json(path), AnnotationWarnings()
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(path, "not COCO-style JSON (needs \"images\" and \"annotations\")")
    names = {c.get("id"): str(c.get("name", c.get("id"))) for c in data.get("categories", [])}
    videos, frame_of = {}, {}
    try:
        for im in data["images"]:
            vid = str(im.get("video_id", Path(str(im.get("file_name", im["id"]))).stem))
            t = _num(path, im.get("time", 0.0), f"image {im['id']} time")
            w = _side(path, im["width"], f"image {im['id']} width")
            h = _side(path, im["height"], f"image {im['id']} height")
            if im["id"] in frame_of:
                raise AnnotationError(path, f"duplicate image id {im['id']!r}")
            videos.setdefault(vid, VideoTruth(w, h, {})).frames.setdefault(t, [])
            frame_of[im["id"]] = (vid, t)
        for i, a in enumerate(data["annotations"]):
            if a["image_id"] not in frame_of:
                raise AnnotationError(path, f"annotation {i}: unknown image_id {a['image_id']!r}")
            vid, t = frame_of[a["image_id"]]
            x, y, w, h = a["bbox"]
            v = videos[vid]
            xyxy = _clean_box((float(x), float(y), float(x) + float(w), float(y) + float(h)),
                              v.width, v.height, f"annotation {i}", log)
            if xyxy is not None:
                cat = a.get("category_id")
                label = names.get(cat, None if cat is None else str(cat))
                v.frames[t].append(Box(xyxy, bool(a.get("sounding", True)), label))
    except (KeyError, TypeError, ValueError) as err:
        raise AnnotationError(path, f"malformed COCO entry ({type(err).__name__}: {err})")
    return _finish(path, "coco", videos, log)


# ---- AVE labels (event spans; no boxes) ----------------------------------------------------


def read_ave_labels(path: str | os.PathLike) -> dict:
    """AVE ``Annotations.txt`` (or a split file) -> video id -> list of its ``AveLine`` events
    (several for 45 videos), in file order. Parsing is ``avstm.datasets.read_ave_annotations``
    (one AVE parser in the package); per-second labels with background come from
    ``avstm.datasets.second_labels``."""
    from avstm.datasets import read_ave_annotations

    out: dict = {}
    for line in read_ave_annotations(path):
        out.setdefault(line.video_id, []).append(line)
    return out


# ---- one entry point -----------------------------------------------------------------------

READERS = {
    "avstm": read_avstm_boxes,
    "vggss": read_vggss,
    "flickr": read_flickr,
    "audioset-instrument": read_audioset_instrument,
    "coco": read_coco_boxes,
}


def _is_ave_labels(path: Path) -> bool:
    """AVE's Annotations.txt: ``Category&VideoID&Quality&StartTime&EndTime`` lines."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            lines = [line.strip() for line in itertools.islice(f, 3) if line.strip()]
    except OSError:
        return False
    return bool(lines) and all(line.count("&") == 4 and line.rsplit("&", 1)[-1].strip().isdigit()
                               for line in lines[1:] or lines)


def detect_format(path: str | os.PathLike) -> str:
    """Name the format of a ground-truth file or folder (a key of READERS)."""
    path = Path(path)
    if path.is_dir():
        return "flickr"
    if _is_ave_labels(path):
        raise AnnotationError(path, "AVE labels, not boxes (its lines give each video's event "
                                    "class and seconds); --annotations needs box ground truth: "
                                    f"{', '.join(READERS)}")
    data = _load_json(path)
    if isinstance(data, dict) and data.get("format") == AVSTM_FORMAT:
        return "avstm"
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return "coco"
    if isinstance(data, list) and data and isinstance(data[0], dict) and "file" in data[0]:
        return "vggss"
    if isinstance(data, dict) and data and all("/" in k for k in list(data)[:10]):
        return "audioset-instrument"
    raise AnnotationError(path, f"unknown ground-truth format; known: {', '.join(READERS)}")


def read_ground_truth(path: str | os.PathLike, *, format: str | None = None,
                      size: int = 256, ids=None) -> GroundTruth:
    """Read any supported ground truth; ``format`` (a READERS key) is detected when None.
    ``size`` applies to normalised formats, ``ids`` to Flickr (list or flickr_test.csv)."""
    fmt = format or detect_format(path)
    if fmt not in READERS:
        raise AnnotationError(path, f"unknown format {fmt!r}; known: {', '.join(READERS)}")
    if fmt in ("vggss", "audioset-instrument"):
        return READERS[fmt](path, size=size)
    if fmt == "flickr":
        return read_flickr(path, ids)
    return READERS[fmt](path)
