"""The frozen backbones on a device, as extraction and localization run them:
``FeatureExtractor`` (frames → visual maps, log-mel examples → audio maps, in batches) and
``audio_examples`` (a waveform → the log-mel examples centred on frame times).

The batch loop over datasets, the decoding workers and torchrun sharding are
``avstm.extract.pipeline``'s; ``avstm.localize`` needs only this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import torch

from avstm.device import resolve_device
from avstm.extract.backbones import VisualBackbone, load_visual_backbone, weights_checksum
from avstm.extract.config import ExtractConfig
from avstm.extract.vggish import example_windows, load_vggish, log_mel


@dataclasses.dataclass
class _Launched:
    """A batch whose features are on their way to the host: visual (N, h, w, C_v) and audio
    (N, 6, 4, 512) float32 CPU tensors, valid once ``event`` completed."""

    visual: torch.Tensor
    audio: torch.Tensor
    event: torch.cuda.Event | None


class FeatureExtractor:
    """The frozen backbones on a device: frames → visual maps, waveform → audio maps.

    Used by ``extract`` over datasets and by ``localize`` over single videos.
    """

    def __init__(self, config: ExtractConfig):
        self.device = resolve_device(config.device)
        self.batch_size = config.batch_size
        self.visual_backbone: VisualBackbone = load_visual_backbone(
            config.visual_backbone, weights=config.visual_weights, tap=config.visual_tap, seed=config.seed)
        self.vggish = load_vggish(config.audio_weights, seed=config.seed)
        # the checksums and channels go into the cache's config (computed before moving)
        self.config = config.replace(
            visual_tap=self.visual_backbone.tap, visual_channels=self.visual_backbone.channels,
            visual_stride=self.visual_backbone.stride,
            visual_weights_sha=self.visual_backbone.checksum(), audio_weights_sha=weights_checksum(self.vggish))
        self.cuda = self.device.type == "cuda"
        self.visual_net = self.visual_backbone.module.to(self.device)
        self.audio_net = self.vggish.to(self.device)
        if self.cuda:
            torch.cuda.set_device(self.device)  # events and pinned copies use the current device
            torch.backends.cudnn.benchmark = True  # batches have one fixed shape
            self.visual_net = self.visual_net.to(memory_format=torch.channels_last)
        if config.compile:
            self.visual_net = torch.compile(self.visual_net)
        # bf16 on CUDA: float16 overflows on random-init ResNet-152 features (~1e8); CPU stays fp32
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 on the device → (B, 3, H, W) float32 scaled for the backbone
        (``VisualBackbone.preprocess``, the one scaling; channels_last on CUDA)."""
        x = self.visual_backbone.preprocess(frames)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def _to_host(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cuda:
            return x.contiguous()
        host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        return host.copy_(x, non_blocking=True)

    @torch.inference_mode()
    def launch(self, frames: torch.Tensor, logmel: torch.Tensor, *, pad_to: int | None = None,
               timings: dict | None = None) -> _Launched:
        """Start one batch: frames (N, H, W, 3) uint8 and log-mel (N, 96, 64) float32 CPU tensors
        (pinned for an asynchronous copy). On CUDA this returns before the results are ready;
        ``collect`` waits. ``pad_to`` pads the batch with zeros (one shape for torch.compile).
        With ``timings``, CUDA is synchronised to split transfer from backbone time."""
        n = len(frames)
        t0 = time.perf_counter()
        x = frames.to(self.device, non_blocking=True)
        m = logmel.to(self.device, non_blocking=True)
        if pad_to is not None and n < pad_to:
            x = torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:]))])
            m = torch.cat([m, m.new_zeros((pad_to - n, *m.shape[1:]))])
        if timings is not None and self.cuda:
            torch.cuda.synchronize(self.device)
            t1 = time.perf_counter()
            timings["transfer"] += t1 - t0
            t0 = t1
        x = self.preprocess(x)  # (B, 3, H, W)
        with self.autocast:
            v = self.visual_net(x)[:n]  # (N, C_v, h, w)
            a = self.audio_net(m)[:n]  # (N, 512, 6, 4)
        v = v.float().permute(0, 2, 3, 1).contiguous()  # (N, h, w, C_v)
        a = a.float().permute(0, 2, 3, 1).contiguous()  # (N, 6, 4, 512)
        if timings is not None and self.cuda:
            torch.cuda.synchronize(self.device)
            t1 = time.perf_counter()
            timings["backbone"] += t1 - t0
            t0 = t1
        out = _Launched(self._to_host(v), self._to_host(a), None)
        if self.cuda:
            out.event = torch.cuda.Event()
            out.event.record()
        if timings is not None:
            if self.cuda:
                out.event.synchronize()
            timings["transfer" if self.cuda else "backbone"] += time.perf_counter() - t0
        return out

    @staticmethod
    def collect(launched: _Launched) -> tuple[torch.Tensor, torch.Tensor]:
        """Wait for a launched batch: visual (N, h, w, C_v), audio (N, 6, 4, 512) float32, on
        the CPU (not checked for inf or NaN: the cache writer refuses such a video)."""
        if launched.event is not None:
            launched.event.synchronize()
        return launched.visual, launched.audio

    def _pinned(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        return x.pin_memory() if self.cuda and not x.is_pinned() else x

    def visual(self, frames: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB → (N, h, w, C_v) float32 channels-last maps (8×8 at 256×256)."""
        frames = self._pinned(frames)
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = frames[i:i + self.batch_size]
            with torch.inference_mode():
                y = self.preprocess(x.to(self.device, non_blocking=True))
                with self.autocast:
                    y = self.visual_net(y)
                out.append(y.float().permute(0, 2, 3, 1).cpu())  # (B, h, w, C)
        return torch.cat(out).numpy() if out else np.zeros((0, 8, 8, self.config.visual_channels), np.float32)

    def audio(self, examples: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 96, 64) float32 log-mel examples → (N, 6, 4, 512) float32 channels-last maps."""
        examples = self._pinned(examples)
        out = []
        for i in range(0, len(examples), 4 * self.batch_size):
            x = examples[i:i + 4 * self.batch_size].to(self.device, non_blocking=True)
            with torch.inference_mode(), self.autocast:
                y = self.audio_net(x)  # (B, 512, 6, 4)
            out.append(y.float().permute(0, 2, 3, 1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 6, 4, 512), np.float32)


def audio_examples(wave: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(M,) 16 kHz mono waveform, (N,) times → (N, 96, 64) float32 log-mel examples centred on the times."""
    return log_mel(example_windows(wave, np.asarray(times).reshape(-1))).numpy().astype(np.float32)
