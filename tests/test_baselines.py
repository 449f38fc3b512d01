"""Tests for avstm.evaluate.baselines: the model-free maps scored by evaluate_frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avstm.errors import AvstmError
from avstm.evaluate.annotations import Box, VideoTruth
from avstm.evaluate.baselines import (baseline_prediction, centre_prior, evaluate_baseline,
                                      uniform, whole_image)
from avstm.evaluate.metrics import MetricsConfig, evaluate_frame

CFG = MetricsConfig(size=(64, 64))
QUARTER = [Box((0, 0, 32, 32))]  # the top-left quarter of a 64x64 image: |G| / N = 1/4


def test_centre_prior_has_the_stated_sigma():
    # pixel centres of a 1x2 map sit at +-0.25 of the width from the centre = 1 sigma
    np.testing.assert_allclose(centre_prior((1, 2), sigma=0.25), np.exp(-0.5))


def test_centre_prior_peaks_at_the_centre():
    m = centre_prior((9, 9))
    assert np.unravel_index(m.argmax(), m.shape) == (4, 4) and m.max() == 1.0


def test_whole_image_scores_the_truth_fraction_under_every_mode():
    r = evaluate_frame(whole_image((8, 8)), QUARTER, image_size=(64, 64), config=CFG,
                       pred_boxes=[[0, 0, 64, 64]])
    assert all(v == pytest.approx(0.25) for v in r.ciou.values())
    assert r.box_iou == pytest.approx(0.25)


def test_uniform_map_is_the_whole_image_except_under_median():
    r = evaluate_frame(uniform((8, 8)), QUARTER, image_size=(64, 64), config=CFG)
    assert r.ciou["value:0.5"] == r.ciou["top:0.5"] == r.ciou["max:0.5"] == pytest.approx(0.25)
    assert r.ciou["median"] == 0.0


def test_uniform_map_points_at_the_image_centre():
    centre = [Box((28, 28, 36, 36))]
    assert evaluate_frame(uniform((8, 8)), centre, image_size=(64, 64), config=CFG).pointing


def test_baseline_boxes_are_in_frame_pixels():
    assert baseline_prediction("whole-image", 320, 240).boxes.tolist() == [[0, 0, 320, 240]]
    assert baseline_prediction("centre", 320, 240).boxes.tolist() == [[80, 60, 240, 180]]
    assert baseline_prediction("uniform", 320, 240).boxes is None


def test_unknown_baseline_lists_valid_names():
    with pytest.raises(AvstmError, match="centre, whole-image, uniform"):
        baseline_prediction("random", 10, 10)


def test_evaluate_baseline_scores_every_frame_and_the_centre_prior_points_at_centred_objects():
    truth = {"mid": VideoTruth(320, 240, {0.5: [Box((120, 80, 200, 160), True, "dog")],
                                          1.5: []}),
             "corner": VideoTruth(320, 240, {0.5: [Box((0, 0, 60, 40))]}, "cat")}
    results = evaluate_baseline("centre", truth, config=CFG)
    assert [(r.video, r.time) for r in results] == [("mid", 0.5), ("mid", 1.5), ("corner", 0.5)]
    assert [r.pointing for r in results] == [True, None, False]
    assert [r.label for r in results] == ["dog", None, "cat"]
    assert math.isnan(results[1].ciou["value:0.5"])
