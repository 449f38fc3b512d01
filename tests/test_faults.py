"""Fault injection: the faults users' disks and data actually have, through the ``avstm`` CLI.

- Filesystem faults for extract, train, localize and cache merge: an output on a read-only file
  system, and one that fills up (before work, where the first estimate tells, and during it).
  Each run must end in one line ``avstm: error: <path>: <problem>``, exit 1, no traceback, no
  temporary file left, and nothing finished lost (what was there before is unchanged; what
  finished before the fault resumes).
- Damaged media: an mp4 with garbage in its middle, an audio-only mp4 with a cover picture.
- Silently wrong inputs: NaN boxes, absurd widths, an unreadable or incomplete cache, a CSV id
  outside the videos folder, warnings in Python's raw format, a synth size with an empty split.

Small file systems are tmpfs mounts (``mount -t tmpfs -o size=...``), read-only ones a tmpfs
remounted ``ro`` after its "finished" content is written. Tests run as root here, and root
ignores permission bits, so a chmod would prove nothing; where mounting is not allowed (not
root, or a container without the capability) the tests say so and skip.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avstm.cache import CacheWriter, FeatureCache, verify_cache
from avstm.cli import cli
from avstm.memnet.checkpoint import read_checkpoint
from clips import index_frames, write_audio_only, write_clip, write_labelled_folder

EXTRACT = ["--visual-backbone", "efficientnet_lite0", "--visual-weights", "imagenet", "--audio-weights", "random",
           "--frame-size", "64", "--fps", "2", "--device", "cpu", "--workers", "0", "--batch-size", "8", "--quiet"]
TRAIN = ["--batch-size", "2", "--workers", "0", "--device", "cpu", "--dim", "16", "--hidden", "16",
         "--in-memory", "yes", "--no-progress"]
CLIPS = 6  # of 4 s: 54 kB of features per second at this config, 216 kB per video


def invoke(*args: str):
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def error_line(stderr: str) -> str:
    """The one ``avstm: error:`` line of a run (and nothing that looks like a traceback)."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("avstm: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files under ``folder`` (what a failed write must not leave)."""
    return sorted(str(p) for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".avstm-probe"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- small and read-only file systems --------------------------------------------------------

def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True)


class Mounts:
    """tmpfs mounts made by one test, unmounted at its end."""

    def __init__(self):
        self.points: list[Path] = []

    def tmpfs(self, path: Path, size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("not root: cannot mount a small or read-only file system (and a chmod'ed folder "
                        "would not model a full disk)")
        path.mkdir(parents=True, exist_ok=True)
        r = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
        self.points.append(path)
        return path

    def read_only(self, path: Path) -> Path:
        r = _run("mount", "-o", "remount,ro", str(path))
        assert r.returncode == 0, r.stderr
        return path

    def resize(self, path: Path, size: str) -> None:
        r = _run("mount", "-o", f"remount,rw,size={size}", str(path))
        assert r.returncode == 0, r.stderr

    def close(self) -> None:
        for p in reversed(self.points):
            _run("umount", "-l", str(p))


@pytest.fixture
def mounts():
    m = Mounts()
    yield m
    m.close()


def fill(folder: Path, leave: int) -> Path:
    """Fill ``folder``'s file system up to ``leave`` free bytes with one file. Filling to 0
    while another process writes there can run out of space first: the disk is then full, as
    asked."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    try:
        with open(filler, "ab") as f:
            f.write(b"\0" * max(0, free - leave))
    except OSError as e:
        if leave or e.errno != errno.ENOSPC:
            raise
    return filler


# ---- data: clips, a labels CSV, a cache and a trained model --------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, Path]:
    clips = [(index_frames(32 + 4 * i)[4 * i:], "cat" if i % 2 else "dog", "val" if i == CLIPS - 1 else "train")
             for i in range(CLIPS)]
    return write_labelled_folder(tmp_path_factory.mktemp("faults"), clips, fps=8)


def extract_args(videos, out: Path, *more: str) -> list:
    d, labels = videos
    return ["extract", "--dataset", "folder", "--videos", d, "--labels", labels, "--out", out, *EXTRACT, *more]


