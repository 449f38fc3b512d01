"""Tests of the benchmarks' data preparation: ``avstm extract --dataset vggss|flickr`` on real
mp4 clips named by the annotation ids, the annotated frame as the last step, and ``avstm
evaluate`` scoring the single annotated image on that step."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from avstm import media
from avstm.cache import FeatureCache
from avstm.cli import cli
from avstm.benchmarks import VGGSS_FRAME_TIME, read_flickr_clips, read_vggss_clips
from avstm.datasets import anchored_times
from avstm.errors import AnnotationError
from avstm.evaluate.run import EvaluateConfig, evaluate
from avstm.memnet.checkpoint import save_checkpoint
from avstm.memnet.model import ModelConfig, STMNet
from clips import read_index, write_clip

IDS = ("aaaaaaaaaaa_000010", "bbbbbbbbbbb_000020")


def test_anchored_steps_end_on_the_annotated_frame_in_whole_seconds():
    t = anchored_times(VGGSS_FRAME_TIME, 4)
    assert t.shape == (5, 4) and t[-1, -1] == 4.96 and t[0, 0] == pytest.approx(0.21)
    np.testing.assert_allclose(np.diff(t.ravel()), 0.25)
    assert anchored_times(10.0, 4).shape == (10, 4)  # 0.25 .. 10.0


def test_the_last_step_decodes_the_125th_frame_of_a_25_fps_clip(tmp_path):
    path = write_clip(tmp_path / "c.mp4", fps=25, seconds=6)
    clip = media.decode(path, size=None, times=anchored_times(VGGSS_FRAME_TIME, 4).ravel(),
                        audio=False)
    assert read_index(clip.frames[-1]) == 124  # the 125th frame, counted from 1


@pytest.fixture()
def vggss(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for vid in IDS:
        write_clip(clips / f"{vid}.mp4", fps=25, seconds=6, width=64, height=48)
    ann = tmp_path / "vggss.json"
    ann.write_text(json.dumps([
        {"file": IDS[0], "class": "dog barking", "bbox": [[0.1, 0.1, 0.6, 0.9]]},
        {"file": IDS[1], "class": "playing piano", "bbox": [[0.2, 0.0, 1.0, 0.5]]},
        {"file": "ccccccccccc_000030", "class": "dog barking", "bbox": [[0, 0, 1, 1]]}]))
    return tmp_path, clips, ann


def test_vggss_clips_skip_absent_ones_with_one_warning(vggss):
    _, clips, ann = vggss
    with pytest.warns(UserWarning, match="1 of 3 VGG-SS clips are not in the folder"):
        data = read_vggss_clips(clips, ann)
    assert [it.id for it in data.items] == list(IDS) and data.classes == ["dog barking",
                                                                         "playing piano"]
    assert all(it.anchor == VGGSS_FRAME_TIME and it.split == "test" for it in data.items)
    with pytest.raises(AnnotationError, match="none of the 3 VGG-SS clips"):
        read_vggss_clips(clips / "..", ann)


def test_flickr_clips_take_the_ids_of_the_xml_folder(tmp_path):
    (tmp_path / "xml").mkdir()
    (tmp_path / "clips").mkdir()
    for vid in ("101", "202"):
        (tmp_path / "xml" / f"{vid}.xml").write_text("<annotation/>")
    write_clip(tmp_path / "clips" / "202.mp4", fps=4, seconds=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_flickr_clips(tmp_path / "clips", tmp_path / "xml")
    assert [it.id for it in data.items] == ["202"] and data.classes == ["flickr"]
    assert data.items[0].anchor == 10.0


def test_extract_vggss_then_evaluate_scores_the_annotated_step(vggss):
    root, clips, ann = vggss
    cache = root / "vggss.h5"
    result = CliRunner().invoke(cli, [
        "extract", "--dataset", "vggss", "--videos", str(clips), "--annotations", str(ann),
        "--out", str(cache), "--visual-backbone", "efficientnet_lite0", "--visual-weights",
        "random", "--audio-weights", "random", "--frame-size", "64", "--workers", "0",
        "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with FeatureCache(cache) as c:
        for vid in IDS:
            times = c.times(vid)
            assert times.shape == (5, 4) and times[-1, -1] == pytest.approx(4.96)
        classes, cv = list(c.classes), c.visual(IDS[0]).shape[-1]
        cfg = dict(c.config)
    model = STMNet(ModelConfig(visual_channels=cv, num_classes=len(classes) + 1, dim=8, hidden=8))
    ckpt = save_checkpoint(root / "m.pt", model, train_config={}, classes=classes,
                           extract_config=cfg, epoch=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(str(ann), checkpoint=ckpt, features=cache, progress=False,
                     config=EvaluateConfig(protocol="ezvsl", figure_videos=0, device="cpu"))
    assert r.matching["matched"] == 2 and r.matching["unmatched"] == 0
    assert r.report.overall["ciou"]["top:0.5"]["n"] == 2
