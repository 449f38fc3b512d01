"""Drawing a scene with OpenCV: backgrounds, textured shapes, whole frames and exact boxes.

Shapes are filled polygons (anti-aliased, sub-pixel positions) drawn into a small patch around
the object and alpha-blended onto the frame, so a frame costs about a millisecond.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from avstm.synth.shapes import shape_polygons, stretch_polygons
from avstm.synth.scene import PAN, ObjectState, Scene, SceneObject, object_states

SHIFT = 4  # cv2 fixed-point bits for sub-pixel polygon vertices


def object_polygons(obj: SceneObject, state: ObjectState):
    """(fill, erase) vertex arrays of the object in ``state``, relative to its centre."""
    if obj.stretch is None:
        return shape_polygons(obj.spec.shape, state.size, state.angle)
    fill, erase = shape_polygons(obj.spec.shape, state.size, 0.0)
    return (stretch_polygons(fill, obj.stretch, state.angle),
            stretch_polygons(erase, obj.stretch, state.angle))


def _patch_origin(state: ObjectState) -> tuple[int, int, int]:
    r = 0.5 * state.size
    x0, y0 = int(math.floor(state.cx - r)) - 2, int(math.floor(state.cy - r)) - 2
    return x0, y0, int(math.ceil(2 * r)) + 5


def alpha_patch(obj: SceneObject, state: ObjectState, frame: tuple[int, int] | None = None
                ) -> tuple[int, int, np.ndarray]:
    """(x0, y0, alpha): the object's coverage in [0, 1], (Ph, Pw) float32, with its top-left
    corner at frame pixel (x0, y0). A stretched object's patch is its vertex bounds, cut to
    ``frame`` (width, height) where given (it may then be empty); an unstretched one's is the
    square around its bounding circle."""
    fill, erase = object_polygons(obj, state)
    if obj.stretch is None:
        x0, y0, p = _patch_origin(state)
        pw = ph = p
    else:
        v = np.concatenate(fill)
        x0 = int(math.floor(state.cx + v[:, 0].min())) - 2
        y0 = int(math.floor(state.cy + v[:, 1].min())) - 2
        x1 = int(math.ceil(state.cx + v[:, 0].max())) + 3
        y1 = int(math.ceil(state.cy + v[:, 1].max())) + 3
        if frame is not None:
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, frame[0]), min(y1, frame[1])
        pw, ph = max(x1 - x0, 0), max(y1 - y0, 0)
    mask = np.zeros((ph, pw), np.uint8)
    if pw == 0 or ph == 0:
        return x0, y0, mask.astype(np.float32)
    centre = np.array([state.cx - x0, state.cy - y0])

    def fixed(polys):
        return [np.round((q + centre) * (1 << SHIFT)).astype(np.int32) for q in polys]

    cv2.fillPoly(mask, fixed(fill), 255, lineType=cv2.LINE_AA, shift=SHIFT)
    if erase:
        cv2.fillPoly(mask, fixed(erase), 0, lineType=cv2.LINE_AA, shift=SHIFT)
    return x0, y0, mask.astype(np.float32) / 255.0


def _texture(obj: SceneObject, state: ObjectState, x0: int, y0: int,
             rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """(R, C, 3) float32 colours of the object's surface at the patch rows and columns
    [r0, r1) × [c0, c1) of a patch with corner (x0, y0): class texture turning with the
    object, darker towards the rim."""
    xx = np.arange(*cols, dtype=np.float32)[None, :] - np.float32(state.cx - x0)  # (1, C)
    yy = np.arange(*rows, dtype=np.float32)[:, None] - np.float32(state.cy - y0)  # (R, 1)
    a = obj.texture_angle + state.angle
    u = (xx * math.cos(a) + yy * math.sin(a)) / state.texture_period
    v = (-xx * math.sin(a) + yy * math.cos(a)) / state.texture_period
    kind = obj.spec.texture
    if kind == "stripes":
        pattern = np.floor(u) % 2 == 1
    elif kind == "checker":
        pattern = (np.floor(u) + np.floor(v)) % 2 == 1
    elif kind == "dots":
        pattern = (u - np.floor(u) - 0.5) ** 2 + (v - np.floor(v) - 0.5) ** 2 < 0.09
    else:
        pattern = None
    base = np.asarray(obj.colour, np.float32)
    second = base * 0.45 if base.mean() > 90 else base * 0.4 + 150
    if obj.stretch is None:
        rr = (xx * xx + yy * yy) / np.float32(0.25 * state.size * state.size)  # (R, C)
    else:  # the rim of the stretched shape, in its own axes
        c, s = math.cos(state.angle), math.sin(state.angle)
        sx, sy = obj.stretch
        p = (xx * np.float32(c / sx) + yy * np.float32(s / sx)) ** 2
        q = (-xx * np.float32(s / sy) + yy * np.float32(c / sy)) ** 2
        rr = (p + q) / np.float32(0.25 * state.size * state.size)
    shade = (1.0 - 0.25 * np.minimum(rr, 1.0))[..., None]
    if pattern is None:
        return base * shade
    return np.where(pattern[..., None], second, base) * shade


def draw_object(frame: np.ndarray, obj: SceneObject, state: ObjectState) -> None:
    """Blend the object onto ``frame`` (H, W, 3) uint8 in place."""
    h, w = frame.shape[:2]
    x0, y0, alpha = alpha_patch(obj, state, (w, h))
    ph, pw = alpha.shape
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    rows, cols = (fy0 - y0, fy1 - y0), (fx0 - x0, fx1 - x0)
    a = alpha[rows[0]:rows[1], cols[0]:cols[1], None]
    colour = _texture(obj, state, x0, y0, rows, cols)
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = (region * (1.0 - a) + colour * a + 0.5).astype(np.uint8)


def background_canvas(scene: Scene) -> np.ndarray:
    """(H + 2·PAN, W + 2·PAN, 3) uint8: the background the camera pans over."""
    h, w = scene.height + 2 * PAN, scene.width + 2 * PAN
    rng = np.random.default_rng(scene.bg_seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = math.cos(scene.bg_angle), math.sin(scene.bg_angle)
    if scene.background == "linear":
        proj = xx * c + yy * s
        mix = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
    elif scene.background == "radial":
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        d = np.hypot(xx - cx, yy - cy)
        mix = d / max(float(d.max()), 1.0)
    elif scene.background == "stripes":
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * c + yy * s) / scene.bg_scale)
    elif scene.background == "clutter":
        return _clutter(scene, rng, h, w)
    else:  # noise: smooth value noise at the scene's scale
        cells = (max(2, int(h / scene.bg_scale) + 2), max(2, int(w / scene.bg_scale) + 2))
        low = rng.random(cells).astype(np.float32)
        mix = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        mix = (mix - mix.min()) / max(float(mix.max() - mix.min()), 1e-6)
    c0, c1 = (np.asarray(col, np.float32) for col in scene.bg_colours)
    img = c0 * (1.0 - mix[..., None]) + c1 * mix[..., None]
    img += rng.normal(0.0, 5.0, size=(h, w, 1)).astype(np.float32)  # fine grain
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _pink(rng: np.random.Generator, h: int, w: int, channels: int) -> np.ndarray:
    """(H, W, C) float32 "pink" noise (amplitude spectrum ∝ 1/f), zero mean and unit std per
    channel: white noise filtered in the Fourier domain."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = np.inf
    white = rng.standard_normal((channels, h, w))
    out = np.fft.irfft2(np.fft.rfft2(white) / f, s=(h, w)).astype(np.float32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-6
    return out.transpose(1, 2, 0)


def _clutter(scene: Scene, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Natural-image-like clutter: 1/f noise between the two background colours, with a
    little per-channel 1/f tint, under a few dozen soft blurred blobs and rectangles of
    desaturated colours."""
    noise = _pink(rng, h, w, 4)
    mix = np.clip(0.5 + 0.22 * noise[..., :1], 0.0, 1.0)
    c0, c1 = (np.asarray(col, np.float32) for col in scene.bg_colours)
    img = c0 * (1.0 - mix) + c1 * mix + 4.0 * noise[..., 1:]
    layer = np.zeros((h, w, 3), np.float32)
    cover = np.zeros((h, w), np.float32)
    mean = 0.5 * (c0 + c1)
    for _ in range(int(rng.integers(24, 48))):
        col = np.clip(mean + rng.normal(0.0, 45.0, 3), 0, 255)
        col = 0.4 * col + 0.6 * col.mean()  # desaturated, so the objects stand out
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        a, b = int(rng.uniform(0.02, 0.18) * w), int(rng.uniform(0.02, 0.18) * h)
        op = float(rng.uniform(0.3, 0.8))
        paint = tuple(float(v) * op for v in col)  # premultiplied by the blob's opacity
        if rng.random() < 0.5:
            turn = float(rng.uniform(0, 180))
            cv2.ellipse(layer, (cx, cy), (a, b), turn, 0, 360, paint, -1)
            cv2.ellipse(cover, (cx, cy), (a, b), turn, 0, 360, op, -1)
        else:
            cv2.rectangle(layer, (cx - a, cy - b), (cx + a, cy + b), paint, -1)
            cv2.rectangle(cover, (cx - a, cy - b), (cx + a, cy + b), op, -1)
    sigma = max(1.0, 0.01 * min(h, w) * float(rng.uniform(1.0, 3.0)))
    layer = cv2.GaussianBlur(layer, (0, 0), sigma)
    cover = cv2.GaussianBlur(cover, (0, 0), sigma)[..., None]
    img = img * (1.0 - cover) + layer
    img += rng.normal(0.0, 4.0, size=(h, w, 1)).astype(np.float32)  # fine grain
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def pan_offset(scene: Scene, n: int) -> tuple[int, int]:
    """Top-left corner of frame ``n``'s window into the background canvas."""
    f = 2.0 * n / max(scene.seconds * scene.fps - 1, 1) - 1.0
    return int(round(PAN + PAN * scene.pan[0] * f)), int(round(PAN + PAN * scene.pan[1] * f))


class SceneRenderer:
    """Renders the frames of one scene; holds the background canvas and object states."""

    def __init__(self, scene: Scene, frames: list[int] | None = None):
        self.scene = scene
        self.canvas = background_canvas(scene)
        n = scene.seconds * scene.fps
        self.frames = list(range(n)) if frames is None else sorted(set(frames))
        times = np.array(self.frames, np.float64) / scene.fps
        self._states = [dict(zip(self.frames, object_states(o, times))) for o in scene.objects]

    def state(self, obj: int, n: int) -> ObjectState:
        return self._states[obj][n]

    def frame(self, n: int, *, skip: tuple[int, ...] = ()) -> np.ndarray:
        """Frame ``n`` (H, W, 3) uint8 RGB; objects whose index is in ``skip`` are left out."""
        ox, oy = pan_offset(self.scene, n)
        img = self.canvas[oy:oy + self.scene.height, ox:ox + self.scene.width].copy()
        for i, obj in enumerate(self.scene.objects):
            if i not in skip:
                draw_object(img, obj, self._states[i][n])
        return img

    def box(self, obj: int, n: int) -> list[int] | None:
        """[x1, y1, x2, y2] (x2, y2 exclusive) of every pixel the object covers in frame ``n``,
        clipped to the frame; None if it covers none."""
        x0, y0, alpha = alpha_patch(self.scene.objects[obj], self._states[obj][n],
                                    (self.scene.width, self.scene.height))
        ys, xs = np.nonzero(alpha > 0)
        if len(xs) == 0:
            return None
        x1, x2 = max(x0 + int(xs.min()), 0), min(x0 + int(xs.max()) + 1, self.scene.width)
        y1, y2 = max(y0 + int(ys.min()), 0), min(y0 + int(ys.max()) + 1, self.scene.height)
        if x1 >= x2 or y1 >= y2:
            return None
        return [x1, y1, x2, y2]

    def mask(self, obj: int, n: int) -> np.ndarray:
        """(H, W) bool: the pixels the object covers in frame ``n`` (ignoring occlusion)."""
        out = np.zeros((self.scene.height, self.scene.width), bool)
        x0, y0, alpha = alpha_patch(self.scene.objects[obj], self._states[obj][n],
                                    (self.scene.width, self.scene.height))
        ph, pw = alpha.shape
        fx0, fy0 = max(x0, 0), max(y0, 0)
        fx1, fy1 = min(x0 + pw, self.scene.width), min(y0 + ph, self.scene.height)
        if fx0 < fx1 and fy0 < fy1:
            out[fy0:fy1, fx0:fx1] = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] > 0
        return out
