"""Tests of avstm.synth: real mp4 files written through PyAV and read back."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from avstm.cli import cli
from avstm.errors import ConfigMismatch, MediaError
from avstm.synth import CLASS_NAMES, CLASSES, SceneRenderer, SynthConfig, generate, sample_scene
from avstm.synth.classes import partner
from avstm.synth.generate import make_video, scene_boxes
from avstm.synth.scene import annotation_times, envelope, frame_index
from avstm.media import write_mp4

W, H, SECONDS, FPS, SR = 160, 120, 3, 24, 16000
CONFIG = SynthConfig(videos=4, seed=5, hard=0.5, width=W, height=H, seconds=SECONDS,
                     whole_event_share=0.0, snr_db=(6.0, 12.0))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    result = generate(out, config=CONFIG, workers=2, progress=False)
    return result


def _lines(path: Path) -> list[list[str]]:
    return [line.split("&") for line in path.read_text().splitlines()]


def _meta(result) -> dict:
    return json.loads(result.meta.read_text())


def _boxes(result) -> dict:
    return json.loads(result.boxes.read_text())["videos"]


def _decode(path: Path):
    """(frames [(time, (H, W, 3) uint8)], mono audio (M,) float32)."""
    with av.open(str(path)) as c:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio


def test_annotations_follow_ave_layout(dataset):
    rows = _lines(dataset.annotations)
    assert len(rows) == CONFIG.videos
    for cat, vid, quality, start, end in rows:
        assert cat in CLASS_NAMES and quality == "good"
        assert 0 <= int(start) and int(end) - int(start) >= CONFIG.min_event_seconds
        assert int(end) <= SECONDS
    files = {p.stem for p in (dataset.out_dir / "AVE").glob("*.mp4")}
    assert {r[1] for r in rows} == files
    split_ids = [r[1] for p in dataset.splits.values() for r in _lines(p)]
    assert sorted(split_ids) == sorted(files)
    assert sum(dataset.split_counts.values()) == CONFIG.videos


def test_videos_decode_with_h264_and_aac_of_the_clip_duration(dataset):
    for path in dataset.videos:
        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.audio[0].codec_context.name == "aac"
            assert (c.streams.video[0].width, c.streams.video[0].height) == (W, H)
        frames, audio = _decode(path)
        assert len(frames) == SECONDS * FPS
        assert abs(len(frames) / FPS - SECONDS) < 1e-6
        assert abs(len(audio) / SR - SECONDS) < 0.1


def test_decoded_frames_match_the_rendered_scene_at_annotated_times(dataset):
    frames, _ = _decode(dataset.videos[0])
    renderer = SceneRenderer(sample_scene(CONFIG, 0))
    for t in (0.125, 1.625, 2.875):
        shown = [img for ft, img in frames if ft <= t + 1e-6][-1]
        drawn = renderer.frame(frame_index(t, FPS))
        # compared through a 5 × 5 blur: H.264 drops the backgrounds' per-pixel grain
        blur = [cv2.blur(img.astype(np.float32), (5, 5)) for img in (shown, drawn)]
        assert np.abs(blur[0] - blur[1]).mean() < 4.0


def test_boxes_lie_inside_the_frames_at_the_convention_times(dataset):
    expected = [s + (k + 0.5) / 4 for s in range(SECONDS) for k in range(4)]
    events = {r[1]: (int(r[3]), int(r[4])) for r in _lines(dataset.annotations)}
    meta = _meta(dataset)["videos"]
    for vid, video in _boxes(dataset).items():
        assert (video["width"], video["height"]) == (W, H)
        assert [f["time"] for f in video["frames"]] == expected
        for frame in video["frames"]:
            for b in frame["boxes"]:
                x1, y1, x2, y2 = b["xyxy"]
                assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            start, end = events[vid]
            n_sounding = sum(b["sounding"] for b in frame["boxes"])
            assert n_sounding == (meta[vid]["sounding"] if start <= frame["time"] < end else 0)


def test_sounding_boxes_cover_the_drawn_sounding_object(dataset):
    checked = 0
    for index, (vid, video) in enumerate(sorted(_boxes(dataset).items())):
        scene = sample_scene(CONFIG, index)
        assert scene.video_id == vid
        renderer = SceneRenderer(scene)
        for frame in video["frames"]:
            boxes = [b["xyxy"] for b in frame["boxes"] if b["sounding"]]
            if not boxes:
                continue
            n = frame_index(frame["time"], FPS)
            assert sorted(boxes) == sorted(renderer.box(j, n) for j in scene.sounding_indices())
            for j in scene.sounding_indices():
                diff = np.abs(renderer.frame(n).astype(int)
                              - renderer.frame(n, skip=(j,)).astype(int))
                mask = diff.max(axis=2) > 8  # the pixels the sounding object changes
                x1, y1, x2, y2 = renderer.box(j, n)
                inside = mask[y1:y2, x1:x2].sum()
                assert inside >= 0.95 * mask.sum()
                assert inside >= 0.2 * (x2 - x1) * (y2 - y1)
                checked += 1
    assert checked >= CONFIG.videos * CONFIG.min_event_seconds * 4


def test_small_sizes_lie_in_the_configured_range_fully_inside_the_frame():
    config = dataclasses.replace(CONFIG, sizes="small")
    side = min(W, H)
    for i in range(20):
        scene = sample_scene(config, i)
        assert len(scene.sounding_indices()) == 1 and scene.background != "clutter"
        renderer = SceneRenderer(scene, frames=[0, 40])
        for j, obj in enumerate(scene.objects):
            assert obj.stretch is None
            assert side * config.size_range[0] <= obj.size <= side * config.size_range[1]
            for n in (0, 40):
                st = renderer.state(j, n)
                assert st.size / 2 <= st.cx <= W - st.size / 2
                assert st.size / 2 <= st.cy <= H - st.size / 2


def test_hard_videos_hold_a_silent_object_of_the_sounding_class(dataset):
    meta = _meta(dataset)["videos"]
    assert any(v["hard"] for v in meta.values()) and not all(v["hard"] for v in meta.values())
    for vid, video in _boxes(dataset).items():
        cls = meta[vid]["class"]
        same_class = [b for b in video["frames"][0]["boxes"] if b["label"] == cls]
        assert len(same_class) == meta[vid]["sounding"] + meta[vid]["hard"]


def _band_rms(x: np.ndarray, pitch: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1.0 / SR)
    return float(np.sqrt(np.mean(spec[np.abs(f - pitch) < 0.05 * pitch] ** 2)))


def test_background_seconds_hold_noise_only_and_event_seconds_the_sound(dataset):
    meta = _meta(dataset)["videos"]
    for path in dataset.videos:
        info = meta[path.stem]
        _, audio = _decode(path)
        start, end = info["event"]
        seconds = [audio[s * SR:(s + 1) * SR] for s in range(SECONDS)]
        event = [_band_rms(seconds[s], info["pitch"]) for s in range(start, end)]
        background = [s for s in range(SECONDS) if not start <= s < end]
        assert background, "the test config must leave background seconds"
        for s in background:
            assert min(event) > 3 * _band_rms(seconds[s], info["pitch"])
            rms = float(np.sqrt(np.mean(seconds[s] ** 2)))
            assert abs(20 * math.log10(rms) - info["noise_dbfs"]) < 2.0


def test_same_seed_gives_byte_identical_annotations(dataset, tmp_path):
    again = generate(tmp_path / "again", config=CONFIG, workers=1, progress=False)
    for name in ("boxes.json", "Annotations.txt", "trainSet.txt", "valSet.txt", "testSet.txt",
                 "meta.json"):
        assert (tmp_path / "again" / name).read_bytes() == (dataset.out_dir / name).read_bytes()
    assert again.written == CONFIG.videos


def test_the_same_synth_command_writes_the_same_videos(tmp_path):
    # Two runs of one command, each in a fresh process as a user runs it, and a third in this
    # process after other encodes: byte-identical mp4s. (With x264's macroblock-tree rate
    # control the same frames gave other bitstreams from run to run.)
    config = SynthConfig(videos=6, seed=7, seconds=3, width=W, height=H)
    args = ["synth", "--out", "{}", "--videos", "6", "--seed", "7", "--seconds", "3", "--quiet",
            "--width", str(W), "--height", str(H)]
    outs = []
    for name in ("a", "b"):
        cmd = [a.format(tmp_path / name) for a in args]
        subprocess.run([sys.executable, "-m", "avstm.cli", *cmd], check=True)
        outs.append(sorted((tmp_path / name / "AVE").glob("*.mp4")))
    generate(tmp_path / "c", config=config, progress=False)
    outs.append(sorted((tmp_path / "c" / "AVE").glob("*.mp4")))
    assert len(outs[0]) == 6
    for a, b, c in zip(*outs, strict=True):
        assert a.name == b.name == c.name
        assert a.read_bytes() == b.read_bytes() == c.read_bytes(), a.name


def test_another_seed_gives_other_annotations(dataset, tmp_path):
    config = SynthConfig.from_dict({**CONFIG.to_dict(), "seed": CONFIG.seed + 1, "videos": 3})
    other = generate(tmp_path / "other", config=config, workers=1, progress=False)
    assert other.boxes.read_bytes() != dataset.boxes.read_bytes()


def test_rerun_keeps_present_videos_and_writes_missing_ones(tmp_path):
    config = SynthConfig.from_dict({**CONFIG.to_dict(), "videos": 3, "seconds": 2})
    first = generate(tmp_path, config=config, progress=False)
    kept = first.videos[0].stat().st_mtime_ns
    first.videos[1].unlink()
    second = generate(tmp_path, config=config, progress=False)
    assert (second.written, second.skipped) == (1, 2)
    assert first.videos[0].stat().st_mtime_ns == kept
    assert second.boxes.read_bytes() == first.boxes.read_bytes()


def test_rerun_with_other_content_config_is_refused(tmp_path):
    config = SynthConfig.from_dict({**CONFIG.to_dict(), "videos": 3, "seconds": 2})
    generate(tmp_path, config=config, progress=False)
    with pytest.raises(ConfigMismatch, match="hard"):
        generate(tmp_path, config=SynthConfig.from_dict({**config.to_dict(), "hard": 0.9}),
                 progress=False)


def test_sounding_object_grows_with_the_sound_envelope():
    scene = sample_scene(CONFIG, 1)
    obj = scene.sounding
    renderer = SceneRenderer(scene)
    j = scene.sounding_index()
    n_frames = SECONDS * FPS
    sizes = np.array([renderer.state(j, n).size for n in range(n_frames)])
    env = envelope(obj.notes, obj.decay, obj.span, np.arange(n_frames) / FPS)
    assert np.corrcoef(sizes, env)[0, 1] > 0.99
    assert sizes.max() > 1.1 * sizes.min()


def test_classes_pair_distinct_looks_with_sounds():
    assert len(CLASSES) >= 8
    assert len({(c.shape, c.colour) for c in CLASSES}) == len(CLASSES)
    assert len(set(CLASS_NAMES)) == len(CLASSES)


def test_classes_come_in_pairs_that_sound_alike():
    for c in range(0, len(CLASSES), 2):
        a, b = CLASSES[c], CLASSES[partner(c)]
        assert (a.pitch, a.timbre, a.rhythm) == (b.pitch, b.timbre, b.rhythm)
        assert (a.shape, a.colour) != (b.shape, b.colour)


def test_the_alike_sounding_class_is_a_distractor_in_about_the_configured_share():
    config = SynthConfig(videos=300, seed=2, partner_share=0.5)
    hits = 0
    for i in range(config.videos):
        scene = sample_scene(config, i)
        hits += any(o.cls == partner(scene.cls) and not o.event for o in scene.objects)
    assert 0.4 < hits / config.videos < 0.6


def test_config_round_trips_through_json():
    config = SynthConfig(videos=7, seed=3, hard=0.2)
    assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_write_mp4_round_trips_stereo_audio_and_frames(tmp_path):
    frames = np.zeros((12, 48, 64, 3), np.uint8)
    frames[:, :, :32] = 200
    t = np.arange(SR) / SR
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)])
    path = write_mp4(tmp_path / "clip.mp4", frames, 12, audio.astype(np.float32), SR)
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.channels == 2
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 12
    assert abs(int(decoded[0][:, :32].mean()) - 200) < 8 and decoded[0][:, 40:].mean() < 8
    assert not list(tmp_path.glob("*.tmp-*"))


def _x264_settings(path) -> str:
    """The options x264 records in its SEI at the start of the stream."""
    data = open(path, "rb").read()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\x00", start)].decode("ascii", "replace")


def test_synth_and_the_overlay_share_one_writer_each_with_its_own_settings(tmp_path):
    """media.Mp4Writer encodes both: synth's videos keep their settings (crf 23 at x264's
    veryfast, the index at the end, one thread: the same bytes each time), the overlay its
    own (crf 23, ultrafast: no sub-pixel motion search)."""
    from avstm.localize.overlay import OverlayWriter

    config = SynthConfig(videos=3, seed=5, seconds=2, width=64, height=48)
    a = make_video(tmp_path / "a", config, 0, threads=1)
    b = make_video(tmp_path / "b", config, 0, threads=1)
    pa, pb = (tmp_path / d / "AVE" / f"{a.id}.mp4" for d in ("a", "b"))
    assert pa.read_bytes() == pb.read_bytes()
    synth = _x264_settings(pa)
    assert "crf=23.0" in synth and "subme=2" in synth and "threads=1" in synth  # veryfast
    assert pa.read_bytes().index(b"moov") > pa.read_bytes().index(b"mdat")  # no faststart
    writer = OverlayWriter(tmp_path / "o.mp4", pa)
    writer.close()
    overlay = _x264_settings(tmp_path / "o.mp4")
    assert "crf=23.0" in overlay and "subme=0" in overlay  # ultrafast
    data = (tmp_path / "o.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart


def test_write_mp4_rejects_audio_of_wrong_shape(tmp_path):
    with pytest.raises(MediaError, match="audio"):
        write_mp4(tmp_path / "bad.mp4", np.zeros((2, 32, 32, 3), np.uint8), 4,
                  np.zeros((3, 100), np.float32), SR)


def test_cli_synth_writes_a_dataset(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["synth", "--out", str(tmp_path / "d"), "--videos", "3",
                                 "--seconds", "2", "--width", "64", "--height", "48", "--quiet",
                                 "--sizes", "small"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 videos" in result.output and "train 1, val 1, test 1" in result.output
    assert len(list((tmp_path / "d" / "AVE").glob("*.mp4"))) == 3


def test_cli_synth_refuses_a_bad_option_value(tmp_path):
    result = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path), "--hard", "2"])
    assert result.exit_code == 2
    assert "hard" in result.output


def test_rerun_removes_temporaries_of_killed_writers(tmp_path):
    config = SynthConfig.from_dict({**CONFIG.to_dict(), "videos": 3, "seconds": 1,
                                    "min_event_seconds": 1})
    stale = tmp_path / "AVE" / "synth_000000.mp4.tmp-999999999"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a video")
    generate(tmp_path, config=config, progress=False)
    assert not stale.exists()


# --- sizes="benchmark": boxes shaped like the real benchmarks' -----------------------------

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VGGSS = DATA / "vggss" / "vggss.json"
AUDIOSET = DATA / "audioset_instrument" / "audioset_box.json"
BENCH = SynthConfig(seed=11)  # the defaults: benchmark sizes at 320 × 240
QUANTILES = (10, 25, 50, 75, 90)


def _union_share(boxes, grid: int = 224) -> float:
    """Share of the unit square covered by the union of normalised [x1, y1, x2, y2] boxes."""
    m = np.zeros((grid, grid), bool)
    for b in boxes:
        x1, y1, x2, y2 = (int(round(min(max(v, 0.0), 1.0) * grid)) for v in b)
        m[y1:y2, x1:x2] = True
    return float(m.mean())


def _real_sounding_areas() -> dict[str, np.ndarray]:
    if not (VGGSS.exists() and AUDIOSET.exists()):
        pytest.skip(f"real annotation files missing under {DATA}")
    vggss = []
    for e in json.loads(VGGSS.read_text()):
        boxes = [b for b in e["bbox"] if all(abs(c) < 10 for c in b)]  # skip corrupt ~-2.9e16
        if boxes:
            vggss.append(_union_share(boxes))
    audioset = []
    for e in json.loads(AUDIOSET.read_text()).values():
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (b["normbox"] for b in e["bbox"])]
        if boxes:
            audioset.append(_union_share(boxes))
    return {"vggss": np.array(vggss), "audioset_instrument": np.array(audioset)}


def _bench_frames(config: SynthConfig, scenes: int, per_scene: int = 4):
    """(sounding-area shares, centre-pixel hits, share of multi-sounding clips) over
    ``per_scene`` annotation frames spread over the event span of each of ``scenes`` scenes
    (a fixed number per clip, like the real files' one or few frames per clip), without
    encoding any video."""
    areas, centre, multi = [], [], 0
    for i in range(scenes):
        scene = sample_scene(config, i)
        idx = scene.sounding_indices()
        multi += len(idx) > 1
        start, end = scene.event
        inside = [t for t in annotation_times(config) if start <= t < end]
        pick = np.linspace(0, len(inside) - 1, per_scene).round().astype(int)
        frames = [frame_index(inside[k], config.fps) for k in pick]
        renderer = SceneRenderer(scene, frames=frames)
        for n in frames:
            m = np.zeros((config.height, config.width), bool)
            for j in idx:
                x1, y1, x2, y2 = renderer.box(j, n)
                m[y1:y2, x1:x2] = True
            areas.append(m.mean())
            centre.append(m[config.height // 2, config.width // 2])
    return np.array(areas), np.array(centre), multi / scenes


@pytest.fixture(scope="module")
def bench_frames():
    return _bench_frames(BENCH, 200)


def test_benchmark_sounding_area_matches_the_real_files(bench_frames):
    areas, _, _ = bench_frames
    assert len(areas) == 800
    ours = np.percentile(areas, QUANTILES)
    for name, real in _real_sounding_areas().items():
        theirs = np.percentile(real, QUANTILES)
        for q, a, b in zip(QUANTILES, ours, theirs):
            if q in (10, 50, 90):
                assert abs(a - b) <= 0.25 * b, f"{name} p{q}: generated {a:.3f}, real {b:.3f}"


def test_small_sizes_stay_far_below_the_real_files():
    areas, _, multi = _bench_frames(dataclasses.replace(BENCH, sizes="small"), 40)
    assert np.percentile(areas, 90) < 0.2 and multi == 0


def test_benchmark_objects_are_not_all_at_the_centre(bench_frames):
    _, centre, _ = bench_frames
    assert centre.mean() < 0.75


def test_benchmark_clips_with_two_sounding_objects_pulse_with_the_sound(bench_frames):
    _, _, multi = bench_frames
    assert abs(multi - BENCH.multi_share) < 0.1
    found = 0
    for i in range(40):
        scene = sample_scene(BENCH, i)
        idx = scene.sounding_indices()
        if len(idx) < 2:
            continue
        found += 1
        assert len(idx) == 2 and scene.sounding_index() in idx
        t = np.arange(BENCH.seconds * BENCH.fps) / BENCH.fps
        sound = envelope(scene.sounding.notes, scene.sounding.decay, scene.sounding.span, t)
        renderer = SceneRenderer(scene, frames=list(range(len(t))))
        for j in idx:
            obj = scene.objects[j]
            assert obj.cls == scene.cls and obj.event
            assert np.array_equal(envelope(obj.notes, obj.decay, obj.span, t), sound)
            sizes = np.array([renderer.state(j, n).size for n in range(len(t))])
            assert np.corrcoef(sizes, sound)[0, 1] > 0.99
        start, end = scene.event
        times = annotation_times(BENCH)
        frames = scene_boxes(scene, SceneRenderer(
            scene, frames=[frame_index(x, BENCH.fps) for x in times]), times)
        for frame in frames:
            sounding = [b for b in frame["boxes"] if b["sounding"]]
            inside = start <= frame["time"] < end
            assert len(sounding) == (2 if inside else 0)
            assert all(b["label"] == CLASSES[scene.cls].name for b in sounding)
    assert found >= 3


def test_benchmark_backgrounds_include_clutter_with_a_falling_spectrum():
    from avstm.synth.render import background_canvas

    kinds = [sample_scene(BENCH, i).background for i in range(60)]
    assert kinds.count("clutter") >= 15 and len(set(kinds)) >= 4
    scene = next(sample_scene(BENCH, i) for i in range(60) if kinds[i] == "clutter")
    grey = background_canvas(scene).astype(np.float32).mean(axis=2)
    power = np.abs(np.fft.rfft2(grey - grey.mean())) ** 2
    fy, fx = np.fft.fftfreq(grey.shape[0])[:, None], np.fft.rfftfreq(grey.shape[1])[None, :]
    f = np.hypot(fx, fy)
    low, high = power[(f > 0.01) & (f < 0.03)].mean(), power[(f > 0.1) & (f < 0.3)].mean()
    assert low > 30 * high  # natural-image-like: most power at low spatial frequencies


def test_config_checks_sizes_and_multi_share():
    with pytest.raises(ValueError, match="sizes"):
        SynthConfig(sizes="huge")
    with pytest.raises(ValueError, match="multi_share"):
        SynthConfig(multi_share=1.5)
    legacy = {k: v for k, v in SynthConfig().to_dict().items() if k != "sizes"}
    assert SynthConfig.from_dict(legacy).sizes == "small"  # a meta.json from before the field
    assert "sizes" in SynthConfig().content_differences(SynthConfig(sizes="small"))
    assert "multi_share" in SynthConfig().content_differences(SynthConfig(multi_share=0.5))
