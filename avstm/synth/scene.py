"""The random scene of one generated video: its objects, their motion, the event span, the
background and the sound's parameters, drawn deterministically from (seed, video index).

Every object pulses (grows) and bounces (rises) with an envelope of notes. The sounding object's
envelope is the amplitude envelope of the sound itself; a silent object's envelope is an
independent draw of the same kind. In a frame the two cannot be told apart: only the timing
against the audio can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from avstm.synth.classes import CLASSES, ClassSpec, partner
from avstm.synth.config import SynthConfig

BACKGROUNDS = ("linear", "radial", "noise", "stripes")
ATTACK = 0.01  # s, linear rise of a note
RELEASE = 0.04  # s, time constant of the fall after a note ends
FADE = 0.02  # s, ramp of the event gate at the span's ends
PAN = 16  # px, the background canvas margin the camera pans over


@dataclass(frozen=True)
class SceneObject:
    """One drawn object. Positions and sizes are in pixels; angles in radians; the envelope
    (``notes`` gated by ``span``) drives the pulse and the bounce."""

    cls: int
    event: bool  # the object of the video's event class that makes the sound
    size: float  # diameter at envelope 0
    anchor: tuple[float, float]  # centre of the drift
    amp: tuple[float, float]  # drift amplitude in x, y
    freq: tuple[float, float]  # drift frequency in Hz
    phase: tuple[float, float]
    angle: float
    spin: float  # rad/s
    colour: tuple[int, int, int]
    texture_period: float  # px at envelope 0
    texture_angle: float
    pulse: float  # relative growth at envelope 1
    bounce: float  # rise at envelope 1, in units of size
    notes: tuple[tuple[float, float], ...]  # (onset, duration) in seconds
    decay: float
    span: tuple[float, float]

    @property
    def spec(self) -> ClassSpec:
        return CLASSES[self.cls]


@dataclass(frozen=True)
class Scene:
    """All that is random in one video."""

    video_id: str
    index: int
    cls: int
    hard: bool
    event: tuple[int, int]  # [start, end) in whole seconds
    width: int
    height: int
    fps: int
    seconds: int
    objects: tuple[SceneObject, ...]  # in drawing order
    background: str
    bg_colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    bg_angle: float
    bg_scale: float  # px, the feature size of the noise and stripe backgrounds
    bg_seed: int
    pan: tuple[float, float]  # camera pan over the clip, each in [-1, 1] × PAN px
    pitch: float  # Hz
    snr_db: float
    noise_dbfs: float
    noise_tilt: float  # noise power falls as 1/f**tilt
    audio_seed: int

    @property
    def sounding(self) -> SceneObject:
        return next(o for o in self.objects if o.event)

    def sounding_index(self) -> int:
        return next(i for i, o in enumerate(self.objects) if o.event)


def video_id(index: int) -> str:
    return f"synth_{index:06d}"


def envelope(notes, decay: float, span: tuple[float, float], t: np.ndarray) -> np.ndarray:
    """Note envelope in [0, 1] at the sorted times ``t`` (N,) float seconds -> (N,) float32;
    exactly 0 outside ``span``."""
    t = np.asarray(t, dtype=np.float64)
    out = np.zeros(t.shape, np.float64)
    for onset, dur in notes:
        i0, i1 = np.searchsorted(t, [onset, onset + dur + 6 * RELEASE])
        if i0 >= i1:
            continue
        tau = t[i0:i1] - onset
        held = np.minimum(1.0, tau / ATTACK) * (0.35 + 0.65 * np.exp(-np.minimum(tau, dur) / decay))
        after = np.exp(-np.maximum(tau - dur, 0.0) / RELEASE)
        np.maximum(out[i0:i1], held * after, out=out[i0:i1])
    start, end = span
    gate = np.clip((t - start) / FADE, 0.0, 1.0) * np.clip((end - t) / FADE, 0.0, 1.0)
    return (out * gate).astype(np.float32)


def sample_notes(rng: np.random.Generator, spec: ClassSpec, span: tuple[float, float]):
    """Note (onset, duration) pairs of the class's rhythm inside ``span``; at most about a
    second between onsets, so every second of the span holds sound."""
    start, end = span
    notes = []
    t = start + rng.uniform(0.0, 0.1)
    while t < end - 0.08:
        if spec.rhythm == "beat":
            step = spec.period * rng.uniform(0.85, 1.15)
            dur = 0.6 * step
        elif spec.rhythm == "sustain":
            dur = spec.period * rng.uniform(0.5, 1.1)
            step = dur + rng.uniform(0.1, 0.3)
        else:  # random
            step = float(np.clip(rng.exponential(spec.period), 0.15, 0.9))
            dur = 0.7 * step
        notes.append((round(t, 4), round(min(dur, end - t), 4)))
        t += step
    return tuple(notes)


def sample_span(rng: np.random.Generator, config: SynthConfig) -> tuple[int, int]:
    """An event span [start, end) of whole seconds, at least ``min_event_seconds`` long."""
    s = config.seconds
    if rng.random() < config.whole_event_share or s == config.min_event_seconds:
        return 0, s
    length = int(rng.integers(config.min_event_seconds, s)) if s > config.min_event_seconds else s
    start = int(rng.integers(0, s - length + 1))
    return start, start + length


def event_class(config: SynthConfig, index: int) -> int:
    """Balanced classes: each block of len(CLASSES) videos holds every class once."""
    k = len(CLASSES)
    perm = np.random.default_rng([config.seed, index // k, 7]).permutation(k)
    return int(perm[index % k])


def _colour(rng, base) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in base)


def _bg_colour(rng) -> tuple[int, int, int]:
    c = rng.uniform(30, 210, size=3)
    c = 0.45 * c + 0.55 * c.mean()  # desaturated, so the objects stand out
    return tuple(int(v) for v in c)


def _object(rng, config: SynthConfig, cls: int, event: bool, span, side: float) -> SceneObject:
    spec = CLASSES[cls]
    size = side * rng.uniform(*config.size_range)
    if event:
        notes = None  # filled in by the caller with the sound's notes
    else:  # an independent rhythm over an independent span
        own = (0.0, float(config.seconds)) if rng.random() < 0.5 else sample_span(rng, config)
        span = (float(own[0]), float(own[1]))
        notes = sample_notes(rng, spec, span)
    return SceneObject(
        cls=cls, event=event, size=size, anchor=(0.0, 0.0),
        amp=(rng.uniform(0.0, 0.08) * config.width, rng.uniform(0.0, 0.06) * config.height),
        freq=(rng.uniform(0.04, 0.2), rng.uniform(0.04, 0.2)),
        phase=(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)),
        angle=rng.uniform(0, 2 * math.pi), spin=rng.uniform(-0.4, 0.4),
        colour=_colour(rng, spec.colour), texture_period=size * rng.uniform(0.18, 0.3),
        texture_angle=rng.uniform(0, math.pi),
        pulse=rng.uniform(0.12, 0.3), bounce=rng.uniform(0.0, 0.2),
        notes=notes or (), decay=spec.decay, span=(float(span[0]), float(span[1])))


def _place(rng, config: SynthConfig, objects: list[SceneObject]) -> list[SceneObject]:
    """Anchors that keep every object inside the frame at any envelope and that keep objects
    apart where the frame allows it (the best of a few tries)."""
    w, h = config.width, config.height
    best, best_gap = None, -math.inf
    for _ in range(40):
        placed = []
        for o in objects:
            r = 0.5 * o.size * (1 + o.pulse) + 1
            x = rng.uniform(r + o.amp[0], w - r - o.amp[0])
            y = rng.uniform(r + o.amp[1] + o.bounce * o.size, h - r - o.amp[1])
            placed.append((x, y, 0.5 * o.size))
        gap = min((math.dist(a[:2], b[:2]) - a[2] - b[2]
                   for i, a in enumerate(placed) for b in placed[i + 1:]), default=0.0)
        if gap > best_gap:
            best, best_gap = placed, gap
        if gap > 0.15 * min(w, h):
            break
    return [replace(o, anchor=(x, y)) for o, (x, y, _) in zip(objects, best)]


def sample_scene(config: SynthConfig, index: int) -> Scene:
    """The scene of video ``index``; depends on ``config.seed``, ``index`` and the content
    fields of ``config`` (not on ``config.videos``)."""
    rng = np.random.default_rng([config.seed, index])
    side = min(config.width, config.height)
    cls = event_class(config, index)
    hard = bool(rng.random() < config.hard)
    event = sample_span(rng, config)
    spec = CLASSES[cls]
    sound = _object(rng, config, cls, True, event, side)
    sound = replace(sound, notes=sample_notes(rng, spec, (float(event[0]), float(event[1]))))
    objects = [sound]
    n = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    with_partner = n > 0 and rng.random() < config.partner_share
    others = [c for c in range(len(CLASSES)) if c not in (cls, partner(cls))]
    chosen = [partner(cls)] if with_partner else []
    chosen += [int(c) for c in rng.choice(others, size=min(n - len(chosen), len(others)),
                                          replace=False)]
    for c in chosen:
        objects.append(_object(rng, config, c, False, event, side))
    if hard:
        objects.append(_object(rng, config, cls, False, event, side))
    objects = _place(rng, config, objects)
    order = rng.permutation(len(objects))
    objects = [objects[i] for i in order]
    return Scene(
        video_id=video_id(index), index=index, cls=cls, hard=hard, event=event,
        width=config.width, height=config.height, fps=config.fps, seconds=config.seconds,
        objects=tuple(objects), background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        bg_colours=(_bg_colour(rng), _bg_colour(rng)), bg_angle=rng.uniform(0, 2 * math.pi),
        bg_scale=rng.uniform(0.08, 0.3) * side, bg_seed=int(rng.integers(2**31)),
        pan=(rng.uniform(-1, 1), rng.uniform(-1, 1)),
        pitch=spec.pitch * (1 + rng.uniform(-config.pitch_jitter, config.pitch_jitter)),
        snr_db=rng.uniform(*config.snr_db), noise_dbfs=rng.uniform(*config.noise_dbfs),
        noise_tilt=rng.uniform(0.0, 1.5), audio_seed=int(rng.integers(2**31)))


@dataclass(frozen=True)
class ObjectState:
    """Where an object is drawn at one instant: centre (px), diameter (px), angle (rad)."""

    cx: float
    cy: float
    size: float
    angle: float
    texture_period: float


def object_states(obj: SceneObject, t: np.ndarray) -> list[ObjectState]:
    """The object's states at the sorted times ``t`` (N,) seconds."""
    t = np.asarray(t, dtype=np.float64)
    env = envelope(obj.notes, obj.decay, obj.span, t).astype(np.float64)
    scale = 1.0 + obj.pulse * env
    cx = obj.anchor[0] + obj.amp[0] * np.sin(2 * math.pi * obj.freq[0] * t + obj.phase[0])
    cy = (obj.anchor[1] + obj.amp[1] * np.sin(2 * math.pi * obj.freq[1] * t + obj.phase[1])
          - obj.bounce * obj.size * env)
    angle = obj.angle + obj.spin * t
    return [ObjectState(float(x), float(y), float(obj.size * s), float(a),
                        float(obj.texture_period * s))
            for x, y, s, a in zip(cx, cy, scale, angle)]


def frame_index(t: float, fps: int) -> int:
    """The frame on screen at time ``t``: the last one whose presentation time is <= t."""
    return int(math.floor(t * fps + 1e-6))


def annotation_times(config: SynthConfig) -> list[float]:
    """t = s + (k + 0.5) / annotation_fps for every second s and k < annotation_fps."""
    f = config.annotation_fps
    return [s + (k + 0.5) / f for s in range(config.seconds) for k in range(f)]
