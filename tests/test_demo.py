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
    summary = json.loads((out / "demo.json").read_text())
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
