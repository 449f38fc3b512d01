"""Tests of avstm/memnet/objective.py and of training with its options on a real HDF5 cache."""

from __future__ import annotations

import pytest
import torch

from avstm.memnet.checkpoint import load_model
from avstm.memnet.objective import contrastive_loss, training_loss
from avstm.memnet.train import TrainConfig, train

from test_memnet_train import SMALL, cache  # noqa: F401  (the module's cache fixture)


def test_contrastive_loss_prefers_matching_pairs():
    g = torch.Generator().manual_seed(0)
    b, t, c = 6, 2, 8
    audio = torch.randn(b, t, c, generator=g)
    visual = torch.randn(b, t, c, 4, 4, generator=g) * 0.1
    visual[:, :, :, 1, 2] += 3 * audio  # each clip's own audio matches one position
    matched = contrastive_loss(visual, audio)
    shuffled = contrastive_loss(visual, audio[torch.roll(torch.arange(b), 1)])
    assert matched < 0.2 < shuffled
    # the similarity is the best position: moving the matching cell elsewhere changes nothing
    moved = torch.roll(visual, shifts=(2, 1), dims=(3, 4))
    torch.testing.assert_close(contrastive_loss(moved, audio), matched)


def test_training_loss_adds_only_the_options_asked_for():
    from avstm.memnet.model import ModelConfig, STMNet

    torch.manual_seed(0)
    model = STMNet(ModelConfig(visual_channels=8, num_classes=3, dim=8, hidden=8, visual_head=True))
    out = model(torch.randn(4, 2, 8, 8, 8), torch.randn(4, 2, 512, 6, 4))
    targets = torch.randint(0, 3, (4, 2))
    plain, logits = training_loss(out, targets)
    torch.testing.assert_close(plain, torch.nn.functional.cross_entropy(logits, targets.flatten()))
    with_visual, _ = training_loss(out, targets, visual_loss=0.5)
    expected = plain + 0.5 * torch.nn.functional.cross_entropy(out.visual_logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(with_visual, expected)
    with_con, _ = training_loss(out, targets, contrastive=2.0)
    torch.testing.assert_close(with_con, plain + 2.0 * contrastive_loss(out.visual, out.audio_query))


def test_train_config_builds_the_model_the_options_need():
    config = TrainConfig(visual_loss=1.0, audio_dropout=0.3, attention_scale="learned", map="alpha_hat")
    m = config.model_config(visual_channels=4, num_classes=3)
    assert m.visual_head and m.audio_dropout == 0.3 and m.attention_scale == "learned" and m.map == "alpha_hat"
    assert not TrainConfig().model_config(visual_channels=4, num_classes=3).visual_head
    with pytest.raises(ValueError, match="contrastive must be >= 0, got -1.0"):
        TrainConfig(contrastive=-1.0)
    with pytest.raises(ValueError, match="map"):
        TrainConfig(map="nope")


def test_training_with_every_option_learns_and_round_trips(tmp_path, cache):  # noqa: F811
    config = TrainConfig(epochs=4, seed=0, visual_loss=1.0, contrastive=0.5, audio_dropout=0.3,
                         attention_scale="learned", **SMALL)
    result = train(cache, tmp_path / "run", config=config, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    model, info = load_model(result.best_path)
    assert info.train_config == config and model.visual_classifier is not None
    assert model.log_scale.requires_grad
    # the map is an inference choice: it can be replaced on loading, weights unchanged
    other, info2 = load_model(result.best_path, map="alpha_hat")
    assert info2.model_config.map == "alpha_hat" and info.model_config.map == config.map
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
