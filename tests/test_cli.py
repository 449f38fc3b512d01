"""The command line's mistakes: the exact message and exit status of each, and one naming of the
same thing on every command."""

from __future__ import annotations

import h5py
import pytest
import torch
from click.testing import CliRunner

from avstm.cli import cli
from avstm.device import DEVICE_HELP
from clips import tiny_checkpoint, write_clip

COMMANDS = ["extract", "synth", "train", "localize", "evaluate", "demo", "cache verify", "cache merge"]
DEVICE_COMMANDS = ["extract", "train", "localize", "evaluate", "demo"]
FOLDER_OUT = {  # each command writing a folder, with the other options it needs to get there
    "train": ["--features", "f.h5"],
    "localize": ["--video", "v.mp4", "--checkpoint", "c.pt"],
    "synth": [],
    "evaluate": ["--annotations", "a.json", "--baseline", "centre"],
    "demo": [],
}
MINIMAL = {**FOLDER_OUT, "extract": ["--dataset", "ave", "--root", "r", "--out", "o.h5"]}


def invoke(args, **kwargs):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kwargs)


def error_line(result) -> str:
    """The one stderr line of an error (the test fails if there are more)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def usage_error(result) -> str:
    """click's usage error: its last line ("Error: ..."), exit status 2."""
    assert result.exit_code == 2, result.output
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("cli") / "best.pt")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("cli_clip") / "clip.mp4", seconds=1.0, fps=12)


# ---- devices -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_device_gpu_is_one_line(command, tmp_path):
    r = invoke([command, *MINIMAL[command], *([] if command == "extract" else ["--out", str(tmp_path / "o")]),
                "--device", "gpu"])
    assert r.exit_code == 1
    assert error_line(r) == "avstm: error: --device gpu: not a device; use auto, cpu, cuda or cuda:N"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["train", "localize"])
def test_device_cuda_without_a_gpu_is_one_line(command, tmp_path):
    r = invoke([command, *MINIMAL[command], "--out", str(tmp_path / "o"), "--device", "cuda"])
    assert r.exit_code == 1
    assert error_line(r) == ("avstm: error: --device cuda: no CUDA GPU on this machine; use --device cpu "
                             "or --device auto")


def test_device_index_on_cpu_is_not_a_device(tmp_path):
    r = invoke(["train", "--features", "f.h5", "--out", str(tmp_path / "o"), "--device", "cpu:1"])
    assert r.exit_code == 1 and error_line(r).endswith("--device cpu:1: not a device; use auto, cpu, cuda or cuda:N")


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_device_has_the_same_help_everywhere(command):
    text = " ".join(invoke([command, "--help"]).stdout.split())
    assert f"--device TEXT {DEVICE_HELP}" in text


# ---- --out ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", sorted(FOLDER_OUT))
def test_out_naming_an_existing_file_is_one_line(command, tmp_path):
    file = tmp_path / "taken"
    file.write_text("x")
    r = invoke([command, *FOLDER_OUT[command], "--out", str(file)])
    assert r.exit_code == 1
    assert error_line(r) == f"avstm: error: {file}: a file, not a folder; --out names the folder to write into"


def test_extract_out_naming_a_folder_is_one_line(tmp_path):
    r = invoke(["extract", "--dataset", "ave", "--root", "r", "--out", str(tmp_path)])
    assert r.exit_code == 1
    assert error_line(r) == f"avstm: error: {tmp_path}: a folder; --out names the file to write"


# ---- --checkpoint and --annotations -------------------------------------------------------------

def test_a_cache_given_as_checkpoint_is_named(tmp_path, clip):
    cache = tmp_path / "features.h5"
    with h5py.File(cache, "w") as f:
        f.attrs["config"] = "{}"
    r = invoke(["localize", "--video", str(clip), "--checkpoint", str(cache), "--out", str(tmp_path / "o"),
                "--device", "cpu"])
    assert r.exit_code == 1
    assert error_line(r) == (f"avstm: error: {cache}: an HDF5 feature cache, not a checkpoint (give a run's "
                             f"best.pt or last.pt; the cache goes to --features)")


def test_a_run_folder_given_as_checkpoint_points_at_its_best_pt(tmp_path, ckpt, clip):
    r = invoke(["localize", "--video", str(clip), "--checkpoint", str(ckpt.parent), "--out",
                str(tmp_path / "o"), "--device", "cpu"])
    assert r.exit_code == 1
    assert error_line(r) == f"avstm: error: {ckpt.parent}: a folder, not a checkpoint; did you mean {ckpt}?"


def test_an_empty_folder_given_as_checkpoint(tmp_path, clip):
    r = invoke(["localize", "--video", str(clip), "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o"),
                "--device", "cpu"])
    assert r.exit_code == 1
    assert error_line(r) == (f"avstm: error: {tmp_path}: a folder, not a checkpoint (give a run's best.pt "
                             f"or last.pt)")


def test_a_foreign_file_as_checkpoint_gives_one_whole_line(tmp_path, clip):
    bad = tmp_path / "notes.pt"
    bad.write_bytes(b"this is not a zip file nor a pickle, just text " * 20)
    r = invoke(["localize", "--video", str(clip), "--checkpoint", str(bad), "--out", str(tmp_path / "o"),
                "--device", "cpu"])
    line = error_line(r)
    assert r.exit_code == 1 and line.startswith(f"avstm: error: {bad}: ")
    assert len(line) < 300 and "weights_only" not in line


