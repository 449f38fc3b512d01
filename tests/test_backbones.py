"""Tests of avstm.extract.backbones and avstm.extract.efficientnet_lite."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch
import torchvision

from avstm.errors import WeightsError
from avstm.extract import backbones, efficientnet_lite
from avstm.extract.backbones import load_visual_backbone, weights_checksum

SIZE = 256


def frames_of(*images: np.ndarray) -> torch.Tensor:
    """RGB photos resized to 256×256 as a (B, 256, 256, 3) uint8 batch, like decoded frames."""
    resized = [skimage.transform.resize(im, (SIZE, SIZE), anti_aliasing=True,
                                        preserve_range=True) for im in images]
    return torch.from_numpy(np.stack(resized).round().astype(np.uint8))


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A seeded torchvision ResNet-152 state dict (with ``fc.*``) saved to a file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        sd = torchvision.models.resnet152(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet152-seed11.pth"
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def resnet_random():
    return load_visual_backbone("resnet152", weights="random")


@pytest.fixture(scope="module")
def lite0():
    return load_visual_backbone("efficientnet_lite0")


def test_resnet152_random_maps_256_frames_to_2048x8x8(resnet_random):
    bb = resnet_random
    assert (bb.name, bb.tap, bb.channels, bb.weights) == ("resnet152", "layer4", 2048, "random")
    out = bb.encode(torch.randint(0, 256, (1, SIZE, SIZE, 3), dtype=torch.uint8))
    assert out.shape == (1, 2048, 8, 8) and out.dtype == torch.float32
    assert torch.isfinite(out).all()  # random-init layer4 reaches ~1e8: large but finite


def test_random_init_is_seeded_and_keeps_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = load_visual_backbone("resnet152", weights="random", seed=3).checksum()
    b = load_visual_backbone("resnet152", weights="random", seed=3).checksum()
    assert torch.equal(torch.get_rng_state(), before)
    assert a == b
    assert a != load_visual_backbone("resnet152", weights="random", seed=4).checksum()


def test_backbones_are_frozen(lite0, resnet_random):
    for bb in (lite0, resnet_random):
        assert not bb.module.training
        assert all(not m.training for m in bb.module.modules())
        assert not any(p.requires_grad for p in bb.module.parameters())


def test_resnet152_state_dict_file_loads_back_identical(resnet_file):
    path, sd = resnet_file
    bb = load_visual_backbone("resnet152", weights=str(path))
    assert bb.weights == str(path)
    loaded = bb.module.state_dict()
    assert set(loaded) == {k for k in sd if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], sd[k]) for k in loaded)


def test_resnet152_imagenet_weights_come_from_the_torch_hub_cache(resnet_file, tmp_path,
                                                                  monkeypatch):
    path, sd = resnet_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = backbones.VISUAL_BACKBONES["resnet152"].imagenet_url
    assert url == torchvision.models.ResNet152_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    loaded = load_visual_backbone("resnet152", weights="imagenet").module.state_dict()
    assert all(torch.equal(loaded[k], sd[k]) for k in loaded)


def test_offline_imagenet_download_raises_weights_error_with_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = backbones.VISUAL_BACKBONES["resnet152"]
    # Port 9 (discard) on the loopback refuses the connection at once: a real failed download.
    offline = dataclasses.replace(spec, imagenet_url="http://127.0.0.1:9/resnet152-394f9c45.pth")
    monkeypatch.setitem(backbones.VISUAL_BACKBONES, "resnet152", offline)
    with pytest.raises(WeightsError, match="--visual-weights PATH"):
        load_visual_backbone("resnet152", weights="imagenet")


def test_wrong_state_dict_raises_weights_error_naming_keys():
    lite_file = efficientnet_lite.shipped_weights_path()
    with pytest.raises(WeightsError, match="missing keys conv1.weight"):
        load_visual_backbone("resnet152", weights=str(lite_file))


def test_unknown_name_or_tap_lists_the_valid_ones():
    with pytest.raises(WeightsError, match="resnet152, efficientnet_lite0"):
        load_visual_backbone("vgg16", weights="random")
    with pytest.raises(WeightsError, match="valid taps: blocks, head"):
        load_visual_backbone("efficientnet_lite0", weights="random", tap="layer4")


def test_preprocess_scales_per_backbone(lite0):
    frames = torch.zeros(2, 4, 6, 3, dtype=torch.uint8)
    frames[1] = 255
    x = lite0.preprocess(frames)
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[0], torch.full_like(x[0], -1.0))
    assert torch.equal(x[1], torch.full_like(x[1], 1.0))
    resnet = dataclasses.replace(lite0, name="resnet152")  # preprocessing depends on the name
    y = resnet.preprocess(frames)
    mean, std = torch.tensor(backbones.IMAGENET_MEAN), torch.tensor(backbones.IMAGENET_STD)
    torch.testing.assert_close(y[1, :, 0, 0], (1 - mean) / std)
    torch.testing.assert_close(y[0, :, 0, 0], -mean / std)


def test_efficientnet_lite0_loads_shipped_weights_strictly():
    path = efficientnet_lite.shipped_weights_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    net = backbones.load_efficientnet_lite0("imagenet")
    assert len(sd) == len(net.state_dict()) == 296
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sd.items())


def test_efficientnet_lite0_classifies_real_photos(lite0):
    frames = frames_of(skimage.data.chelsea(), skimage.data.coffee())
    with torch.inference_mode():
        top = lite0.module.net(lite0.preprocess(frames)).argmax(dim=1).tolist()
    assert 281 <= top[0] <= 285  # domestic cats (chelsea is a tabby)
    assert top[1] in {504, 967, 968}  # coffee mug, espresso, cup


@pytest.mark.parametrize("tap, channels", [("blocks", 320), ("head", 1280)])
def test_efficientnet_lite0_taps_give_8x8_maps(tap, channels):
    bb = load_visual_backbone("efficientnet_lite0", weights="random", tap=tap)
    assert (bb.tap, bb.channels) == (tap, channels)
    out = bb.encode(torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8))
    assert out.shape == (2, channels, 8, 8)


def test_efficientnet_lite0_blocks16_is_the_same_network_at_stride_16(lite0):
    # The atrous tap computes the same features on a grid twice as fine: the stride-2 block of
    # stage 6 at stride 1, the depthwise convolutions after it dilated by 2. With TensorFlow's
    # "SAME" padding its odd rows and columns are exactly the stride-32 map.
    fine = load_visual_backbone("efficientnet_lite0", tap="blocks16")
    assert (fine.tap, fine.channels, fine.stride, lite0.stride) == ("blocks16", 320, 16, 32)
    assert fine.checksum() == lite0.checksum()  # the same weights
    frames = frames_of(skimage.data.chelsea(), skimage.data.coffee())
    coarse, dense = lite0.encode(frames), fine.encode(frames)
    assert coarse.shape == (2, 320, 8, 8) and dense.shape == (2, 320, 16, 16)
    scale = coarse.abs().max()
    torch.testing.assert_close(dense[..., 1::2, 1::2], coarse, rtol=0, atol=1e-5 * scale)
    assert (dense[..., 0::2, 0::2] - coarse).abs().max() > 0.05 * scale  # the new cells are new


def test_efficientnet_same_padding_follows_the_input_size(lite0):
    with torch.inference_mode():
        out = lite0.module(torch.zeros(1, 3, 225, 200))
    assert out.shape == (1, 320, 8, 7)  # ceil(225 / 32), ceil(200 / 32)


def test_efficientnet_lite0_default_tap_is_blocks(lite0):
    assert (lite0.tap, lite0.channels, lite0.weights) == ("blocks", 320, "imagenet")


def test_weights_checksum_tracks_every_value():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_checksum(a) == weights_checksum(b)
    assert len(weights_checksum(a)) == 16
    with torch.no_grad():
        b.bias[1] += 1e-6
    assert weights_checksum(a) != weights_checksum(b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_match_cpu(lite0):
    frames = frames_of(skimage.data.chelsea(), skimage.data.coffee())
    want = lite0.encode(frames)
    gpu = dataclasses.replace(lite0, module=lite0.module.to("cuda"))
    try:
        x = gpu.preprocess(frames.cuda())
        assert x.device.type == "cuda"
        got = gpu.encode(frames.cuda()).cpu()
    finally:
        lite0.module.to("cpu")
    assert ((got - want).norm() / want.norm()).item() < 1e-2  # cuDNN may use TF32


def test_load_strict_accepts_checkpoints_without_batchnorm_counters():
    # torchvision's ResNet ImageNet files predate BatchNorm's num_batches_tracked buffer.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sd = {k: torch.full_like(v, 2) for k, v in net.state_dict().items()
          if not k.endswith("num_batches_tracked")}
    backbones.load_strict(net, sd, source="old.pth")
    assert torch.equal(net[1].running_var, torch.full((4,), 2.0))
    del sd["1.running_var"]
    with pytest.raises(WeightsError, match="old.pth.*missing keys 1.running_var"):
        backbones.load_strict(net, sd, source="old.pth")
