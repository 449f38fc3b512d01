"""Hostile label and annotation files from users.

The rule (avstm/datasets.py docstring, docs/annotations.md for boxes): what makes the data
ambiguous or unreadable is an AnnotationError naming the file and line; harmless oddities are
kept and counted in one warning per file. ``avstm extract`` turns the error into one line.
"""

from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner

from avstm.cli import cli
from avstm.datasets import read_ave, read_ave_annotations, read_folder, second_labels
from avstm.errors import AnnotationError
from avstm.evaluate import annotations as boxes

AVE_OK = "Dog&ok&good&0&10\n"


def caught(fn, *args):
    """Call fn; return (result, [warning messages])."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [str(x.message) for x in w]


# ---- AVE Annotations.txt and split files ---------------------------------------------------

@pytest.mark.parametrize("line,problem", [
    ("Dog&abc&good&2", "expected 5 '&'-separated fields"),
    ("Dog&abc&good&2&7&extra", "expected 5 '&'-separated fields"),
    ("Dog&abc&good&two&7", "start/end are not numbers: 'two', '7'"),
    ("Dog&abc&good&nan&7", "bad event span [nan, 7)"),
    ("Dog&abc&good&0&inf", "bad event span [0, inf)"),
    ("Dog&abc&good&-1&7", "bad event span [-1, 7)"),
    ("Dog&abc&good&7&2", "bad event span [7, 2)"),
    ("&abc&good&2&7", "empty category or video id"),
    ("Dog&&good&2&7", "empty category or video id"),
])
def test_ave_malformed_line_is_an_error_naming_file_and_line(tmp_path, line, problem):
    p = tmp_path / "Annotations.txt"
    p.write_text(AVE_OK + line + "\n")
    with pytest.raises(AnnotationError) as e:
        read_ave_annotations(p)
    assert str(e.value).startswith(f"{p}:2: {problem}")


@pytest.mark.parametrize("text", ["", "\n\n  \n", "Category&VideoID&Quality&StartTime&EndTime\n"])
def test_ave_empty_file_is_an_error(tmp_path, text):
    p = tmp_path / "Annotations.txt"
    p.write_text(text)
    with pytest.raises(AnnotationError, match="no annotation lines$"):
        read_ave_annotations(p)


def test_ave_unreadable_files_are_errors(tmp_path):
    with pytest.raises(AnnotationError, match="no such file$"):
        read_ave_annotations(tmp_path / "Annotations.txt")
    p = tmp_path / "latin1.txt"
    p.write_bytes("Caf\xe9&abc&good&0&1\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match="cannot read"):
        read_ave_annotations(p)


def test_ave_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_bytes("\ufeffCategory&VideoID&Quality&StartTime&EndTime\r\n\r\nDog&a&good&1&3\r\n".encode("utf-8"))
    (ln,) = read_ave_annotations(p)
    assert (ln.category, ln.video_id, ln.start, ln.end) == ("Dog", "a", 1.0, 3.0)


def test_ave_zero_length_span_is_a_counted_warning_and_all_background(tmp_path):
    (tmp_path / "Annotations.txt").write_text("Dog&a&good&3&3\nCat&b&good&0&1\nDog&c&good&0&0\n")
    (tmp_path / "testSet.txt").write_text("Dog&a&good&3&3\n")
    lines, msgs = caught(read_ave_annotations, tmp_path / "Annotations.txt")
    assert len(lines) == 3
    assert msgs == [f"{tmp_path / 'Annotations.txt'}: 2 event span(s) of zero length; "
                    f"those videos have no event seconds"]
    data, _ = caught(read_ave, tmp_path)
    assert second_labels(data.items[0], 10, data.classes).tolist() == [2] * 10


def test_ave_repeated_line_is_kept_once_with_a_counted_warning(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Dog&a&good&1&3\nDog&a&good&1&3\nDog&a&good&1&3\nCat&b&good&0&1\n")
    lines, msgs = caught(read_ave_annotations, p)
    assert [ln.video_id for ln in lines] == ["a", "b"]
    assert msgs == [f"{p}: 2 repeated line(s) ignored"]


def test_ave_video_with_two_events_gives_two_items(tmp_path):
    text = "Dog&a&good&0&3\nCat&a&good&5&8\n"
    (tmp_path / "Annotations.txt").write_text(text)
    (tmp_path / "trainSet.txt").write_text(text)
    data = read_ave(tmp_path)
    assert [(it.id, it.label) for it in data.items] == [("a", "Dog"), ("a#1", "Cat")]
    assert data.items[1].path == data.items[0].path


@pytest.mark.parametrize("splits,problem", [
    ({"testSet.txt": "Unicorn&a&good&0&3"},  # a split line with an unknown class
     "line Unicorn&a&...&0&3 is not in Annotations.txt (unknown class or video)"),
    ({"trainSet.txt": "Dog&a&good&0&3", "testSet.txt": "Dog&a&good&0&3"},  # one line in two splits
     "video a (Dog, 0-3 s) is also in trainSet.txt: a line belongs to one split"),
])
def test_ave_bad_split_line_is_an_error_naming_the_split_file(tmp_path, splits, problem):
    (tmp_path / "Annotations.txt").write_text("Dog&a&good&0&3\n")
    for name, line in splits.items():
        (tmp_path / name).write_text(line + "\n")
    with pytest.raises(AnnotationError) as e:
        read_ave(tmp_path)
    assert str(e.value) == f"{tmp_path / 'testSet.txt'}: {problem}"


def test_ave_without_split_files_is_an_error(tmp_path):
    (tmp_path / "Annotations.txt").write_text(AVE_OK)
    with pytest.raises(AnnotationError, match="no split files"):
        read_ave(tmp_path)


# ---- folder CSV --------------------------------------------------------------------------------

@pytest.mark.parametrize("row,problem", [
    ("a", "expected id,label[,split][,start,end], got 1 fields"),
    ("a,b,train,0,1,extra", "expected id,label[,split][,start,end], got 6 fields"),
    ("a,", "empty id or label"),
    (",dog", "empty id or label"),
    ("a,dog,holdout", "unknown split 'holdout' (use one of train, val, test)"),
    ("a,dog,train,x,2", "start/end are not numbers: 'x', '2'"),
    ("a,dog,train,nan,2", "bad event span [nan, 2)"),
    ("a,dog,train,-1,2", "bad event span [-1, 2)"),
    ("a,dog,train,5,1", "bad event span [5, 1)"),
    ("a,dog,train,0,inf", "bad event span [0, inf)"),
    ("ok.mp4,dog", "duplicate id ok"),
])
def test_folder_malformed_row_is_an_error_naming_file_and_line(tmp_path, row, problem):
    p = tmp_path / "labels.csv"
    p.write_text(f"id,label\nok,cat\n{row}\n")
    with pytest.raises(AnnotationError) as e:
        read_folder(tmp_path, p)
    assert str(e.value) == f"{p}:3: {problem}"


@pytest.mark.parametrize("text", ["", "id,label\n", "# just a comment\n\n"])
def test_folder_empty_file_is_an_error(tmp_path, text):
    p = tmp_path / "labels.csv"
    p.write_text(text)
    with pytest.raises(AnnotationError) as e:
        read_folder(tmp_path, p)
    assert str(e.value) == f"{p}: no rows"


def test_folder_oversized_field_is_a_malformed_csv_error(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text('id,label\nok,cat\na,"' + "x" * 200_000 + '"\n')
    with pytest.raises(AnnotationError) as e:
        read_folder(tmp_path, p)
    assert str(e.value) == f"{p}:3: malformed CSV (field larger than field limit (131072))"


def test_folder_unreadable_files_are_errors(tmp_path):
    with pytest.raises(AnnotationError, match="labels.csv: no such file$"):
        read_folder(tmp_path, tmp_path / "labels.csv")
    (tmp_path / "latin1.csv").write_bytes("a,caf\xe9\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match="cannot read"):
        read_folder(tmp_path, tmp_path / "latin1.csv")
    with pytest.raises(AnnotationError, match="cannot read"):
        read_folder(tmp_path, tmp_path)  # a directory


def test_folder_zero_length_span_is_a_counted_warning(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("a,dog,train,2,2\nb,dog,train,0,1\n")
    data, msgs = caught(read_folder, tmp_path, p)
    assert msgs == [f"{p}: 1 event span(s) of zero length; those videos have no event seconds"]
    assert second_labels(data.items[0], 4, data.classes).tolist() == [1, 1, 1, 1]


def test_folder_id_naming_any_file_in_full_finds_it(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    p = tmp_path / "labels.csv"
    p.write_text("notes.txt,dog\n")
    (item,) = read_folder(tmp_path, p).items
    assert item.path == str(tmp_path / "notes.txt")


def test_cli_reports_a_label_error_in_one_line(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("a,dog\na,cat\n")
    result = CliRunner().invoke(cli, ["extract", "--dataset", "folder", "--videos", str(tmp_path), "--labels",
                                      str(p), "--out", str(tmp_path / "c.h5")], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr == f"avstm: error: {p}:2: duplicate id a\n"
    assert not (tmp_path / "c.h5").exists()


# ---- box annotations (avstm/evaluate/annotations.py) ------------------------------------------

def write_boxes(path, videos) -> str:
    path.write_text(json.dumps({"format": "avstm-boxes/1", "videos": videos}))
    return str(path)


def test_bad_boxes_are_repaired_or_dropped_and_counted(tmp_path):
    p = tmp_path / "b.json"
    p.write_text('{"format": "avstm-boxes/1", "videos": {"a": {"width": 10, "height": 10, "frames": [{"time": 0.5, '
                 '"boxes": [{"xyxy": [NaN, 1, 5, 5]}, {"xyxy": [-3, -2, 4, 4]}, {"xyxy": [20, 20, 30, 30]}, '
                 '{"xyxy": [5, 5, 2, 8]}, {"xyxy": [1, 1, 9, 9]}, {"xyxy": [-1e20, 0, 5, 5]}]}]}}}')
    truth, msgs = caught(boxes.read_avstm_boxes, p)
    assert [b.xyxy for b in truth["a"].frames[0.5]] == [(0.0, 0.0, 4.0, 4.0), (1.0, 1.0, 9.0, 9.0)]
    assert dict(truth.warnings.counts) == {"corrupt": 2, "clipped": 1, "outside": 1, "degenerate": 1}
    assert msgs == [f"{p}: 1 clipped, 2 corrupt, 1 degenerate, 1 outside box(es) repaired or dropped"]


@pytest.mark.parametrize("size", ['NaN', '-10', '0', '"wide"'])
def test_bad_image_size_is_an_error(tmp_path, size):
    p = tmp_path / "b.json"
    p.write_text('{"format": "avstm-boxes/1", "videos": {"a": {"width": %s, "height": 10, "frames": []}}}' % size)
    with pytest.raises(AnnotationError, match="video 'a' width"):
        boxes.read_avstm_boxes(p)


def test_empty_box_file_is_an_error(tmp_path):
    p = tmp_path / "b.json"
    p.write_text("  \n")
    with pytest.raises(AnnotationError, match="file is empty$"):
        boxes.read_avstm_boxes(p)


def test_duplicate_video_id_in_box_json_is_an_error(tmp_path):
    p = tmp_path / "b.json"
    entry = '{"width": 10, "height": 10, "frames": [{"time": 0.5, "boxes": [{"xyxy": [1, 1, 5, 5]}]}]}'
    p.write_text('{"format": "avstm-boxes/1", "videos": {"a": %s, "a": %s}}' % (entry, entry))
    with pytest.raises(AnnotationError, match="duplicate key 'a'"):
        boxes.read_avstm_boxes(p)


def test_duplicate_frame_time_is_an_error(tmp_path):
    p = write_boxes(tmp_path / "b.json", {"a": {"width": 10, "height": 10, "frames": [
        {"time": 0.5, "boxes": []}, {"time": 0.5, "boxes": []}]}})
    with pytest.raises(AnnotationError, match="video 'a': duplicate frame time 0.5"):
        boxes.read_avstm_boxes(p)


def test_duplicate_vggss_entry_is_an_error(tmp_path):
    p = tmp_path / "v.json"
    p.write_text(json.dumps([{"file": "x", "class": "c", "bbox": [[0.1, 0.1, 0.5, 0.5]]},
                             {"file": "x", "class": "c", "bbox": [[0.2, 0.2, 0.6, 0.6]]}]))
    with pytest.raises(AnnotationError, match="entry 1: duplicate file 'x'"):
        boxes.read_vggss(p)


@pytest.mark.parametrize("time", ["-1", "NaN", "Infinity"])
def test_negative_or_non_finite_frame_time_is_an_error(tmp_path, time):
    p = tmp_path / "b.json"
    p.write_text('{"format": "avstm-boxes/1", "videos": {"a": {"width": 10, "height": 10, '
                 '"frames": [{"time": %s, "boxes": []}]}}}' % time)
    with pytest.raises(AnnotationError, match="frame time"):
        boxes.read_avstm_boxes(p)


@pytest.mark.parametrize("box", ['{"xyxy": [1, 2, 3]}', '{"xyxy": [1, 2, 3, 4], "annotator": "x"}',
                                 '{"xyxy": [1, 2, 3, 4], "sounding": "no"}'])
def test_malformed_box_is_an_error_naming_the_video(tmp_path, box):
    p = tmp_path / "b.json"
    p.write_text('{"format": "avstm-boxes/1", "videos": {"a": {"width": 10, "height": 10, '
                 '"frames": [{"time": 1, "boxes": [%s]}]}}}' % box)
    with pytest.raises(AnnotationError, match="video 'a'"):
        boxes.read_avstm_boxes(p)


def test_non_utf8_box_file_is_an_error(tmp_path):
    p = tmp_path / "b.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AnnotationError) as e:
        boxes.read_avstm_boxes(p)
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)
