"""Sharing a model: ``avstm export`` to one file, then ``avstm.load`` from it or from a URL."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import avstm
from avstm.cli import cli
from avstm.errors import CheckpointError
from avstm.share import cache_dir, export_model
from clips import tiny_checkpoint, write_clip


@pytest.fixture(autouse=True)
def hub(tmp_path, monkeypatch):
    """A torch hub cache of the test's own ($TORCH_HOME/hub)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return tmp_path / "torch" / "hub"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    run = root / "run"
    run.mkdir()
    ckpt = tiny_checkpoint(run / "best.pt")
    (run / "eval-best-test").mkdir()
    (run / "eval-best-test" / "summary.txt").write_text("verdict: the model is ahead of the centre prior\n")
    clip = write_clip(root / "clip.mp4", seconds=1.0, fps=12)
    return {"root": root, "ckpt": ckpt, "clip": clip}


@pytest.fixture(scope="module")
def package(world):
    r = CliRunner().invoke(cli, ["export", str(world["ckpt"]), str(world["root"] / "tiny.avstm")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return world["root"] / "tiny.avstm", r.stdout


def test_export_writes_a_package_and_its_checksum(package):
    path, stdout = package
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (path.parent / "tiny.avstm.sha256").read_text() == f"{digest}  tiny.avstm\n"
    assert digest in stdout
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["MODEL_CARD.md", "manifest.json", "model.pt"]
        manifest = json.loads(z.read("manifest.json"))
        card = z.read("MODEL_CARD.md").decode()
        model_sha = hashlib.sha256(z.read("model.pt")).hexdigest()
    assert manifest["format"] == "avstm-model/1" and manifest["model"]["sha256"] == model_sha
    assert manifest["classes"] == ["beep", "hum"]
    assert manifest["extract_config"]["visual_backbone"] == "efficientnet_lite0"
    assert "beep, hum" in card and "efficientnet_lite0" in card
    assert "ahead of the centre prior" in card  # the run's evaluation summary


def test_a_package_loads_and_localizes_like_its_checkpoint(world, package):
    a = avstm.load(world["ckpt"], device="cpu").localize(world["clip"])
    b = avstm.load(package[0], device="cpu").localize(world["clip"])
    np.testing.assert_array_equal(a.maps, b.maps)


def test_load_from_a_url_with_its_checksum_goes_to_the_hub_cache(world, package, hub):
    path = package[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = avstm.load(path.as_uri(), sha256=digest, device="cpu")
    assert model.classes == ["beep", "hum"]
    assert str(cache_dir()).startswith(str(hub))
    assert [p.name for p in (cache_dir() / "downloads").iterdir()] == [f"{digest[:16]}-tiny.avstm"]


def test_a_url_with_a_wrong_checksum_is_refused_and_not_kept(package):
    path = package[0]
    with pytest.raises(CheckpointError, match="SHA-256 .* not the 0{64} it was given with"):
        avstm.load(path.as_uri(), sha256="0" * 64, device="cpu")
    assert not list((cache_dir() / "downloads").iterdir())


def test_a_url_needs_a_checksum(package):
    with pytest.raises(CheckpointError, match="needs its SHA-256"):
        avstm.load(package[0].as_uri(), device="cpu")


def test_an_altered_package_is_refused(world, package, tmp_path):
    bad = tmp_path / "bad.avstm"
    with zipfile.ZipFile(package[0]) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[:-1] + bytes([data[-1] ^ 1]) if name == "model.pt" else data)
    with pytest.raises(CheckpointError, match="does not match the SHA-256 in its manifest"):
        avstm.load(bad, device="cpu")


def test_localize_cli_takes_a_url_and_sha256(world, package, tmp_path):
    path = package[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    r = CliRunner().invoke(cli, ["localize", "--video", str(world["clip"]), "--checkpoint", path.as_uri(),
                                 "--sha256", digest, "--out", str(tmp_path / "o"), "--device", "cpu",
                                 "--quiet", "--no-overlay"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "boxes.json").read_text())["model"]["classes"] == ["beep", "hum"]


def test_export_of_a_foreign_file_is_one_line(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("nope")
    r = CliRunner().invoke(cli, ["export", str(bad), str(tmp_path / "x.avstm")], catch_exceptions=False)
    assert r.exit_code == 1 and r.stderr.startswith(f"avstm: error: {bad}: ")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.avstm").exists()
