"""The audio backbone: VGGish's log-mel frontend, its convolutional trunk and weight loading.

The frontend follows VGGish (Hershey et al. 2017): 16 kHz mono, 25 ms periodic-Hann windows
every 10 ms, a 512-point FFT magnitude, 64 HTK-mel bands between 125 and 7500 Hz, log with an
offset of 0.01. One example is 96 frames (0.96 s), which the trunk maps to a 6×4×512 grid.
The audio of a video frame is the example centred on the frame time (:func:`example_windows`).

AudioSet weights come in two public layouts, torchaudio's (``features_network.*``) and
torchvggish's (``features.*``); :func:`vggish_trunk_state_dict` reads both. Only the trunk is
used: the fully connected embedding layers are dropped.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

from avstm.errors import WeightsError
from avstm.extract.backbones import fetch_state_dict, load_strict, read_state_dict

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_LENGTH = 512
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
EXAMPLE_SAMPLES = WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES  # 15600
TRUNK_CHANNELS = 512
TRUNK_GRID = (6, 4)  # (time, frequency) cells of one example
CONV_INDICES = (0, 3, 6, 8, 11, 13)  # positions of the convolutions in ``features``
VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
# Key prefixes of the public layouts that belong to the parts avstm does not use.
_IGNORED_PREFIXES = ("embedding_network.", "embeddings.", "pproc.")


def hz_to_mel(hz):
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=None)
def _mel_matrix() -> np.ndarray:
    """(257, 64) float64 weights from linear FFT bins to mel bands, triangles in the mel domain."""
    bins_mel = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT_LENGTH // 2 + 1))  # (257,)
    edges = np.linspace(hz_to_mel(MEL_MIN_HZ), hz_to_mel(MEL_MAX_HZ), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (64,) each
    rising = (bins_mel[:, None] - lower) / (centre - lower)  # (257, 64)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin carries no band energy
    return weights


def log_mel(waveform) -> torch.Tensor:
    """VGGish log-mel spectrogram (no centre padding).

    waveform: (..., N) float in [-1, 1] at 16 kHz, numpy array or tensor (any device).
    Returns (..., frames, 64) float32 with frames = 1 + (N - 400) // 160 (0 if N < 400).
    """
    x = torch.as_tensor(waveform).to(torch.float32)
    n = x.shape[-1]
    if n < WINDOW_SAMPLES:
        return x.new_zeros((*x.shape[:-1], 0, MEL_BANDS))
    frames = x.unfold(-1, WINDOW_SAMPLES, HOP_SAMPLES)  # (..., frames, 400)
    window = torch.hann_window(WINDOW_SAMPLES, periodic=True, dtype=x.dtype, device=x.device)
    magnitude = torch.fft.rfft(frames * window, n=FFT_LENGTH).abs()  # (..., frames, 257)
    mel = torch.as_tensor(_mel_matrix(), dtype=x.dtype, device=x.device)  # (257, 64)
    return torch.log(magnitude @ mel + LOG_OFFSET)  # (..., frames, 64)


def example_windows(audio: np.ndarray, times: np.ndarray, *,
                    sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The 0.96 s example centred on each time, zero-padded outside the clip.

    audio: (N,) float32 mono at ``sample_rate``; times: (F,) seconds.
    Returns (F, L) float32 with L = 15600 at 16 kHz (0.975 s: 96 frames of the frontend);
    window f starts at sample round(times[f] * sample_rate) - L // 2.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"example_windows: audio must be 1-D (N,), got shape {audio.shape}")
    length = int(round(EXAMPLE_SAMPLES * sample_rate / SAMPLE_RATE))
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    starts = np.rint(times * sample_rate).astype(np.int64) - length // 2  # (F,)
    # Pad by a full window on each side; starts beyond that only ever see zeros.
    padded = np.concatenate([np.zeros(length, np.float32), audio, np.zeros(length, np.float32)])
    offsets = np.clip(starts + length, 0, len(padded) - length)  # (F,)
    windows = np.lib.stride_tricks.sliding_window_view(padded, length)[offsets]  # (F, L)
    return np.ascontiguousarray(windows, dtype=np.float32)


class VGGishTrunk(nn.Module):
    """VGGish's convolutional trunk: 4 stages of 3×3 convs + ReLU, each ending in a 2×2 max pool.

    ``features`` uses the standard indices (convs at 0, 3, 6, 8, 11, 13), so both public
    weight layouts map onto it by renaming the prefix only.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for stage in ((64,), (128,), (256, 256), (512, 512)):
            for c_out in stage:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, 96, 64) float32 log-mel examples (time × mel) -> (B, 512, 6, 4) feature maps."""
        return self.features(logmel.unsqueeze(1))  # (B, 1, 96, 64) -> (B, 512, 6, 4)


def vggish_trunk_state_dict(sd: dict) -> dict:
    """Map a public VGGish state dict to :class:`VGGishTrunk`'s keys (``features.N.*``).

    Accepts torchaudio's layout (``features_network.{0,3,6,8,11,13}.{weight,bias}``, with
    ``embedding_network.*``) and torchvggish's (``features.*`` with ``embeddings.*`` and
    ``pproc.*``); the embedding and post-processing entries are dropped.
    """
    expected = {f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")}
    out = {}
    unexpected = []
    for key, value in sd.items():
        if key.startswith(_IGNORED_PREFIXES):
            continue
        name = key.replace("features_network.", "features.", 1) if key.startswith(
            "features_network.") else key  # torchaudio -> torchvggish naming
        if name in expected and name not in out:
            out[name] = value
        else:
            unexpected.append(key)
    missing = sorted(expected - out.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}"
                         + (" ..." if len(unexpected) > 4 else ""))
        raise WeightsError("VGGish weights are in neither the torchaudio (features_network.*) "
                           "nor the torchvggish (features.*) layout: " + "; ".join(parts))
    return out


def load_vggish(weights: str = "vggish", *, seed: int = 0) -> VGGishTrunk:
    """The frozen VGGish trunk (eval mode, no gradients).

    weights: ``"vggish"`` (AudioSet weights from torchvggish's release, via the torch hub cache),
    ``"random"`` (initialised from ``seed`` without touching the global RNG) or a path to a
    state dict in either public layout.
    """
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trunk = VGGishTrunk()
    else:
        trunk = VGGishTrunk()
        if weights == "vggish":
            source, sd = VGGISH_URL, fetch_state_dict(VGGISH_URL, option="--audio-weights")
        else:
            source, sd = os.fspath(weights), read_state_dict(weights)
        try:
            sd = vggish_trunk_state_dict(sd)
        except WeightsError as exc:
            raise WeightsError(f"{source}: {exc}") from None
        load_strict(trunk, sd, source=source)
    return trunk.eval().requires_grad_(False)
