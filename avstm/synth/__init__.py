"""The generated sounding-object dataset (``avstm synth``): real mp4 files in the AVE layout
with exact box annotations."""

from avstm.synth.classes import CLASS_NAMES, CLASSES, ClassSpec
from avstm.synth.config import SynthConfig
from avstm.synth.generate import SynthResult, VideoRecord, generate, make_video
from avstm.synth.render import SceneRenderer
from avstm.synth.scene import Scene, sample_scene
from avstm.synth.video import write_mp4

__all__ = ["CLASSES", "CLASS_NAMES", "ClassSpec", "Scene", "SceneRenderer", "SynthConfig",
           "SynthResult", "VideoRecord", "generate", "make_video", "sample_scene", "write_mp4"]
