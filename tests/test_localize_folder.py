"""``avstm localize --videos``: many real clips with one model, a broken file among them, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avstm.cli import cli
from avstm.errors import AnnotationError
from avstm.localize import run as localize_run
from avstm.localize.folder import list_videos
from clips import tiny_checkpoint, write_clip

REPO = Path(__file__).resolve().parents[1]


def frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 80, size=(n, 96, 128, 3), dtype=np.uint8)
    out[:, 30:70, 40:90] = (230, 60, 40)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    videos = root / "videos"
    videos.mkdir()
    write_clip(videos / "a.mp4", frames(24, 0), fps=12)
    write_clip(videos / "b.mp4", frames(36, 1), fps=12)
    write_clip(videos / "mute.mp4", frames(12, 2), fps=12, audio_stream=False)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (videos / "notes.txt").write_text("not a video\n")
    return {"root": root, "videos": videos, "ckpt": tiny_checkpoint(root / "model.pt")}


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(r["video"]).stem: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def folder_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder_out")
    loads = []
    real = localize_run.load_localize_model
    mp = pytest.MonkeyPatch()
    mp.setattr(localize_run, "load_localize_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    try:
        r = CliRunner().invoke(cli, ["localize", "--videos", str(world["videos"]), "--checkpoint",
                                     str(world["ckpt"]), "--out", str(out), "--device", "cpu",
                                     "--quiet"], catch_exceptions=False)
    finally:
        mp.undo()
    return out, r, loads


def test_every_good_video_is_done_with_one_model_load(folder_run):
    out, r, loads = folder_run
    assert r.exit_code == 0, r.output
    assert len(loads) == 1
    for name in ("a", "b", "mute"):
        assert (out / name / "boxes.json").is_file() and (out / name / "overlay.mp4").is_file()
    assert not (out / "broken").exists()
    assert "3 done, 0 kept, 1 failed" in r.stdout


def test_the_broken_file_is_listed_in_the_summary_and_the_failures_file(folder_run):
    out, r, _ = folder_run
    rows = read_summary(out / "summary.csv")
    assert rows["broken"]["status"] == "failed" and "broken.mp4" in rows["broken"]["error"]
    failures = (out / "failures.txt").read_text().splitlines()
    assert len(failures) == 1 and "broken.mp4" in failures[0]
    assert [line for line in r.stderr.splitlines() if "failed" in line] == [f"avstm: failed: {failures[0]}"]


def test_summary_rows_agree_with_each_videos_boxes_json(folder_run):
    out, _, _ = folder_run
    rows = read_summary(out / "summary.csv")
    assert list(rows) == ["a", "b", "broken", "mute"]  # the folder's videos, sorted; notes.txt skipped
    for name, seconds in (("a", 2.0), ("b", 3.0), ("mute", 1.0)):
        row, doc = rows[name], json.loads((out / name / "boxes.json").read_text())
        assert float(row["duration"]) == pytest.approx(seconds, abs=0.05)
        assert int(row["boxes"]) == sum(len(f["boxes"]) for f in doc["frames"])
        sounding = sum(f["state"] == "sounding" for f in doc["frames"]) / 4
        assert float(row["sounding_seconds"]) == pytest.approx(sounding)
        assert row["event"] in ("beep", "hum", "background", "no audio") and row["status"] == "done"
    assert rows["mute"]["has_audio"] == "False" and rows["mute"]["event"] == "no audio"
    assert rows["mute"]["boxes"] == "0" and float(rows["mute"]["sounding_seconds"]) == 0.0


def test_a_rerun_keeps_complete_folders(world, folder_run):
    out, _, _ = folder_run
    before = (out / "a" / "boxes.json").stat().st_mtime_ns
    r = CliRunner().invoke(cli, ["localize", "--videos", str(world["videos"]), "--checkpoint",
                                 str(world["ckpt"]), "--out", str(out), "--device", "cpu", "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and "0 done, 3 kept, 1 failed" in r.stdout, r.output
    assert (out / "a" / "boxes.json").stat().st_mtime_ns == before


def test_a_list_file_names_videos_relative_to_itself(world, tmp_path):
    listing = world["videos"] / "list.txt"
    listing.write_text("# two of them\nb.mp4\n\nmute.mp4\n")
    try:
        assert [p.name for p in list_videos(listing)] == ["b.mp4", "mute.mp4"]
    finally:
        listing.unlink()


def test_videos_sharing_a_stem_are_refused(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"1")
    (tmp_path / "x.mkv").write_bytes(b"1")
    with pytest.raises(AnnotationError, match="share the output folder x/"):
        list_videos(tmp_path)


def test_killed_and_rerun_it_resumes(world, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(5):
        write_clip(videos / f"v{i}.mp4", frames(75, 10 + i), fps=25, width=320, height=240)
    out = tmp_path / "out"
    args = ["localize", "--videos", str(videos), "--checkpoint", str(world["ckpt"]), "--out", str(out),
            "--device", "cpu", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", "from avstm.cli import main; main()", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "v0" / "boxes.json").exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first video"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    first = (out / "v0" / "boxes.json").stat().st_mtime_ns
    done_at_kill = sum((out / f"v{i}" / "boxes.json").exists() for i in range(5))
    assert done_at_kill < 5
    (out / "v4").mkdir(exist_ok=True)  # as a kill in the middle of v4's overlay would leave it
    (out / "v4" / "overlay.mp4.tmp-4194303").write_bytes(b"half an mp4")  # a pid that is gone
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = read_summary(out / "summary.csv")
    assert rows["v0"]["status"] == "kept" and (out / "v0" / "boxes.json").stat().st_mtime_ns == first
    assert all(rows[f"v{i}"]["status"] in ("kept", "done") for i in range(5))
    assert sum(row["status"] == "done" for row in rows.values()) == 5 - done_at_kill
    assert not list(out.rglob("*.tmp-*"))  # what the killed run left half-written is gone
