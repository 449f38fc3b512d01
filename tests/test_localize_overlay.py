"""Tests for avstm.localize.overlay: rendered overlays and the mp4 they are written to."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from avstm import media
from avstm.errors import MediaError
from avstm.localize.boxes import Box
from avstm.localize.overlay import (BOX_COLOR, QUIET_BACKGROUND, OverlaySample, OverlayWriter,
                                    render_overlay)
from clips import index_frames, read_index, write_clip

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


def test_heatmap_colours_the_peak_and_leaves_the_rest_of_the_frame_alone():
    out = render_overlay(grey_frame(), peak_map(), [], alpha=1.0).astype(int)
    hot = out[22, 30]  # the peak cell (row 1, col 1)
    assert hot[0] > 100 and hot[1] < 30 and hot[2] < 30  # JET's top: dark red
    assert (out[60:, :] == 90).all() and (out[:, 80:] == 90).all()  # not tinted elsewhere


def test_colorbar_is_drawn_at_the_right_edge_only_when_asked():
    plain = render_overlay(grey_frame(), peak_map(), [])
    barred = render_overlay(grey_frame(), peak_map(), [], show_colorbar=True)
    differs = np.flatnonzero((barred != plain).any(axis=(0, 2)))
    assert len(differs) and differs.min() > W * 0.9
    top, bottom = barred[4, differs[len(differs) // 2]], barred[35, differs[len(differs) // 2]]
    assert top[0] > 100 and top[2] < 60 and bottom[1] > 100  # red peak above, green-yellow floor


def test_quiet_label_has_its_own_background():
    quiet = render_overlay(grey_frame(200), None, [], label="no audio", quiet=True)
    loud = render_overlay(grey_frame(200), None, [], label="no audio")
    assert tuple(quiet[1, 1]) == QUIET_BACKGROUND and tuple(loud[1, 1]) == (0, 0, 0)


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



# ---- OverlayWriter on real clips -------------------------------------------------------------

FPS = 25
N_SOURCE = 83  # 3.32 s: an odd number of frames, not a whole number of seconds


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An H.264 clip at 25 fps with 44.1 kHz stereo AAC, each frame showing its index."""
    root = tmp_path_factory.mktemp("overlay")
    return write_clip(root / "src.mp4", index_frames(N_SOURCE, 320, 240), fps=FPS,
                      sample_rate=44100, layout="stereo")


def samples_of(duration: float, sounding: bool = True) -> list[OverlaySample]:
    times = media.frame_times(duration, 4).reshape(-1)
    return [OverlaySample(time=float(t), amap=peak_map(), boxes=[BOX], label=f"s{j}",
                          sounding=sounding) for j, t in enumerate(times)]


