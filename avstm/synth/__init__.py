"""The generated sounding-object dataset (``avstm synth``): real mp4 files in the AVE layout
with exact box annotations."""

from avstm._lazy import lazy_exports

# public name -> the module that defines it; imported on first use (avstm/_lazy.py)
_EXPORTS = {
    "CLASS_NAMES": "avstm.synth.classes", "CLASSES": "avstm.synth.classes", "ClassSpec":
    "avstm.synth.classes",
    "SynthConfig": "avstm.synth.config",
    "SynthResult": "avstm.synth.generate", "VideoRecord": "avstm.synth.generate", "generate":
    "avstm.synth.generate", "make_video": "avstm.synth.generate",
    "SceneRenderer": "avstm.synth.render",
    "Scene": "avstm.synth.scene", "sample_scene": "avstm.synth.scene",
    "write_mp4": "avstm.media",
}
__all__ = sorted([*_EXPORTS])
lazy_exports(__name__, _EXPORTS)
