"""Tests of avstm.extract.vggish: the log-mel frontend, example windows, trunk and weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avstm.errors import WeightsError
from avstm.extract import vggish
from avstm.extract.backbones import weights_checksum


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """The VGGish frontend written out from its formulas, in float64 with explicit loops."""
    n_frames = 1 + (len(x) - 400) // 160
    n = np.arange(400)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 400)  # periodic
    freqs = np.arange(257) * 8000.0 / 256
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(125.0), mel(7500.0)
    edges = [lo + (hi - lo) * i / 65 for i in range(66)]
    weights = np.zeros((257, 64))
    for band in range(64):
        left, centre, right = edges[band], edges[band + 1], edges[band + 2]
        for k in range(1, 257):  # bin 0 (DC) keeps weight 0
            m = mel(freqs[k])
            if left < m <= centre:
                weights[k, band] = (m - left) / (centre - left)
            elif centre < m < right:
                weights[k, band] = (right - m) / (right - centre)
    out = np.empty((n_frames, 64))
    for i in range(n_frames):
        spectrum = np.abs(np.fft.rfft(x[i * 160:i * 160 + 400] * hann, n=512))
        out[i] = np.log(spectrum @ weights + 0.01)
    return out


@pytest.fixture(scope="module")
def chirp() -> np.ndarray:
    """1.2 s of a 100 Hz -> 7 kHz chirp plus white noise, float32 in [-1, 1]."""
    t = np.arange(int(1.2 * 16000)) / 16000
    phase = 2 * np.pi * (100 * t + (7000 - 100) / (2 * 1.2) * t ** 2)
    noise = np.random.default_rng(0).normal(0, 0.05, t.shape)
    return (0.6 * np.sin(phase) + noise).astype(np.float32)


def test_log_mel_matches_reference_formulas(chirp):
    got = vggish.log_mel(chirp)
    want = reference_log_mel(chirp.astype(np.float64))
    assert got.dtype == torch.float32
    assert got.shape == want.shape == (1 + (len(chirp) - 400) // 160, 64)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)


def test_log_mel_keeps_leading_dims_and_counts_frames():
    x = torch.zeros(2, 3, vggish.EXAMPLE_SAMPLES)
    assert vggish.log_mel(x).shape == (2, 3, vggish.EXAMPLE_FRAMES, 64)
    assert vggish.log_mel(np.zeros(400 + 160 * 4 + 159, np.float32)).shape == (5, 64)
    assert vggish.log_mel(np.zeros(399, np.float32)).shape == (0, 64)


def test_log_mel_of_silence_is_log_offset():
    out = vggish.log_mel(np.zeros(1000, np.float32))
    torch.testing.assert_close(out, torch.full_like(out, math.log(0.01)))


def test_example_windows_are_centred_on_the_times():
    audio = np.arange(1, 48001, dtype=np.float32)  # 3 s ramp: sample i holds i + 1
    times = np.array([1.0, 1.625, 2.0])
    windows = vggish.example_windows(audio, times)
    assert windows.shape == (3, vggish.EXAMPLE_SAMPLES) and windows.dtype == np.float32
    for w, t in zip(windows, times):
        start = round(t * 16000) - 7800
        np.testing.assert_array_equal(w, audio[start:start + 15600])


def test_example_windows_zero_pad_at_both_ends():
    audio = np.ones(16000, np.float32)  # 1 s clip
    start_w, end_w = vggish.example_windows(audio, np.array([0.125, 0.875]))
    lead = 7800 - 2000  # samples before the clip's start
    assert not start_w[:lead].any() and start_w[lead:].all()
    inside = 16000 - (14000 - 7800)  # samples from the window start to the clip's end
    assert end_w[:inside].all() and not end_w[inside:].any()


def test_example_windows_outside_the_clip_are_silent():
    windows = vggish.example_windows(np.ones(16000, np.float32), np.array([-5.0, 9.0]))
    assert windows.shape == (2, 15600) and not windows.any()


def test_trunk_maps_examples_to_6x4x512():
    trunk = vggish.load_vggish("random")
    conv_at = [i for i, m in enumerate(trunk.features) if isinstance(m, torch.nn.Conv2d)]
    assert conv_at == list(vggish.CONV_INDICES)
    with torch.inference_mode():
        out = trunk(torch.randn(2, vggish.EXAMPLE_FRAMES, 64))
    assert out.shape == (2, 512, 6, 4)


def test_windows_to_maps_end_to_end(chirp):
    logmel = vggish.log_mel(vggish.example_windows(chirp, np.array([0.25, 0.75])))
    with torch.inference_mode():
        out = vggish.load_vggish("random")(logmel)
    assert logmel.shape == (2, 96, 64) and out.shape == (2, 512, 6, 4)
    assert torch.isfinite(out).all()


def test_random_trunk_is_seeded_frozen_and_keeps_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = vggish.load_vggish("random", seed=1), vggish.load_vggish("random", seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert weights_checksum(a) == weights_checksum(b)
    assert weights_checksum(a) != weights_checksum(vggish.load_vggish("random", seed=2))
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def _public_layouts(trunk: vggish.VGGishTrunk) -> dict[str, dict]:
    """The trunk's weights in torchaudio's and torchvggish's layouts, with their extra keys."""
    sd = trunk.state_dict()
    torchaudio_sd = {k.replace("features.", "features_network."): v for k, v in sd.items()}
    torchvggish_sd = dict(sd)
    for i, n_out in zip((0, 2, 4), (4096, 4096, 128)):
        torchaudio_sd[f"embedding_network.{i}.weight"] = torch.zeros(n_out, 8)
        torchaudio_sd[f"embedding_network.{i}.bias"] = torch.zeros(n_out)
        torchvggish_sd[f"embeddings.{i}.weight"] = torch.zeros(n_out, 8)
        torchvggish_sd[f"embeddings.{i}.bias"] = torch.zeros(n_out)
    torchvggish_sd["pproc._pca_matrix"] = torch.eye(128)
    return {"torchaudio": torchaudio_sd, "torchvggish": torchvggish_sd}


