"""The shapes of the generated objects as vertex arrays (numpy only): what rendering fills and
what the scene sampler measures, so that neither imports the other."""

from __future__ import annotations

import math

import numpy as np


def _ngon(n: int, r: float, angle: float, ratio: float = 1.0) -> np.ndarray:
    """(n, 2) vertices of a regular n-gon of circumradius r; ``ratio`` alternates the radius
    of odd vertices (a star when < 1)."""
    a = angle + 2 * math.pi * np.arange(n) / n
    rad = np.where(np.arange(n) % 2 == 1, r * ratio, r)
    return np.stack([rad * np.cos(a), rad * np.sin(a)], axis=1)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def shape_polygons(shape: str, size: float, angle: float):
    """(fill, erase): lists of (K, 2) float vertex arrays relative to the centre, for a shape
    whose bounding circle has diameter ``size``."""
    r = 0.5 * size
    if shape == "circle":
        return [_ngon(48, r, 0.0)], []
    if shape == "ring":
        return [_ngon(48, r, 0.0)], [_ngon(48, 0.55 * r, 0.0)]
    if shape == "crescent":
        inner = _ngon(48, 0.8 * r, 0.0) + _rotate(np.array([[0.45 * r, 0.0]]), angle)
        return [_ngon(48, r, 0.0)], [inner]
    if shape == "square":
        return [_ngon(4, r, angle + math.pi / 4)], []
    if shape == "diamond":
        return [_rotate(_ngon(4, r, 0.0) * np.array([1.0, 0.65]), angle)], []
    if shape == "triangle":
        return [_ngon(3, r, angle)], []
    if shape == "pentagon":
        return [_ngon(5, r, angle)], []
    if shape == "hexagon":
        return [_ngon(6, r, angle)], []
    if shape == "star":
        return [_ngon(10, r, angle, ratio=0.45)], []
    if shape == "cross":
        a, b = r, 0.36 * r
        arm = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                        [-b, b], [-a, b], [-a, -b], [-b, -b]])
        return [_rotate(arm, angle)], []
    raise ValueError(f"unknown shape {shape!r}")


def stretch_polygons(polys, stretch: tuple[float, float], angle: float) -> list[np.ndarray]:
    """Scale unturned vertex arrays by ``stretch`` (sx, sy) along the shape's own axes, then
    turn them by ``angle``."""
    return [_rotate(q * np.asarray(stretch), angle) for q in polys]
