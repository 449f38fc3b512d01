"""avstm.localize: attention maps → boxes (Otsu + contours, or proposals + NMS), overlays, and
``localize`` over a video or a cached one."""

from avstm.localize.boxes import Box, maps_to_boxes, maps_to_boxes_batch, upsample_map, upsample_maps
from avstm.localize.overlay import OverlaySample, OverlayWriter, render_overlay
from avstm.localize.proposals import ProposalDetector, ground, load_detector, score_proposals
from avstm.localize.run import (
    LocalizeConfig,
    LocalizedFrame,
    LocalizeModel,
    LocalizeResult,
    WrittenFiles,
    load_localize_model,
    localize,
    localize_cached,
    map_key,
    write_result,
)

__all__ = [
    "Box", "maps_to_boxes", "maps_to_boxes_batch", "upsample_map", "upsample_maps",
    "OverlaySample", "OverlayWriter", "render_overlay",
    "ProposalDetector", "ground", "load_detector", "score_proposals",
    "LocalizeConfig", "LocalizedFrame", "LocalizeModel", "LocalizeResult", "WrittenFiles",
    "load_localize_model", "localize", "localize_cached", "map_key", "write_result",
]
