"""The localize stage's config object, stored in boxes.json; without torch, so that the CLI
builds its options from it cheaply."""

from __future__ import annotations

import dataclasses

from avstm.config import PlainConfig
from avstm.memnet.config import check_map

BOX_METHODS = ("otsu", "rpn")


@dataclasses.dataclass(frozen=True)
class LocalizeConfig(PlainConfig):
    """How ``localize`` runs; stored in ``boxes.json``."""

    fps: int | None = None  # frames sampled per second; None: the checkpoint's extract fps
    boxes: str = "otsu"  # "otsu" (threshold + contours) or "rpn" (detector proposals + NMS)
    min_area: float = 0.0  # drop boxes smaller than this fraction of the frame
    max_boxes: int | None = 3  # boxes kept per frame, best first; None: all
    detector_weights: str = "coco"  # rpn: "coco", "random" (tests) or a state-dict path
    detector_min_size: int = 800  # rpn: the detector's own input resize (shorter side)
    detector_score_threshold: float = 0.05  # rpn: the detector's minimum proposal confidence
    nms_iou: float = 0.5  # rpn: NMS drops a box overlapping a better one by more than this
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    batch_size: int = 16  # frames per backbone (and detector) batch
    # Backbone weights overriding the checkpoint's extract config ("imagenet"/"random"/path);
    # they must have the checksum recorded in the checkpoint.
    visual_weights: str | None = None
    audio_weights: str | None = None
    map: str | None = None  # which map (memnet.model.MAP_CHOICES); None: the checkpoint's own

    def __post_init__(self):
        if self.map is not None:
            check_map(self.map)
        if self.boxes not in BOX_METHODS:
            raise ValueError(f"boxes must be one of {', '.join(BOX_METHODS)}, not {self.boxes!r}")
        if self.fps is not None and self.fps < 1:
            raise ValueError(f"fps must be at least 1, got {self.fps}")
        if not 0.0 <= self.min_area <= 1.0:
            raise ValueError(f"min_area is a fraction of the frame in [0, 1], got {self.min_area}")
        if self.max_boxes is not None and self.max_boxes < 1:
            raise ValueError(f"max_boxes must be at least 1, got {self.max_boxes}")
        for name in ("batch_size", "detector_min_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
