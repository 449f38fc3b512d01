"""`avstm extract` end to end on real mp4 clips in the AVE layout (CPU, random audio weights)."""

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avstm.cache import FeatureCache
from avstm.cli import cli
from avstm.datasets import read_ave
from avstm.extract.config import ExtractConfig
from avstm.extract.features import audio_examples
from avstm.extract.pipeline import extract
from clips import write_clip

LITE = ["--visual-backbone", "efficientnet_lite0", "--audio-weights", "random", "--workers", "1",
        "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ave")
    (root / "AVE").mkdir()
    lines = {"train": ["Dog&v0&good&0&2", "Cat&v1&good&1&3"], "val": ["Dog&v2&good&0&3"],
             "test": ["Cat&v3&good&2&3", "Cat&gone&good&0&2"]}
    for i, secs in enumerate([2, 3, 3, 3]):
        write_clip(root / "AVE" / f"v{i}.mp4", seconds=secs, fps=24)
    allines = [ln for v in lines.values() for ln in v]
    (root / "Annotations.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\n" + "\n".join(allines) + "\n")
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        (root / name).write_text("\n".join(lines[split]) + "\n")
    return root


def run(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    print(result.output)
    return result


def test_cli_extract_writes_right_shapes_labels_splits_times(ave_root, tmp_path):
    out = tmp_path / "c.h5"
    r = run(["extract", "--dataset", "ave", "--root", str(ave_root), "--out", str(out)] + LITE)
    assert r.exit_code == 0
    assert "4 videos extracted, 0 already cached, 1 failed" in r.output
    assert "gone.mp4: no such file" in r.output
    with FeatureCache(out) as c:
        assert c.ids() == ["v0", "v1", "v2", "v3"]
        assert c.classes == ["Cat", "Dog"]
        assert [c.entry(i).split for i in c.ids()] == ["train", "train", "val", "test"]
        assert c.visual("v1").shape == (3, 4, 8, 8, 320) and c.audio("v1").shape == (3, 4, 6, 4, 512)
        assert c.visual("v0").shape[0] == 2
        assert c.labels("v1").tolist() == [2, 0, 0]  # Cat from second 1, background before
        assert c.labels("v3").tolist() == [2, 2, 0]
        assert c.entry("v2").label == 1
        np.testing.assert_allclose(c.times("v1")[1], [1.125, 1.375, 1.625, 1.875])
        assert all(np.isfinite(c.visual(i)).all() for i in c.ids())
        cfg = c.config
    assert cfg["visual_backbone"] == "efficientnet_lite0" and cfg["visual_channels"] == 320
    assert cfg["visual_tap"] == "blocks" and cfg["frame_size"] == 256 and cfg["fps"] == 4
    assert len(cfg["visual_weights_sha"]) >= 16 and cfg["sample_rate"] == 16000
    with h5py.File(out) as f:
        assert f.attrs["avstm_version"] and json.loads(f.attrs["classes"]) == ["Cat", "Dog"]
    # a re-run over a complete cache extracts nothing and keeps the file
    mtime = out.stat().st_mtime_ns
    r = run(["extract", "--dataset", "ave", "--root", str(ave_root), "--out", str(out)] + LITE)
    assert "0 videos extracted, 4 already cached" in r.output and out.stat().st_mtime_ns == mtime
    # --strict turns the missing video into a failing exit
    r = run(["extract", "--dataset", "ave", "--root", str(ave_root), "--out", str(out), "--strict"] + LITE)
    assert r.exit_code == 1


def test_the_stride_16_tap_caches_16x16_maps_that_verify(ave_root, tmp_path):
    from avstm.cache import verify_cache

    out = tmp_path / "fine.h5"
    cfg = ExtractConfig(visual_backbone="efficientnet_lite0", visual_tap="blocks16", audio_weights="random",
                        workers=0, batch_size=8)
    extract(read_ave(ave_root), out, config=cfg, progress=False)
    with FeatureCache(out) as c:
        assert c.visual("v1").shape == (3, 4, 16, 16, 320)
        assert (c.config["visual_tap"], c.config["visual_stride"]) == ("blocks16", 16)
    assert verify_cache(out) == []


def test_limit_then_resume_equals_one_run(ave_root, tmp_path):
    data = read_ave(ave_root)
    cfg = ExtractConfig(visual_backbone="efficientnet_lite0", audio_weights="random", workers=0, batch_size=8)
    extract(data, tmp_path / "one.h5", config=cfg, progress=False)
    first = extract(data, tmp_path / "two.h5", config=cfg.replace(limit=2), progress=False)
    assert first.done == 2
    second = extract(data, tmp_path / "two.h5", config=cfg, progress=False)
    assert (second.done, second.skipped) == (2, 2)
    with FeatureCache(tmp_path / "one.h5") as a, FeatureCache(tmp_path / "two.h5") as b:
        assert a.ids() == b.ids()
        for i in a.ids():
            np.testing.assert_array_equal(a.visual(i), b.visual(i))
            np.testing.assert_array_equal(a.audio(i), b.audio(i))


def test_resume_with_other_backbone_is_refused(ave_root, tmp_path):
    out = tmp_path / "c.h5"
    run(["extract", "--dataset", "ave", "--root", str(ave_root), "--out", str(out), "--limit", "1"] + LITE)
    r = run(["extract", "--dataset", "ave", "--root", str(ave_root), "--out", str(out), "--fps", "2"] + LITE)
    assert r.exit_code == 1 and "fps: 4 in the file, 2 now" in r.output


def test_random_resnet152_features_are_finite_2048_channels(ave_root, tmp_path):
    """Random-init ResNet-152 gives ~1e8 activations: float16 storage must stay finite."""
    data = read_ave(ave_root)
    data = type(data)(items=data.items[:1], classes=data.classes)
    cfg = ExtractConfig(visual_weights="random", audio_weights="random", workers=0, batch_size=8)
    res = extract(data, tmp_path / "r.h5", config=cfg, progress=False)
    assert res.done == 1
    with FeatureCache(tmp_path / "r.h5") as c:
        v = c.visual("v0")
        assert v.shape == (2, 4, 8, 8, 2048) and np.isfinite(v).all()
        assert np.abs(v).max() > 1e5  # the scale survived the float16 round trip


def test_audio_examples_centred_on_frame_times():
    sr = 16000
    wave = np.zeros(3 * sr, np.float32)
    wave[int(1.5 * sr) - 100:int(1.5 * sr) + 100] = 1.0  # a click at 1.5 s
    ex = audio_examples(wave, np.array([0.5, 1.5, 2.5]))
    assert ex.shape == (3, 96, 64)
    energy = ex.mean(axis=2)
    assert energy[1].argmax() in (46, 47, 48)  # the click sits in the middle of its example
    assert energy[1].max() > energy[0].max() + 3


def test_the_extraction_path_scales_frames_as_the_backbone_was_trained():
    # the frames that reach the network in extract (launch/collect) and in localize (visual) are
    # (x / 255 - mean) / std with the backbone's own constants: a missing or wrong scaling
    # changes every map by far more than float tolerance
    from avstm.extract.backbones import VISUAL_BACKBONES
    from avstm.extract.features import FeatureExtractor

    ex = FeatureExtractor(ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights="random",
                                        audio_weights="random", device="cpu", batch_size=4))
    spec = VISUAL_BACKBONES["efficientnet_lite0"]
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    x = frames.permute(0, 3, 1, 2).double() / 255.0
    x = (x - torch.tensor(spec.mean, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(spec.std, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.inference_mode():
        want = ex.visual_net(x.float()).permute(0, 2, 3, 1).numpy()  # (3, 2, 2, C_v)
        unscaled = ex.visual_net(frames.permute(0, 3, 1, 2).float() / 255.0).permute(0, 2, 3, 1).numpy()
    # random-init maps are tiny (~1e-8): tolerances relative to their scale, not absolute ones
    scale = np.abs(want).max()
    assert scale > 0 and np.abs(want - unscaled).max() > 0.05 * scale  # the check can see a fault
    launched, _ = ex.collect(ex.launch(frames, torch.zeros(3, 96, 64)))
    for got in (launched.numpy(), ex.visual(frames)):
        assert np.abs(got - want).max() < 1e-4 * scale


def test_a_bug_in_decoding_stops_the_run_instead_of_failing_each_video(ave_root, tmp_path, monkeypatch):
    from avstm import media

    def broken(*args, **kwargs):
        raise TypeError("a programming error")

    monkeypatch.setattr(media, "decode", broken)
    config = ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights="random",
                           audio_weights="random", workers=0, device="cpu")
    with pytest.raises(TypeError, match="a programming error"):
        extract(read_ave(ave_root), tmp_path / "c.h5", config=config, progress=False)


def test_a_video_with_non_finite_features_is_a_failure_not_done(ave_root, tmp_path):
    # backbone weights with a NaN: every visual map is NaN. The cache writer (the one check of
    # finite features) refuses each video, and the run counts them as failed, not extracted
    from avstm.extract import efficientnet_lite

    sd = efficientnet_lite.EfficientNetLite0().state_dict()
    first = next(k for k, v in sd.items() if v.dim() == 4)  # the stem convolution
    sd[first] = torch.full_like(sd[first], float("nan"))
    torch.save(sd, tmp_path / "nan.pt")
    config = ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights=str(tmp_path / "nan.pt"),
                           audio_weights="random", frame_size=64, fps=2, workers=0, device="cpu")
    result = extract(read_ave(ave_root), tmp_path / "c.h5", config=config, progress=False)
    assert (result.done, result.frames) == (0, 0)
    reasons = {vid: reason for vid, _, reason in result.failed}
    assert sorted(reasons) == ["gone", "v0", "v1", "v2", "v3"]
    assert all(reasons[v] == "visual features hold inf or NaN; not cached" for v in ("v0", "v1", "v2", "v3"))
    assert "0 videos extracted, 0 already cached, 5 failed" in result.summary()
    with FeatureCache(tmp_path / "c.h5") as c:
        assert c.ids() == []
