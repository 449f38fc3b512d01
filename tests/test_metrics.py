"""Tests for avstm.evaluate.metrics: hand-made maps and boxes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avstm.errors import AvstmError
from avstm.evaluate.annotations import Box
from avstm.evaluate.metrics import (MetricsConfig, auc, binarize, box_iou_matrix, cell_coverage,
                                    ciou, evaluate_frame, parse_binarization, peak,
                                    resize_bilinear, success_rate, truth_map, union_mask_iou)

SIZE = (8, 8)


def mask(cols: slice, rows: slice = slice(None), size=SIZE) -> np.ndarray:
    m = np.zeros(size, dtype=bool)
    m[rows, cols] = True
    return m


# ---- binarisation --------------------------------------------------------------------------


@pytest.mark.parametrize("text, name", [("value:0.5", "value:0.5"), ("TOP:0.25", "top:0.25"),
                                        ("median", "median"), ("max:0.5", "max:0.5")])
def test_parse_binarization_names_each_mode(text, name):
    assert parse_binarization(text).name == name


@pytest.mark.parametrize("bad", ["otsu", "value", "top:abc", "top:0", "value:1.5", "median:2"])
def test_parse_binarization_rejects_bad_modes_listing_valid_forms(bad):
    with pytest.raises(AvstmError, match=r"'value:T'.*'top:P'.*'median'.*'max:R'"):
        parse_binarization(bad)


RAMP = np.arange(16, dtype=np.float64).reshape(4, 4)  # values 0..15


def test_value_mode_keeps_normalised_values_above_tau():
    assert binarize(RAMP, "value:0.5").sum() == 8  # (m / 15) > 0.5  <=>  m >= 8


def test_top_mode_keeps_the_top_fraction_with_ge():
    region = binarize(RAMP, "top:0.25")  # threshold sorted[int(16 * 0.75)] = 12, kept with >=
    assert region.sum() == 4 and region[RAMP >= 12].all()


def test_median_mode_is_strictly_above_the_upper_median_as_lvs():
    region = binarize(RAMP, "median")  # threshold sorted[16 // 2] = 8, strict >
    assert region.sum() == 7 and not region[RAMP == 8].any()


def test_max_mode_uses_the_raw_maximum_not_the_minimum():
    shifted = RAMP + 16.0  # 16..31: > 0.5 * 31 keeps all, value:0.5 keeps half
    assert binarize(shifted, "max:0.5").all()
    assert binarize(shifted, "value:0.5").sum() == 8


def test_flat_map_selects_everything_except_under_median():
    flat = np.full((4, 4), 0.3)
    for mode in ("value:0.5", "top:0.5", "max:0.5"):
        assert binarize(flat, mode).all(), mode
    assert not binarize(flat, "median").any()


def test_binarize_works_on_a_batch_of_maps():
    batch = np.stack([RAMP, RAMP[::-1]])
    assert binarize(batch, "value:0.5").sum(axis=(1, 2)).tolist() == [8, 8]


# ---- resampling and ground truth -----------------------------------------------------------


@pytest.mark.parametrize("src, dst", [((8, 8), (256, 256)), ((7, 5), (20, 13)), ((16, 16), (6, 6))])
def test_resize_bilinear_equals_torch_align_corners_false(src, dst):
    m = np.random.default_rng(0).random(src)
    ref = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=dst,
                                          mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(resize_bilinear(m, dst), ref, atol=1e-12)


def test_consensus_of_three_annotators_is_sum_over_two_clipped():
    boxes = np.array([[0, 0, 4, 8], [2, 0, 6, 8], [3, 0, 8, 8]])  # annotators 0, 1, 2
    g = truth_map(boxes, [0, 1, 2], SIZE)
    # columns covered by 1, 2, 2, 3, 2, 2, 1, 1 annotators -> 0.5, 1, 1, 1, 1, 1, 0.5, 0.5
    np.testing.assert_allclose(g[0], [0.5, 0.5, 1, 1, 1, 1, 0.5, 0.5])


def test_one_annotator_gives_the_binary_union():
    g = truth_map(np.array([[0, 0, 2, 2], [1, 1, 3, 3]]), [None, None], SIZE)
    assert set(np.unique(g)) == {0.0, 1.0} and g.sum() == 7


def test_box_covers_pixels_whose_centres_lie_inside():
    g = truth_map(np.array([[0.4, 0, 2.6, 1]]), [None], SIZE)  # centres 0.5, 1.5, 2.5 inside
    assert g[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


# ---- cIoU, success, AUC --------------------------------------------------------------------


def test_perfect_region_has_ciou_one():
    g = mask(slice(0, 4)).astype(float)
    assert ciou(g > 0, g) == 1.0


def test_empty_region_has_ciou_zero():
    g = mask(slice(0, 4)).astype(float)
    assert ciou(np.zeros(SIZE, bool), g) == 0.0


def test_half_overlap_ciou_is_one_third():
    g = mask(slice(0, 4)).astype(float)  # 32 true pixels
    region = mask(slice(2, 6))  # 16 inside G, 16 outside: 16 / (32 + 16)
    assert ciou(region, g) == pytest.approx(1 / 3)


def test_soft_consensus_weights_enter_ciou():
    g = truth_map(np.array([[0, 0, 4, 8], [2, 0, 6, 8], [3, 0, 8, 8]]), [0, 1, 2], SIZE)
    region = mask(slice(0, 2))  # weights 0.5 + 0.5 per row; sum g = 6 per row; nothing outside G
    assert ciou(region, g) == pytest.approx(1.0 / 6.0)


def test_ciou_without_ground_truth_is_nan():
    assert math.isnan(float(ciou(np.ones(SIZE, bool), np.zeros(SIZE))))


def test_success_rate_counts_values_at_or_above_threshold():
    assert success_rate([0.0, 0.5, 1.0]) == pytest.approx(2 / 3)


def test_auc_of_a_known_success_curve():
    # success 1 at t=0, 2/3 for t in (0, 0.5], 1/3 for t in (0.5, 1]: trapezoid = 31/60
    assert auc([0.0, 0.5, 1.0]) == pytest.approx(31 / 60)


# ---- boxes, pointing, ceilings -------------------------------------------------------------


def test_union_mask_iou_of_half_shifted_box_is_one_third():
    true = mask(slice(0, 4))
    assert union_mask_iou(np.array([[2, 0, 6, 8]]), true) == pytest.approx(1 / 3)


def test_best_match_iou_takes_the_best_pair():
    iou = box_iou_matrix(np.array([[0, 0, 4, 4], [10, 10, 12, 12]]), np.array([[0, 0, 4, 2]]))
    assert iou.max() == pytest.approx(0.5)


def test_peak_ties_go_to_the_maximal_pixel_nearest_their_centroid():
    assert peak(np.ones((5, 5))) == (2, 2)


def spot(y: int, x: int, grid=(8, 8)) -> np.ndarray:
    m = np.zeros(grid)
    m[y, x] = 1.0
    return m


CFG = MetricsConfig(size=(64, 64))


def test_pointing_hit_when_peak_inside_sounding_box():
    r = evaluate_frame(spot(1, 1), [Box((0, 0, 32, 32))], image_size=(64, 64), config=CFG)
    assert r.pointing is True and r.distractor is None


def test_pointing_miss_when_peak_outside():
    r = evaluate_frame(spot(6, 6), [Box((0, 0, 32, 32))], image_size=(64, 64), config=CFG)
    assert r.pointing is False


def test_peak_on_silent_box_counts_as_distractor():
    boxes = [Box((0, 0, 32, 32)), Box((32, 32, 64, 64), sounding=False)]
    r = evaluate_frame(spot(6, 6), boxes, image_size=(64, 64), config=CFG)
    assert r.pointing is False and r.distractor is True


def test_cell_coverage_of_aligned_and_unaligned_boxes():
    aligned = truth_map(np.array([[32, 64, 96, 128]]), [None], (256, 256))
    shifted = truth_map(np.array([[16, 16, 48, 48]]), [None], (256, 256))
    cov_a, cov_s = cell_coverage(aligned, (8, 8)), cell_coverage(shifted, (8, 8))
    assert cov_a[2:4, 1:3].tolist() == [[1, 1], [1, 1]] and cov_a.sum() == 4
    np.testing.assert_allclose(cov_s[:2, :2], 0.25)


def test_ceiling_is_higher_for_a_box_aligned_to_the_8x8_grid():
    def ceiling(box):
        return evaluate_frame(np.zeros((8, 8)) + spot(0, 0), [Box(box)], image_size=(256, 256),
                              config=MetricsConfig()).ceiling_ciou["value:0.5"]
    aligned, straddling = ceiling((32, 32, 64, 64)), ceiling((48, 48, 80, 80))
    assert aligned > 0.5 > straddling


def test_one_hot_map_on_a_2x2_cell_object_points_right_but_fails_value_ciou():
    r = evaluate_frame(spot(1, 1), [Box((32, 32, 96, 96))], image_size=(256, 256))
    assert r.pointing is True and r.ciou["value:0.5"] < 0.5 < r.ceiling_ciou["value:0.5"]


def test_perfect_map_at_evaluation_resolution_scores_one():
    g = np.zeros((256, 256))
    g[64:128, 32:96] = 1.0
    r = evaluate_frame(g, [Box((32, 64, 96, 128))], image_size=(256, 256))
    assert r.ciou["value:0.5"] == r.ciou["median"] == r.ciou["max:0.5"] == 1.0


def test_map_resolution_and_box_size_are_rescaled():
    # a 4x4 map, truth in a 512x512 image, evaluated at 256x256
    m = np.zeros((4, 4))
    m[0, 0] = 1.0
    r = evaluate_frame(m, [Box((0, 0, 256, 256))], image_size=(512, 512),
                       pred_boxes=[[0, 0, 128, 128]], pred_image_size=(256, 256))
    assert r.grid == (4, 4) and r.pointing is True and r.box_iou == pytest.approx(1.0)


def test_frame_without_sounding_box_has_no_localization_scores():
    r = evaluate_frame(spot(1, 1), [], image_size=(64, 64), config=CFG, pred_boxes=[[0, 0, 8, 8]])
    assert not r.has_truth and math.isnan(r.ciou["value:0.5"]) and r.pointing is None
    assert r.box_iou is None


def test_non_finite_map_is_rejected():
    with pytest.raises(ValueError, match="finite"):
        evaluate_frame(np.full((8, 8), np.nan), [Box((0, 0, 8, 8))], image_size=(8, 8))


def test_metrics_config_round_trips_and_checks_primary():
    cfg = MetricsConfig(size=(224, 224), modes=("top:0.5", "median"), primary="top:0.5")
    assert MetricsConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AvstmError, match="primary"):
        MetricsConfig(modes=("median",), primary="value:0.5")
