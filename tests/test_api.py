"""The Python API: a tiny ``avstm train`` run, then ``avstm.load`` and ``model.localize``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import avstm
from avstm.cli import cli
from avstm.datasets import Dataset, VideoItem
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import extract
from avstm.localize.run import LocalizeConfig, load_localize_model, localize
from clips import tone, write_clip

CLASSES = ["beep", "hum"]


def scene(n: int, colour, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(n, 96, 128, 3), dtype=np.uint8)
    frames[:, 30:70, 40:90] = colour
    return frames


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Six real clips of two classes, a real Lite0 + VGGish (random weights) cache and two
    epochs of ``avstm train``."""
    root = tmp_path_factory.mktemp("api")
    items = []
    for i in range(6):
        c = i % 2
        path = write_clip(root / f"v{i}.mp4", scene(24, [(230, 60, 40), (40, 60, 230)][c], i), fps=12,
                          audio=tone(2.0, [440.0, 1320.0][c]))
        items.append(VideoItem(id=f"v{i}", path=str(path), label=CLASSES[c], split="val" if i >= 4 else "train",
                               segments=((0.0, math.inf, CLASSES[c]),)))
    cache = root / "cache.h5"
    ecfg = ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights="random", audio_weights="random",
                         workers=0, dtype="float32", device="cpu")
    assert extract(Dataset(items=items, classes=CLASSES), cache, config=ecfg, progress=False).done == 6
    out = root / "run"
    r = CliRunner().invoke(cli, ["train", "--features", str(cache), "--out", str(out), "--epochs", "2",
                                 "--batch-size", "2", "--workers", "0", "--device", "cpu", "--quiet",
                                 "--dim", "32", "--hidden", "32"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return {"root": root, "best": out / "best.pt", "clip": root / "v0.mp4"}


def test_load_and_localize_give_arrays(run):
    model = avstm.load(run["best"], device="cpu")
    assert model.classes == CLASSES
    result = model.localize(run["clip"])
    n = 8  # 2 s at the trained 4 fps
    assert result.maps.shape == (n, 8, 8) and result.maps.dtype == np.float32
    assert result.times.shape == (n,) and result.class_ids.shape == (n,)
    assert result.probabilities.shape == (n, len(CLASSES) + 1)
    assert set(result.class_ids.tolist()) <= {0, 1, 2}
    boxes = result.boxes
    assert boxes.ndim == 2 and boxes.shape[1] == 6 and len(boxes) == sum(len(f.boxes) for f in result.frames)
    if len(boxes):
        assert set(boxes[:, 0].astype(int)) <= set(range(n))
        assert (boxes[:, 1:5] >= 0).all() and (boxes[:, [1, 3]] <= 128).all() and (boxes[:, [2, 4]] <= 96).all()
        assert ((boxes[:, 5] > 0) & (boxes[:, 5] <= 1)).all()


def test_the_api_equals_the_library_functions(run):
    cfg = LocalizeConfig(device="cpu")
    direct = localize(load_localize_model(run["best"], config=cfg), run["clip"], config=cfg, progress=False)
    api = avstm.load(run["best"], device="cpu").localize(run["clip"])
    np.testing.assert_array_equal(api.maps, direct.maps)
    np.testing.assert_array_equal(api.class_ids, direct.class_ids)


def test_options_override_and_out_writes_the_folder(run, tmp_path):
    model = avstm.load(run["best"], device="cpu")
    result = model.localize(run["clip"], out=tmp_path, max_boxes=1, save_maps=True)
    assert all(len(f.boxes) <= 1 for f in result.frames)
    doc = json.loads((tmp_path / "boxes.json").read_text())
    assert doc["config"]["max_boxes"] == 1 and len(doc["frames"]) == len(result.frames)
    assert (tmp_path / "overlay.mp4").is_file() and (tmp_path / "maps.npz").is_file()


def test_load_time_options_cannot_change_per_video(run):
    model = avstm.load(run["best"], device="cpu")
    with pytest.raises(ValueError, match="device are chosen when the model is loaded"):
        model.localize(run["clip"], device="cuda")
