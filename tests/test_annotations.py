"""Tests for avstm.evaluate.annotations: the real public files and hand-written fixtures."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from avstm.errors import AnnotationError
from avstm.evaluate.annotations import (AnnotationWarning, Box, VideoTruth, detect_format,
                                        frame_label, read_audioset_instrument, read_avstm_boxes,
                                        read_coco_boxes, read_flickr, read_flickr_ids,
                                        read_ave_labels, read_ground_truth, read_vggss,
                                        to_avstm_json)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is not present")


def all_coords(truth):
    return np.array([b.xyxy for v in truth.values() for bs in v.frames.values() for b in bs])


# ---- real files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vggss():
    if not DATA.exists():
        pytest.skip(f"{DATA} is not present")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        truth = read_vggss(DATA / "vggss" / "vggss.json")
    return truth, caught


def test_vggss_has_5158_entries_with_class_labels(vggss):
    truth, _ = vggss
    assert len(truth) == 5158 and truth.n_frames() == 5158
    assert truth["zpWuikVorYg_000032"].label == "elk bugling"


def test_vggss_corrupt_coordinates_are_dropped_and_counted(vggss):
    truth, caught = vggss
    assert truth.warnings.counts["corrupt"] == 12
    assert any(issubclass(w.category, AnnotationWarning) and "12 corrupt" in str(w.message)
               for w in caught)


def test_vggss_boxes_lie_in_the_stated_image(vggss):
    truth, _ = vggss
    xyxy = all_coords(truth)
    assert xyxy.min() >= 0 and xyxy.max() <= 256
    assert (xyxy[:, 2] > xyxy[:, 0]).all() and (xyxy[:, 3] > xyxy[:, 1]).all()


@needs_data
def test_audioset_instrument_counts_key_frames_videos_and_empty_frames():
    truth = read_audioset_instrument(DATA / "audioset_instrument" / "audioset_box.json")
    assert (truth.n_frames(), len(truth), truth.n_frames_without_box()) == (4503, 566, 30)
    first = truth["8LYWfpPUokc"].frames[3.0]
    assert len(first) == 10 and first[0].label == "2"
    x1, y1, x2, y2 = first[0].xyxy
    assert (x1, x2) == pytest.approx((0.7875 * 256, (0.7875 + 0.0859375) * 256))
    assert 0 <= all_coords(truth).min() and all_coords(truth).max() <= 256


@needs_data
def test_flickr_test_csv_lists_249_ids():
    ids = read_flickr_ids(DATA / "flickr" / "flickr_test.csv")
    assert len(ids) == 249 and ids[0] == "10000130166" and len(set(ids)) == 249


@needs_data
def test_ave_labels_group_4143_lines_by_video():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AVE has one zero-length span, warned by datasets.py
        labels = read_ave_labels(DATA / "ave" / "Annotations.txt")
    assert sum(len(v) for v in labels.values()) == 4143
    assert sum(1 for v in labels.values() if len(v) > 1) == 45


@needs_data
@pytest.mark.parametrize("rel, fmt", [("vggss/vggss.json", "vggss"),
                                      ("audioset_instrument/audioset_box.json",
                                       "audioset-instrument")])
def test_detect_format_of_real_files(rel, fmt):
    assert detect_format(DATA / rel) == fmt


# ---- Flickr XML fixtures -------------------------------------------------------------------


def flickr_xml(boxes) -> str:
    inner = "".join(f"<object><bbox><name>x</name><xmin>{a}</xmin><ymin>{b}</ymin>"
                    f"<xmax>{c}</xmax><ymax>{d}</ymax></bbox></object>" for a, b, c, d in boxes)
    return f"<annotation><file>img.jpg</file>{inner}</annotation>"


@pytest.fixture()
def flickr_dir(tmp_path):
    (tmp_path / "111.xml").write_text(flickr_xml([(0, 0, 128, 256), (64, 0, 192, 256),
                                                  (96, 0, 256, 256)]))
    (tmp_path / "222.xml").write_text(flickr_xml([(10, 20, 300, 40)]))
    (tmp_path / "ids.csv").write_text("111,5\r\n")
    return tmp_path


def test_flickr_xml_boxes_skip_the_first_child_and_number_annotators(flickr_dir):
    truth = read_flickr(flickr_dir, flickr_dir / "ids.csv")
    boxes = truth["111"].frames[0.0]
    assert [b.xyxy for b in boxes] == [(0, 0, 128, 256), (64, 0, 192, 256), (96, 0, 256, 256)]
    assert [b.annotator for b in boxes] == [0, 1, 2]
    assert (truth["111"].width, truth["111"].height) == (256, 256)


def test_flickr_box_beyond_256_is_clipped_and_counted(flickr_dir):
    with pytest.warns(AnnotationWarning, match="1 clipped"):
        truth = read_flickr(flickr_dir, ["222"])
    assert truth["222"].frames[0.0][0].xyxy == (10, 20, 256, 40)


def test_flickr_missing_xml_raises(flickr_dir):
    with pytest.raises(AnnotationError, match="333.xml"):
        read_flickr(flickr_dir, ["333"])


def test_flickr_csv_malformed_line_names_its_number(tmp_path):
    (tmp_path / "ids.csv").write_text("111,5\nabc,6\n")
    with pytest.raises(AnnotationError, match=r"ids.csv:2"):
        read_flickr_ids(tmp_path / "ids.csv")


# ---- avstm JSON ----------------------------------------------------------------------------


def write(tmp_path, doc, name="boxes.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_avstm_json_round_trips(tmp_path):
    truth = {"v1": VideoTruth(320, 240, {0.125: [Box((1, 2, 30, 40), True, "dog", 0),
                                                 Box((50, 60, 70, 80), False)]}, "dog")}
    back = read_avstm_boxes(write(tmp_path, to_avstm_json(truth)))
    assert back["v1"] == truth["v1"] and back.format == "avstm-boxes/1"


def avstm_doc(*boxes) -> dict:
    return {"format": "avstm-boxes/1", "videos": {"v": {"width": 100, "height": 50, "frames": [
        {"time": 0.5, "boxes": [{"xyxy": list(b)} for b in boxes]}]}}}


def test_avstm_json_bad_boxes_are_clipped_or_dropped_and_counted(tmp_path):
    path = write(tmp_path, avstm_doc((-5, 0, 50, 60), (float("nan"), 0, 1, 1), (40, 10, 30, 20),
                                     (200, 0, 300, 10)))
    with pytest.warns(AnnotationWarning):
        truth = read_avstm_boxes(path)
    assert [b.xyxy for b in truth["v"].frames[0.5]] == [(0, 0, 50, 50)]
    assert dict(truth.warnings.counts) == {"clipped": 1, "corrupt": 1, "degenerate": 1,
                                           "outside": 1}


def test_empty_file_raises(tmp_path):
    with pytest.raises(AnnotationError, match="empty"):
        read_avstm_boxes(write(tmp_path, "  \n"))


def test_malformed_json_names_the_line(tmp_path):
    with pytest.raises(AnnotationError, match=r"boxes.json:3"):
        read_avstm_boxes(write(tmp_path, '{"format": "avstm-boxes/1",\n"videos": {\n,}}'))


def test_wrong_format_key_raises(tmp_path):
    with pytest.raises(AnnotationError, match="avstm-boxes/1"):
        read_avstm_boxes(write(tmp_path, {"videos": {}}))


def test_frame_label_falls_back_to_the_first_sounding_box():
    v = VideoTruth(10, 10, {})
    boxes = [Box((0, 0, 1, 1), False, "silent"), Box((0, 0, 1, 1), True, "cat")]
    assert frame_label(v, boxes) == "cat"


# ---- COCO ----------------------------------------------------------------------------------


def coco_doc() -> dict:
    return {"images": [{"id": 1, "file_name": "a/clip1.jpg", "width": 640, "height": 480},
                       {"id": 2, "file_name": "b.jpg", "video_id": "clip2", "time": 1.5,
                        "width": 320, "height": 240}],
            "annotations": [{"image_id": 1, "bbox": [10, 20, 100, 50], "category_id": 3},
                            {"image_id": 2, "bbox": [0, 0, 10, 10], "category_id": 4,
                             "sounding": False}],
            "categories": [{"id": 3, "name": "guitar"}, {"id": 4, "name": "drum"}]}


def test_coco_boxes_become_xyxy_with_category_names(tmp_path):
    truth = read_ground_truth(write(tmp_path, coco_doc()))
    assert truth.format == "coco"
    assert truth["clip1"].frames[0.0] == [Box((10, 20, 110, 70), True, "guitar")]
    assert truth["clip2"].frames[1.5] == [Box((0, 0, 10, 10), False, "drum")]


def test_coco_unknown_image_id_raises(tmp_path):
    doc = coco_doc()
    doc["annotations"][0]["image_id"] = 9
    with pytest.raises(AnnotationError, match="unknown image_id"):
        read_coco_boxes(write(tmp_path, doc))


def test_unknown_format_lists_known_ones(tmp_path):
    with pytest.raises(AnnotationError, match="known: avstm, vggss, flickr"):
        detect_format(write(tmp_path, {"something": 1}))


def test_duplicate_keys_are_ambiguous_and_raise(tmp_path):
    text = '{"format": "avstm-boxes/1", "videos": {"a": {}, "a": {}}}'
    with pytest.raises(AnnotationError, match="duplicate key 'a'"):
        read_avstm_boxes(write(tmp_path, text))


def test_sounding_must_be_a_json_boolean(tmp_path):
    doc = avstm_doc((1, 1, 5, 5))
    doc["videos"]["v"]["frames"][0]["boxes"][0]["sounding"] = "false"
    with pytest.raises(AnnotationError, match="sounding"):
        read_avstm_boxes(write(tmp_path, doc))


def test_box_of_three_numbers_is_malformed(tmp_path):
    with pytest.raises(AnnotationError, match="needs 4"):
        read_avstm_boxes(write(tmp_path, avstm_doc((1, 1, 5))))
