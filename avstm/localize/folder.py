"""``localize`` over many videos with one model: a folder per video and ``summary.csv``.

    videos (a folder, or a text file of paths) ──► for each, in order: its header and audio
    read ahead by a worker thread while the previous video runs ──► ``localize_to`` into
    ``OUT/<video id>/`` ──► one row of ``OUT/summary.csv``

Resumable: a video whose folder is complete (its ``boxes.json`` records the same checkpoint and
config, and the overlay is there when one is asked for) is not run again. A video that cannot
be read (``AvstmError``) is listed in ``OUT/failures.txt`` and in the summary, and the others
still run; the summary and the failures file are rewritten (atomically) after every video.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from avstm.datasets import VIDEO_EXTENSIONS
from avstm.errors import AnnotationError, AvstmError, StorageError
from avstm.io import remove_stale_temporaries, write_text
from avstm.localize.run import LocalizeConfig, LocalizeModel, localize_to, open_video

SUMMARY_FIELDS = ("video", "duration", "has_audio", "event", "probability", "sounding_seconds",
                  "boxes", "status", "error")


def list_videos(videos: str | os.PathLike) -> list[Path]:
    """The videos of a folder (its files with a video extension, sorted; hidden ones skipped)
    or of a text file (one path per line, relative to the file; blank lines and ``#`` comments
    skipped). Raises AnnotationError for a missing source, an empty list or two videos that
    would share one output folder (the same file stem)."""
    videos = Path(videos)
    if videos.is_dir():
        found = sorted(p for p in videos.iterdir() if not p.name.startswith(".")
                       and p.suffix.lower() in VIDEO_EXTENSIONS)
    elif videos.is_file():
        try:
            lines = videos.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise AnnotationError(videos, f"cannot read the video list ({e})") from None
        found = [Path(line.strip()) if Path(line.strip()).is_absolute()
                 else videos.parent / line.strip()
                 for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        raise AnnotationError(videos, "no such folder or video list")
    if not found:
        raise AnnotationError(videos, f"no videos ({', '.join(VIDEO_EXTENSIONS)})")
    seen: dict[str, Path] = {}
    for p in found:
        if p.stem in seen:
            raise AnnotationError(videos, f"{seen[p.stem]} and {p} would share the output "
                                          f"folder {p.stem}/")
        seen[p.stem] = p
    return found


@dataclasses.dataclass
class FolderResult:
    """What ``localize_folder`` did: one summary row per video (``SUMMARY_FIELDS``), in order."""

    out_dir: Path
    rows: list[dict[str, Any]]
    summary: Path
    failures: Path | None

    @property
    def done(self) -> int:
        return sum(r["status"] == "done" for r in self.rows)

    @property
    def kept(self) -> int:
        return sum(r["status"] == "kept" for r in self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]


def _row(video: Path, doc: dict[str, Any], status: str) -> dict[str, Any]:
    s = doc["summary"]
    return {"video": str(video), "duration": round(doc["video"]["duration"], 3),
            "has_audio": doc["video"]["has_audio"], "event": s["event"],
            "probability": round(s["probability"], 4),
            "sounding_seconds": round(s["sounding_seconds"], 3), "boxes": s["boxes"],
            "status": status, "error": ""}


def _complete(folder: Path, model: LocalizeModel, config: LocalizeConfig, overlay: bool,
              save_maps: bool) -> dict[str, Any] | None:
    """The folder's boxes.json when it holds this run's products, else None."""
    try:
        doc = json.loads((folder / "boxes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (doc.get("model", {}).get("checkpoint") == model.checkpoint
            and doc.get("config") == config.to_dict() and "summary" in doc)
    if not same or (overlay and not (folder / "overlay.mp4").is_file()) or (
            save_maps and not (folder / "maps.npz").is_file()):
        return None
    return doc


def _write_table(out: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path | None]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    summary = out / "summary.csv"
    write_text(summary, buf.getvalue())
    failures = out / "failures.txt"
    bad = [r for r in rows if r["status"] == "failed"]
    if bad:
        write_text(failures, "".join(f"{r['error']}\n" for r in bad))
        return summary, failures
    failures.unlink(missing_ok=True)
    return summary, None


def localize_folder(model: LocalizeModel, videos: list[Path], out_dir: str | os.PathLike, *,
                    config: LocalizeConfig = LocalizeConfig(), overlay: bool = True,
                    save_maps: bool = False, frames_dir: str | os.PathLike | None = None,
                    show_colorbar: bool = False, progress: bool = True,
                    on_video: Callable[[dict[str, Any]], None] | None = None) -> FolderResult:
    """Localize each video into ``out_dir/<file stem>/`` with one loaded model (see the module
    docstring); the next video's header and audio are read ahead in a worker thread.
    ``on_video`` is called with each summary row as it is settled. Returns the rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    rows: list[dict[str, Any]] = []
    summary, failures = out / "summary.csv", None
    todo = []
    for video in videos:
        doc = _complete(out / video.stem, model, config, overlay, save_maps)
        todo.append((video, doc))
    bar = tqdm(total=len(videos), unit="video", desc="localize",
               disable=not progress or not sys.stderr.isatty())
    with bar, concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="avstm-open") as pool:
        pending = [i for i, (_, doc) in enumerate(todo) if doc is None]
        ahead = {i: pool.submit(open_video, todo[i][0]) for i in pending[:1]}
        for i, (video, doc) in enumerate(todo):
            if doc is not None:
                row = _row(video, doc, "kept")
            else:
                nxt = pending[pending.index(i) + 1] if pending.index(i) + 1 < len(pending) else None
                if nxt is not None:
                    ahead[nxt] = pool.submit(open_video, todo[nxt][0])
                folder = out / video.stem
                try:
                    if folder.is_dir():
                        remove_stale_temporaries(folder)
                    opened = ahead.pop(i).result()
                    result, _ = localize_to(model, opened, folder, config=config,
                                            video_id=video.stem, overlay=overlay,
                                            save_maps=save_maps, frames_dir=frames_dir,
                                            show_colorbar=show_colorbar, progress=False)
                    row = _row(video, result.to_dict(), "done")
                except StorageError:
                    raise  # a full or read-only disk fails every video after it: stop here
                except AvstmError as e:
                    row = dict.fromkeys(SUMMARY_FIELDS, "")
                    row.update(video=str(video), status="failed", error=str(e))
            rows.append(row)
            summary, failures = _write_table(out, rows)
            if on_video is not None:
                on_video(row)
            bar.update(1)
    return FolderResult(out_dir=out, rows=rows, summary=summary, failures=failures)
