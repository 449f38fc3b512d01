"""avstm.extract: frozen visual and audio backbones and the extraction of per-second maps into
the HDF5 cache (``avstm extract``)."""

from avstm._lazy import lazy_exports

# public name -> the module that defines it; imported on first use (avstm/_lazy.py)
_EXPORTS = {
    "VISUAL_BACKBONES": "avstm.extract.backbones", "VisualBackbone": "avstm.extract.backbones",
    "load_visual_backbone": "avstm.extract.backbones", "weights_checksum":
    "avstm.extract.backbones",
    "CONTENT_FIELDS": "avstm.cache.format", "ExtractConfig": "avstm.extract.config",
    "ExtractResult": "avstm.extract.pipeline", "FeatureExtractor": "avstm.extract.features",
    "audio_examples": "avstm.extract.features", "extract": "avstm.extract.pipeline",
    "VGGishTrunk": "avstm.extract.vggish", "example_windows": "avstm.extract.vggish",
    "load_vggish": "avstm.extract.vggish", "log_mel": "avstm.extract.vggish",
}
__all__ = sorted([*_EXPORTS])
lazy_exports(__name__, _EXPORTS)