def test_ave_annotations_given_as_box_annotations(shared_data, tmp_path):
    ave = shared_data / "ave" / "Annotations.txt"
    r = invoke(["evaluate", "--annotations", str(ave), "--baseline", "centre", "--out", str(tmp_path / "o"),
                "--device", "cpu"])
    assert r.exit_code == 1
    assert error_line(r).startswith(f"avstm: error: {ave}: AVE labels, not boxes (its lines give each "
                                    f"video's event class and seconds); --annotations needs box ground truth: ")


@pytest.mark.parametrize("sources", [["--baseline", "centre", "--maps", "m.npz"], []])
def test_evaluate_scores_exactly_one_source(sources, tmp_path):
    # the library's one check (evaluate.run.check_source), also when --out is not given
    for out in (["--out", str(tmp_path / "o")], []):
        r = invoke(["evaluate", "--annotations", str(tmp_path / "a.json"), *sources, *out])
        assert r.exit_code == 1
        assert error_line(r) == ("avstm: error: evaluate needs exactly one of a checkpoint (--checkpoint), "
                                 "a maps file (--maps) or a baseline (--baseline)")
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())


def test_evaluate_output_defaults_live_in_the_library(tmp_path):
    from avstm.evaluate.config import EvaluateConfig
    from avstm.evaluate.run import default_out_dir

    config = EvaluateConfig(split="val")
    ann = tmp_path / "truth" / "a.json"
    assert default_out_dir(ann, checkpoint=tmp_path / "run" / "best.pt", config=config) \
        == tmp_path / "run" / "eval-best-val"
    assert default_out_dir(ann, maps=tmp_path / "m" / "maps.npz", config=config) == tmp_path / "m" / "eval-maps"
    assert default_out_dir(ann, config=config.replace(baseline="centre")) == tmp_path / "truth" / "eval-centre"
    for run in ("ablation", "extended"):
        assert default_out_dir(ann, checkpoint=tmp_path / "run" / "best.pt", config=config, run=run) \
            == tmp_path / "run" / f"{run}-val"


# ---- ranges name the option ----------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["train", "--features", "f.h5", "--batch-size", "0"], "Error: --batch-size must be at least 1, got 0"),
    (["train", "--features", "f.h5", "--epochs", "0"], "Error: --epochs must be at least 1, got 0"),
    (["train", "--features", "f.h5", "--visual-pool", "mean"],
     "Error: --visual-pool mean needs the visual head: --visual-loss > 0"),
    (["synth", "--fps", "10"], "Error: --fps must be a multiple of the 4 annotated frames per second, got 10"),
    (["synth", "--width", "33"], "Error: --width must be even and >= 32, got 33"),
    (["extract", "--dataset", "ave", "--root", "r", "--frame-size", "16"],
     "Error: --frame-size must be at least 32, got 16"),
    (["localize", "--video", "v.mp4", "--checkpoint", "c.pt", "--min-area", "2"],
     "Error: --min-area is a fraction of the frame in [0, 1], got 2.0"),
    (["localize", "--video", "v.mp4", "--checkpoint", "c.pt", "--detector-min-size", "0"],
     "Error: --detector-min-size must be at least 1, got 0"),
    (["evaluate", "--annotations", "a.json", "--baseline", "centre", "--figure-frames", "0"],
     "Error: --figure-frames must be >= 1, got 0"),
])
def test_range_errors_name_the_cli_option(args, message, tmp_path):
    out = ["--out", str(tmp_path / ("o.h5" if args[0] == "extract" else "o"))]
    assert usage_error(invoke(args + out)) == message


def test_train_batch_size_0_trains_nothing(tmp_path):
    r = invoke(["train", "--features", "f.h5", "--out", str(tmp_path / "run"), "--batch-size", "0"])
    assert r.exit_code == 2 and not (tmp_path / "run").exists()


# ---- the same names everywhere -----------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_quiet(command):
    assert "--quiet" in invoke([*command.split(), "--help"]).stdout


def test_train_no_progress_stays_a_hidden_alias(tmp_path):
    assert "--no-progress" not in invoke(["train", "--help"]).stdout
    r = invoke(["train", "--features", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "run"),
                "--no-progress"])
    assert r.exit_code == 1 and "no such option" not in r.stderr  # accepted; the cache is missing


def test_command_list_shows_whole_descriptions():
    text = " ".join(invoke(["--help"]).stdout.split())
    assert "..." not in text.replace("COMMAND [ARGS]...", "")  # click's cut descriptions end so
    assert ("train Train the space-time memory network on a feature cache; one JSON line of metrics "
            "per epoch.") in text
    assert "localize Localize the sounding objects of a video or a folder of videos: boxes.json, overlay.mp4 in OUT." in text


def test_quiet_silences_the_timing_line(ckpt, clip, tmp_path):
    args = ["localize", "--video", str(clip), "--checkpoint", str(ckpt), "--device", "cpu", "--no-overlay"]
    loud = invoke(args + ["--out", str(tmp_path / "a")])
    quiet = invoke(args + ["--out", str(tmp_path / "b"), "--quiet"])
    assert loud.exit_code == quiet.exit_code == 0, loud.output + quiet.output
    assert "s/frame" in loud.stderr and quiet.stderr == ""
    assert quiet.stdout.startswith(str(tmp_path / "b" / "boxes.json"))
