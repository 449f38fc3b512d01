"""`avstm demo` end to end on a tiny generated dataset (the README's first command, scaled down)."""

import json

import av
from click.testing import CliRunner

from avstm.cli import cli


def test_demo_writes_metrics_figure_overlay_and_boxes(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--videos", "20", "--seconds", "2", "--epochs", "1", "--quiet"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    print(result.output)
    assert result.exit_code == 0
    assert "efficientnet_lite0 (imagenet) instead of the paper's ResNet-152" in result.output
    assert "centre prior" in result.output
    # the recipe's departures from the paper are said, and one verdict line stands by the table
    assert "scaled (sqrt) before the softmax" in result.output and "instead of the paper's α̂" in result.output
    assert "the map refined by +affinity" in result.output
    verdict = [line for line in result.output.splitlines() if line.startswith("verdict: ")]
    assert len(verdict) == 1 and "pointing" in verdict[0] and "chance" in verdict[0]
    summary = json.loads((out / "demo.json").read_text())
    assert summary["verdict"] == verdict[0]
    metrics = json.loads(open(summary["metrics"]).read())
    assert metrics["overall"]["n_frames"] > 0
    assert open(summary["figure"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    boxes = json.loads(open(summary["boxes"]).read())
    assert len(boxes["frames"]) == 2 * 4  # 2 s at 4 frames per second
    with av.open(summary["overlay"]) as f:
        assert f.streams.video and f.streams.audio
    # a second run reuses everything on disk
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0 and "0 videos extracted, 20 already cached" in again.output


def _summary(pointing, mean, success):
    return {"pointing": {"hit": pointing}, "ciou": {"value:0.5": {"mean": mean, "success": success}}}


def test_verdict_says_ahead_only_when_ahead_on_every_metric():
    from avstm.demo import compare_to_prior

    ahead = compare_to_prior(_summary(0.8, 0.5, 0.6), _summary(0.5, 0.3, 0.1), "value:0.5")
    assert ahead.startswith("verdict: the model is ahead of the centre prior")
    assert "pointing 80.0 vs 50.0 % (ahead)" in ahead and "mean cIoU 0.500 vs 0.300 (ahead)" in ahead
    mixed = compare_to_prior(_summary(0.8, 0.2, 0.6), _summary(0.5, 0.3, 0.1), "value:0.5")
    assert "not ahead of" in mixed and "mean cIoU 0.200 vs 0.300 (behind)" in mixed
