"""Tests of avstm/evaluate/protocols.py and ``avstm evaluate --protocol``: every rule of each
reference protocol pinned by a hand-computed case, then whole runs on the real VGG-SS
annotation file and on Flickr-style XMLs compared with straightforward implementations of
EZ-VSL's and LVS's evaluation written here from their published rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avstm.cli import cli
from avstm.errors import AvstmError
from avstm.evaluate.annotations import Box, read_audioset_instrument, read_flickr, read_vggss
from avstm.evaluate.inputs import write_maps
from avstm.evaluate.metrics import MetricsConfig, ciou, evaluate_frame, success_curve
from avstm.evaluate.protocols import PROTOCOLS, get_protocol
from avstm.evaluate.report import summarize
from avstm.evaluate.run import EvaluateConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VGGSS = DATA / "vggss" / "vggss.json"
FLICKR_IDS = DATA / "flickr" / "flickr_test.csv"
S = (224, 224)


def cfg(name: str, **kw) -> MetricsConfig:
    p = get_protocol(name)
    modes = (p.mode,) if p.mode else ("value:0.5", "top:0.5", "median", "max:0.5")
    return MetricsConfig(size=S, modes=modes, primary=modes[0], protocol=name, **kw)


def flickr_xml(boxes) -> str:
    inner = "".join(f"<bbox><id>{i}</id><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                    f"<ymax>{d}</ymax></bbox>" for i, (a, b, c, d) in enumerate(boxes))
    return f"<annotation><filename>x.jpg</filename><bboxes>{inner}</bboxes></annotation>"


def one_vggss(tmp_path, boxes, file="v") -> Path:
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps([{"file": file, "class": "c", "bbox": boxes}]))
    return path


# ---- box -> mask ---------------------------------------------------------------------------


def test_vggss_box_at_0_3337_truncates_under_the_references(tmp_path):
    gt = read_vggss(one_vggss(tmp_path, [[0.3337, 0.0, 1.0, 1.0]]))
    boxes = gt["v"].frames[0.0]
    # 224 * 0.3337 = 74.7488: int() starts the box at column 74; pixel centres (74.5) at 75
    for name in ("ezvsl", "lvs"):
        g = get_protocol(name).truth(boxes, (256, 256), S)
        assert g[0, 74] == 1 and g[0, 73] == 0, name
    g = get_protocol("avstm").truth(boxes, (256, 256), S)
    assert g[0, 74] == 0 and g[0, 75] == 1


def test_flickr_256_pixels_become_int_224_v_over_256(tmp_path):
    # xmin 3 -> 224 * 3 / 256 = 2.625 -> 2; xmax 40 -> 35.0 -> 35 (exclusive)
    (tmp_path / "1.xml").write_text(flickr_xml([(3, 0, 40, 256)]))
    boxes = read_flickr(tmp_path)["1"].frames[0.0]
    g = get_protocol("ezvsl").truth(boxes, (256, 256), S)
    assert np.flatnonzero(g[0]).tolist() == list(range(2, 35))
    g = get_protocol("avstm").truth(boxes, (256, 256), S)
    assert np.flatnonzero(g[0])[0] == 3  # pixel centres: 2.5 < 2.625


def test_dsol_truncates_x_plus_w_from_the_normalised_box(tmp_path):
    path = tmp_path / "audioset_box.json"
    # 224 * 0.1 + 224 * 0.2 = 67.2 -> end 67; the start int(22.4) = 22
    path.write_text(json.dumps({"vid/3": {"bbox": [{"category": 1, "normbox": [0.1, 0, 0.2, 1]}]}}))
    boxes = read_audioset_instrument(path)["vid"].frames[3.0]
    assert boxes[0].normbox == (0.1, 0.0, 0.2, 1.0)
    g = get_protocol("dsol").truth(boxes, (256, 256), S)
    assert np.flatnonzero(g[0]).tolist() == list(range(22, 67))


# ---- consensus -----------------------------------------------------------------------------


def test_one_box_flickr_file_gives_half_inside_under_the_references(tmp_path):
    (tmp_path / "1.xml").write_text(flickr_xml([(0, 0, 128, 128)]))
    boxes = read_flickr(tmp_path)["1"].frames[0.0]
    for name in ("ezvsl", "lvs"):
        g = get_protocol(name).truth(boxes, (256, 256), S)
        assert set(np.unique(g)) == {0.0, 0.5} and g[:112, :112].min() == 0.5, name
    assert get_protocol("avstm").truth(boxes, (256, 256), S).max() == 1.0


def test_flickr_consensus_sums_boxes_halves_and_clips(tmp_path):
    (tmp_path / "1.xml").write_text(flickr_xml([(0, 0, 128, 256)] * 3 + [(128, 0, 256, 256)]))
    g = get_protocol("lvs").truth(read_flickr(tmp_path)["1"].frames[0.0], (256, 256), S)
    assert g[0, 0] == 1.0 and g[0, 200] == 0.5  # 3 / 2 clipped to 1; 1 / 2


def test_vggss_boxes_give_their_binary_union_under_the_references(tmp_path):
    gt = read_vggss(one_vggss(tmp_path, [[0, 0, 0.5, 1], [0.25, 0, 0.75, 1]]))
    g = get_protocol("ezvsl").truth(gt["v"].frames[0.0], (256, 256), S)
    assert set(np.unique(g)) == {0.0, 1.0} and g[0].sum() == 168


# ---- upsampling ----------------------------------------------------------------------------


def test_ezvsl_upsamples_with_aligned_corners():
    up = get_protocol("ezvsl").upsampled(np.array([[0.0, 1.0], [0.0, 1.0]]), S)
    assert up.dtype == np.float32 and up[0, 0] == 0 and up[0, 223] == 1
    assert up[0, 1] == pytest.approx(1 / 223, rel=1e-6)  # corners on the corner pixels
    half = get_protocol("avstm").upsampled(np.array([[0.0, 1.0], [0.0, 1.0]]), S)
    assert half[0, 1] == 0.0  # half-pixel centres: the first 56 columns hold the corner value


def test_lvs_upsamples_with_opencv():
    m = np.random.default_rng(1).random((8, 8)).astype(np.float32)
    np.testing.assert_array_equal(get_protocol("lvs").upsampled(m, S),
                                  cv2.resize(m, (224, 224), interpolation=cv2.INTER_LINEAR))


# ---- binarisation --------------------------------------------------------------------------

RAMP = np.arange(16, dtype=np.float32).reshape(4, 4)


def test_ezvsl_keeps_at_or_above_the_value_at_index_half_n():
    region = get_protocol("ezvsl").regions(RAMP, ())["top:0.5"]
    assert region.sum() == 8 and region[RAMP >= 8].all()


def test_lvs_keeps_strictly_above_the_upper_median():
    region = get_protocol("lvs").regions(RAMP, ())["median"]
    assert region.sum() == 7 and not region[RAMP == 8].any()


def test_lvs_keeps_the_maximal_pixels_when_the_median_is_the_maximum():
    m = np.zeros((4, 4), np.float32)
    m[:, 1:] = 1.0  # 12 of 16 pixels at the maximum: the upper median is the maximum
    assert (get_protocol("lvs").regions(m, ())["median"] == (m == 1)).all()
    assert not get_protocol("avstm").regions(m, ("median",))["median"].any()


@pytest.mark.parametrize("value, kept", [(0.3, True), (0.0, True), (-0.3, False)])
def test_lvs_flat_map_keeps_all_or_nothing_by_its_sign(value, kept):
    region = get_protocol("lvs").regions(np.full((4, 4), value, np.float32), ())["median"]
    assert region.all() if kept else not region.any()


def test_ezvsl_flat_map_keeps_every_pixel():
    assert get_protocol("ezvsl").regions(np.full((4, 4), -2.0, np.float32), ())["top:0.5"].all()


def test_dsol_keeps_above_a_tenth_of_the_maximum():
    region = get_protocol("dsol").regions(RAMP, ())["max:0.1"]
    assert region.sum() == 14  # > 1.5 keeps 2..15


# ---- AUC grid and frames without a box -----------------------------------------------------


def test_ciou_of_exactly_0_15_fails_the_0_05_times_3_threshold():
    g = np.zeros(S)
    g[0, :20] = 1
    region = np.zeros(S, bool)
    region[0, :3] = True  # 3 / 20
    assert ciou(region, g) == 0.15
    p, a = get_protocol("ezvsl"), get_protocol("avstm")
    assert p.thresholds[3] > 0.15 and a.thresholds[3] == 0.15
    assert success_curve([0.15], p.thresholds)[3] == 0.0
    assert success_curve([0.15], a.thresholds)[3] == 1.0


def test_frames_without_a_box_score_zero_and_count_under_ezvsl():
    m = np.zeros((8, 8))
    m[:, :4] = 1.0
    box = [Box((0, 0, 112, 224))]
    for name, success, n in (("ezvsl", 0.5, 2), ("lvs", 0.5, 2), ("avstm", 1.0, 1),
                             ("dsol", 1.0, 1)):
        c = cfg(name, ceilings=False)
        frames = [evaluate_frame(m, box, image_size=(224, 224), config=c),
                  evaluate_frame(m, [], image_size=(224, 224), config=c)]
        s = summarize(frames, config=c)["ciou"][c.primary]
        assert (s["n"], s["success"]) == (n, success), name


def test_lvs_boxless_frame_with_an_empty_region_fails_every_threshold():
    c = cfg("lvs", ceilings=False)
    r = evaluate_frame(np.full((8, 8), -1.0), [], image_size=(224, 224), config=c)
    assert math.isnan(r.ciou["median"])
    s = summarize([r], config=c)["ciou"]["median"]
    assert (s["n"], s["success"], s["auc"], s["mean"]) == (1, 0.0, 0.0, 0.0)


# ---- configuration and outputs -------------------------------------------------------------


def test_reference_protocols_fix_their_binarisation_and_size():
    c = EvaluateConfig(protocol="ezvsl")
    assert (c.size, c.modes, c.primary) == (224, ("top:0.5",), "top:0.5")
    assert EvaluateConfig().size == 256 and len(EvaluateConfig().modes) == 4
    with pytest.raises(ValueError, match="own rule"):
        EvaluateConfig(protocol="lvs", modes=("value:0.5",))
    with pytest.raises(AvstmError, match="valid: avstm, ezvsl, lvs, dsol"):
        get_protocol("ssl")
    assert EvaluateConfig.from_dict(c.to_dict()) == c


def test_every_protocol_names_a_rule_of_every_table():
    for p in PROTOCOLS.values():
        rules = p.to_dict()["rules"]
        assert set(rules) == {"rasterise", "consensus", "upsample", "binarise", "auc_grid",
                              "boxless"}
        assert all(r["definition"] for r in rules.values())


# ---- whole runs against straightforward reference implementations --------------------------


def _normalise(v):
    lo, hi = v.min(), v.max()
    return v if hi - lo == 0 else (v - lo) / (hi - lo)


def _auc(cious):
    x = [0.05 * i for i in range(21)]
    y = [np.sum(np.array(cious) >= 0.05 * i) / len(cious) for i in range(21)]
    return float(np.trapezoid(y, x))


def ezvsl_scores(entries, maps):
    """EZ-VSL's evaluation written out: clip(v, 0, 1) * 224 cast to int, union, bilinear
    align_corners=True, min-max, threshold at sorted index int(N * 0.5) kept with >=."""
    cious = []
    for e in entries:
        gt = np.zeros((224, 224))
        for b in e["bbox"]:
            x1, y1, x2, y2 = (np.clip(np.array(b), 0, 1) * 224).astype(int)
            gt[y1:y2, x1:x2] += 1
        gt[gt > 0] = 1
        h = torch.nn.functional.interpolate(torch.from_numpy(maps[e["file"]])[None, None],
                                            size=(224, 224), mode="bilinear",
                                            align_corners=True)[0, 0].numpy()
        p = _normalise(h)
        infer = (p >= np.sort(p.flatten())[int(224 * 224 * 0.5)]).astype(float)
        cious.append(np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0))))
    return float(np.mean(np.array(cious) >= 0.5)), float(np.mean(cious)), _auc(cious)


def lvs_scores(xml_boxes, maps):
    """LVS's Flickr evaluation written out: int(224 * k / 256), sum / 2 clipped at 1,
    cv2 resize, p = 1 - normalise(-map), > sorted[N / 2] -> 1, < 1 -> 0, >= 0.5."""
    cious = []
    for vid, boxes in xml_boxes.items():
        gt = np.zeros((224, 224))
        for b in boxes:
            x1, y1, x2, y2 = (int(224 * k / 256) for k in b)
            gt[y1:y2, x1:x2] += 1
        gt /= 2
        gt[gt > 1] = 1
        h = _normalise(-cv2.resize(maps[vid], dsize=(224, 224), interpolation=cv2.INTER_LINEAR))
        pred = 1 - h
        thr = np.sort(pred.flatten())[int(pred.shape[0] * pred.shape[1] / 2)]
        pred[pred > thr] = 1
        pred[pred < 1] = 0
        infer = (pred >= 0.5).astype(float)
        cious.append(np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0))))
    return float(np.mean(np.array(cious) >= 0.5)), _auc(cious)


def _evaluate(args):
    result = CliRunner().invoke(cli, ["evaluate", *map(str, args), "--figure-videos", "0",
                                      "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.skipif(not VGGSS.is_file(), reason="needs ../shared/data/vggss/vggss.json")
def test_ezvsl_protocol_equals_ezvsl_rules_on_the_real_vggss_file(tmp_path):
    entries = json.loads(VGGSS.read_text())
    # every awkward entry (corrupt, zero-height, several boxes) plus a spread of the rest
    odd = [e for e in entries if len(e["bbox"]) > 2 or any(
        min(b) < 0 or b[2] <= b[0] or b[3] <= b[1] for b in e["bbox"])]
    chosen = {e["file"]: e for e in odd + entries[::50]}
    assert {"MKC9LvRivTM_000030", "M1P1xla8rg0_000000"} <= set(chosen)
    rng = np.random.default_rng(0)
    maps = {f: rng.random((8, 8)).astype(np.float32) for f in chosen}
    write_maps(tmp_path / "maps.npz", {(f, 0.0): m for f, m in maps.items()})
    out = tmp_path / "eval"
    res = _evaluate(["--annotations", VGGSS, "--maps", tmp_path / "maps.npz", "--protocol",
                     "ezvsl", "--size", "224", "--out", out])
    assert "protocol ezvsl: EZ-VSL" in res.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["protocol"]["name"] == "ezvsl" and doc["config"]["protocol"] == "ezvsl"
    s = doc["overall"]["ciou"]["top:0.5"]
    assert s["n"] == len(chosen)
    ap50, mean, auc = ezvsl_scores(list(chosen.values()), maps)
    assert abs(s["success"] - ap50) < 1e-9 and abs(s["mean"] - mean) < 1e-9
    assert abs(s["auc"] - auc) < 1e-9
    # the avstm protocol scores the same maps differently (masks, upsampling, AUC grid, and
    # the two entries without a box are left out)
    _evaluate(["--annotations", VGGSS, "--maps", tmp_path / "maps.npz", "--size", "224",
               "--binarisation", "top:0.5", "--out", tmp_path / "own"])
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())["overall"]["ciou"]["top:0.5"]
    assert own["n"] == len(chosen) - 2 and abs(own["mean"] - mean) > 1e-4


@pytest.mark.skipif(not FLICKR_IDS.is_file(), reason="needs ../shared/data/flickr/flickr_test.csv")
def test_lvs_protocol_equals_lvs_rules_on_flickr_style_xmls(tmp_path):
    ids = [line.split(",")[0] for line in FLICKR_IDS.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(1)
    xml_dir, boxes, maps = tmp_path / "Annotations", {}, {}
    xml_dir.mkdir()
    for vid in ids:
        n = int(rng.integers(1, 4))  # one to three annotators, as the real files
        x1, y1 = rng.integers(0, 200, size=(2, n))
        w, h = rng.integers(8, 120, size=(2, n))
        boxes[vid] = [(int(a), int(b), int(min(a + c, 256)), int(min(b + d, 256)))
                      for a, b, c, d in zip(x1, y1, w, h)]
        (xml_dir / f"{vid}.xml").write_text(flickr_xml(boxes[vid]))
        m = rng.random((7, 7)).astype(np.float32)
        if vid == ids[0]:
            m[:] = 0.25  # a flat map: LVS keeps everything
        maps[vid] = m
    write_maps(tmp_path / "maps.npz", {(v, 0.0): m for v, m in maps.items()})
    out = tmp_path / "eval"
    _evaluate(["--annotations", xml_dir, "--maps", tmp_path / "maps.npz", "--protocol", "lvs",
               "--out", out])
    s = json.loads((out / "metrics.json").read_text())["overall"]["ciou"]["median"]
    success, auc = lvs_scores(boxes, maps)
    assert s["n"] == len(ids)
    assert abs(s["success"] - success) < 1e-9 and abs(s["auc"] - auc) < 1e-9
