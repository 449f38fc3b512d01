"""avstm.maps: the map geometry localize and evaluate share (one rule each)."""

import numpy as np
import pytest

from avstm.evaluate.metrics import binarize
from avstm.localize.boxes import maps_to_boxes
from avstm.maps import (FLAT_RTOL, MapsFile, boxes_to_masks, is_flat, maps_key, pixel_span, resize_bilinear,
                        upsample_maps, write_maps)


def test_the_two_upsamplings_are_one_rule():
    # localize's OpenCV float32 path and evaluate's exact float64 one: both bilinear with
    # half-pixel centres, so after min-max normalisation they agree to float32 precision
    rng = np.random.default_rng(0)
    maps = rng.random((5, 8, 8))
    for size in [(256, 256), (240, 320), (37, 91)]:
        exact = resize_bilinear(maps, size)
        lo, hi = exact.min(axis=(1, 2), keepdims=True), exact.max(axis=(1, 2), keepdims=True)
        fast = upsample_maps(maps, size)
        assert fast.shape == (5, *size)
        assert np.abs(fast - (exact - lo) / (hi - lo)).max() < 1e-5


def test_pixel_centre_masks_are_the_spans_of_the_boxes():
    rng = np.random.default_rng(1)
    size = (23, 31)
    corners = np.sort(rng.uniform(-3, 34, (400, 2, 2)), axis=1)  # (N, [lo, hi], [x, y])
    boxes = corners.transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]]  # x1 y1 x2 y2
    boxes[:100] = np.round(boxes[:100] * 2) / 2  # integer and half-integer edges
    masks = boxes_to_masks(boxes, size)
    cy, cx = np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5
    for b, m, (c1, r1, c2, r2) in zip(boxes, masks, pixel_span(boxes, size), strict=True):
        want = ((cy >= b[1]) & (cy < b[3]))[:, None] & ((cx >= b[0]) & (cx < b[2]))[None, :]
        np.testing.assert_array_equal(m, want)
        assert m.sum() == max(0, c2 - c1) * max(0, r2 - r1)


def test_one_flat_tolerance_for_localize_and_evaluate():
    base = np.full((8, 8), 1 / 64)
    tiny = base.copy()
    tiny[2, 3] += (FLAT_RTOL / 10) / 64  # a range below the tolerance: flat
    small = base.copy()
    small[2, 3] += 1e-7 / 64  # above 1e-9 (the stricter rule), below localize's former 1e-6
    assert is_flat(np.stack([base, tiny])).all() and not is_flat(small)
    assert maps_to_boxes(tiny, size=(64, 64)) == []
    assert len(maps_to_boxes(small, size=(64, 64))) == 1  # the one raised cell is found
    assert binarize(tiny, "value:0.5").all()  # a flat map selects every pixel
    assert binarize(small, "value:0.5").sum() == 1


def test_maps_file_round_trip(tmp_path):
    maps = {("a/b@c", 0.125): np.arange(4.0).reshape(2, 2), ("v", 1.0): np.ones((3, 5))}
    write_maps(tmp_path / "m.npz", maps)
    assert sorted(np.load(tmp_path / "m.npz").files) == ["a/b@c@0.125", "v@1.000"]
    f = MapsFile(tmp_path / "m.npz")
    assert f.videos() == ["a/b@c", "v"] and f.times("a/b@c").tolist() == [0.125]
    np.testing.assert_array_equal(f.map("v", 0), np.ones((3, 5)))
    assert maps_key("x", 2) == "x@2.000"


@pytest.mark.parametrize("size", [(0, 4), (4, -1)])
def test_a_frame_size_must_be_positive(size):
    with pytest.raises(ValueError, match="positive"):
        pixel_span(np.zeros((1, 4)), size)
