"""Tests of avstm/evaluate/extended.py (``avstm evaluate --extended``): the pair scores on
hand-computed cases, the audio of the negatives, and a whole run on generated data (real mp4
files, a real HDF5 cache from random backbones, a network trained for one epoch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avstm.cache import FeatureCache
from avstm.cli import cli
from avstm.datasets import read_ave
from avstm.evaluate.extended import (AudioFeatures, ExtendedConfig, negative_audio, pair_scores,
                                     precision_recall)
from avstm.extract.config import ExtractConfig
from avstm.extract.features import audio_examples
from avstm.extract.pipeline import extract
from avstm.extract.vggish import load_vggish
from avstm.memnet.train import TrainConfig, train
from avstm.synth import SynthConfig, generate

SYNTH = SynthConfig(videos=6, seconds=3, width=160, height=120, seed=3, hard=0.5,
                    split_shares=(0.4, 0.1, 0.5))


# ---- scores over pairs ---------------------------------------------------------------------

# A sounding hit 0.9, B silent 0.8, C sounding hit 0.3, D silent 0.2
HIT = [True, False, True, False]
SOUNDING = [True, False, True, False]
CONF = [0.9, 0.8, 0.3, 0.2]


def test_precision_recall_counts_as_slavc():
    h, s, c = map(np.array, (HIT, SOUNDING, CONF))
    assert precision_recall(h, s, c, 0.8) == (0.5, 0.5)  # tp A, fp B, fn C
    assert precision_recall(h, s, c, 0.95) == (1.0, 0.0)  # nothing detected: precision 1


def test_ap_max_f1_and_precision_of_four_pairs():
    # thresholds 0.9, 0.8, 0.3, 0.2: (p, r) = (1, .5), (.5, .5), (2/3, 1), (.5, 1)
    # AP = 1 * 0.5 + 2/3 * 0.5; max-F1 at 0.3: 2 * 2/3 * 1 / (5/3) = 0.8
    s = pair_scores(HIT, SOUNDING, CONF)
    assert s["ap"] == pytest.approx(0.5 + 1 / 3) and s["max_f1"] == pytest.approx(0.8)
    assert s["precision"] == 0.5 and s["pairs"] == 4


def test_ap_interpolates_precision_by_the_best_at_higher_recall():
    # (p, r) = (1, 1/3), (1/2, 1/3), (2/3, 2/3), (3/4, 1): envelope 1, 3/4, 3/4, 3/4
    s = pair_scores([True, False, True, True], [True, False, True, True], [0.9, 0.8, 0.7, 0.6])
    assert s["ap"] == pytest.approx(1 / 3 + 0.75 * 2 / 3)


def test_a_mislocalized_sounding_pair_is_a_false_positive():
    s = pair_scores([False, False], [True, False], [0.9, 0.1])
    assert s["ap"] == 0.0 and s["max_f1"] == 0.0


def test_separated_confidences_give_ap_one():
    assert pair_scores([True, True, False], [True, True, False], [0.9, 0.8, 0.1])["ap"] == 1.0


def test_extended_config_checks_its_names():
    with pytest.raises(ValueError, match="negatives"):
        ExtendedConfig(negatives=("thunder",))
    with pytest.raises(ValueError, match="confidence"):
        ExtendedConfig(confidence="entropy")


# ---- a whole run on generated data ---------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("extended")
    generate(root / "synth", config=SYNTH, progress=False)
    cache = root / "cache.h5"
    extract(read_ave(root / "synth"), cache, progress=False, config=ExtractConfig(
        visual_backbone="efficientnet_lite0", visual_weights="random", audio_weights="random",
        workers=0, batch_size=24, frame_size=128, device="cpu"))
    run = train(cache, root / "run", progress=False, config=TrainConfig(
        epochs=1, batch_size=2, workers=0, dim=16, hidden=16, in_memory="no", device="cpu"))
    return root, cache, run.last_path


def test_silence_and_noise_go_through_the_caches_audio_backbone(data):
    _, cache_path, _ = data
    with FeatureCache(cache_path) as cache:
        vid = cache.ids("test")[0]
        shape = cache.audio(vid).shape
        net = AudioFeatures(cache, torch.device("cpu"))
        silent = negative_audio("silence", shape, net, None, np.random.default_rng(0), -20.0)
        other = cache.audio(cache.ids("test")[1])
        swapped = negative_audio("swap", shape, None, other, None, -20.0)
        noise = negative_audio("noise", shape, net, None, np.random.default_rng(0), -20.0)
    trunk = load_vggish("random", seed=0)
    with torch.no_grad():
        ref = trunk(torch.from_numpy(audio_examples(np.zeros(32000, np.float32), [1.0])))
    assert silent.shape == shape == noise.shape == swapped.shape
    np.testing.assert_allclose(silent[1, 2], ref[0].permute(1, 2, 0).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(noise[0, 0], silent[0, 0])
    np.testing.assert_array_equal(swapped.reshape(-1, *shape[2:])[: other.shape[0] * other.shape[1]],
                                  np.resize(other.reshape(-1, *shape[2:]),
                                            (other.shape[0] * other.shape[1], *shape[2:])))


def test_extended_command_prints_ap_and_max_f1_for_model_and_baselines(data):
    root, cache, ckpt = data
    out = root / "ext"
    result = CliRunner().invoke(cli, ["evaluate", "--extended", "--checkpoint", str(ckpt),
                                      "--features", str(cache), "--annotations",
                                      str(root / "synth" / "boxes.json"), "--size", "224",
                                      "--out", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for word in ("AP %", "max-F1 %", "active silence %", "baseline: centre", "baseline: uniform",
                 "STM C+U memory", "background"):
        assert word in result.output, word
    doc = json.loads((out / "extended.json").read_text())
    assert doc["format"] == "avstm-extended/1"
    model, centre = doc["methods"]["STM C+U memory"], doc["methods"]["baseline: centre"]
    n = model["sounding_pairs"]
    assert n > 0 and all(model["per_negative"][k]["pairs"] > n for k in ("silence", "noise", "swap"))
    assert model["per_negative"]["background"]["pairs"] > n  # generated clips have background seconds
    for s in (model, centre):
        assert 0.0 <= s["ap"] <= 1.0 and 0.0 <= s["max_f1"] <= 1.0
    # a baseline ignores the sound: it activates the same share under silence as when it sounds
    assert centre["activated"]["silence"] == pytest.approx(centre["activated"]["sounding"])
    assert doc["methods"]["baseline: whole-image"]["activated"]["noise"] == 1.0
