"""Scaling out extraction: `avstm extract` under torchrun (two CPU processes, one shard each,
rank 0 merges) gives the cache a single process gives; `avstm cache merge` joins caches."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from avstm.cache import FeatureCache
from avstm.cli import cli
from avstm.datasets import read_folder
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import extract
from clips import write_clip

CFG = ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights="random", audio_weights="random",
                    device="cpu", batch_size=8, workers=0)
OPTIONS = ["--visual-backbone", "efficientnet_lite0", "--visual-weights", "random", "--audio-weights",
           "random", "--device", "cpu", "--batch-size", "8", "--workers", "0", "--quiet"]
VIDEO_ATTRS = ("id", "label", "split", "source", "duration", "has_audio")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rows = []
    for i, (secs, label, split) in enumerate([(2, "dog", "train"), (1, "cat", "train"), (2, "cat", "val"),
                                              (1, "dog", "test"), (2, "dog", "train")]):
        write_clip(root / f"v{i}.mp4", seconds=secs, fps=12, width=64, height=48)
        rows.append(f"v{i},{label},{split}")
    (root / "labels.csv").write_text("id,label,split\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def single(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "cache.h5"
    result = extract(read_folder(folder, folder / "labels.csv"), out, config=CFG, progress=False)
    assert result.done == 5 and not result.failed
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded(folder, tmp_path_factory):
    """The same extraction by `python -m torch.distributed.run --nproc_per_node 2 -m avstm.cli extract`."""
    out = tmp_path_factory.mktemp("sharded") / "cache.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "avstm.cli", "extract", "--dataset", "folder", "--videos", str(folder),
           "--labels", str(folder / "labels.csv"), "--out", str(out)] + OPTIONS
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def _groups(path):
    with h5py.File(path, "r") as f:
        return {g.attrs["id"]: {k: g.attrs[k] for k in VIDEO_ATTRS} for g in f["videos"].values()}


def test_torchrun_cache_has_the_single_process_ids_and_video_attrs(single, sharded):
    assert _groups(sharded[0]) == _groups(single)


def test_torchrun_cache_has_the_single_process_root_attrs(single, sharded):
    with h5py.File(single, "r") as a, h5py.File(sharded[0], "r") as b:
        assert {k: a.attrs[k] for k in a.attrs} == {k: b.attrs[k] for k in b.attrs}


def test_torchrun_cache_arrays_equal_single_process(single, sharded):
    with FeatureCache(single) as a, FeatureCache(sharded[0]) as b:
        assert a.ids() == b.ids() == ["v0", "v1", "v2", "v3", "v4"]
        for i in a.ids():
            va, vb = a.visual(i), b.visual(i)
            assert va.shape == vb.shape
            np.testing.assert_allclose(vb, va, rtol=2e-3, atol=2e-3 * np.abs(va).max())
            np.testing.assert_allclose(b.audio(i), a.audio(i), rtol=2e-3, atol=1e-3)
            np.testing.assert_array_equal(b.times(i), a.times(i))
            np.testing.assert_array_equal(b.labels(i), a.labels(i))


def test_torchrun_splits_videos_by_rank_and_removes_the_shards(sharded):
    out, stdout = sharded
    # each rank reports its own share: rank 0 takes v0, v2, v4 and rank 1 takes v1, v3
    assert "3 videos extracted" in stdout and "2 videos extracted" in stdout
    # no shard (nor its lock) is left; the merge leaves the output's lock file, as one process does
    assert sorted(p.name for p in out.parent.iterdir()) == ["cache.h5", "cache.h5.lock"]


def test_cache_merge_cli_joins_disjoint_caches(folder, single, tmp_path):
    data = read_folder(folder, folder / "labels.csv")
    halves = []
    for k, items in enumerate((data.items[:2], data.items[2:])):
        halves.append(tmp_path / f"half{k}.h5")
        extract(type(data)(items=items, classes=data.classes), halves[-1], config=CFG, progress=False)
    result = CliRunner().invoke(cli, ["cache", "merge", *map(str, halves), "--out", str(tmp_path / "m.h5")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with FeatureCache(tmp_path / "m.h5") as m, FeatureCache(single) as s:
        assert m.ids() == s.ids()
        np.testing.assert_allclose(m.visual("v3"), s.visual("v3"), rtol=2e-3,
                                   atol=2e-3 * np.abs(s.visual("v3")).max())
    assert _groups(tmp_path / "m.h5") == _groups(single)
