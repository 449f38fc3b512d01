"""Crash safety of ``avstm extract`` and the ``avstm cache`` commands.

``avstm extract`` runs as a real process and is killed with SIGKILL at several points (after
finished parts, while a resume has closed new parts and builds the next, with a join a dead run
left behind); each run resumes the last, the videos of every part closed before a kill are not
computed again, and the final cache must equal an uninterrupted run's (ids, arrays,
attributes). Small parts (the writer's ``part_videos`` default set to 1 or 2 in the child) make
the points between finished parts reachable with a handful of tiny clips.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avstm.cache import CacheWriter, FeatureCache, VideoRecord, verify_cache
from avstm.cli import cli
from avstm.datasets import read_folder
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import extract
from clips import index_frames, write_labelled_folder

OPTIONS = dict(visual_backbone="efficientnet_lite0", visual_weights="imagenet", audio_weights="random",
               frame_size=64, fps=2, device="cpu", workers=0, batch_size=1)
# batch_size 1: every video is computed alone, so a resumed run gives bit-identical features
# (with larger batches the neighbours change between runs and CPU kernels round differently)
CLI_OPTIONS = [a for k, v in OPTIONS.items() for a in (f"--{k.replace('_', '-')}", str(v))] + ["--quiet"]
VIDEOS = 6
CHILD = ("import sys, avstm.cache as c\n"
         "c.CacheWriter.__init__.__kwdefaults__['part_videos'] = int(sys.argv[1])\n"
         "from avstm.cli import main\n"
         "main(sys.argv[2:])\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    clips = [(index_frames(8 * (1 + i % 2) + 3 * i)[3 * i:],  # 1 or 2 s, other content per video
              "cat" if i % 3 else "dog", ("train", "val", "test")[i % 3]) for i in range(VIDEOS)]
    return write_labelled_folder(tmp_path_factory.mktemp("crash"), clips, fps=8)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """An uninterrupted run (in this process, the same config as the CLI's)."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    result = extract(read_folder(*data), out, config=ExtractConfig(**OPTIONS), progress=False)
    assert result.done == VIDEOS and not result.failed
    return out


def start(data, out: Path, part_videos: int, workers: int = 0) -> subprocess.Popen:
    videos, labels = data
    options = [str(workers) if a == "0" and CLI_OPTIONS[i - 1] == "--workers" else a for i, a in enumerate(CLI_OPTIONS)]
    args = ["extract", "--dataset", "folder", "--videos", str(videos), "--labels", str(labels),
            "--out", str(out), *options]
    return subprocess.Popen([sys.executable, "-c", CHILD, str(part_videos), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 240.0) -> bool:
    """SIGKILL ``proc`` as soon as ``condition()`` holds; False if it ended (or timed out) first."""
    t_end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < t_end:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    return False


def finished_parts(out: Path) -> int:
    parts = out.with_name(out.name + ".parts")
    try:
        return sum(1 for p in parts.iterdir() if p.suffix == ".h5")
    except FileNotFoundError:
        return 0


def part_ids(out: Path) -> set[str]:
    """The ids of the videos in the finished parts of ``out``."""
    parts = out.with_name(out.name + ".parts")
    ids: set[str] = set()
    for p in sorted(parts.glob("*.h5")) if parts.exists() else []:
        with h5py.File(p, "r") as f:
            ids |= {str(g.attrs["id"]) for g in f["videos"].values() if g.attrs.get("complete")}
    return ids


def processes_writing(out: Path) -> list[int]:
    """Pids of live processes whose command line names ``out`` (a killed run's decoding workers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(out).encode() in (proc / "cmdline").read_bytes():
                if (proc / "stat").read_text().split(") ")[-1][0] != "Z":
                    pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def assert_opens_and_holds_no_partial_entry(out: Path) -> None:
    if out.exists():
        with h5py.File(out, "r") as f:
            assert all(g.attrs.get("complete", False) for g in f["videos"].values())
        assert [p for p in verify_cache(out) if "not joined" not in p] == []


def assert_same_cache(got: Path, want: Path) -> None:
    with h5py.File(got, "r") as a, h5py.File(want, "r") as b:
        assert all(np.abs(g[n][()]).max() > 0.01 for g in b["videos"].values() for n in ("visual", "audio"))
        for k in ("format", "config", "config_sha256", "classes"):
            assert a.attrs[k] == b.attrs[k], k
        assert sorted(a["videos"]) == sorted(b["videos"])
        for key in b["videos"]:
            ga, gb = a["videos"][key], b["videos"][key]
            assert dict(ga.attrs) == dict(gb.attrs), key
            for name in ("times", "labels"):
                np.testing.assert_array_equal(ga[name][()], gb[name][()])
            for name in ("visual", "audio"):
                assert ga[name].dtype == gb[name].dtype
                np.testing.assert_array_equal(ga[name][()], gb[name][()])


def test_killed_runs_resume_to_the_uninterrupted_cache(data, reference, tmp_path):
    out = tmp_path / "cache.h5"
    # 1: killed after its first finished part (parts of one video)
    assert kill_when(start(data, out, 1), lambda: finished_parts(out) >= 1)
    assert not out.exists() and finished_parts(out) >= 1
    parts = out.with_name("cache.h5.parts")
    assert verify_cache(out) == [f"{out}: no such cache", f"{out}: {finished_parts(out)} finished parts in {parts} "
                                 f"are not joined (an interrupted run; run avstm extract again to finish it)"]
    first = part_ids(out)
    # 2: the resume (parts of 2 videos, a decoding worker process) is killed once it has closed a
    # part of its own, while it computes the next
    assert kill_when(start(data, out, 2, workers=1), lambda: finished_parts(out) > len(first))
    assert_opens_and_holds_no_partial_entry(out)
    kept = part_ids(out)
    assert first < kept and len(kept) < VIDEOS
    t_end = time.monotonic() + 20  # the orphaned worker notices its parent is gone (torch checks every 5 s)
    while processes_writing(out) and time.monotonic() < t_end:
        time.sleep(0.2)
    assert processes_writing(out) == []
    # a join that a killed run left unfinished: a half-written file under the temporary name
    stale = out.with_name(out.name + ".tmp-424242")
    stale.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    # 3: the last resume finishes
    proc = start(data, out, 32)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    # the videos of every part closed before the kills are not computed again
    assert f"{VIDEOS - len(kept)} videos extracted, {len(kept)} already cached, 0 failed" in stdout
    assert verify_cache(out) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["cache.h5", "cache.h5.lock"]
    assert_same_cache(out, reference)


def test_second_extract_on_the_same_output_is_refused(data, tmp_path):
    out = tmp_path / "cache.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom avstm.cache import CacheWriter\n"
         "w = CacheWriter(sys.argv[1], config={}, classes=['cat'])\nprint('locked', flush=True)\ntime.sleep(120)",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        videos, labels = data
        result = CliRunner().invoke(cli, ["extract", "--dataset", "folder", "--videos", str(videos), "--labels",
                                          str(labels), "--out", str(out), *CLI_OPTIONS], catch_exceptions=False)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"avstm: error: {out}: another avstm process (pid {holder.pid}) is writing "
                                     f"this cache; wait for it or choose another --out")
    assert not out.exists()


# ---- avstm cache verify / merge ----------------------------------------------------------------

def planted(reference: Path, tmp_path: Path, plant) -> Path:
    bad = tmp_path / "bad.h5"
    shutil.copyfile(reference, bad)
    with h5py.File(bad, "r+") as f:
        plant(f)
    return bad


def verify_lines(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["cache", "verify", str(path)], catch_exceptions=False)
    return result.exit_code, result.stdout.splitlines()


def test_verify_accepts_a_good_cache(reference):
    assert verify_lines(reference) == (0, [f"{reference}: ok"])


def test_verify_finds_a_missing_completion_mark(reference, tmp_path):
    bad = planted(reference, tmp_path, lambda f: f["videos/v1"].attrs.__delitem__("complete"))
    assert verify_lines(bad) == (1, [f"{bad}: videos/v1: no completion mark (a partial entry that readers ignore)"])


def _nan(f):
    ds = f["videos/v2/visual"]
    x = ds[()]
    x[0, 1, 0, 0, 5] = np.nan
    ds[...] = x


def test_verify_finds_a_nan(reference, tmp_path):
    bad = planted(reference, tmp_path, _nan)
    assert verify_lines(bad) == (1, [f"{bad}: videos/v2/visual: 1 values are inf or NaN"])


def _wrong_shape(f):
    g = f["videos/v3"]
    audio = g["audio"][()]
    del g["audio"]
    g.create_dataset("audio", data=audio[:, :, :, :2])


def test_verify_finds_a_wrong_shape(reference, tmp_path):
    bad = planted(reference, tmp_path, _wrong_shape)
    code, lines = verify_lines(bad)
    assert (code, lines) == (1, [f"{bad}: videos/v3/audio: shape (2, 2, 6, 2, 512), expected (2, 2, 6, 4, 512) "
                                 f"from the config"])


def _changed_config(f):
    cfg = json.loads(f.attrs["config"])
    cfg["fps"] = 4
    f.attrs["config"] = json.dumps(cfg, sort_keys=True)


def test_verify_finds_a_changed_config_attribute(reference, tmp_path):
    bad = planted(reference, tmp_path, _changed_config)
    code, lines = verify_lines(bad)
    assert code == 1
    assert lines[0] == f"{bad}: config_sha256 does not match the config attribute (edited or damaged)"
    assert f"{bad}: videos/v0/times: shape (1, 2), expected (1, 4) from the config" in lines


def test_verify_reports_a_file_that_is_not_hdf5(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    code, lines = verify_lines(bad)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"{bad}: not a readable HDF5 file")


def _synthetic(path: Path, ids: list[str]) -> None:
    with CacheWriter(path, config={"fps": 2, "frame_size": 64, "visual_channels": 3, "dtype": "float32"},
                     classes=["cat"]) as w:
        for i in ids:
            w.write(VideoRecord(id=i, visual=np.ones((1, 2, 2, 2, 3), np.float32),
                                audio=np.ones((1, 2, 6, 4, 512), np.float32), times=np.array([[0.25, 0.75]]),
                                labels=np.array([0]), label=0, split="train", source=f"{i}.mp4", duration=1.0))


def test_merge_joins_caches(tmp_path):
    _synthetic(tmp_path / "a.h5", ["x", "y"])
    _synthetic(tmp_path / "b.h5", ["y", "z"])
    out = tmp_path / "m.h5"
    result = CliRunner().invoke(cli, ["cache", "merge", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"),
                                      "-o", str(out)], catch_exceptions=False)
    assert (result.exit_code, result.stdout) == (0, f"{out}: 3 videos from 2 caches\n")
    assert verify_cache(out) == []
    with FeatureCache(out) as cache:
        assert cache.ids() == ["x", "y", "z"]
