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
from avstm.synth.shapes import shape_polygons, stretch_polygons

BACKGROUNDS = ("linear", "radial", "noise", "stripes")  # the kinds of sizes="small"
# sizes="benchmark" adds "clutter" (1/f noise with soft blobs) and draws the kinds with these
# weights, most on the textured ones.
BENCHMARK_BACKGROUNDS = (("clutter", 0.45), ("noise", 0.25), ("stripes", 0.1), ("linear", 0.1),
                         ("radial", 0.1))
# sizes="benchmark": the inverse CDF of a clip's target sounding-box area (share of the frame),
# piecewise linear in log area through these (quantile, area) knots. The knots are calibrated
# so that the per-frame area of the generated sounding boxes (union, after pulsing and
# clipping to the frame) has p10/p50/p90 of about 5.5/28/72 %, between VGG-SS (5/25/68 %) and
# AudioSet-Instrument (6/31/77 %); tests/test_synth.py checks it against the real files.
AREA_KNOTS = ((0.0, 0.014), (0.1, 0.05), (0.25, 0.119), (0.5, 0.255), (0.75, 0.54),
              (0.9, 0.92), (1.0, 1.2))
DISTRACTOR_AREA = 0.5  # benchmark: distractor areas are this times a draw of AREA_KNOTS
STRETCH = (0.6, 1.7)  # benchmark: log-uniform width/height stretch of an object's shape
MIN_INSIDE = 0.6  # benchmark: least share of an object's box (as far as it fits) in the frame
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
    # (sx, sy) scale of the shape along its own axes before it is turned (sizes="benchmark");
    # None: the unstretched shape of sizes="small", drawn exactly as before the field existed
    stretch: tuple[float, float] | None = None

    @property
    def spec(self) -> ClassSpec:
        return CLASSES[self.cls]

    @property
    def extent(self) -> float:
        """Nominal area of the object's bounding square (px², envelope 0), to rank sizes."""
        sx, sy = self.stretch or (1.0, 1.0)
        return self.size * self.size * sx * sy


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
        """The (largest) sounding object."""
        return self.objects[self.sounding_index()]

    def sounding_index(self) -> int:
        """Index of the (largest) sounding object in ``objects``."""
        idx = self.sounding_indices()
        return max(idx, key=lambda i: (self.objects[i].extent, -i))

    def sounding_indices(self) -> tuple[int, ...]:
        """Indices of every sounding object (one, or two in a multi-sounding clip), in drawing
        order; all share the sound's notes and span."""
        return tuple(i for i, o in enumerate(self.objects) if o.event)


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


AREA_BLOCK = 10  # benchmark: each block of this many videos holds every tenth of the areas


def draw_area(u: float) -> float:
    """The target sounding-box area (share of the frame) at quantile ``u`` of AREA_KNOTS."""
    q, a = zip(*AREA_KNOTS)
    return float(np.exp(np.interp(u, q, np.log(a))))


