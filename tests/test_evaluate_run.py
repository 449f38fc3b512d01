"""Tests of avstm/evaluate/run.py, figure.py and ``avstm evaluate`` on a real tiny dataset:
generated mp4 files, an HDF5 cache extracted with EfficientNet-Lite0 (random weights) and a
random VGGish, and two networks trained for one epoch (memory none and full)."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from avstm.cache import FeatureCache
from avstm.cli import cli
from avstm.datasets import read_ave
from avstm.errors import AvstmError, ConfigMismatch
from avstm.evaluate.annotations import read_ground_truth
from avstm.evaluate.baselines import evaluate_baseline
from avstm.evaluate.figure import figure_size
from avstm.evaluate.metrics import MetricsConfig, boxes_to_masks, scale_boxes
from avstm.evaluate.report import summarize
from avstm.evaluate.inputs import match_time, read_groups, write_maps
from avstm.evaluate.run import EvaluateConfig, evaluate
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import extract
from avstm.memnet.checkpoint import save_checkpoint
from avstm.memnet.model import ModelConfig, STMNet
from avstm.memnet.train import TrainConfig, train
from avstm.synth import SynthConfig, generate

# seed 3 with these shares puts 2 train, 1 val and 3 test videos (2 hard, 1 normal) in 6
SYNTH = SynthConfig(videos=6, seconds=3, width=160, height=120, seed=3, hard=0.5,
                    split_shares=(0.4, 0.1, 0.5))
FAST = EvaluateConfig(figure_videos=0, size=128)


def _run(args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    ds = generate(root / "synth", config=SYNTH, progress=False)
    cache = root / "cache.h5"
    extract(read_ave(root / "synth"), cache, progress=False, config=ExtractConfig(
        visual_backbone="efficientnet_lite0", visual_weights="random", audio_weights="random",
        workers=0, batch_size=24, frame_size=128, device="cpu"))
    ckpts = {}
    for memory in ("none", "full"):
        run = train(cache, root / f"run-{memory}", progress=False, config=TrainConfig(
            epochs=1, batch_size=2, workers=0, dim=16, hidden=16, memory=memory,
            in_memory="no", device="cpu"))
        ckpts[memory] = run.last_path
    with FeatureCache(cache) as c:
        test_ids = c.ids("test")
    return SimpleNamespace(root=root, boxes=ds.boxes, meta=ds.meta, cache=cache, ckpts=ckpts,
                           truth=read_ground_truth(ds.boxes), test_ids=test_ids)


@pytest.fixture(scope="module")
def model_run(data):
    out = data.root / "eval-full"
    result = _run(["evaluate", "--checkpoint", data.ckpts["full"], "--features", data.cache,
                   "--annotations", data.boxes, "--out", out, "--figure-videos", 2,
                   "--figure-frames", 3, "--device", "cpu", "--quiet"])
    return SimpleNamespace(out=out, stdout=result.stdout,
                           metrics=json.loads((out / "metrics.json").read_text()))


def _gt_maps(data, *, inverted=False, drop=0, size=FAST.size):
    """Maps at the evaluation resolution (size × size) that are exactly the sounding boxes (or
    exactly everything else), for every annotated frame with a sounding box of the test
    videos; the first ``drop`` of them are left out."""
    size = (size, size)
    maps = {}
    for vid in data.test_ids:
        v = data.truth[vid]
        for t, boxes in sorted(v.frames.items()):
            sounding = [b.xyxy for b in boxes if b.sounding]
            if not sounding:
                continue
            mask = boxes_to_masks(scale_boxes(sounding, (v.width, v.height), size), size).any(0)
            maps[(vid, t)] = (~mask if inverted else mask).astype(np.float32)
    return dict(list(maps.items())[drop:]), len(maps)


def _rates(summary, mode="value:0.5"):
    c = summary["ciou"][mode]
    return [c["success"], c["mean"], c["auc"], c["ceiling_success"], c["ceiling_mean"],
            summary["pointing"]["hit"], summary["pointing"]["ceiling"],
            summary["box_iou"]["success"], summary["box_iou"]["mean"]]


def test_match_time_takes_the_nearest_step_within_half_an_interval():
    times = np.array([0.125, 0.375, 0.625])
    assert match_time(times, 0.36, 0.125) == 1
    assert match_time(times, 0.25, 0.125) == 1  # a tie goes to the later step
    assert match_time(times, 0.75, 0.125) == 2
    assert match_time(times, 0.76, 0.125) is None


def test_evaluate_config_round_trips_through_json():
    config = EvaluateConfig(split="val", size=224, modes=("top:0.5", "median"), baseline="centre",
                            tolerance=0.1, figure_videos=2)
    assert EvaluateConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.primary == "top:0.5"  # value:0.5 is not among the modes


def test_metrics_json_holds_every_section_of_the_model_run(model_run, data):
    m = model_run.metrics
    assert set(m) >= {"method", "evaluate_config", "binarisations", "config", "overall", "per_class",
                      "per_video", "ceilings", "classification", "matching", "groups", "frames"}
    assert m["method"]["memory"] == "full"
    assert m["evaluate_config"]["device"] == "cpu" and m["config"]["modes"] == list(MetricsConfig().modes)
    modes = list(MetricsConfig().modes)
    assert m["binarisations"]["modes"] == modes and set(m["binarisations"]["definitions"]) == set(modes)
    assert len(m["frames"]) == m["matching"]["matched"] == m["overall"]["n_frames"] > 0
    assert {f["video"] for f in m["frames"]} == set(m["per_video"])
    assert sum(v["n_frames"] for v in m["per_video"].values()) == len(m["frames"])
    assert sorted(m["per_video"]) == data.test_ids
    assert set(m["overall"]["ciou"]) == set(MetricsConfig().modes) == set(m["ceilings"]["binarisations"])
    assert m["ceilings"]["grids"] == [[4, 4]]  # 128-pixel frames give 4×4 Lite0 maps


def test_every_annotated_test_frame_matches_a_step(model_run, data):
    n = sum(len(data.truth[v].frames) for v in data.test_ids)
    assert model_run.metrics["matching"] == {
        "annotated": n, "matched": n, "unmatched": 0, "tolerance": "half a frame interval",
        "unmatched_examples": []}


def test_model_rates_are_those_of_its_frames(model_run):
    # the summary is recomputed from the per-frame records metrics.json also holds (a rate
    # merely "in [0, 1]" would pass for a summary of the wrong frames or a constant)
    overall, frames = model_run.metrics["overall"], model_run.metrics["frames"]
    scored = [f for f in frames if f["has_truth"]]
    ciou = np.array([f["ciou"]["value:0.5"] for f in scored], dtype=float)  # (N,)
    c = overall["ciou"]["value:0.5"]
    assert c["n"] == len(scored) > 0
    assert c["success"] == pytest.approx(np.mean(ciou >= 0.5))
    assert c["mean"] == pytest.approx(np.mean(np.nan_to_num(ciou, nan=0.0)))
    assert overall["pointing"]["hit"] == pytest.approx(np.mean([f["pointing"] for f in scored
                                                                if f["pointing"] is not None]))
    classes = [(f["pred_class"], f["true_class"]) for f in frames if f["true_class"] is not None]
    assert overall["accuracy"]["value"] == pytest.approx(np.mean([p == t for p, t in classes]))
    for value in _rates(overall):
        assert 0.0 <= value <= 1.0
    c = model_run.metrics["classification"]
    assert c["seconds"] == 3 * SYNTH.seconds and c["accuracy"] == c["correct"] / c["seconds"]
    assert c["background"] == len(c["classes"])


def test_figure_is_a_png_of_the_grid_size(model_run):
    image = matplotlib.image.imread(model_run.out / "figure.png")
    width, height = figure_size(2, 3)
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0.05  # frames and maps were drawn, not a blank page


def test_groups_split_normal_and_hard_test_videos(model_run, data):
    hard = read_groups(data.meta)
    groups = model_run.metrics["groups"]
    assert set(groups) == {hard[v] for v in data.test_ids} == {"hard", "normal"}
    assert groups["hard"]["videos"] == sum(hard[v] == "hard" for v in data.test_ids)
    assert sum(g["n_frames"] for g in groups.values()) == model_run.metrics["overall"]["n_frames"]


def test_maps_of_the_ground_truth_score_ciou_one_and_pointing_all(data):
    maps, _ = _gt_maps(data, size=224)
    path = write_maps(data.root / "perfect.npz", maps)
    out = data.root / "eval-perfect"
    _run(["evaluate", "--maps", path, "--features", data.cache, "--annotations", data.boxes,
          "--out", out, "--size", 224, "--figure-videos", 0, "--binarisation", "value:0.5"])
    o = json.loads((out / "metrics.json").read_text())["overall"]
    assert o["ciou"]["value:0.5"]["mean"] == 1.0 and o["ciou"]["value:0.5"]["success"] == 1.0
    assert o["pointing"]["hit"] == 1.0
    assert o["box_iou"]["success"] == 1.0


def test_maps_of_the_wrong_place_score_zero(data):
    maps, _ = _gt_maps(data, inverted=True)
    path = write_maps(data.root / "inverted.npz", maps)
    r = evaluate(data.boxes, maps=path, features=data.cache, config=FAST, progress=False)
    assert r.report.overall["ciou"]["value:0.5"]["mean"] == 0.0
    assert r.report.overall["pointing"]["hit"] == 0.0


def test_frames_without_a_map_are_counted_not_scored(data):
    maps, n_with_box = _gt_maps(data, drop=3)
    path = write_maps(data.root / "partial.npz", maps)
    r = evaluate(data.boxes, maps=path, features=data.cache, config=FAST, progress=False)
    n = sum(len(data.truth[v].frames) for v in data.test_ids)
    assert r.matching["matched"] == n_with_box - 3
    assert r.matching["unmatched"] == n - (n_with_box - 3)


def test_maps_file_with_a_nan_map_is_refused_naming_the_key(data):
    maps, _ = _gt_maps(data)
    key = next(iter(maps))
    maps[key] = np.full((4, 4), np.nan, np.float32)
    path = write_maps(data.root / "nan.npz", maps)
    with pytest.raises(AvstmError, match=f"{key[0]}@{key[1]:.3f}.*NaN"):
        evaluate(data.boxes, maps=path, features=data.cache, config=FAST, progress=False)


def test_maps_without_a_cache_evaluate_every_annotated_video(data):
    maps, _ = _gt_maps(data)
    path = write_maps(data.root / "nocache.npz", maps)
    r = evaluate(data.boxes, maps=path, config=FAST, progress=False)
    assert r.videos["evaluated"] == len(data.truth) == SYNTH.videos
    assert r.report.overall["ciou"]["value:0.5"]["mean"] == 1.0


def test_baseline_scores_as_evaluate_baseline_on_the_test_split(data):
    r = evaluate(data.boxes, features=data.cache, progress=False,
                 config=dataclasses.replace(FAST, baseline="centre"))
    mc = FAST.metrics_config()
    direct = summarize(evaluate_baseline("centre", data.truth, config=mc, videos=data.test_ids),
                       config=mc)
    assert r.report.overall == direct


def test_baseline_command_writes_beside_the_annotations_by_default(data):
    _run(["evaluate", "--baseline", "whole-image", "--annotations", data.boxes,
          "--figure-videos", 0, "--quiet"])
    doc = json.loads((data.boxes.parent / "eval-whole-image" / "metrics.json").read_text())
    assert doc["method"] == {"kind": "baseline", "name": "whole-image"}
    assert doc["videos"]["evaluated"] == SYNTH.videos


def test_checkpoint_of_another_extract_config_is_refused(data, tmp_path):
    with FeatureCache(data.cache) as c:
        cfg, classes, cv = dict(c.config), list(c.classes), c.visual(data.test_ids[0]).shape[-1]
    model = STMNet(ModelConfig(visual_channels=cv, num_classes=len(classes) + 1, dim=16, hidden=16))
    path = save_checkpoint(tmp_path / "other.pt", model, train_config={}, classes=classes,
                           extract_config={**cfg, "fps": 2}, epoch=0)
    with pytest.raises(ConfigMismatch, match="fps"):
        evaluate(data.boxes, checkpoint=path, features=data.cache, config=FAST, progress=False)


def test_ablation_table_lists_every_method_and_group(data):
    out = data.root / "ablation"
    result = _run(["evaluate", "--ablation", "--checkpoint", data.ckpts["none"],
                   "--checkpoint", f"mine={data.ckpts['full']}", "--features", data.cache,
                   "--annotations", data.boxes, "--out", out, "--size", 224, "--quiet"])
    names = ["STM without temporal memory", "mine", "baseline: centre", "baseline: whole-image",
             "baseline: uniform"]
    for table in ("all videos", "hard videos", "normal videos"):
        section = result.stdout.split(table, 1)[1].split("\n\n")[0]
        assert all(n in section for n in names), (table, section)
    doc = json.loads((out / "ablation.json").read_text())
    assert list(doc["methods"]) == names
    mine = doc["methods"]["mine"]["overall"]["ciou"]["value:0.5"]
    # a success rate is a count of frames over n (None or NaN fail here too)
    assert mine["n"] > 0 and mine["success"] * mine["n"] == pytest.approx(round(mine["success"] * mine["n"]))


def test_map_choice_is_scored_and_named(data, model_run):
    # the checkpoint's own map (the default, memory_scores+affinity) vs the paper's α̂ on request
    assert model_run.metrics["method"]["map"] == "memory_scores+affinity"
    assert "random walk" in model_run.metrics["method"]["map_definition"]
    out = data.root / "eval-alpha"
    _run(["evaluate", "--checkpoint", data.ckpts["full"], "--features", data.cache, "--annotations",
          data.boxes, "--out", out, "--figure-videos", 0, "--map", "alpha_hat", "--device", "cpu", "--quiet"])
    alpha = json.loads((out / "metrics.json").read_text())
    assert alpha["method"]["map"] == "alpha_hat" and "softmax" in alpha["method"]["map_definition"]
    assert alpha["evaluate_config"]["map"] == "alpha_hat"
    mode = "top:0.5"
    assert alpha["overall"]["ciou"][mode]["mean"] != model_run.metrics["overall"]["ciou"][mode]["mean"]
    with pytest.raises(ValueError, match="map"):
        EvaluateConfig(map="nope")


def test_summary_txt_says_in_words_how_the_model_did_against_the_baselines(data, model_run):
    from avstm.evaluate.run import evaluate

    text = (model_run.out / "summary.txt").read_text()
    lines = text.splitlines()
    o = model_run.metrics["overall"]
    mode = model_run.metrics["binarisations"]["primary"]
    assert f"pointing {100 * o['pointing']['hit']:.1f} %" in lines[1]
    centre = evaluate(data.boxes, features=data.cache, progress=False, config=EvaluateConfig(
        baseline="centre", figure_videos=0)).report.overall
    want = f"pointing {100 * o['pointing']['hit']:.1f} vs {100 * centre['pointing']['hit']:.1f} %"
    verdict = next(line for line in lines if "the centre prior" in line)
    assert verdict.startswith("verdict: the model is ") and want in verdict
    ahead = [o["ciou"][mode]["mean"] > centre["ciou"][mode]["mean"], o["pointing"]["hit"] > centre["pointing"]["hit"]]
    if not all(ahead):
        assert "not ahead of the centre prior" in verdict
    assert any("the whole image" in line for line in lines)
