"""The single-image benchmarks (VGG-SS, Flickr-SoundNet) as clips for ``avstm extract
--dataset vggss | flickr``: a ``Dataset`` of the clips whose annotated frame is the last step.

Here, not in ``avstm.datasets``: the clips are listed from the benchmarks' annotation files,
whose readers are evaluate's (``avstm.evaluate.annotations``), and those read AVE's files with
``avstm.datasets``; the imports flow one way (datasets ← evaluate.annotations ← benchmarks).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from avstm.datasets import Dataset, VideoItem, find_video
from avstm.errors import AnnotationError
from avstm.evaluate.annotations import read_flickr_ids, read_vggss

# VGG-SS boxes are drawn on the 125th frame of the 25 fps clip (frame index 124, 4.96 s), not
# on the exact centre (ACL-SSL's VGGSS/README.md; EZ-VSL forks read frames/<id>/125.jpg).
VGGSS_FRAME_TIME = 124 / 25
# Flickr-SoundNet pairs an image with 20 s of audio around it; EZ-VSL reads the middle 3 s.
FLICKR_FRAME_TIME = 10.0


def _benchmark_clips(videos: Path, entries: list[tuple[str, str]], anchor: float,
                     what: str) -> Dataset:
    videos = Path(videos)
    if not videos.is_dir():
        raise AnnotationError(videos, "not a folder of clips")
    items, missing = [], 0
    for vid, label in entries:
        path = find_video(videos, vid)
        if not path.exists():
            missing += 1
            continue
        items.append(VideoItem(id=vid, path=str(path), label=label, split="test",
                               segments=((0.0, math.inf, label),), anchor=anchor))
    if not items:
        raise AnnotationError(videos, f"none of the {len(entries)} {what} clips is in this folder "
                              f"(named <id>.mp4 or another video extension)")
    if missing:
        warnings.warn(f"{videos}: {missing} of {len(entries)} {what} clips are not in the folder; "
                      f"extracting the {len(items)} present", stacklevel=3)
    return Dataset(items=items, classes=sorted({it.label for it in items}))


def read_vggss_clips(videos: str | os.PathLike, annotations: str | os.PathLike, *,
                     anchor: float = VGGSS_FRAME_TIME) -> Dataset:
    """VGG-SS as clips: ``videos/<file>.mp4`` for the entries of ``vggss.json`` (label =
    ``class``, split test), the annotated frame the last step (``anchor`` seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the box repairs are announced by evaluate
        truth = read_vggss(annotations)
    return _benchmark_clips(Path(videos), [(v, t.label or "unknown") for v, t in truth.items()],
                            anchor, "VGG-SS")


def read_flickr_clips(videos: str | os.PathLike, annotations: str | os.PathLike,
                      ids=None, *, anchor: float = FLICKR_FRAME_TIME) -> Dataset:
    """Flickr-SoundNet as clips: ``videos/<id>.mp4`` for the XMLs of ``annotations`` (or the
    ``ids`` list / flickr_test.csv), one class "flickr", split test, the image the last step."""
    if ids is None:
        ids = sorted(p.stem for p in Path(annotations).glob("*.xml"))
    elif isinstance(ids, (str, os.PathLike)):
        ids = read_flickr_ids(ids)
    if not ids:
        raise AnnotationError(annotations, "no Flickr XML files (<id>.xml) in this folder")
    return _benchmark_clips(Path(videos), [(str(v), "flickr") for v in ids], anchor, "Flickr")