def streams(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        audio = None if a is None else (a.codec_context.name, a.codec_context.sample_rate,
                                        a.codec_context.channels)
        return c.duration / 1e6, audio, [f.to_ndarray(format="rgb24") for f in c.decode(v)]


def test_every_source_frame_over_the_whole_duration_with_the_audio_copied(source, tmp_path):
    writer = OverlayWriter(tmp_path / "o.mp4", source)
    writer.push(samples_of(N_SOURCE / FPS))
    info = writer.close()
    duration, audio, frames = streams(tmp_path / "o.mp4")
    src_duration, src_audio, src_frames = streams(source)
    assert len(frames) == len(src_frames) == N_SOURCE == info["frames"]
    assert [read_index(f) for f in frames] == list(range(N_SOURCE))  # in order, none held twice
    assert abs(duration - src_duration) <= 1 / FPS
    assert audio == src_audio == ("aac", 44100, 2)
    assert info["maps"] == "held" and info["audio"].startswith("copied")
    with av.open(str(source)) as a, av.open(str(tmp_path / "o.mp4")) as b:
        pa = [bytes(p) for p in a.demux(audio=0) if p.size]
        pb = [bytes(p) for p in b.demux(audio=0) if p.size]
    assert pa == pb  # the same AAC packets: no re-encode


def test_samples_pushed_in_chunks_while_writing_give_the_same_video(source, tmp_path):
    all_at_once = OverlayWriter(tmp_path / "a.mp4", source)
    all_at_once.push(samples_of(N_SOURCE / FPS))
    all_at_once.close()
    chunked = OverlayWriter(tmp_path / "b.mp4", source)
    samples = samples_of(N_SOURCE / FPS)
    for k in range(0, len(samples), 5):
        chunked.push(samples[k:k + 5])
    chunked.close()
    fa, fb = streams(tmp_path / "a.mp4")[2], streams(tmp_path / "b.mp4")[2]
    assert all((x == y).all() for x, y in zip(fa, fb)) and len(fa) == len(fb)


def test_each_frame_holds_the_nearest_sample(source, tmp_path):
    """Samples alternate sounding / quiet (the label's background); each source frame shows
    the sample nearest its time, and the last 0.32 s hold the last sample."""
    samples = samples_of(3.0)
    samples = [OverlaySample(s.time, None, [], "x", j % 2 == 0) for j, s in enumerate(samples)]
    writer = OverlayWriter(tmp_path / "h.mp4", source)
    writer.push(samples)
    writer.close()
    frames = streams(tmp_path / "h.mp4")[2]
    times = np.array([s.time for s in samples])
    mid = (times[:-1] + times[1:]) / 2  # a frame exactly between two samples takes the later
    for i, img in enumerate(frames):
        j = int(np.searchsorted(mid, i / FPS, side="right"))
        quiet = abs(int(img[2, 2].mean()) - QUIET_BACKGROUND[0]) < 20
        assert quiet == (j % 2 == 1), (i, j)
    assert j == len(samples) - 1 and len(frames) == N_SOURCE


def test_audio_of_a_codec_mp4_cannot_hold_is_reencoded_at_its_rate_and_layout(tmp_path):
    path = tmp_path / "pcm.mkv"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = 128, 96, "yuv420p"
        a = c.add_stream("pcm_s16le", rate=22050, layout="stereo")
        for i, img in enumerate(index_frames(50)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        t = np.arange(2 * 22050) / 22050
        wave = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        af = av.AudioFrame.from_ndarray(np.stack([wave, wave]).T.reshape(1, -1).copy(),
                                        format="s16", layout="stereo")
        af.sample_rate, af.pts = 22050, 0
        c.mux(a.encode(af))
        c.mux(v.encode(None))
        c.mux(a.encode(None))
    writer = OverlayWriter(tmp_path / "o.mp4", path)
    writer.push(samples_of(2.0))
    info = writer.close()
    duration, audio, frames = streams(tmp_path / "o.mp4")
    assert audio == ("aac", 22050, 2) and info["audio"].startswith("re-encoded from pcm_s16le")
    assert len(frames) == 50 and abs(duration - 2.0) < 0.1


def test_frames_dir_gets_one_png_per_sample_of_the_frame_then_on_screen(source, tmp_path):
    import cv2

    writer = OverlayWriter(None, source, frames_dir=tmp_path / "png", video_id="clip")
    samples = samples_of(N_SOURCE / FPS)
    writer.push(samples)
    writer.close()
    names = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert names == sorted(f"clip_{s.time:.3f}.png" for s in samples)
    img = cv2.cvtColor(cv2.imread(str(tmp_path / "png" / "clip_1.625.png")), cv2.COLOR_BGR2RGB)
    assert img.shape == (240, 320, 3) and read_index(img[120:]) == int(1.625 * FPS)
    assert not (tmp_path / "o.mp4").exists()


def _feed_in_a_thread(writer, source):
    """media.iter_frames(every=writer.feed) in a thread, as localize runs it; returns the
    thread and a dict that gets the decode's error."""
    out = {}

    def run():
        try:
            for _ in media.iter_frames(source, fps=4, every=writer.feed):
                pass
            writer.end_frames()
        except MediaError as e:
            out["error"] = str(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_fed_writer_holds_at_most_its_span_of_frames_until_samples_come(source, tmp_path):
    """Fed by the model's decoder and given no sample yet, the writer holds 1 s of frames and
    the decoder waits; once the samples come, it writes the same video as a writer that
    decodes the source itself."""
    fed = OverlayWriter(tmp_path / "fed.mp4", source, fed=1.0)
    thread, out = _feed_in_a_thread(fed, source)
    thread.join(timeout=3)
    assert thread.is_alive() and not out  # waiting to feed
    with fed._cond:
        held = [t for t, _ in fed._frames]
    assert held[-1] - held[0] <= 1.0 and len(held) in (FPS + 1, FPS + 2)
    fed.push(samples_of(N_SOURCE / FPS))
    thread.join(timeout=30)
    info = fed.close()
    own = OverlayWriter(tmp_path / "own.mp4", source)
    own.push(samples_of(N_SOURCE / FPS))
    own.close()
    assert info["frames"] == N_SOURCE and info["decode"] == "shared with the model"
    a, b = streams(tmp_path / "fed.mp4")[2], streams(tmp_path / "own.mp4")[2]
    assert len(a) == len(b) == N_SOURCE and all((x == y).all() for x, y in zip(a, b))


def test_abort_ends_a_decoder_waiting_to_feed_and_leaves_no_file(source, tmp_path):
    writer = OverlayWriter(tmp_path / "x.mp4", source, fed=0.5)
    thread, out = _feed_in_a_thread(writer, source)
    thread.join(timeout=2)
    assert thread.is_alive()
    writer.abort()
    thread.join(timeout=5)
    assert not thread.is_alive() and "overlay writer stopped" in out["error"]
    assert not (tmp_path / "x.mp4").exists()


def test_i420_drawing_looks_like_the_rgb_drawing():
    """The video's frames are drawn on their I420 planes, render_overlay on RGB, by the same
    _compose: heatmap, box, score, label and colour bar agree within the chroma's rounding."""
    import cv2

    from avstm.localize import overlay

    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (9, 9), 3)
    amap = np.add.outer(np.hanning(8), np.hanning(8))
    rgb = render_overlay(frame, amap, [BOX], label="violin", probability=0.87, show_colorbar=True)
    yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
    overlay._compose(overlay._Canvas.i420(yuv), overlay.heat_layer(amap, (H, W), i420=True), [BOX],
                     "violin 0.87", False, overlay.colorbar((H, W), i420=True), BOX_COLOR, True)
    drawn = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420).astype(int)
    plain = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)
    changed = (rgb != frame).any(axis=2)  # what render_overlay drew
    assert changed.mean() > 0.2
    assert np.abs(drawn - rgb)[changed].mean() < 4  # drawn alike (2.2)
    assert np.abs(drawn - plain)[~changed].mean() < 0.3  # and nothing else (0.06)
    assert (drawn[60, 40:42] >= 245).all() and (drawn[31, 50:110] >= 245).all()  # white box edges
    assert (drawn[1, 1:10] <= 10).all()  # on the label's black background


def test_abort_leaves_no_file(source, tmp_path):
    writer = OverlayWriter(tmp_path / "x.mp4", source)
    writer.push(samples_of(1.0)[:2])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_unreadable_source_raises_at_close_and_leaves_no_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    writer = OverlayWriter(tmp_path / "x.mp4", bad)
    with pytest.raises(MediaError, match="bad.mp4"):
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]
