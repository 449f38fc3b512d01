import numpy as np
import pytest

from avstm import media
from avstm.errors import MediaError
from clips import index_frames, read_index, write_clip


@pytest.fixture(scope="module")
def clip24(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("m") / "c24.mp4", seconds=3, fps=24)


def test_frame_times_grid():
    t = media.frame_times(10.0, 4)
    assert t.shape == (10, 4)
    assert t[0].tolist() == [0.125, 0.375, 0.625, 0.875]
    assert t[9, 3] == pytest.approx(9.875)
    assert media.frame_times(0.3, 4).shape == (1, 4)  # a short clip still has one second


def test_frame_on_screen_at_each_time_to_the_frame(clip24):
    clip = media.decode(clip24, fps=4, size=None)
    assert clip.frames.shape == (12, 96, 128, 3)
    got = [read_index(f) for f in clip.frames]
    want = [int(np.floor(t * 24 + 1e-9)) for t in clip.times]
    assert got == want


def test_explicit_times_and_non_integer_rate(tmp_path):
    p = write_clip(tmp_path / "c.mp4", seconds=2, fps=30000 / 1001)
    times = [0.0, 0.034, 0.5, 1.2345, 1.9]
    clip = media.decode(p, times=times, size=None)
    assert [read_index(f) for f in clip.frames] == [int(np.floor(t * 30000 / 1001)) for t in times]


def test_resize_and_probe(clip24):
    info = media.probe(clip24)
    assert (info.width, info.height, info.fps, info.has_audio) == (128, 96, 24.0, True)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    clip = media.decode(clip24, fps=2, size=(256, 256))
    assert clip.frames.shape == (6, 256, 256, 3) and clip.frames.dtype == np.uint8
    assert [read_index(f) for f in clip.frames] == [int(np.floor(t * 24)) for t in clip.times]


def test_audio_is_16k_mono_and_aligned(tmp_path):
    sr = 44100
    n = 3 * sr
    tone = np.zeros(n, np.float32)
    tone[sr:2 * sr] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(sr) / sr)  # on during second 1
    stereo = np.stack([tone, tone])
    p = write_clip(tmp_path / "a.mp4", seconds=3, fps=24, audio=stereo, sample_rate=sr, layout="stereo")
    clip = media.decode(p)
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert len(clip.audio) == pytest.approx(3 * 16000, abs=1600)
    rms = [float(np.sqrt(np.mean(clip.audio[s * 16000 + 1600:(s + 1) * 16000 - 1600] ** 2))) for s in range(3)]
    assert rms[1] > 0.2 and rms[0] < 0.01 and rms[2] < 0.01
    info = media.probe(p)
    assert (info.sample_rate, info.channels) == (sr, 2)


def test_iter_frames_streams_the_same_frames(clip24):
    streamed = list(media.iter_frames(clip24, fps=4, size=(128, 96)))
    clip = media.decode(clip24, fps=4, size=(128, 96))
    assert [t for t, _ in streamed] == clip.times.tolist()
    assert all(np.array_equal(a, b) for (_, a), b in zip(streamed, clip.frames, strict=True))


def test_no_audio_stream_is_silence(tmp_path):
    p = write_clip(tmp_path / "mute.mp4", seconds=2, fps=24, audio_stream=False)
    clip = media.decode(p)
    assert clip.info.has_audio is False
    assert len(clip.audio) == 32000 and not clip.audio.any()
    wave, has = media.read_audio(p, duration=2.0)
    assert has is False and len(wave) == 32000


def test_errors_name_the_file(tmp_path):
    with pytest.raises(MediaError, match="no such file") as e:
        media.decode(tmp_path / "nope.mp4")
    assert str(tmp_path / "nope.mp4") in str(e.value)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(MediaError, match="junk.mp4: not a media file"):
        media.probe(junk)


def test_rotation_metadata_gives_upright_frames(tmp_path):
    frames = index_frames(24, 128, 96)
    frames[:, :10, :, 0] = 255  # a red band along the top of the picture
    p = write_clip(tmp_path / "rot.mp4", frames, fps=24, rotation=90)
    clip = media.decode(p, fps=1, size=None)
    assert clip.info.rotation == 90
    assert clip.frames.shape[1:3] == (128, 96)  # portrait now
    f = clip.frames[0].astype(int)
    # rotated 90° counter-clockwise, the top band becomes the left band
    assert f[:, :8, 0].mean() > 200 and f[:, -8:, 0].mean() < 150


def test_iter_frames_without_native_pixels_gives_their_upright_shape_and_every_frame(tmp_path):
    """native=False (Otsu boxes need only the frame size) gives the shape the native frames
    have, upright, with the same scaled frames; ``every`` sees each decoded frame, once, in
    order, the overlay's ``i420`` of it upright too."""
    p = write_clip(tmp_path / "rot.mp4", index_frames(30, 128, 96), fps=24, rotation=90)
    full = list(media.iter_frames(p, fps=4, model_size=(32, 32)))
    seen = []
    shape_only = list(media.iter_frames(p, fps=4, model_size=(32, 32), native=False,
                                        every=lambda t, f: seen.append((t, media.i420(f).shape))))
    assert [t for t, _ in shape_only] == [t for t, _ in full] and len(full) == 4
    for (_, (native, small)), (_, (shape, small2)) in zip(full, shape_only):
        assert shape == native.shape[:2] == (128, 96)
        np.testing.assert_array_equal(small, small2)
    assert len(seen) == 30 and [t for t, _ in seen] == sorted(t for t, _ in seen)
    assert {s for _, s in seen} == {(128 * 3 // 2, 96)}  # I420 of the upright 96×128 frame
