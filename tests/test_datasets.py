import warnings
from collections import Counter

import numpy as np
import pytest

from avstm.datasets import hash_split, read_ave, read_ave_annotations, read_folder, second_labels
from avstm.errors import AnnotationError


def test_ave_annotations_real_file(shared_data):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        lines = read_ave_annotations(shared_data / "ave" / "Annotations.txt")
    assert len(lines) == 4143
    assert len({ln.category for ln in lines}) == 28
    assert all(0 <= ln.start <= ln.end <= 10 for ln in lines)
    assert sum(n > 1 for n in Counter(ln.video_id for ln in lines).values()) == 45
    assert any("1 event span(s) of zero length" in str(x.message) for x in w)


def test_ave_layout_real_split(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_ave(shared_data / "ave")
    assert Counter(it.split for it in data.items) == {"train": 3339, "val": 402, "test": 402}
    assert len({it.id for it in data.items}) == 4143
    assert len(data.classes) == 28 and data.classes == sorted(data.classes)
    multi = [it for it in data.items if "#" in it.id]
    assert multi and all(it.path.endswith(it.id.split("#")[0] + ".mp4") for it in multi)


def test_ave_header_line_accepted(tmp_path):
    p = tmp_path / "Annotations.txt"
    p.write_text("Category&VideoID&Quality&StartTime&EndTime\r\nDog&abc&good&2&7\r\n")
    (ln,) = read_ave_annotations(p)
    assert (ln.category, ln.video_id, ln.start, ln.end) == ("Dog", "abc", 2.0, 7.0)


@pytest.mark.parametrize("line,msg", [
    ("Dog&abc&good&2", "expected 5"),
    ("Dog&abc&good&x&7", "not numbers"),
    ("Dog&abc&good&7&2", "bad event span"),
])
def test_ave_malformed_line_names_file_and_line(tmp_path, line, msg):
    p = tmp_path / "Annotations.txt"
    p.write_text(f"Dog&ok&good&0&10\n{line}\n")
    with pytest.raises(AnnotationError, match=msg) as e:
        read_ave_annotations(p)
    assert str(e.value).startswith(f"{p}:2:")


def test_second_labels_background_outside_the_event(tmp_path):
    (tmp_path / "Annotations.txt").write_text("Dog&a&good&2&5\nCat&b&good&0&10\n")
    (tmp_path / "trainSet.txt").write_text("Dog&a&good&2&5\nCat&b&good&0&10\n")
    data = read_ave(tmp_path)
    a = data.items[0]
    assert second_labels(a, 10, data.classes).tolist() == [2, 2, 1, 1, 1, 2, 2, 2, 2, 2]


def test_folder_csv(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "x1.mkv").write_bytes(b"")
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label,split,start,end\nx1,guitar,test,1,3\nx2.mp4,drum,train,0,2\nx3,drum\n")
    data = read_folder(tmp_path / "v", csv)
    assert [it.id for it in data.items] == ["x1", "x2", "x3"]
    assert data.items[0].path.endswith("x1.mkv") and data.items[0].split == "test"
    assert data.items[2].split == hash_split("x3")
    assert data.classes == ["drum", "guitar"]
    assert second_labels(data.items[0], 4, data.classes).tolist() == [2, 1, 1, 2]


@pytest.mark.parametrize("text,msg", [
    ("", "no rows"),
    ("a,b\na,c\n", "duplicate id a"),
    ("a,b,holdout\n", "unknown split"),
    ("a,b,train,5,1\n", "bad event span"),
    ("a\n", "expected id,label"),
])
def test_folder_csv_errors(tmp_path, text, msg):
    csv = tmp_path / "labels.csv"
    csv.write_text(text)
    with pytest.raises(AnnotationError, match=msg):
        read_folder(tmp_path, csv)


def test_hash_split_is_stable_and_roughly_80_10_10():
    splits = Counter(hash_split(f"video{i}") for i in range(2000))
    assert hash_split("abc") == hash_split("abc")
    assert 1500 < splits["train"] < 1700 and 120 < splits["val"] < 280
