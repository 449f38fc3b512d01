"""Tests of avstm/memnet/model.py: shapes, causality, batched == streaming, the ablations."""

from __future__ import annotations

import pytest
import torch

from avstm.maps import is_flat
from avstm.memnet.config import map_definition
from avstm.memnet.model import (ATTENTION_SCALES, MAP_CHOICES, ModelConfig, STMNet, affinity_walk,
                                spatial_attention)

CV = 16


def make_model(memory: str = "full", k: int = 3, heads: int = 1, seed: int = 0,
               map: str = "alpha_hat", **options) -> STMNet:
    torch.manual_seed(seed)
    config = ModelConfig(visual_channels=CV, num_classes=5, dim=32, hidden=16, memory=memory,
                         memory_length=k, heads=heads, dropout=0.0, map=map, **options)
    return STMNet(config).eval()


def make_clip(b: int, t: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, CV, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(b, t, 512, 6, 4, generator=g, dtype=torch.float64))


def stream(model: STMNet, visual, audio):
    state = model.init_state(visual.shape[0])
    maps, logits = [], []
    for t in range(visual.shape[1]):
        m, l, state = model.step(visual[:, t], audio[:, t], state)
        maps.append(m)
        logits.append(l)
    return torch.stack(maps, 1), torch.stack(logits, 1)


def test_forward_shapes():
    model = make_model()
    visual, audio = make_clip(2, 5)
    out = model(visual.float(), audio.float())
    assert out.maps.shape == (2, 5, 8, 8)
    assert out.logits.shape == (2, 5, 5)


def test_maps_are_softmax_over_positions():
    model = make_model()
    visual, audio = make_clip(2, 4)
    maps = model(visual.float(), audio.float()).maps
    assert torch.all(maps >= 0)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 4))


def test_step_shapes_and_constant_memory():
    model = make_model(k=3)
    visual, audio = make_clip(2, 7)
    state = model.init_state(2)
    for t in range(7):
        maps, logits, state = model.step(visual[:, t].float(), audio[:, t].float(), state)
        assert state.visual.shape == (2, 3, 32, 8, 8)
        assert state.audio.shape == (2, 3, 32, 6, 4)
    assert maps.shape == (2, 8, 8)
    assert logits.shape == (2, 5)


def test_spatial_attention_weights_visual_by_audio():
    x_v = torch.randn(3, 4, 8, 8)
    x_a = torch.randn(3, 4, 6, 4)
    att = spatial_attention(x_v, x_a)
    alpha, x_av = att.alpha, att.x_av
    expected = torch.softmax(torch.einsum("nchw,nc->nhw", x_v, x_a.mean((2, 3))).flatten(1), -1)
    torch.testing.assert_close(alpha.flatten(1), expected)
    torch.testing.assert_close(x_av, x_v * alpha[:, None])


