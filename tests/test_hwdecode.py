"""Decoding on NVDEC (`--decode-device cuda`): the option, its errors where the machine has no
hardware decoder, and (on a GPU machine) the same frames and cache as software decoding."""

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avstm import media
from avstm.cli import cli
from avstm.datasets import Dataset, VideoItem
from avstm.errors import HardwareDecodeError, MediaError
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import decode_loader, extract
from clips import write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("hw") / "c.mp4", seconds=2, fps=24)


def nvdec_opens(path) -> bool:
    try:
        media.probe_decoder(path, "cuda")
        return True
    except HardwareDecodeError:
        return False


def test_decode_device_names_are_checked():
    assert media.hardware_decoder(None) is None and media.hardware_decoder("cpu") is None
    assert type(media.hardware_decoder("cuda:1")).__name__ == "HWAccel"
    for bad in ("gpu", "cuda:x", "cpu:0"):
        with pytest.raises(ValueError, match="decode"):
            media.hardware_decoder(bad)
        with pytest.raises(ValueError, match="decode_device"):
            ExtractConfig(decode_device=bad)


def test_without_nvdec_the_error_names_the_device_not_the_file(clip, tmp_path):
    if nvdec_opens(clip):
        pytest.skip("this machine has a usable NVDEC")
    with pytest.raises(HardwareDecodeError, match=r"cannot decode on cuda:3: .*--decode-device cpu"):
        media.decode(clip, hwaccel="cuda:3")
    junk = tmp_path / "junk.mp4"  # a bad file is still reported as the file's problem
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(MediaError, match="junk.mp4: not a media file"):
        media.decode(junk, hwaccel="cuda")


def test_cli_fails_fast_without_nvdec_and_writes_nothing(clip, tmp_path):
    if nvdec_opens(clip):
        pytest.skip("this machine has a usable NVDEC")
    labels = tmp_path / "labels.csv"
    labels.write_text("c.mp4,dog\n")
    out = tmp_path / "f.h5"
    r = CliRunner().invoke(cli, ["extract", "--dataset", "folder", "--videos", str(clip.parent), "--labels",
                                 str(labels), "--out", str(out), "--decode-device", "cuda", "--quiet",
                                 "--visual-backbone", "efficientnet_lite0", "--audio-weights", "random"])
    assert r.exit_code == 1
    assert "cannot decode on cuda" in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists() and not out.with_name("f.h5.parts").exists()


def test_a_decoder_lost_mid_run_stops_the_run_with_one_line(clip):
    """Should NVDEC fail after the up-front check (a worker cannot open it), the decoding worker
    reports the machine's problem and extract raises it as it is, not one failure per video."""
    if nvdec_opens(clip):
        pytest.skip("this machine has a usable NVDEC")
    items = [VideoItem(id="v", path=str(clip), label="dog", split="train", segments=((0.0, 1e9, "dog"),))]
    (d,) = list(decode_loader(items, ExtractConfig(decode_device="cuda", workers=1)))
    assert d.fatal and d.error.startswith("cannot decode on cuda:0") and "\n" not in d.error


def test_spawned_decoding_workers_give_the_forked_workers_output(clip):
    """NVDEC runs need spawned workers (CUDA does not survive a fork): the loader must pickle."""
    items = [VideoItem(id=f"v{i}", path=str(clip), label="dog", split="train", segments=((0.0, 1e9, "dog"),))
             for i in range(2)]
    cfg = ExtractConfig(workers=1)
    forked = list(decode_loader(items, cfg))
    spawned = list(decode_loader(items, cfg, start_method="spawn"))
    assert [d.item.id for d in spawned] == ["v0", "v1"] and all(d.error is None for d in spawned)
    for a, b in zip(forked, spawned, strict=True):
        assert torch.equal(a.frames, b.frames) and torch.equal(a.logmel, b.logmel)


needs_nvdec = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU with NVDEC")


@needs_nvdec
def test_nvdec_frames_match_software_frames(clip):
    if not nvdec_opens(clip):
        pytest.skip("FFmpeg cannot open NVDEC here")
    assert media.probe_decoder(clip, "cuda") == "nv12"  # decoded by NVDEC, not a software fallback
    soft = media.decode(clip, fps=4, size=(128, 96))
    hard = media.decode(clip, fps=4, size=(128, 96), hwaccel="cuda")
    assert np.array_equal(hard.times, soft.times) and np.array_equal(hard.audio, soft.audio)
    # H.264 decoding is exact; only the nv12 → RGB conversion path may differ by a level or two
    assert np.abs(hard.frames.astype(int) - soft.frames.astype(int)).mean() < 2.0


@needs_nvdec
def test_extract_with_nvdec_matches_software_decoding(clip, tmp_path):
    if not nvdec_opens(clip):
        pytest.skip("FFmpeg cannot open NVDEC here")
    data = Dataset(items=[VideoItem(id="v", path=str(clip), label="dog", split="train",
                                    segments=((0.0, 1e9, "dog"),))], classes=["dog"])
    cfg = ExtractConfig(visual_backbone="efficientnet_lite0", audio_weights="random", workers=1, batch_size=8)
    for name, dev in (("soft.h5", "cpu"), ("hard.h5", "cuda")):
        r = extract(data, tmp_path / name, config=cfg.replace(decode_device=dev), progress=False)
        assert r.done == 1 and not r.failed
    with h5py.File(tmp_path / "soft.h5") as s, h5py.File(tmp_path / "hard.h5") as h:
        a, b = s["videos/v/visual"][()].astype(np.float32), h["videos/v/visual"][()].astype(np.float32)
        assert a.shape == b.shape and np.abs(a - b).mean() < 0.05 * np.abs(a).mean()