def test_both_public_layouts_load_from_files_with_identical_outputs(tmp_path):
    source = vggish.load_vggish("random", seed=7)
    x = torch.randn(2, 96, 64)
    with torch.inference_mode():
        want = source(x)
    for name, sd in _public_layouts(source).items():
        path = tmp_path / f"{name}.pth"
        torch.save(sd, path)
        trunk = vggish.load_vggish(str(path))
        assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
        with torch.inference_mode():
            torch.testing.assert_close(trunk(x), want, rtol=0, atol=0)


def test_wrong_layout_raises_weights_error_naming_keys():
    sd = vggish.load_vggish("random").state_dict()
    renamed = {k.replace("features.", "conv."): v for k, v in sd.items()}
    with pytest.raises(WeightsError, match="missing features.0.bias.*unexpected conv.0.weight"):
        vggish.vggish_trunk_state_dict(renamed)
    del sd["features.13.weight"]
    with pytest.raises(WeightsError, match="features.13.weight"):
        vggish.vggish_trunk_state_dict(sd)


def test_wrong_shapes_raise_weights_error(tmp_path):
    sd = vggish.load_vggish("random").state_dict()
    sd["features.0.weight"] = torch.zeros(64, 1, 5, 5)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="bad.pth.*wrong shape keys features.0.weight"):
        vggish.load_vggish(str(tmp_path / "bad.pth"))


def test_audioset_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = vggish.load_vggish("random", seed=5)
    cached = tmp_path / "hub" / "checkpoints" / vggish.VGGISH_URL.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(_public_layouts(source)["torchvggish"], cached)
    assert weights_checksum(vggish.load_vggish("vggish")) == weights_checksum(source)


def test_offline_download_raises_weights_error_with_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # Port 9 (discard) on the loopback refuses the connection at once: a real failed download.
    monkeypatch.setattr(vggish, "VGGISH_URL", "http://127.0.0.1:9/vggish-10086976.pth")
    with pytest.raises(WeightsError, match="--audio-weights PATH"):
        vggish.load_vggish("vggish")


def test_missing_weights_file_raises_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        vggish.load_vggish(str(tmp_path / "absent.pth"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_log_mel_matches_cpu(chirp):
    got = vggish.log_mel(torch.from_numpy(chirp).cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), vggish.log_mel(chirp), atol=1e-3, rtol=0)
