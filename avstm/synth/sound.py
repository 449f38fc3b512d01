"""The soundtrack of a scene: the event class's notes inside the event span over coloured
background noise that runs through the whole clip."""

from __future__ import annotations

import math

import numpy as np

from avstm.synth.scene import Scene, envelope

# Partials of each timbre: (frequency ratio, amplitude).
PARTIALS = {
    "sine": ((1.0, 1.0), (2.0, 0.1)),
    "square": tuple((k, 1.0 / k) for k in (1, 3, 5, 7, 9, 11)),
    "saw": tuple((k, 1.0 / k) for k in range(1, 9)),
    "bell": ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)),
    "reed": ((1, 1.0), (2, 0.2), (3, 0.7), (4, 0.15), (5, 0.4), (6, 0.1)),
}


def tone(timbre: str, pitch: float, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,) float64 periodic tone of unit RMS at the times ``t`` (N,) seconds; partials at or
    above the Nyquist frequency are left out."""
    out = np.zeros_like(t)
    power = 0.0
    for ratio, amp in PARTIALS[timbre]:
        f = ratio * pitch
        if f >= 0.45 * sample_rate:
            continue
        out += amp * np.sin(2 * math.pi * f * t)
        power += 0.5 * amp * amp
    return out / math.sqrt(max(power, 1e-12))


def coloured_noise(n: int, tilt: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """(n,) float64 stationary noise of unit RMS whose power falls as 1/f**tilt (above 30 Hz)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec *= np.maximum(f, 30.0) ** (-tilt / 2.0)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def render_audio(scene: Scene, sample_rate: int) -> np.ndarray:
    """(1, seconds · sample_rate) float32 in [-1, 1]: mono soundtrack of the scene.

    The notes' RMS (at envelope 1) lies ``snr_db`` above the noise's; outside the event span the
    track is noise only.
    """
    n = scene.seconds * sample_rate
    t = np.arange(n, dtype=np.float64) / sample_rate
    obj = scene.sounding
    rng = np.random.default_rng(scene.audio_seed)
    noise_rms = 10.0 ** (scene.noise_dbfs / 20.0)
    note_rms = noise_rms * 10.0 ** (scene.snr_db / 20.0)
    env = envelope(obj.notes, obj.decay, obj.span, t)
    signal = note_rms * env * tone(obj.spec.timbre, scene.pitch, t, sample_rate)
    noise = noise_rms * coloured_noise(n, scene.noise_tilt, rng, sample_rate)
    return np.clip(signal + noise, -0.99, 0.99).astype(np.float32)[None]
