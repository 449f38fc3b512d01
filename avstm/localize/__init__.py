"""avstm.localize: attention maps → boxes (Otsu + contours, or proposals + NMS), overlays, and
``localize`` over a video or a cached one."""

from avstm._lazy import lazy_exports

# public name -> the module that defines it; imported on first use (avstm/_lazy.py)
_EXPORTS = {
    "Box": "avstm.maps", "upsample_map": "avstm.maps", "upsample_maps": "avstm.maps",
    "maps_to_boxes": "avstm.localize.boxes", "maps_to_boxes_batch": "avstm.localize.boxes",
    "OverlaySample": "avstm.localize.overlay", "OverlayWriter": "avstm.localize.overlay",
    "render_overlay": "avstm.localize.overlay",
    "ProposalDetector": "avstm.localize.proposals", "ground": "avstm.localize.proposals",
    "load_detector": "avstm.localize.proposals", "score_proposals": "avstm.localize.proposals",
    "LocalizeConfig": "avstm.localize.config", "LocalizedFrame": "avstm.localize.run",
    "LocalizeModel": "avstm.localize.run", "LocalizeResult": "avstm.localize.run",
    "WrittenFiles": "avstm.localize.run", "load_localize_model": "avstm.localize.run",
    "localize": "avstm.localize.run", "localize_cached": "avstm.localize.run", "map_key":
    "avstm.localize.run", "write_result": "avstm.localize.run",
}
__all__ = sorted([*_EXPORTS])
lazy_exports(__name__, _EXPORTS)
