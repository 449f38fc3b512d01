"""Tests for avstm.localize.overlay: rendered overlays and the mp4 they are written to."""

from __future__ import annotations

import av
import numpy as np
import pytest

from avstm.errors import MediaError
from avstm.localize.boxes import Box
from avstm.localize.overlay import BOX_COLOR, render_overlay, write_overlay_video

H, W = 120, 160
BOX = Box(xyxy=(40.0, 30.0, 120.0, 90.0), score=0.5)


def grey_frame(h: int = H, w: int = W, value: int = 90) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def peak_map() -> np.ndarray:
    amap = np.zeros((8, 8))
    amap[1, 1] = 1.0
    return amap


def tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def decode_video(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_render_keeps_size_and_dtype():
    out = render_overlay(grey_frame(), peak_map(), [BOX], label="violin", probability=0.87)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8


def test_heatmap_is_hot_at_the_peak_and_cold_far_away():
    out = render_overlay(grey_frame(), peak_map(), [], alpha=1.0).astype(int)
    hot, cold = out[22, 30], out[110, 150]  # the peak cell (row 1, col 1) vs the far corner
    assert hot[0] > 100 and hot[1] < 30 and hot[2] < 30  # JET's top: dark red
    assert cold[2] > 100 and cold[0] < 30 and cold[1] < 30  # JET's bottom: dark blue


def test_box_edges_drawn_inside_the_box():
    out = render_overlay(grey_frame(), None, [BOX], box_scores=False)
    assert tuple(out[60, 40]) == BOX_COLOR and tuple(out[60, 119]) == BOX_COLOR
    assert tuple(out[30, 80]) == BOX_COLOR and tuple(out[89, 80]) == BOX_COLOR
    assert tuple(out[60, 39]) == (90, 90, 90) and tuple(out[60, 120]) == (90, 90, 90)
    assert tuple(out[60, 80]) == (90, 90, 90)


def test_label_text_is_drawn_at_top_left():
    plain = render_overlay(grey_frame(), None, [])
    labelled = render_overlay(grey_frame(), None, [], label="violin", probability=0.87)
    assert (labelled[:20, :80] != plain[:20, :80]).any()
    assert (labelled[60:, :] == plain[60:, :]).all()


def test_render_does_not_modify_input():
    frame = grey_frame()
    render_overlay(frame, peak_map(), [BOX], label="x")
    assert (frame == 90).all()


def test_video_has_right_frame_count_size_and_audio_duration(tmp_path):
    path = tmp_path / "overlay.mp4"
    frames = (render_overlay(grey_frame(), peak_map(), [BOX]) for _ in range(10))
    write_overlay_video(path, frames, 4.0, tone(2.5))
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.width, v.height) == (W, H)
        assert float(a.duration * a.time_base) == pytest.approx(2.5, abs=0.1)
        assert a.rate == 16000
    assert len(decode_video(path)) == 10
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples / 16000 == pytest.approx(2.5, abs=0.1)


def test_audio_longer_than_video_is_cut_to_video_duration(tmp_path):
    path = tmp_path / "cut.mp4"
    write_overlay_video(path, (grey_frame() for _ in range(8)), 8.0, tone(5.0))
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        assert float(a.duration * a.time_base) == pytest.approx(1.0, abs=0.1)


def test_drawn_box_is_visible_in_decoded_video(tmp_path):
    path = tmp_path / "box.mp4"
    frames = (render_overlay(grey_frame(), None, [BOX], box_scores=False) for _ in range(3))
    write_overlay_video(path, frames, 4.0, None)
    decoded = decode_video(path)[1].astype(int)
    edge = decoded[40:80, 40:42]       # left edge, 2 px wide (line width 2)
    inside = decoded[40:80, 60:100]
    assert np.abs(edge - np.array(BOX_COLOR)).max() <= 40
    assert np.abs(inside - 90).max() <= 20


def test_odd_frame_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    write_overlay_video(path, (grey_frame(61, 81) for _ in range(2)), 4.0, None)
    with av.open(str(path)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (82, 62)
        assert len(c.streams.audio) == 0


def test_write_is_atomic_and_any_extension_gives_mp4(tmp_path):
    path = tmp_path / "out.video"
    write_overlay_video(path, (grey_frame() for _ in range(2)), 4.0, None)
    assert [p.name for p in tmp_path.iterdir()] == ["out.video"]
    with av.open(str(path)) as c:
        assert "mp4" in c.format.name


def test_no_frames_raises_media_error(tmp_path):
    with pytest.raises(MediaError, match="no frames"):
        write_overlay_video(tmp_path / "empty.mp4", iter([]), 4.0, None)
    assert not list(tmp_path.iterdir())


def test_frame_size_change_midway_raises_and_leaves_no_file(tmp_path):
    frames = [grey_frame(), grey_frame(60, 80)]
    with pytest.raises(ValueError, match="frame 1"):
        write_overlay_video(tmp_path / "bad.mp4", frames, 4.0, None)
    assert not list(tmp_path.iterdir())


def test_audio_content_survives_encoding(tmp_path):
    path = tmp_path / "tone.mp4"
    write_overlay_video(path, (grey_frame() for _ in range(8)), 4.0, tone(2.0))
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    rms = float(np.sqrt(np.mean(pcm[1600:28800] ** 2)))  # 0.1–1.8 s, away from the edges
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.15)
