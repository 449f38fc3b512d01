"""Tests for avstm.localize.proposals: proposal scoring, NMS grounding, the detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avstm.errors import WeightsError
from avstm.localize.proposals import ProposalDetector, ground, load_detector, score_proposals

SMALL = {"min_size": 64, "max_size": 64}  # a tiny detector input keeps the CPU test fast


@pytest.fixture(scope="module")
def detector() -> ProposalDetector:
    torch.manual_seed(0)
    return ProposalDetector(weights="random", score_threshold=0.0, max_proposals=20, **SMALL)


def direct_sum(amap: np.ndarray, box) -> float:
    yy, xx = np.mgrid[0:amap.shape[0], 0:amap.shape[1]] + 0.5
    x1, y1, x2, y2 = box
    return float(amap[(xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)].sum(dtype=np.float64))


def test_score_equals_direct_mask_sum():
    amap = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    boxes = np.array([[0, 0, 64, 48], [10.3, 5.7, 30.2, 40.9], [60, 40, 80, 60], [5, 5, 5, 20]])
    scores = score_proposals(boxes, amap)
    assert scores == pytest.approx([direct_sum(amap, b) for b in boxes], rel=1e-9, abs=1e-9)


def test_nms_keeps_the_best_of_overlapping_boxes():
    amap = np.zeros((100, 100), np.float32)
    amap[20:40, 20:40] = 1.0
    boxes = np.array([[18, 18, 42, 42],    # covers the hot square: S = 400
                      [22, 22, 44, 44],    # overlaps the first (IoU ≈ 0.69), S = 324
                      [60, 60, 90, 90]])   # elsewhere, S = 0
    grounded = ground(boxes, amap, iou_threshold=0.5)
    assert [b.xyxy for b in grounded] == [(18.0, 18.0, 42.0, 42.0)]
    assert grounded[0].score == pytest.approx(1.0)  # the whole map's mass lies inside


def test_ground_keeps_separate_boxes_ranked_by_attention():
    amap = np.zeros((100, 100), np.float32)
    amap[10:20, 10:20] = 0.5
    amap[60:80, 60:80] = 1.0
    boxes = np.array([[10, 10, 20, 20], [60, 60, 80, 80], [12, 12, 20, 20]])
    grounded = ground(boxes, amap, iou_threshold=0.5)
    assert [b.xyxy for b in grounded] == [(60.0, 60.0, 80.0, 80.0), (10.0, 10.0, 20.0, 20.0)]
    assert [b.score for b in grounded] == pytest.approx([400.0 / 450.0, 50.0 / 450.0])


def test_ground_max_boxes():
    amap = np.random.default_rng(1).random((50, 50)).astype(np.float32)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [40, 0, 50, 10]])
    assert len(ground(boxes, amap, max_boxes=2)) == 2


def test_ground_on_flat_map_gives_nothing():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 30, 30]])
    assert ground(boxes, np.zeros((40, 40), np.float32)) == []


def test_random_detector_returns_well_formed_boxes(detector):
    frames = np.random.default_rng(2).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    out = detector.propose(frames)
    assert len(out) == 2
    for boxes, scores in out:
        assert boxes.dtype == np.float32 and boxes.shape == (len(scores), 4)
        assert 0 < len(scores) <= 20
        assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])
        assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 64)
        assert np.all(boxes[:, [1, 3]] <= 48)
        assert np.all((scores >= 0) & (scores <= 1))
        assert np.all(np.diff(scores) <= 1e-6)


def test_propose_rejects_non_uint8_frames(detector):
    with pytest.raises(ValueError):
        detector.propose(np.zeros((1, 48, 64, 3), np.float32))


def test_detector_weights_path_loads_saved_state_dict(detector, tmp_path):
    path = tmp_path / "det.pt"
    torch.save(detector.model.state_dict(), path)
    loaded = load_detector(path, **SMALL)
    for name in ("roi_heads.box_predictor.cls_score.weight", "backbone.body.layer4.2.bn3.bias",
                 "rpn.head.conv.0.0.weight"):
        assert torch.equal(loaded.state_dict()[name], detector.model.state_dict()[name])


def test_detector_weights_wrapped_as_a_reference_checkpoint_load(detector, tmp_path):
    path = tmp_path / "wrapped.pt"  # torchvision's reference scripts save {"model": ..., "optimizer": ...}
    torch.save({"model": detector.model.state_dict(), "epoch": 25}, path)
    name = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(load_detector(path, **SMALL).state_dict()[name], detector.model.state_dict()[name])


def test_damaged_detector_weights_give_one_short_line(tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes(b"PK\x03\x04 not a whole archive")
    with pytest.raises(WeightsError) as e:
        load_detector(path, **SMALL)
    assert str(e.value) == f"{path}: cannot read a state dict: damaged or cut short (not a complete torch zip archive)"


def test_detector_weights_of_wrong_layout_raise(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="other.pt"):
        load_detector(path, **SMALL)


def test_missing_detector_weights_file_raises(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_detector(tmp_path / "nope.pt", **SMALL)


def test_coco_weights_offline_raise_weights_error(tmp_path, monkeypatch):
    # An empty hub cache and an unreachable proxy: what a machine without internet sees.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # not torch.hub.set_dir: it would stick
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(WeightsError, match="--detector-weights"):
        load_detector("coco", **SMALL)
