"""The extract stage's one config object; it is stored in the cache's root attributes."""

from __future__ import annotations

import dataclasses

from avstm.config import PlainConfig

VISUAL_BACKBONE_NAMES = ("resnet152", "efficientnet_lite0")  # backbones.VISUAL_BACKBONES' keys
DTYPES = ("float16", "float32")  # how the cache stores maps


@dataclasses.dataclass(frozen=True)
class ExtractConfig(PlainConfig):
    """How features are extracted. Content fields (``avstm.cache.CONTENT_FIELDS``) must match a cache to resume it."""

    visual_backbone: str = "resnet152"  # "resnet152" (the paper's) or "efficientnet_lite0"
    visual_weights: str = "imagenet"  # "imagenet", "random" (tests) or a state-dict path
    visual_tap: str | None = None  # None: the backbone's default (layer4 / last block); blocks16: Lite0 at stride 16
    audio_weights: str = "vggish"  # "vggish" (AudioSet release), "random" or a path
    frame_size: int = 256  # frames are resized to frame_size × frame_size (the paper: 256)
    fps: int = 4  # frames per second kept (the paper trains with T = 4)
    sample_rate: int = 16000  # VGGish's rate; fixed
    dtype: str = "float16"  # cache dtype: float16 (with per-video power-of-two scales) or float32
    seed: int = 0  # seed of random-init backbones
    # runtime options: they do not change what is written
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    batch_size: int = 64  # frames per backbone batch
    workers: int = 2  # decoding processes running ahead of the model
    decode_threads: int = 1  # FFmpeg threads per decoding process
    decode_device: str = "cpu"  # "cpu", or "cuda" / "cuda:N": decode the video on NVDEC (FFmpeg)
    limit: int | None = None  # extract at most this many videos (after those already done)
    compile: bool = False  # torch.compile the visual backbone (CUDA)
    strict: bool = False  # exit non-zero when a video fails
    # filled in by the extractor (weights checksums, channels, format) for the cache's record
    visual_weights_sha: str = ""
    audio_weights_sha: str = ""
    visual_channels: int = 0
    visual_stride: int = 32  # the tap's output stride: maps of ceil(frame_size / visual_stride)²
    cache_format: str = "avstm-cache/1"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be {' or '.join(DTYPES)}, not {self.dtype!r}")
        for name, low in (("fps", 1), ("frame_size", 32), ("batch_size", 1), ("workers", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        from avstm.media import decode_device_index  # here: the config module stays light

        decode_device_index(self.decode_device)