@pytest.mark.parametrize("memory", ["none", "unimodal", "full"])
def test_causal_future_does_not_change_past(memory):
    model = make_model(memory).double()
    visual, audio = make_clip(1, 6)
    before = model(visual, audio)
    visual2, audio2 = visual.clone(), audio.clone()
    visual2[:, 3:] += 5 * torch.randn_like(visual2[:, 3:])
    audio2[:, 3:] += 5 * torch.randn_like(audio2[:, 3:])
    after = model(visual2, audio2)
    torch.testing.assert_close(after.maps[:, :3], before.maps[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(after.logits[:, :3], before.logits[:, :3], rtol=0, atol=0)
    assert not torch.allclose(after.maps[:, 3], before.maps[:, 3])


@pytest.mark.parametrize("memory,heads", [("full", 1), ("full", 2), ("unimodal", 1), ("none", 1)])
def test_batched_equals_streaming_beyond_memory_length(memory, heads):
    model = make_model(memory, k=3, heads=heads).double()
    visual, audio = make_clip(2, 11)  # clip > K + 1: the ring buffer wraps twice
    out = model(visual, audio)
    maps, logits = stream(model, visual, audio)
    torch.testing.assert_close(maps, out.maps, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(logits, out.logits, rtol=1e-9, atol=1e-12)


def test_batched_equals_streaming_float32():
    model = make_model("full", k=2)
    visual, audio = make_clip(2, 7)
    out = model(visual.float(), audio.float())
    maps, logits = stream(model, visual.float(), audio.float())
    torch.testing.assert_close(maps, out.maps, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits, out.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("memory,reach", [("unimodal", 2), ("full", 4)])
def test_memory_window_is_k_past_steps(memory, reach):
    # K = 2: x̂_a, x̂_v see K steps back; in "full" the av memory of step k already holds
    # x̂_v^k, so the cross-modal memory reaches 2K steps back.
    model = make_model(memory, k=2).double()
    visual, audio = make_clip(1, 8)
    base = model(visual, audio)
    visual2 = visual.clone()
    visual2[:, 0] += 5 * torch.randn_like(visual2[:, 0])
    changed = model(visual2, audio)
    assert not torch.allclose(changed.maps[:, reach], base.maps[:, reach])
    torch.testing.assert_close(changed.maps[:, reach + 1:], base.maps[:, reach + 1:], rtol=0, atol=0)


def test_none_ignores_the_past():
    model = make_model("none").double()
    visual, audio = make_clip(1, 5)
    out = model(visual, audio)
    for t in range(5):
        single = model(visual[:, t:t + 1], audio[:, t:t + 1])
        torch.testing.assert_close(single.maps[:, 0], out.maps[:, t], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(single.logits[:, 0], out.logits[:, t], rtol=1e-12, atol=1e-14)


def test_full_memory_uses_the_past():
    model = make_model("full").double()
    visual, audio = make_clip(1, 4)
    out = model(visual, audio)
    single = model(visual[:, 3:4], audio[:, 3:4])
    assert not torch.allclose(single.maps[:, 0], out.maps[:, 3])


def test_normalization_applies_before_projection():
    model = make_model("none").double()
    visual, audio = make_clip(1, 2)
    mean_v, std_v = torch.randn(CV).double() * 1e8, torch.rand(CV).double() * 1e8 + 1e7
    mean_a, std_a = torch.randn(512).double(), torch.rand(512).double() + 0.5
    expected = model(visual, audio)
    model.set_normalization(mean_v, std_v, mean_a, std_a)
    raw_v = visual * std_v[:, None, None] + mean_v[:, None, None]
    raw_a = audio * std_a[:, None, None] + mean_a[:, None, None]
    got = model(raw_v, raw_a)
    torch.testing.assert_close(got.maps, expected.maps)
    torch.testing.assert_close(got.logits, expected.logits)


def test_config_round_trip_and_validation():
    config = ModelConfig(visual_channels=320, num_classes=29, memory="unimodal")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="memory"):
        ModelConfig(visual_channels=320, num_classes=29, memory="both")


def test_seeded_golden_output():
    # Guards the equations against unintended change (values from this implementation, float64),
    # with Eq. 1 as the paper writes it (no scale on the dot products).
    model = make_model("full", k=2, attention_scale="none").double()
    visual, audio = make_clip(1, 5)
    out = model(visual, audio)
    torch.testing.assert_close(out.logits[0, -1], torch.tensor(
        [0.17686330520766025, 0.06885541095256209, 0.10729021735909007, -0.11170703986474628,
         0.2391045880316559], dtype=torch.float64), rtol=1e-6, atol=1e-9)
    # The maps of random weights on unit inputs are 1/64 ± 1e-4 everywhere: a golden of those
    # barely sees the map path. Inputs six times larger give a peaked α̂ (one cell at 0.098, the
    # rest near 0.012), and the raw memory scores are informative as they are; both goldens
    # are of a whole row holding the map's peak.
    sharp = model(visual * 6, audio * 6).maps[0, -1]  # α̂ (8, 8) of the last step
    assert sharp.max() > 6 / 64 and sharp.argmax() == 2 * 8 + 4  # informative, peak at (2, 4)
    torch.testing.assert_close(sharp[2], torch.tensor(
        [0.012296182204979614, 0.012126178535845798, 0.012132246276027702, 0.012327754653988953,
         0.09764479704816645, 0.01217983192834442, 0.012667822832673271, 0.012123670894217469],
        dtype=torch.float64), rtol=1e-6, atol=1e-12)
    scores = model(visual, audio, map="memory_scores").maps[0, -1]  # the memory layer's scores
    assert scores.argmax() == 5 * 8 + 0
    torch.testing.assert_close(scores[5], torch.tensor(
        [0.3108634770606718, 0.12504776903711454, -0.07962493603590581, 0.0006762214590968997,
         0.04270764680259809, 0.0016307009362869496, 0.07303126521910515, 0.03093295098313574],
        dtype=torch.float64), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("map_name", sorted(MAP_CHOICES))
@pytest.mark.parametrize("scale", ATTENTION_SCALES)
def test_every_map_streams_like_the_batched_forward(map_name, scale):
    model = make_model("full", k=2, map=map_name, attention_scale=scale, visual_head=True).double()
    visual, audio = make_clip(2, 6)
    maps, logits = stream(model, visual, audio)
    out = model(visual, audio)
    torch.testing.assert_close(maps, out.maps, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(logits, out.logits, rtol=1e-9, atol=1e-12)


def test_memory_scores_are_the_cross_modal_dot_products():
    model = make_model("unimodal", map="memory_scores").double()
    visual, audio = make_clip(2, 4)
    out = model(visual, audio)
    expected = torch.einsum("btchw,btc->bthw", out.visual, out.audio_query)
    torch.testing.assert_close(out.maps, expected)
    # the same weights give the paper's softmax map on request, and it is another map
    alpha = model(visual, audio, map="alpha_hat").maps
    torch.testing.assert_close(alpha.sum(dim=(2, 3)), torch.ones(2, 4, dtype=torch.float64))
    assert not torch.allclose(alpha, out.maps)
    with pytest.raises(ValueError, match="map"):
        model(visual, audio, map="nope")


def test_sqrt_scale_softens_the_attention():
    visual, audio = make_clip(2, 4)
    sharp = make_model("none", map="memory_alpha", attention_scale="none").double()
    soft = make_model("none", map="memory_alpha", attention_scale="sqrt").double()
    soft.load_state_dict(sharp.state_dict())
    a, b = sharp(visual, audio).maps, soft(visual, audio).maps
    # same scores, a smaller multiplier: a lower peak (32 channels: scale 1/√32)
    assert (b.amax(dim=(2, 3)) < a.amax(dim=(2, 3))).all()
    learned = make_model("none", attention_scale="learned")
    assert learned.log_scale.requires_grad and "log_scale" in learned.state_dict()
    assert "log_scale" not in sharp.state_dict()  # a fixed scale is not a weight


def test_audio_dropout_acts_in_training_only():
    model = make_model("none", audio_dropout=0.5)
    visual, audio = make_clip(64, 1)
    model.eval()
    torch.testing.assert_close(model(visual.float(), audio.float()).logits,
                               model(visual.float(), audio.float()).logits)
    model.train()
    torch.manual_seed(0)
    dropped = model(visual.float(), audio.float()).logits
    model.eval()
    kept = model(visual.float(), audio.float()).logits
    changed = ~torch.isclose(dropped, kept).all(dim=-1)  # (64, 1) samples whose audio was zeroed
    assert 0.2 < changed.float().mean() < 0.8


def test_visual_head_only_when_asked():
    assert make_model("full").visual_classifier is None
    model = make_model("full", visual_head=True)
    visual, audio = make_clip(2, 3)
    out = model(visual.float(), audio.float())
    assert out.visual_logits.shape == (2, 3, 5)
    assert model(visual.float(), audio.float()).visual_logits is not None


def test_class_cam_is_the_visual_heads_evidence_for_the_predicted_class():
    model = make_model("unimodal", map="class_cam", visual_head=True).double()
    visual, audio = make_clip(2, 3)
    out = model(visual, audio)
    cls = out.logits[..., :-1].argmax(-1)  # (B, T), background excluded
    weight = model.visual_classifier.weight.double()[cls]  # (B, T, C)
    torch.testing.assert_close(out.maps, torch.einsum("btchw,btc->bthw", out.visual, weight))
    with pytest.raises(ValueError, match="visual head"):
        ModelConfig(visual_channels=CV, num_classes=5, map="class_cam")
    with pytest.raises(ValueError, match="visual head"):
        make_model("none")(visual.float(), audio.float(), map="class_cam")


@pytest.mark.parametrize("memory", ["none", "full"])
def test_a_mean_pooled_visual_head_is_a_cam_head(memory):
    # With visual_pool "mean" the head classifies x̂_v averaged over positions, so class_cam
    # averaged over positions plus the bias is exactly the head's logit of the predicted class;
    # the attention-pooled head (Σ x̂_av) does not have this property.
    visual, audio = make_clip(2, 3)
    model = make_model(memory, map="class_cam", visual_head=True, visual_pool="mean").double()
    out = model(visual, audio)
    cls = out.logits[..., :-1].argmax(-1)  # (B, T)
    bias = model.visual_classifier.bias.double()[cls]  # (B, T)
    head = out.visual_logits.gather(-1, cls[..., None])[..., 0]  # (B, T)
    torch.testing.assert_close(out.maps.mean(dim=(2, 3)) + bias, head)
    torch.testing.assert_close(out.visual_logits, model.visual_classifier(out.visual.mean(dim=(3, 4))))
    other = make_model(memory, map="class_cam", visual_head=True).double()
    out = other(visual, audio)
    cls = out.logits[..., :-1].argmax(-1)
    head = out.visual_logits.gather(-1, cls[..., None])[..., 0]
    assert not torch.allclose(out.maps.mean(dim=(2, 3)) + other.visual_classifier.bias.double()[cls], head)
    with pytest.raises(ValueError, match="visual_pool"):
        ModelConfig(visual_channels=CV, num_classes=5, visual_pool="max")


def test_a_config_saved_before_the_map_and_scale_existed_keeps_its_meaning():
    old = ModelConfig(visual_channels=CV, num_classes=5).to_dict()
    del old["attention_scale"], old["map"]
    config = ModelConfig.from_dict(old)
    assert (config.attention_scale, config.map) == ("none", "alpha_hat")
    assert ModelConfig(visual_channels=CV, num_classes=5).attention_scale == "sqrt"  # today's default


def _two_looks(seed: int = 0, c: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame features (1, c, 8, 8) of an object (rows 2-4, columns 1-4) on a background that
    looks half like it (cosine 0.5 between the two looks), with 5 % noise; and the object mask."""
    g = torch.Generator().manual_seed(seed)
    obj, other = torch.zeros(c), torch.zeros(c)
    obj[0], other[0], other[1] = 1.0, 0.5, 0.75 ** 0.5
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 1:5] = True
    f = torch.where(mask[None], obj[:, None, None], other[:, None, None])
    f = (f + 0.05 * torch.randn(c, 8, 8, generator=g)).clamp_min(0)  # post-ReLU features
    return f[None], mask


def test_the_affinity_walk_spreads_a_peak_over_the_object_and_not_the_background():
    features, mask = _two_looks()
    spike = torch.zeros(1, 8, 8, dtype=torch.float64)
    spike[0, 3, 2] = 1.0  # one cell of the object, as a peaked map gives
    out = affinity_walk(spike, features)[0]
    assert out.dtype == torch.float64
    assert out.argmax() == 3 * 8 + 2  # the peak stays where it was
    assert (out[mask] > 0.5).all()  # the whole object passes the paper's 0.5 cut
    assert (out[~mask] < 0.1).all()  # the background that looks half like it does not
    walked = affinity_walk(spike, features, keep=0.0)[0]  # the walk alone: mass spread evenly
    assert walked[mask].min() > 0.9 and 0.0 < walked[3, 2] < 1.0 + 1e-12
    # min-max normalised on both sides: any positive scale and shift of the map gives the same
    torch.testing.assert_close(affinity_walk(spike * 2 + 1, features), out[None])
    flat = torch.full((1, 8, 8), 3.0, dtype=torch.float64)
    torch.testing.assert_close(affinity_walk(flat, features), torch.zeros_like(flat))
    # flat by the project's one rule (avstm.maps.is_flat): no location is made up from rounding
    nearly = flat + 1e-10 * spike
    assert is_flat(nearly.numpy()).all()
    torch.testing.assert_close(affinity_walk(nearly, features), torch.zeros_like(flat))


def test_the_affinity_walk_of_a_long_video_goes_in_slices_with_the_same_result(monkeypatch):
    import avstm.memnet.model as model_module

    g = torch.Generator().manual_seed(3)
    maps = torch.randn(7, 8, 8, generator=g, dtype=torch.float64)
    features = torch.rand(7, 24, 8, 8, generator=g, dtype=torch.float64)
    whole = affinity_walk(maps, features)
    monkeypatch.setattr(model_module, "AFFINITY_CHUNK", 3 * 64 * 64)  # 3 frames a slice
    torch.testing.assert_close(affinity_walk(maps, features), whole)
    assert not torch.allclose(whole[1:], affinity_walk(maps[:-1], features[1:]))  # frames are matched


def test_a_refined_map_is_the_walk_of_the_networks_own_map_over_the_raw_features():
    model = make_model("full", map="memory_scores+affinity").double()
    visual, audio = make_clip(2, 3)
    refined = model(visual, audio).maps  # (2, 3, 8, 8)
    base = model(visual, audio, map="memory_scores").maps
    expected = affinity_walk(base.flatten(0, 1), visual.flatten(0, 1)).unflatten(0, (2, 3))
    torch.testing.assert_close(refined, expected)
    assert not torch.allclose(refined, base)
    assert "random walk" in map_definition("memory_scores+affinity")
    with pytest.raises(ValueError, match="unknown map 'memory_scores\\+blur'"):
        model(visual, audio, map="memory_scores+blur")
    with pytest.raises(ValueError, match="needs the visual head"):
        model(visual, audio, map="class_cam+affinity")


@pytest.mark.parametrize("memory", ["none", "full"])
def test_class_grad_is_x_v_dotted_with_the_predicted_class_gradient_at_the_classifier(memory):
    model = make_model(memory, map="class_grad").double()
    visual, audio = make_clip(2, 3)
    seen = []
    hook = model.classifier.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    out = model(visual, audio)
    hook.remove()
    o = seen[0].detach().requires_grad_(True)  # O = [Σ x̂_av; φ(x̂_a)]: (B·T, 2C)
    logits = model.classifier(o)
    cls = logits[:, :-1].argmax(dim=-1)  # the predicted event class, background excluded
    (grad,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), o, retain_graph=True)
    expected = torch.einsum("nchw,nc->nhw", out.visual.flatten(0, 1), grad[:, :32])
    torch.testing.assert_close(out.maps, expected.unflatten(0, (2, 3)))
    # another class's gradient gives another map
    other = torch.einsum("nchw,nc->nhw", out.visual.flatten(0, 1), torch.autograd.grad(
        logits.gather(1, ((cls + 1) % 4)[:, None]).sum(), o)[0][:, :32])
    assert not torch.allclose(out.maps, other.unflatten(0, (2, 3)))