@pytest.fixture(scope="module")
def cache(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "features.h5"
    code, stdout, stderr = invoke(*extract_args(videos, out))
    assert code == 0, stdout + stderr
    return out


@pytest.fixture(scope="module")
def checkpoint(cache, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    code, stdout, stderr = invoke("train", "--features", cache, "--out", run, "--epochs", "1", *TRAIN)
    assert code == 0, stdout + stderr
    return run / "best.pt"


# ---- extract ---------------------------------------------------------------------------------

def test_extract_to_a_read_only_disk_is_one_line_and_keeps_what_is_there(videos, cache, mounts, tmp_path):
    ro = mounts.tmpfs(tmp_path / "ro", "4m")
    shutil.copyfile(cache, ro / "features.h5")  # a finished cache from an earlier run
    before = snapshot(ro)
    mounts.read_only(ro)
    code, _, stderr = invoke(*extract_args(videos, ro / "features.h5"))
    assert (code, error_line(stderr)) == (1, f"avstm: error: {ro}: Read-only file system")
    assert snapshot(ro) == before


def test_extract_refuses_a_disk_without_room_for_one_video(videos, mounts, tmp_path):
    small = mounts.tmpfs(tmp_path / "small", "2m")
    fill(small, 200_000)  # one 10 s video of this config takes 543 kB
    code, _, stderr = invoke(*extract_args(videos, small / "features.h5"))
    assert code == 1
    assert re.fullmatch(rf"avstm: error: {re.escape(str(small))}: No space left on device for the features "
                        r"of one 10 s video: 1\d\d\.\d kB free, about 542\.7 kB needed", error_line(stderr))
    assert sorted(p.name for p in small.iterdir()) == ["features.h5.lock", "filler.bin"]


def test_extract_on_a_disk_that_fills_up_keeps_its_closed_parts_and_resumes(videos, mounts, tmp_path,
                                                                           monkeypatch):
    """The writer thread meets ENOSPC writing a part: no segfault, the error in one line, the
    parts closed before it kept, no temporary file; with room again the run resumes from them."""
    monkeypatch.setitem(CacheWriter.__init__.__kwdefaults__, "part_videos", 1)
    disk = mounts.tmpfs(tmp_path / "disk", "2m")
    filler = fill(disk, 780_000)  # room for the first estimate (543 kB) and three parts of 216 kB
    out = disk / "features.h5"
    code, stdout, stderr = invoke(*extract_args(videos, out))
    parts = disk / "features.h5.parts"
    assert (code, error_line(stderr)) == (1, f"avstm: error: {parts}: No space left on device")
    assert leftovers(disk) == [] and not out.exists()
    kept = sorted(parts.glob("*.h5"))
    assert len(kept) == 3
    for p in kept:
        with h5py.File(p, "r") as f:
            assert all(g.attrs["complete"] for g in f["videos"].values())
    filler.unlink()
    mounts.resize(disk, "16m")
    code, stdout, stderr = invoke(*extract_args(videos, out))
    assert code == 0, stdout + stderr
    assert stdout.startswith(f"{out}: {CLIPS - 3} videos extracted, 3 already cached, 0 failed;")
    assert verify_cache(out) == [] and leftovers(disk) == []


def test_extract_whose_join_does_not_fit_keeps_its_parts(videos, mounts, tmp_path):
    disk = mounts.tmpfs(tmp_path / "disk", "2m")
    fill(disk, 1_400_000)  # every part fits (6 × 216 kB), their join (a second copy) does not
    out = disk / "features.h5"
    code, _, stderr = invoke(*extract_args(videos, out))
    assert code == 1
    assert re.fullmatch(rf"avstm: error: {re.escape(str(disk))}: No space left on device for joining 1 file\(s\) "
                        rf"into features\.h5: \d+\.\d kB free, about 1\.\d MB needed", error_line(stderr))
    assert leftovers(disk) == [] and not out.exists()
    with h5py.File(next((disk / "features.h5.parts").glob("*.h5")), "r") as f:
        assert len(f["videos"]) == CLIPS


# ---- train -----------------------------------------------------------------------------------

def test_train_to_a_read_only_disk_is_one_line_and_keeps_the_run(cache, checkpoint, mounts, tmp_path):
    ro = mounts.tmpfs(tmp_path / "ro", "4m")
    shutil.copytree(checkpoint.parent, ro / "run")
    before = snapshot(ro)
    mounts.read_only(ro)
    code, _, stderr = invoke("train", "--features", cache, "--out", ro / "run", "--resume", "--epochs", "3", *TRAIN)
    assert (code, error_line(stderr)) == (1, f"avstm: error: {ro / 'run'}: Read-only file system")
    assert snapshot(ro) == before


def test_train_on_a_disk_that_fills_up_keeps_its_last_checkpoint(cache, mounts, tmp_path):
    disk = mounts.tmpfs(tmp_path / "disk", "2m")
    run = disk / "run"

    def fill_after_first_checkpoint():
        t_end = time.monotonic() + 120
        while not (run / "last.pt").exists() and time.monotonic() < t_end:
            time.sleep(0.002)
        fill(disk, 0)

    filler = threading.Thread(target=fill_after_first_checkpoint)
    filler.start()
    code, stdout, stderr = invoke("train", "--features", cache, "--out", run, "--epochs", "200", *TRAIN)
    filler.join()
    assert code == 1
    assert re.fullmatch(rf"avstm: error: {re.escape(str(run))}/(last\.pt|best\.pt|metrics\.jsonl): "
                        r"No space left on device", error_line(stderr)), stderr
    assert leftovers(disk) == []
    epoch = read_checkpoint(run / "last.pt")["epoch"]  # a whole checkpoint, never a torn one
    assert 1 <= epoch < 200
    (disk / "filler.bin").unlink()
    code, stdout, stderr = invoke("train", "--features", cache, "--out", run, "--resume", "--epochs",
                                  str(epoch + 1), *TRAIN)
    assert code == 0, stdout + stderr
    assert read_checkpoint(run / "last.pt")["epoch"] == epoch + 1


def test_train_removes_what_a_killed_run_left(cache, checkpoint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run)
    stale = run / "last.pt.tmp-999999999"  # a write that a killed run (a pid long gone) left
    stale.write_bytes(b"half a checkpoint")
    code, stdout, stderr = invoke("train", "--features", cache, "--out", run, "--resume", "--epochs", "2", *TRAIN)
    assert code == 0, stdout + stderr
    assert leftovers(run) == []


def test_train_refuses_a_cache_entry_without_its_audio(cache, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copyfile(cache, bad)
    with h5py.File(bad, "r+") as f:
        del f["videos/v1/audio"]
    code, _, stderr = invoke("train", "--features", bad, "--out", tmp_path / "run", *TRAIN)
    assert (code, error_line(stderr)) == (
        1, f"avstm: error: {bad}: video 'v1' lacks its audio dataset(s) (a damaged cache; avstm cache verify "
           f"{bad} lists what is wrong)")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# ---- localize --------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["trained", "missing"])
def test_localize_to_a_read_only_disk_is_one_line(videos, checkpoint, mounts, tmp_path, model):
    """The output is checked before any work: with a missing checkpoint the error is still the
    output's (the model is not even loaded)."""
    ro = mounts.read_only(mounts.tmpfs(tmp_path / "ro", "1m"))
    ckpt = checkpoint if model == "trained" else tmp_path / "missing.pt"
    code, _, stderr = invoke("localize", "--video", videos[0] / "v0.mp4", "--checkpoint", ckpt,
                             "--out", ro / "out", "--device", "cpu", "--quiet")
    assert (code, error_line(stderr)) == (1, f"avstm: error: {ro / 'out'}: Read-only file system")


def test_localize_on_a_full_disk_keeps_the_earlier_result(videos, checkpoint, mounts, tmp_path):
    disk = mounts.tmpfs(tmp_path / "disk", "2m")
    out = disk / "out"
    args = ["localize", "--video", videos[0] / "v0.mp4", "--checkpoint", checkpoint, "--out", out,
            "--device", "cpu", "--quiet"]
    code, stdout, stderr = invoke(*args, "--no-overlay")  # an earlier result
    assert code == 0, stdout + stderr
    before = snapshot(out)
    fill(disk, 8192)  # the check's probe fits, the overlay does not
    code, _, stderr = invoke(*args)
    assert (code, error_line(stderr)) == (1, f"avstm: error: {out / 'overlay.mp4'}: No space left on device")
    assert snapshot(out) == before and leftovers(disk) == []


# ---- cache merge -----------------------------------------------------------------------------

def test_merge_to_a_read_only_disk_is_one_line(cache, mounts, tmp_path):
    ro = mounts.read_only(mounts.tmpfs(tmp_path / "ro", "1m"))
    code, _, stderr = invoke("cache", "merge", cache, "-o", ro / "all.h5")
    assert (code, error_line(stderr)) == (1, f"avstm: error: {ro}: Read-only file system")


def test_merge_on_a_disk_without_room_is_one_line_and_keeps_the_inputs(cache, mounts, tmp_path):
    disk = mounts.tmpfs(tmp_path / "disk", "4m")
    shard = disk / "shard.h5"
    shutil.copyfile(cache, shard)
    before = snapshot(disk)
    fill(disk, 600_000)
    code, _, stderr = invoke("cache", "merge", shard, "-o", disk / "all.h5")
    assert code == 1
    assert re.fullmatch(rf"avstm: error: {re.escape(str(disk))}: No space left on device for joining 1 file\(s\) "
                        rf"into all\.h5: \d+\.\d kB free, about 1\.\d MB needed", error_line(stderr))
    assert {k: v for k, v in snapshot(disk).items() if k != "filler.bin" and not k.endswith(".lock")} == before
    assert leftovers(disk) == [] and not (disk / "all.h5").exists()


def test_merge_reads_shards_on_a_read_only_disk(cache, mounts, tmp_path):
    """Inputs may be read-only, with the lock files their writers left."""
    ro = mounts.tmpfs(tmp_path / "ro", "4m")
    shutil.copyfile(cache, ro / "shard.h5")
    (ro / "shard.h5.lock").write_text("12345")
    mounts.read_only(ro)
    code, stdout, stderr = invoke("cache", "merge", ro / "shard.h5", "-o", tmp_path / "all.h5")
    assert (code, stdout) == (0, f"{tmp_path / 'all.h5'}: {CLIPS} videos from 1 caches\n"), stderr


@pytest.mark.parametrize("damage", ["truncated", "not_hdf5"])
def test_merge_of_an_unreadable_input_is_one_line(cache, tmp_path, damage):
    bad = tmp_path / "bad.h5"
    data = cache.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a cache\n" * 100)
    code, _, stderr = invoke("cache", "merge", cache, bad, "-o", tmp_path / "all.h5")
    reason = {"truncated": r"truncated file: eof = \d+, sblock->base_addr = 0, stored_eof = \d+",
              "not_hdf5": "file signature not found"}[damage]
    assert code == 1
    assert re.fullmatch(rf"avstm: error: {re.escape(str(bad))}: not a readable HDF5 file \({reason}\)",
                        error_line(stderr))
    assert not (tmp_path / "all.h5").exists() and leftovers(tmp_path) == []


# ---- damaged media ---------------------------------------------------------------------------

def write_damaged(path: Path) -> Path:
    """A 3 s clip (noise frames, so that the file is large) with 20 kB of garbage in its middle."""
    rng = np.random.default_rng(0)
    write_clip(path, rng.integers(0, 256, (72, 96, 128, 3), dtype=np.uint8), fps=24)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 20_000] = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def write_cover_art(path: Path) -> Path:
    """An audio-only mp4 (3 s of a tone) with a cover picture."""
    write_audio_only(path, 3.0, cover=True)
    with av.open(str(path)) as check:  # the file is what it should be
        assert [s.type for s in check.streams] == ["audio", "video"]
        assert check.streams.video[0].disposition & av.stream.Disposition.attached_pic
    return path


DAMAGED = r"damaged or cut short: its (video|audio) decodes to [0-2]\.\d\d s of the 3\.00 s the file declares"
COVER = "no video stream (only an attached cover picture)"


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("media")
    return write_damaged(d / "damaged.mp4"), write_cover_art(d / "cover.mp4")


def test_extract_reports_partly_decodable_and_audio_only_files(bad_media, tmp_path):
    damaged, cover = bad_media
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label,split\ndamaged,cat,train\ncover,dog,train\n")
    out = tmp_path / "f.h5"
    code, stdout, stderr = invoke("extract", "--dataset", "folder", "--videos", damaged.parent, "--labels", labels,
                                  "--out", out, *EXTRACT, "--strict")
    assert code == 1 and "Traceback" not in stderr
    assert stdout.startswith(f"{out}: 0 videos extracted, 0 already cached, 2 failed;")
    assert re.search(rf"^  failed: {re.escape(str(damaged))}: {DAMAGED}$", stdout, re.M), stdout
    assert f"\n  failed: {cover}: {COVER}\n" in stdout + "\n"
    with FeatureCache(out) as c:
        assert len(c) == 0


@pytest.mark.parametrize("which", ["damaged", "cover"])
def test_localize_refuses_partly_decodable_and_audio_only_files(bad_media, checkpoint, tmp_path, which):
    path = bad_media[0] if which == "damaged" else bad_media[1]
    code, _, stderr = invoke("localize", "--video", path, "--checkpoint", checkpoint, "--out", tmp_path / "o",
                             "--device", "cpu", "--quiet")
    assert code == 1
    pattern = DAMAGED if which == "damaged" else re.escape(COVER)
    assert re.fullmatch(rf"avstm: error: {re.escape(str(path))}: {pattern}", error_line(stderr))
    assert not (tmp_path / "o" / "boxes.json").exists()


# ---- silently wrong inputs -------------------------------------------------------------------

def _nan_files(d: Path) -> dict[str, Path]:
    """One file per ground-truth format, each with one NaN coordinate among good boxes."""
    nan = float("nan")
    files = {
        "avstm": {"format": "avstm-boxes/1", "videos": {"a": {"width": 64, "height": 48, "frames": [
            {"time": 0.25, "boxes": [{"xyxy": [nan, 1, 20, 20]}]}, {"time": 0.75, "boxes": [{"xyxy": [1, 1, 20, 20]}]}]}}},
        "vggss": [{"file": "a", "class": "dog", "bbox": [[0.1, nan, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]]}],
        "coco": {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
                 "annotations": [{"image_id": 1, "bbox": [1, 1, nan, 10], "category_id": 1},
                                 {"image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 1}],
                 "categories": [{"id": 1, "name": "dog"}]},
        "audioset-instrument": {"a/0": {"bbox": [{"category": 1, "normbox": [0.1, 0.1, 0.2, nan]},
                                                 {"category": 1, "normbox": [0.1, 0.1, 0.2, 0.2]}]}},
    }
    out = {}
    for name, doc in files.items():
        out[name] = d / f"{name}.json"
        out[name].write_text(json.dumps(doc))  # json writes NaN, as numpy-made files do
    flickr = d / "flickr"
    flickr.mkdir()
    (flickr / "1.xml").write_text("<annotation><bbox><n>x</n><xmin>nan</xmin><ymin>1</ymin><xmax>9</xmax>"
                                  "<ymax>9</ymax></bbox><bbox><n>x</n><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                                  "<ymax>9</ymax></bbox></annotation>")
    out["flickr"] = flickr
    return out


def test_nan_boxes_are_counted_as_corrupt_in_every_format(tmp_path):
    from avstm.evaluate.annotations import AnnotationWarning, read_ground_truth

    for name, path in _nan_files(tmp_path).items():
        with pytest.warns(AnnotationWarning, match="1 corrupt box"):
            truth = read_ground_truth(path)
        assert truth.format.startswith(name.split("-")[0]) or name == "audioset-instrument"
        assert dict(truth.warnings.counts) == {"corrupt": 1}, name
        assert sum(len(b) for v in truth.values() for b in v.frames.values()) == 1, name


def test_evaluate_prints_the_corrupt_count_as_one_line(tmp_path):
    path = _nan_files(tmp_path)["avstm"]
    code, stdout, stderr = invoke("evaluate", "--baseline", "centre", "--annotations", path, "--out",
                                  tmp_path / "eval", "--quiet")
    assert code == 0, stdout + stderr
    assert f"avstm: warning: {path}: 1 corrupt box(es) repaired or dropped" in stderr.splitlines()
    assert "Warning:" not in stderr and ".py:" not in stderr  # not Python's raw warning format


@pytest.mark.parametrize("field, value", [("width", "1e308"), ("height", "100001")])
def test_absurd_width_or_height_is_refused_naming_the_field(tmp_path, field, value):
    path = tmp_path / "boxes.json"
    sizes = {"width": "64", "height": "48", field: value}
    path.write_text('{"format": "avstm-boxes/1", "videos": {"a": {"width": %s, "height": %s, "frames": '
                    '[{"time": 0.25, "boxes": [{"xyxy": [1, 1, 20, 20]}]}]}}}' % (sizes["width"], sizes["height"]))
    code, _, stderr = invoke("evaluate", "--baseline", "centre", "--annotations", path, "--out", tmp_path / "e",
                             "--quiet")
    shown = {"1e308": "1e+308", "100001": "100001"}[value]
    assert (code, error_line(stderr)) == (
        1, f"avstm: error: {path}: video 'a' {field}: {shown} is not a valid value (more than 100,000 pixels)")
    assert not (tmp_path / "e").exists()


def test_ave_warnings_are_one_line_each(videos, tmp_path):
    root = tmp_path / "ave"
    (root / "AVE").mkdir(parents=True)
    for i in (0, 1):
        shutil.copyfile(videos[0] / f"v{i}.mp4", root / "AVE" / f"v{i}.mp4")
    lines = "cat&v0&good&0&2\ndog&v1&good&1&1\n"  # v1: a span of zero length (as AVE's own file has one)
    for name in ("Annotations.txt", "trainSet.txt"):
        (root / name).write_text(lines)
    code, stdout, stderr = invoke("extract", "--dataset", "ave", "--root", root, "--out", tmp_path / "f.h5", *EXTRACT)
    assert code == 0, stdout + stderr
    assert stderr.splitlines() == [
        f"avstm: warning: {root / name}: 1 event span(s) of zero length; those videos have no event seconds"
        for name in ("Annotations.txt", "trainSet.txt")]


@pytest.mark.parametrize("vid", ["../../x", "/etc/passwd", "sub/../../x"])
def test_labels_id_outside_the_videos_folder_is_refused(videos, tmp_path, vid):
    labels = tmp_path / "labels.csv"
    labels.write_text(f"id,label\nv0,cat\n{vid},dog\n")
    code, _, stderr = invoke("extract", "--dataset", "folder", "--videos", videos[0], "--labels", labels,
                             "--out", tmp_path / "f.h5", *EXTRACT)
    assert (code, error_line(stderr)) == (1, f"avstm: error: {labels}:3: id {vid!r} names a file outside {videos[0]}")


def test_damaged_checkpoint_is_one_short_line(videos, checkpoint, tmp_path):
    bad = tmp_path / "cut.pt"
    data = checkpoint.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    code, _, stderr = invoke("localize", "--video", videos[0] / "v0.mp4", "--checkpoint", bad, "--out",
                             tmp_path / "o", "--device", "cpu", "--quiet")
    assert (code, error_line(stderr)) == (1, f"avstm: error: {bad}: damaged or cut short (torch's reader: "
                                             f"Invalid argument)")


# ---- generated datasets of any size ----------------------------------------------------------

def test_synth_refuses_a_size_that_leaves_a_split_empty(tmp_path):
    r = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "d"), "--videos", "2", "--quiet"])
    assert r.exit_code == 2
    assert "videos must be >= 3, one per split (train, val, test)" in r.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("n, seed", [(3, 0), (12, 7)])  # the seeded blocks alone leave val empty in both
def test_smallest_synth_datasets_extract(tmp_path, n, seed):
    """``--videos 12 --seed 7`` once wrote an empty valSet.txt that extract refused."""
    data = tmp_path / "d"
    code, stdout, stderr = invoke("synth", "--out", data, "--videos", n, "--seed", seed, "--seconds", "2",
                                  "--width", "64", "--height", "48", "--fps", "4", "--quiet")
    assert code == 0, stdout + stderr
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        assert (data / name).read_text().strip(), name
    out = tmp_path / "f.h5"
    code, stdout, stderr = invoke("extract", "--dataset", "ave", "--root", data, "--out", out, *EXTRACT)
    assert code == 0, stdout + stderr
    assert stdout.startswith(f"{out}: {n} videos extracted, 0 already cached, 0 failed;")
    with FeatureCache(out) as c:
        assert all(c.ids(split) for split in ("train", "val", "test"))