def area_quantile(rng: np.random.Generator, config: SynthConfig, index: int) -> float:
    """Stratified quantile of video ``index``'s sounding area: within each block of AREA_BLOCK
    videos a seeded permutation gives every stratum once, so that even a few hundred clips
    follow the distribution closely."""
    perm = np.random.default_rng([config.seed, index // AREA_BLOCK, 17]).permutation(AREA_BLOCK)
    return float((perm[index % AREA_BLOCK] + rng.random()) / AREA_BLOCK)


def shape_extent(shape: str, stretch: tuple[float, float], angle: float) -> tuple[float, float]:
    """(width, height) of the box of a shape of diameter 1, stretched and turned by ``angle``."""
    v = np.concatenate(stretch_polygons(shape_polygons(shape, 1.0, 0.0)[0], stretch, angle))
    return float(np.ptp(v[:, 0])), float(np.ptp(v[:, 1]))


def _benchmark_object(rng, config: SynthConfig, cls: int, event: bool, span,
                      area: float) -> SceneObject:
    """An object whose box covers about ``area`` of the frame (at a typical envelope), with a
    random width/height stretch; drift, bounce and spin kept small relative to big objects."""
    spec = CLASSES[cls]
    w, h = config.width, config.height
    side = min(w, h)
    ratio = math.exp(rng.uniform(math.log(STRETCH[0]), math.log(STRETCH[1])))
    sx, sy = math.sqrt(ratio), 1.0 / math.sqrt(ratio)
    angle = rng.uniform(0, 2 * math.pi)
    pulse = rng.uniform(0.12, 0.3)
    typical = 1.0 + 0.35 * pulse  # the diameter scale at a typical envelope
    bw, bh = shape_extent(spec.shape, (sx, sy), angle)
    size = math.sqrt(area * w * h / (bw * bh)) / typical
    # a box wider (taller) than the frame: trade width for height, keeping the area
    if size * typical * bw > w:
        f = w / (size * typical * bw)
        sx, sy = sx * f, sy / f
    elif size * typical * bh > h:
        f = h / (size * typical * bh)
        sx, sy = sx / f, sy * f
    big = float(np.clip(0.3 * side / size, 0.25, 1.0))  # 1 for small objects, less for big
    if event:
        notes = None
    else:
        own = (0.0, float(config.seconds)) if rng.random() < 0.5 else sample_span(rng, config)
        span = (float(own[0]), float(own[1]))
        notes = sample_notes(rng, spec, span)
    return SceneObject(
        cls=cls, event=event, size=size, anchor=(0.0, 0.0),
        amp=(rng.uniform(0.0, 0.06) * w * big, rng.uniform(0.0, 0.05) * h * big),
        freq=(rng.uniform(0.04, 0.2), rng.uniform(0.04, 0.2)),
        phase=(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)),
        angle=angle, spin=rng.uniform(-0.4, 0.4) * big,
        colour=_colour(rng, spec.colour), texture_period=size * rng.uniform(0.12, 0.22),
        texture_angle=rng.uniform(0, math.pi),
        pulse=pulse, bounce=rng.uniform(0.0, 0.2) * big,
        notes=notes or (), decay=spec.decay, span=(float(span[0]), float(span[1])),
        stretch=(sx, sy))


def _axis_range(half: float, length: float, margin: float, rise: float) -> tuple[float, float]:
    """Centres along one axis that keep sqrt(MIN_INSIDE) of the object's extent (as far as
    it fits) inside [0, length] while it drifts by ``margin`` and rises by ``rise``."""
    need = math.sqrt(MIN_INSIDE) * min(2 * half, length)
    lo, hi = need - half + margin + rise, length - need + half - margin
    if lo > hi:
        lo = hi = 0.5 * (lo + hi)
    return lo, hi


def _place_benchmark(rng, config: SynthConfig, objects: list[SceneObject],
                     n_sounding: int) -> list[SceneObject]:
    """Anchors anywhere that keeps most of each object in the frame. The sounding objects come
    first; each later object takes the best of a few tries by least box overlap with the
    sounding objects (and the second sounding object by least overlap with the first)."""
    w, h = config.width, config.height
    boxes, placed = [], []
    for k, o in enumerate(objects):
        bw, bh = shape_extent(o.spec.shape, o.stretch, o.angle)
        hx, hy = 0.5 * o.size * (1 + 0.5 * o.pulse) * bw, 0.5 * o.size * (1 + 0.5 * o.pulse) * bh
        xr = _axis_range(hx, w, o.amp[0], 0.0)
        yr = _axis_range(hy, h, o.amp[1], o.bounce * o.size)
        guard = boxes[:n_sounding]
        best, best_cost = None, math.inf
        for _ in range(8 if guard else 1):
            x, y = rng.uniform(*xr), rng.uniform(*yr)
            box = (x - hx, y - hy, x + hx, y + hy)
            cost = sum(max(0.0, min(box[2], g[2]) - max(box[0], g[0]))
                       * max(0.0, min(box[3], g[3]) - max(box[1], g[1])) for g in guard)
            if cost < best_cost:
                best, best_cost = (x, y, box), cost
            if cost == 0.0:
                break
        boxes.append(best[2])
        placed.append(replace(o, anchor=best[:2]))
    return placed


def _distractor_classes(rng, config: SynthConfig, cls: int) -> list[int]:
    """The classes of a scene's silent objects of other classes: 1–2 by default, the partner
    (the class that sounds alike) first with chance ``partner_share``."""
    n = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    with_partner = n > 0 and rng.random() < config.partner_share
    others = [c for c in range(len(CLASSES)) if c not in (cls, partner(cls))]
    chosen = [partner(cls)] if with_partner else []
    chosen += [int(c) for c in rng.choice(others, size=min(n - len(chosen), len(others)),
                                          replace=False)]
    return chosen


def _finish_scene(rng, config: SynthConfig, index: int, cls: int, hard: bool, event,
                  objects: list[SceneObject], background) -> Scene:
    """The Scene of placed ``objects`` in a random drawing order; ``background()`` draws the
    background kind (after the order, so that both sizes keep their draws in sequence)."""
    order = rng.permutation(len(objects))
    objects = [objects[i] for i in order]
    side = min(config.width, config.height)
    spec = CLASSES[cls]
    return Scene(
        video_id=video_id(index), index=index, cls=cls, hard=hard, event=event,
        width=config.width, height=config.height, fps=config.fps, seconds=config.seconds,
        objects=tuple(objects), background=background(),
        bg_colours=(_bg_colour(rng), _bg_colour(rng)), bg_angle=rng.uniform(0, 2 * math.pi),
        bg_scale=rng.uniform(0.08, 0.3) * side, bg_seed=int(rng.integers(2**31)),
        pan=(rng.uniform(-1, 1), rng.uniform(-1, 1)),
        pitch=spec.pitch * (1 + rng.uniform(-config.pitch_jitter, config.pitch_jitter)),
        snr_db=rng.uniform(*config.snr_db), noise_dbfs=rng.uniform(*config.noise_dbfs),
        noise_tilt=rng.uniform(0.0, 1.5), audio_seed=int(rng.integers(2**31)))


def _sample_benchmark_scene(config: SynthConfig, index: int) -> Scene:
    rng = np.random.default_rng([config.seed, index])
    cls = event_class(config, index)
    hard = bool(rng.random() < config.hard)
    event = sample_span(rng, config)
    spec = CLASSES[cls]
    multi = bool(rng.random() < config.multi_share)
    area = draw_area(area_quantile(rng, config, index))
    if multi:  # the union of the two keeps about the drawn area
        u = rng.uniform(0.35, 0.65)
        areas = [area * max(u, 1 - u), area * min(u, 1 - u)]
    else:
        areas = [area]
    notes = sample_notes(rng, spec, (float(event[0]), float(event[1])))
    objects = [replace(_benchmark_object(rng, config, cls, True, event, a), notes=notes)
               for a in areas]
    chosen = _distractor_classes(rng, config, cls)
    if hard:
        chosen.append(cls)
    for c in chosen:
        objects.append(_benchmark_object(rng, config, c, False, event,
                                         DISTRACTOR_AREA * draw_area(rng.random())))
    objects = _place_benchmark(rng, config, objects, len(areas))
    kinds, weights = zip(*BENCHMARK_BACKGROUNDS)
    p = np.asarray(weights) / sum(weights)
    return _finish_scene(rng, config, index, cls, hard, event, objects,
                         lambda: kinds[int(rng.choice(len(kinds), p=p))])


def sample_scene(config: SynthConfig, index: int) -> Scene:
    """The scene of video ``index``; depends on ``config.seed``, ``index`` and the content
    fields of ``config`` (not on ``config.videos``)."""
    if config.sizes == "benchmark":
        return _sample_benchmark_scene(config, index)
    rng = np.random.default_rng([config.seed, index])
    side = min(config.width, config.height)
    cls = event_class(config, index)
    hard = bool(rng.random() < config.hard)
    event = sample_span(rng, config)
    spec = CLASSES[cls]
    sound = _object(rng, config, cls, True, event, side)
    sound = replace(sound, notes=sample_notes(rng, spec, (float(event[0]), float(event[1]))))
    objects = [sound]
    chosen = _distractor_classes(rng, config, cls)
    for c in chosen:
        objects.append(_object(rng, config, c, False, event, side))
    if hard:
        objects.append(_object(rng, config, cls, False, event, side))
    objects = _place(rng, config, objects)
    return _finish_scene(rng, config, index, cls, hard, event, objects,
                         lambda: BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])


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
