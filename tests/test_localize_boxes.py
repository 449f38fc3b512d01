"""Tests for avstm.localize.boxes: maps → Otsu + contour boxes."""

from __future__ import annotations

import numpy as np
import pytest

from avstm.localize.boxes import (Box, box_sums, integral_image, maps_to_boxes,
                                  maps_to_boxes_batch, upsample_map,
                                  upsample_maps)

SIZE = (120, 160)  # (H, W)


def blob(cy: float, cx: float, sigma: float, shape=SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2) / (2 * sigma ** 2))


def centre(box: Box) -> tuple[float, float]:
    x1, y1, x2, y2 = box.xyxy
    return (y1 + y2) / 2, (x1 + x2) / 2


def test_one_blob_gives_one_box_centred_on_it():
    boxes = maps_to_boxes(blob(40, 100, 8), size=SIZE)
    assert len(boxes) == 1
    cy, cx = centre(boxes[0])
    assert abs(cy - 40) <= 2 and abs(cx - 100) <= 2


def test_box_of_blob_is_tight_and_inside_frame():
    (box,) = maps_to_boxes(blob(60, 80, 6), size=SIZE)
    x1, y1, x2, y2 = box.xyxy
    assert 0 <= x1 < x2 <= SIZE[1] and 0 <= y1 < y2 <= SIZE[0]
    assert 10 <= x2 - x1 <= 40 and 10 <= y2 - y1 <= 40


def test_two_separated_blobs_give_two_boxes_best_first():
    amap = blob(30, 30, 6) + 0.8 * blob(90, 130, 6)
    boxes = maps_to_boxes(amap, size=SIZE)
    assert len(boxes) == 2
    assert boxes[0].score > boxes[1].score
    (cy0, cx0), (cy1, cx1) = centre(boxes[0]), centre(boxes[1])
    assert abs(cy0 - 30) <= 3 and abs(cx0 - 30) <= 3
    assert abs(cy1 - 90) <= 3 and abs(cx1 - 130) <= 3


def test_score_is_share_of_normalised_mass_inside():
    amap = blob(60, 80, 10)
    (box,) = maps_to_boxes(amap, size=SIZE)
    norm = upsample_map(amap, SIZE)
    x1, y1, x2, y2 = (int(v) for v in box.xyxy)
    assert box.score == pytest.approx(norm[y1:y2, x1:x2].sum() / norm.sum(), rel=1e-6)


def test_small_map_upsampled_to_frame_size():
    amap = np.zeros((8, 8))
    amap[2, 5] = 1.0  # cell (row 2, col 5) of 8×8 over a 240×320 frame: x 200–240, y 60–90
    (box,) = maps_to_boxes(amap, size=(240, 320))
    cy, cx = centre(box)
    assert abs(cy - 75) <= 4 and abs(cx - 220) <= 4


@pytest.mark.parametrize("value", [0.0, 1 / 64, -3.0])
def test_flat_map_gives_no_box(value):
    assert maps_to_boxes(np.full((8, 8), value), size=SIZE) == []


def test_nearly_flat_map_within_tolerance_gives_no_box():
    amap = np.full((8, 8), 1 / 64) + np.random.default_rng(0).normal(0, 1e-12, (8, 8))
    assert maps_to_boxes(amap, size=SIZE) == []


def test_min_area_drops_small_boxes():
    amap = blob(30, 30, 12) + blob(90, 130, 3)
    all_boxes = maps_to_boxes(amap, size=SIZE)
    big_only = maps_to_boxes(amap, size=SIZE, min_area=0.02)
    assert len(all_boxes) == 2
    assert len(big_only) == 1
    cy, cx = centre(big_only[0])
    assert abs(cy - 30) <= 3 and abs(cx - 30) <= 3


def test_max_boxes_keeps_the_best():
    amap = blob(30, 30, 6) + 0.9 * blob(30, 130, 6) + 0.8 * blob(95, 80, 6)
    boxes = maps_to_boxes(amap, size=SIZE)
    top = maps_to_boxes(amap, size=SIZE, max_boxes=2)
    assert len(boxes) == 3
    assert top == boxes[:2]


def test_batch_equals_single_maps():
    rng = np.random.default_rng(1)
    amaps = rng.random((5, 8, 8))
    amaps[3] = 0.5  # a flat one in the middle
    batch = maps_to_boxes_batch(amaps, size=SIZE, max_boxes=3)
    assert batch == [maps_to_boxes(m, size=SIZE, max_boxes=3) for m in amaps]
    assert batch[3] == []


def test_empty_batch_gives_empty_list():
    assert maps_to_boxes_batch(np.zeros((0, 8, 8)), size=SIZE) == []


def test_upsample_maps_equals_one_by_one():
    amaps = np.random.default_rng(3).random((6, 8, 8))
    ups = upsample_maps(amaps, (24, 32))
    assert ups.shape == (6, 24, 32)
    for up, amap in zip(ups, amaps, strict=True):
        assert np.array_equal(up, upsample_map(amap, (24, 32)))


def test_upsample_map_range_and_flat_zeros():
    up = upsample_map(np.arange(64.0).reshape(8, 8) * 1e-4 + 7.0, (30, 40))
    assert up.shape == (30, 40) and up.dtype == np.float32
    assert up.min() == 0.0 and up.max() == pytest.approx(1.0)
    assert not upsample_map(np.full((8, 8), 2.0), (30, 40)).any()


def test_box_sums_match_direct_sums():
    rng = np.random.default_rng(2)
    amap = rng.random((20, 30))
    xyxy = np.array([[0, 0, 30, 20], [3, 4, 10, 9], [5.2, 1.7, 12.6, 8.4], [25, 15, 40, 30]])
    sums = box_sums(integral_image(amap), xyxy)
    yy, xx = np.mgrid[0:20, 0:30] + 0.5
    for s, (x1, y1, x2, y2) in zip(sums, xyxy, strict=True):
        mask = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
        assert s == pytest.approx(amap[mask].sum())


def test_box_dict_round_trip():
    box = Box(xyxy=(1.0, 2.0, 3.0, 4.0), score=0.5)
    assert box.to_dict() == {"xyxy": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
    assert Box.from_dict(box.to_dict()) == box


def test_bad_map_shape_raises():
    with pytest.raises(ValueError):
        maps_to_boxes(np.zeros((2, 8, 8)), size=SIZE)
