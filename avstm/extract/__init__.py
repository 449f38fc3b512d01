"""avstm.extract: frozen visual and audio backbones and the extraction of per-second maps into
the HDF5 cache (``avstm extract``)."""

from avstm.extract.backbones import VISUAL_BACKBONES, VisualBackbone, load_visual_backbone, weights_checksum
from avstm.extract.config import CONTENT_FIELDS, ExtractConfig
from avstm.extract.pipeline import ExtractResult, FeatureExtractor, audio_examples, extract
from avstm.extract.vggish import VGGishTrunk, example_windows, load_vggish, log_mel

__all__ = ["CONTENT_FIELDS", "ExtractConfig", "ExtractResult", "FeatureExtractor", "VGGishTrunk",
           "VISUAL_BACKBONES", "VisualBackbone", "audio_examples", "example_windows", "extract",
           "load_visual_backbone", "load_vggish", "log_mel", "weights_checksum"]
