"""The evaluate stage's config object, stored in metrics.json; without torch, so that the CLI
builds its options from it cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from avstm.config import PlainConfig
from avstm.evaluate.baselines import BASELINES
from avstm.evaluate.metrics import MetricsConfig, parse_binarization
from avstm.evaluate.protocols import get_protocol
from avstm.memnet.config import check_map


# --extended: the model's confidence that something sounds in view (evaluate.extended)
CONFIDENCES = ("background", "map-max")


@dataclass(frozen=True)
class EvaluateConfig(PlainConfig):
    """What ``evaluate`` measures; stored in metrics.json."""

    split: str = "test"  # cache split whose annotated videos are evaluated
    # the rules around cIoU (avstm.evaluate.protocols.PROTOCOLS): avstm's own, or a
    # reference codebase's (ezvsl, lvs, dsol), which fixes its binarisation
    protocol: str = "avstm"
    # evaluation resolution (square); None: the protocol's (256 for avstm, 224 for the others)
    size: int | None = None
    # binarisations (metrics.Binarization names); None: all four (avstm) or the protocol's own
    modes: tuple[str, ...] | None = None
    primary: str | None = None  # binarisation of the table columns; None: value:0.5 or modes[0]
    baseline: str | None = None  # a baselines.BASELINES name instead of a model or maps
    # frame-time matching in seconds; None: half a frame interval of the cache (1 / (2·fps)),
    # or MAPS_TOLERANCE for a maps file without a cache
    tolerance: float | None = None
    boxes: bool = True  # boxes from maps by Otsu + contours (avstm.localize.boxes), box IoU
    min_box_area: float = 0.0  # drop predicted boxes below this fraction of the frame
    ceilings: bool = True  # also score the ground truth drawn on each map's own grid
    figure_videos: int = 4  # rows of the figure (0: no figure)
    figure_frames: int = 4  # annotated frames per video in the figure
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda", ...
    map: str | None = None  # a model's map (memnet.model.MAP_CHOICES); None: the checkpoint's own

    def __post_init__(self):
        if self.map is not None:
            check_map(self.map)
        proto = get_protocol(self.protocol)
        if self.size is None:
            object.__setattr__(self, "size", proto.size)
        fixed = (proto.mode,) if proto.mode else MetricsConfig.modes
        modes = tuple(parse_binarization(m).name for m in (self.modes or fixed))
        if not modes:
            raise ValueError("at least one binarisation is needed")
        if proto.mode and modes != fixed:
            raise ValueError(f"protocol {proto.name!r} binarises with its own rule ({proto.mode}); "
                             f"--binarisation does not apply")
        object.__setattr__(self, "modes", modes)
        primary = self.primary or ("value:0.5" if "value:0.5" in modes else modes[0])
        object.__setattr__(self, "primary", parse_binarization(primary).name)
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; valid: {', '.join(BASELINES)}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 seconds, got {self.tolerance}")
        if self.figure_videos < 0:
            raise ValueError(f"figure_videos must be >= 0, got {self.figure_videos}")
        if self.figure_frames < 1:
            raise ValueError(f"figure_frames must be >= 1, got {self.figure_frames}")

    def metrics_config(self) -> MetricsConfig:
        return MetricsConfig(size=(self.size, self.size), modes=self.modes, primary=self.primary,
                             ceilings=self.ceilings, protocol=self.protocol)
