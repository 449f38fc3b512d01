"""Tests for avstm.evaluate.report: aggregation, JSON and the printed tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avstm.evaluate.annotations import Box
from avstm.evaluate.metrics import MetricsConfig, evaluate_frame
from avstm.evaluate.report import (aggregate, format_method_table, format_report, summarize,
                                   write_report)

CFG = MetricsConfig(size=(64, 64), modes=("value:0.5", "top:0.5"))


def frames():
    g = np.zeros((64, 64))
    g[:32, :32] = 1.0
    box = [Box((0, 0, 32, 32))]
    perfect = evaluate_frame(g, box, image_size=(64, 64), config=CFG, video="a", label="dog",
                             pred_boxes=[[0, 0, 32, 32]], pred_class=1, true_class=1)
    wrong = evaluate_frame(g[::-1, ::-1], box, image_size=(64, 64), config=CFG, video="b",
                           label="cat", pred_boxes=[[32, 32, 64, 64]], pred_class=0, true_class=1)
    empty = evaluate_frame(g, [], image_size=(64, 64), config=CFG, video="b", label="cat",
                           pred_class=2, true_class=2)
    return [perfect, wrong, empty]


def test_summary_of_a_perfect_and_a_wrong_frame():
    s = summarize(frames(), config=CFG)
    assert (s["n_frames"], s["n_with_truth"]) == (3, 2)
    assert s["ciou"]["value:0.5"]["success"] == 0.5 and s["ciou"]["value:0.5"]["mean"] == 0.5
    assert s["box_iou"]["success"] == 0.5 and s["pointing"]["hit"] == 0.5
    assert s["accuracy"] == {"n": 3, "value": pytest.approx(2 / 3)}


def test_aggregate_groups_by_class_and_video():
    rep = aggregate(frames(), config=CFG)
    assert list(rep.per_class) == ["cat", "dog"] and list(rep.per_video) == ["a", "b"]
    assert rep.per_class["dog"]["ciou"]["value:0.5"]["mean"] == 1.0
    assert rep.per_video["b"]["n_frames"] == 2


def test_report_json_is_plain_and_complete(tmp_path):
    rep = aggregate(frames(), config=CFG)
    path = write_report(tmp_path / "metrics.json", rep, frames=frames())
    doc = json.loads(path.read_text())
    assert doc["config"]["modes"] == ["value:0.5", "top:0.5"]
    assert doc["overall"]["ciou"]["value:0.5"]["success"] == 0.5
    assert doc["frames"][2]["ciou"]["value:0.5"] is None


def test_method_table_has_the_paper_columns_and_a_row_per_method():
    s = summarize(frames(), config=CFG)
    text = format_method_table({"STM (C+U)": s, "no memory": s}, mode="value:0.5")
    header = text.splitlines()[1]
    for col in ("cIoU@0.5 %", "mean cIoU", "AUC", "IoU@0.5 %", "pointing %", "ceil cIoU@0.5 %"):
        assert col in header
    assert "STM (C+U)       50.00" in text and text.count("no memory") == 1


def test_printed_report_names_resolution_and_binarisations():
    text = format_report(aggregate(frames(), config=CFG))
    assert "64×64" in text and "top:0.5" in text and "per class (value:0.5)" in text
