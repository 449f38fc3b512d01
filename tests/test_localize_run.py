"""``avstm localize`` end to end: real mp4 clips, a real cache, a real checkpoint, the CLI."""

from __future__ import annotations

import json
import math
import shutil
import threading

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avstm import media
from avstm.cache import FeatureCache
from avstm.cli import cli
from avstm.datasets import Dataset, VideoItem
from avstm.errors import CheckpointError, ConfigMismatch
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import extract
from avstm.localize import (LocalizeConfig, load_localize_model, localize, localize_cached,
                            map_key, write_result)
from avstm.localize.overlay import OverlayWriter
from avstm.localize.run import localize_to
from avstm.memnet.checkpoint import read_checkpoint, save_checkpoint
from avstm.memnet.model import ModelConfig, STMNet
from avstm.memnet.train import TrainConfig
from clips import tone as _tone, write_clip

W, H = 160, 120
CLASSES = ["beep", "hum"]


def _scene_frames(n: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8: a noisy background with a bright square moving across it."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 80, size=(n, H, W, 3), dtype=np.uint8)
    for i in range(n):
        x = 10 + (i * 3) % (W - 50)
        frames[i, 40:80, x:x + 40] = (230, 60, 40)
    return frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Clips, a cache of two of them (EfficientNet-Lite0 + random VGGish) and a checkpoint of a
    freshly initialised STMNet whose input normalisation comes from the cache."""
    root = tmp_path_factory.mktemp("localize")
    fps = 12
    clip = {}
    for name, seconds, hz in (("a", 3, 440.0), ("b", 2, 880.0), ("gone", 1, 440.0), ("long", 10, 440.0)):
        n = int(seconds * fps)
        clip[name] = write_clip(root / f"{name}.mp4", _scene_frames(n, len(clip)), fps=fps,
                                audio=_tone(seconds, hz))
    clip["short"] = write_clip(root / "short.mp4", _scene_frames(7, 9), fps=fps, audio=_tone(7 / fps, 440.0))
    clip["mute"] = write_clip(root / "mute.mp4", _scene_frames(12, 8), fps=fps, audio_stream=False)
    # a real-codec clip of odd length at 25 fps with 44.1 kHz stereo AAC: 83 frames, 3.32 s
    clip["odd"] = write_clip(root / "odd.mp4", _scene_frames(83, 5), fps=25, sample_rate=44100,
                             layout="stereo")
    items = [VideoItem(id=k, path=str(clip[k]), label=c, split="train", segments=((0.0, math.inf, c),))
             for k, c in (("a", "beep"), ("b", "hum"), ("gone", "beep"))]
    cache = root / "cache.h5"
    ecfg = ExtractConfig(visual_backbone="efficientnet_lite0", audio_weights="random", workers=0,
                         dtype="float32", device="cpu", batch_size=16)
    res = extract(Dataset(items=items, classes=CLASSES), cache, config=ecfg, progress=False)
    assert res.done == 3, res.summary()
    clip["gone"].unlink()  # its source is gone: the cached entry must still localize
    with FeatureCache(cache) as fc:
        stored = fc.config
        v = np.concatenate([fc.visual(i).reshape(-1, stored["visual_channels"]) for i in ("a", "b")])
        a = np.concatenate([fc.audio(i).reshape(-1, 512) for i in ("a", "b")])
    torch.manual_seed(0)
    net = STMNet(ModelConfig(visual_channels=stored["visual_channels"], num_classes=len(CLASSES) + 1,
                             dim=32, hidden=32))
    net.set_normalization(v.mean(0), v.std(0) + 1e-6, a.mean(0), a.std(0) + 1e-6)
    ckpt = save_checkpoint(root / "model.pt", net.eval(), train_config=TrainConfig().to_dict(),
                           classes=CLASSES, extract_config=stored, epoch=0)
    return {"root": root, "clip": clip, "cache": cache, "ckpt": ckpt}


@pytest.fixture(scope="module")
def model(world):
    return load_localize_model(world["ckpt"], config=LocalizeConfig(device="cpu"))


@pytest.fixture(scope="module")
def cli_run(world):
    """``avstm localize`` on the 10 s clip with --save-maps."""
    out = world["root"] / "out_cli"
    runner = CliRunner()
    r = runner.invoke(cli, ["localize", "--video", str(world["clip"]["long"]), "--checkpoint",
                            str(world["ckpt"]), "--out", str(out), "--device", "cpu", "--save-maps",
                            "--quiet", "--batch-size", "8"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "boxes.json").read_text())


def _decode_all(path):
    with av.open(str(path)) as c:
        has_audio = bool(c.streams.audio)
        rate = c.streams.video[0].average_rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames, has_audio, rate


# ---- the command on a 10 s clip -------------------------------------------------------------

def test_cli_boxes_json_has_one_entry_per_sampled_frame(cli_run):
    _, doc = cli_run
    want = media.frame_times(10.0, 4).reshape(-1)
    assert [f["time"] for f in doc["frames"]] == pytest.approx(want.tolist())
    assert doc["video"]["width"] == W and doc["video"]["height"] == H
    assert doc["video"]["has_audio"] is True and doc["video"]["fps"] == 4
    frame = doc["frames"][0]
    assert frame["class"] in CLASSES + ["background"] and 0.0 < frame["probability"] <= 1.0


def test_cli_overlay_decodes_with_audio_at_the_source_fps(cli_run):
    out, doc = cli_run
    frames, has_audio, rate = _decode_all(out / "overlay.mp4")
    assert len(frames) == 120 and frames[0].shape == (H, W, 3)  # every source frame of 10 s
    assert has_audio and rate == 12
    assert doc["overlay"]["maps"] == "held" and doc["overlay"]["frames"] == 120


def test_cli_overlay_draws_boxes_where_boxes_json_says(cli_run):
    out, doc = cli_run
    frames, _, _ = _decode_all(out / "overlay.mp4")
    checked = 0
    for entry in doc["frames"]:
        img = frames[int(entry["time"] * 12)]  # the source frame on screen at the sample time
        for box in entry["boxes"][:1]:  # the best box: its score label sits at its top-left
            x1, y1, x2, y2 = (int(round(v)) for v in box["xyxy"])
            if x2 - x1 < 8 or y2 - y1 < 8:
                continue
            right = img[(y1 + y2) // 2 - 2:(y1 + y2) // 2 + 3, x2 - 1]  # right edge, middle
            bottom = img[y2 - 1, (x1 + x2) // 2 - 2:(x1 + x2) // 2 + 3]  # bottom edge, middle
            assert np.median(right) > 200 and np.median(bottom) > 200, (entry["time"], box)
            checked += 1
    assert checked >= 5


def test_cli_save_maps_keys_are_id_at_time(cli_run):
    out, doc = cli_run
    with np.load(out / "maps.npz") as z:
        keys = sorted(z.files)
        assert z[keys[0]].shape == (8, 8)
    assert keys == sorted(map_key("long", f["time"]) for f in doc["frames"])


# ---- streaming --------------------------------------------------------------------------------

def test_streamed_maps_equal_batched_forward(world, model):
    """12 cached frames > K = 3 memory steps; chunks of 5 frames cut across seconds."""
    res = localize_cached(model, world["cache"], "a", config=LocalizeConfig(device="cpu", batch_size=5),
                          progress=False)
    with FeatureCache(world["cache"]) as fc:
        v = torch.from_numpy(fc.visual("a")).flatten(0, 1).permute(0, 3, 1, 2)[None]  # (1, T, C, 8, 8)
        a = torch.from_numpy(fc.audio("a")).flatten(0, 1).permute(0, 3, 1, 2)[None]  # (1, T, 512, 6, 4)
    with torch.no_grad():
        out = model.net(v, a)
    assert len(res.maps) == 12 > model.net.config.memory_length
    np.testing.assert_allclose(res.maps, out.maps[0].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.probabilities, out.logits[0].softmax(-1).numpy(), rtol=1e-4, atol=1e-6)


def test_video_and_cache_give_the_same_maps(world, model):
    """Decoding + backbones in localize match extract's features: the live maps of a video lie
    far closer to its cached maps than to another video's (a wrong video, frame, scaling or
    colour order in either path moves them by as much as a change of video)."""
    cfg = LocalizeConfig(device="cpu")
    live = localize(model, world["clip"]["b"], config=cfg, progress=False)
    cached = localize_cached(model, world["cache"], "b", config=cfg, progress=False)
    other = localize_cached(model, world["cache"], "a", config=cfg, progress=False)
    np.testing.assert_allclose(live.times, cached.times)
    n = len(cached.times)  # "a" is longer: its first n steps see the same causal memory length
    np.testing.assert_allclose(other.times[:n], cached.times)
    same = np.abs(live.maps - cached.maps).mean()
    apart = np.abs(other.maps[:n] - cached.maps).mean()
    assert apart > 0 and same < 0.01 * apart, (same, apart)
    np.testing.assert_array_equal(live.class_ids, cached.class_ids)


def test_one_decode_gives_the_model_its_samples_and_the_overlay_every_frame(world, model, tmp_path,
                                                                            monkeypatch):
    """localize_to feeds the overlay from the model's own decoder. With chunks of 4 samples at
    2 fps on a 10 s clip the overlay may hold only 6.5 s of frames: the run ends, the frames held never
    span more, the maps, classes and boxes are those of localize without an overlay, and the
    overlay holds every source frame, the same video as the overlay that decodes the source
    itself."""
    clip = world["clip"]["long"]
    cfg = LocalizeConfig(device="cpu", batch_size=4, fps=2)
    alone = localize(model, clip, config=cfg, progress=False)
    held, feed = [], OverlayWriter.feed

    def watched(self, t, frame):
        feed(self, t, frame)
        held.append(t - self._frames[0][0])

    monkeypatch.setattr(OverlayWriter, "feed", watched)
    done = {}
    worker = threading.Thread(target=lambda: done.update(
        result=localize_to(model, clip, tmp_path / "shared", config=cfg, progress=False)[0]), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the decode and the overlay wait on each other"
    shared = done["result"]
    span = (2 * 4 + 2) / 2 + 1.5  # shared_decode_span: 6.5 s of frames at most
    assert len(held) == 120 and max(held) <= span + 1e-6
    assert shared.overlay["decode"] == "shared with the model" and shared.overlay["frames"] == 120
    np.testing.assert_array_equal(shared.maps, alone.maps)
    np.testing.assert_array_equal(shared.class_ids, alone.class_ids)
    np.testing.assert_array_equal(shared.boxes, alone.boxes)
    assert shared.num_boxes > 0
    write_result(alone, tmp_path / "own", progress=False)  # the writer decodes the source itself
    own = json.loads((tmp_path / "own" / "boxes.json").read_text())["overlay"]
    assert own["decode"] == "own"
    a, b = _decode_all(tmp_path / "shared" / "overlay.mp4")[0], _decode_all(tmp_path / "own" / "overlay.mp4")[0]
    assert len(a) == len(b) == 120 and all((x == y).all() for x, y in zip(a, b))


def test_a_failing_model_stops_the_shared_decode_and_leaves_no_overlay(world, model, tmp_path,
                                                                       monkeypatch):
    """The backbones fail in the second chunk while the decoder waits to feed the overlay:
    the error comes out, nothing hangs, no overlay.mp4 is left."""
    calls = []

    def failing(frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise RuntimeError("backbone failed")
        return visual(frames)

    visual = model.extractor.visual
    monkeypatch.setattr(model.extractor, "visual", failing)
    done = {}

    def run():
        try:
            localize_to(model, world["clip"]["long"], tmp_path, progress=False,
                        config=LocalizeConfig(device="cpu", batch_size=2))
        except RuntimeError as e:
            done["error"] = str(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and done == {"error": "backbone failed"}
    assert not list(tmp_path.iterdir())


def test_an_overlay_that_fails_while_fed_gives_its_own_error(world, model, tmp_path, monkeypatch):
    """The overlay's encoder fails (a full disk) while the decoder feeds it: the run raises
    that error, not one about the decode, and leaves no file."""
    from avstm.errors import StorageError

    write, count = media.Mp4Writer.write, []

    def failing(self, image, format="rgb24"):
        count.append(1)
        if len(count) == 30:
            raise StorageError(tmp_path / "overlay.mp4", "no space left on the device")
        return write(self, image, format)

    monkeypatch.setattr(media.Mp4Writer, "write", failing)
    with pytest.raises(StorageError, match="no space left"):
        localize_to(model, world["clip"]["long"], tmp_path, progress=False,
                    config=LocalizeConfig(device="cpu", batch_size=2))
    assert not list(tmp_path.iterdir())


# ---- odd inputs -------------------------------------------------------------------------------

def test_clip_shorter_than_a_second_gives_one_second_of_frames(world, model):
    res = localize(model, world["clip"]["short"], config=LocalizeConfig(device="cpu"), progress=False)
    np.testing.assert_allclose(res.times, [0.125, 0.375, 0.625, 0.875])
    assert res.maps.shape == (4, 8, 8) and np.isfinite(res.maps).all()


@pytest.fixture(scope="module")
def mute_run(world):
    """``avstm localize`` on a 1 s clip without an audio stream."""
    out = world["root"] / "out_mute"
    r = CliRunner().invoke(cli, ["localize", "--video", str(world["clip"]["mute"]), "--checkpoint",
                                 str(world["ckpt"]), "--out", str(out), "--device", "cpu", "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "boxes.json").read_text()), r.stderr


def test_clip_without_audio_is_background_without_boxes(mute_run):
    _, doc, _ = mute_run
    assert doc["video"]["has_audio"] is False and len(doc["frames"]) == 4
    assert any("no audio stream" in w for w in doc["warnings"])
    assert all(f["state"] == "no audio" and f["class"] == "background" and f["boxes"] == []
               for f in doc["frames"])


def test_cli_warns_in_one_line_for_a_clip_without_audio(mute_run):
    _, _, stderr = mute_run
    warns = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warns) == 1 and "no audio stream" in warns[0]


def test_overlay_of_a_clip_without_audio_shows_the_no_audio_state_and_nothing_else(world, mute_run):
    from avstm.localize.overlay import QUIET_BACKGROUND

    out, _, _ = mute_run
    frames, has_audio, _ = _decode_all(out / "overlay.mp4")
    source, _, _ = _decode_all(world["clip"]["mute"])
    assert len(frames) == len(source) == 12 and not has_audio
    for img, src in zip(frames, source, strict=True):
        assert np.abs(img[1:4, 1:4].astype(int) - QUIET_BACKGROUND).max() < 16  # the quiet label
        below = np.abs(img[30:].astype(int) - src[30:]).mean()  # no heatmap, no box
        assert below < 6.0  # the re-encode of the noisy scene alone differs by about 2.3


def test_overlay_of_an_odd_length_25_fps_clip_has_every_frame_and_the_source_audio(world, tmp_path):
    clip = world["clip"]["odd"]
    r = CliRunner().invoke(cli, ["localize", "--video", str(clip), "--checkpoint", str(world["ckpt"]),
                                 "--out", str(tmp_path), "--device", "cpu", "--quiet", "--colorbar",
                                 "--frames", str(tmp_path / "png")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    src, out = media.probe(clip), media.probe(tmp_path / "overlay.mp4")
    frames, _, rate = _decode_all(tmp_path / "overlay.mp4")
    assert len(frames) == 83 and rate == 25
    assert abs(out.duration - src.duration) <= 1 / 25 and src.duration == pytest.approx(3.32, abs=0.05)
    with av.open(str(clip)) as a, av.open(str(tmp_path / "overlay.mp4")) as b:
        sa, sb = a.streams.audio[0].codec_context, b.streams.audio[0].codec_context
        assert (sb.name, sb.sample_rate, sb.channels) == (sa.name, sa.sample_rate, sa.channels) == ("aac", 44100, 2)
    doc = json.loads((tmp_path / "boxes.json").read_text())
    assert len(doc["frames"]) == 12 and doc["video"]["fps"] == 4  # the model ran at its trained fps
    assert doc["overlay"]["audio"].startswith("copied")
    assert len(list((tmp_path / "png").glob("odd_*.png"))) == 12


def test_fps_other_than_trained_warns(world, tmp_path):
    r = CliRunner().invoke(cli, ["localize", "--video", str(world["clip"]["short"]), "--checkpoint",
                                 str(world["ckpt"]), "--out", str(tmp_path), "--device", "cpu",
                                 "--quiet", "--fps", "2", "--no-overlay"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    warns = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warns) == 1 and "--fps 2 differs from the 4 fps" in warns[0]


def test_rerun_without_overlay_or_maps_removes_the_old_ones(world, tmp_path):
    args = ["localize", "--video", str(world["clip"]["short"]), "--checkpoint", str(world["ckpt"]),
            "--out", str(tmp_path), "--device", "cpu", "--quiet"]
    assert CliRunner().invoke(cli, args + ["--save-maps"], catch_exceptions=False).exit_code == 0
    assert (tmp_path / "overlay.mp4").is_file() and (tmp_path / "maps.npz").is_file()
    assert CliRunner().invoke(cli, args + ["--no-overlay"], catch_exceptions=False).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json"]


def test_background_frames_get_no_boxes(world, model):
    res = localize(model, world["clip"]["a"], config=LocalizeConfig(device="cpu"), progress=False)
    states = {f.state for f in res.frames}
    assert states <= {"sounding", "background"}
    for f in res.frames:
        assert (f.state == "sounding") == (f.class_name != "background")
        if f.state == "background":
            assert f.boxes == []


def test_fps_option_changes_the_sampling(world, model):
    res = localize(model, world["clip"]["short"], config=LocalizeConfig(device="cpu", fps=2), progress=False)
    np.testing.assert_allclose(res.times, [0.25, 0.75])


# ---- cached features --------------------------------------------------------------------------

def test_cli_features_id_writes_boxes_and_overlay_from_source(world, tmp_path):
    r = CliRunner().invoke(cli, ["localize", "--features", str(world["cache"]), "--id", "b",
                                 "--checkpoint", str(world["ckpt"]), "--out", str(tmp_path),
                                 "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "boxes.json").read_text())
    assert len(doc["frames"]) == 8 and doc["video"]["features"] == str(world["cache"])
    assert (doc["video"]["width"], doc["video"]["height"]) == (W, H)
    frames, has_audio, _ = _decode_all(tmp_path / "overlay.mp4")
    assert len(frames) == 24 and has_audio  # 2 s of source frames at 12 fps


def test_cached_video_without_source_gives_no_overlay_and_a_warning(world, model, tmp_path):
    res = localize_cached(model, world["cache"], "gone", config=LocalizeConfig(device="cpu"), progress=False)
    written = write_result(res, tmp_path, progress=False)
    assert written.overlay is None and not (tmp_path / "overlay.mp4").exists()
    doc = json.loads(written.boxes.read_text())
    assert len(doc["frames"]) == 4 and any("not found" in w for w in doc["warnings"])
    assert (doc["video"]["width"], doc["video"]["height"]) == (256, 256)


@pytest.mark.parametrize("field, value", [("visual_tap", "head"), ("dtype", "float16"),
                                          ("cache_format", 0)])
def test_cache_of_another_extract_config_is_refused(world, tmp_path, field, value):
    # dtype and cache_format too: the rule of evaluate and train (avstm.cache.check_fits)
    ckpt = read_checkpoint(world["ckpt"])
    ckpt["extract_config"][field] = value
    path = tmp_path / "other.pt"
    torch.save(ckpt, path)
    model = load_localize_model(path, config=LocalizeConfig(device="cpu"), backbones=False)
    with pytest.raises(ConfigMismatch, match=f"{field}: {value!r} in the checkpoint"):
        localize_cached(model, world["cache"], "a", progress=False)


# ---- proposals --------------------------------------------------------------------------------

def test_rpn_boxes_from_random_detector_lie_in_the_frame(world, model):
    cfg = LocalizeConfig(device="cpu", fps=2, boxes="rpn", detector_weights="random", detector_min_size=64,
                         detector_score_threshold=0.0, max_boxes=2)  # 2 frames: the box head is costly
    res = localize(model, world["clip"]["short"], config=cfg, progress=False)
    boxes = [b for f in res.frames for b in f.boxes]
    assert boxes and all(len(f.boxes) <= 2 for f in res.frames)
    xyxy = np.array([b.xyxy for b in boxes])
    assert (xyxy[:, :2] >= 0).all() and (xyxy[:, 2] <= W).all() and (xyxy[:, 3] <= H).all()
    assert all(0 < b.score <= 1 for b in boxes)  # the share of the map inside, as for Otsu


# ---- checkpoint and weights -------------------------------------------------------------------

def test_other_backbone_weights_than_trained_on_are_refused(world, tmp_path):
    ckpt = read_checkpoint(world["ckpt"])
    ckpt["extract_config"]["visual_weights_sha"] = "0123456789abcdef"
    path = tmp_path / "other.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="--visual-weights"):
        load_localize_model(path, config=LocalizeConfig(device="cpu"))


def test_weights_override_with_the_same_weights_is_accepted(world, tmp_path):
    from avstm.extract import efficientnet_lite

    copy = shutil.copy(efficientnet_lite.shipped_weights_path(), tmp_path / "lite0.pth")
    model = load_localize_model(world["ckpt"], config=LocalizeConfig(device="cpu", visual_weights=str(copy)))
    assert model.extractor.config.visual_weights == str(copy)


def test_config_round_trips_through_a_dict():
    cfg = LocalizeConfig(fps=2, boxes="rpn", max_boxes=None, visual_weights="w.pth")
    assert LocalizeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_rejects_an_unknown_box_method():
    with pytest.raises(ValueError, match="otsu, rpn"):
        LocalizeConfig(boxes="grid")


def test_map_choice_is_used_and_named(world):
    """--map replaces the checkpoint's map: α̂ sums to 1 per frame, the default refined scores
    do not, and boxes.json names the map in use."""
    out = world["root"] / "out_alpha"
    r = CliRunner().invoke(cli, ["localize", "--video", str(world["clip"]["a"]), "--checkpoint",
                                 str(world["ckpt"]), "--out", str(out), "--device", "cpu", "--save-maps",
                                 "--no-overlay", "--quiet", "--map", "alpha_hat"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "boxes.json").read_text())
    assert doc["config"]["map"] == "alpha_hat" and doc["model"]["model_config"]["map"] == "alpha_hat"
    with np.load(out / "maps.npz") as z:
        alpha = np.stack([z[k] for k in sorted(z.files)])
    np.testing.assert_allclose(alpha.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    default = localize(load_localize_model(world["ckpt"], config=LocalizeConfig(device="cpu")),
                       world["clip"]["a"], config=LocalizeConfig(device="cpu"), progress=False)
    assert default.model["model_config"]["map"] == "memory_scores+affinity"  # the default
    assert not np.allclose(default.maps.sum(axis=(1, 2)), 1.0, rtol=1e-3)
    # the refined map mixes two min-max normalised maps (the affinity walk's output): in [0, 1]
    assert default.maps.min() >= 0.0 and default.maps.max() <= 1.0 + 1e-6
    assert (default.maps.max(axis=(1, 2)) > 0.5).all()
