"""avstm: sounding-object localization in videos with a space-time memory network.

The stages, each with one config and one entry function (``docs/ARCHITECTURE.md``)::

    extract(read_ave(root), "features.h5", config=ExtractConfig(...))
    train("features.h5", "runs/stm", config=TrainConfig(...))
    localize(load_localize_model("runs/stm/best.pt"), "clip.mp4", config=LocalizeConfig())

and in one call: ``avstm.load("runs/stm/best.pt").localize("clip.mp4")`` (``avstm/api.py``).
    evaluate(read_ground_truth("boxes.json"), checkpoint=..., features=..., config=EvaluateConfig())
"""

from avstm._version import __version__
from avstm._lazy import lazy_exports

# public name -> the module that defines it; imported on first use (avstm/_lazy.py)
_EXPORTS = {
    "load": "avstm.api",
    "FeatureCache": "avstm.cache", "merge_caches": "avstm.cache", "verify_cache":
    "avstm.cache",
    "read_ave": "avstm.datasets", "read_folder": "avstm.datasets",
    "AvstmError": "avstm.errors",
    "EvaluateConfig": "avstm.evaluate", "evaluate": "avstm.evaluate", "evaluate_ablation":
    "avstm.evaluate", "read_ground_truth": "avstm.evaluate",
    "ExtractConfig": "avstm.extract", "extract": "avstm.extract",
    "LocalizeConfig": "avstm.localize", "load_localize_model": "avstm.localize", "localize":
    "avstm.localize",
    "ModelConfig": "avstm.memnet", "STMNet": "avstm.memnet", "TrainConfig": "avstm.memnet",
    "load_model": "avstm.memnet", "train": "avstm.memnet",
    "export_model": "avstm.share",
    "SynthConfig": "avstm.synth", "generate": "avstm.synth",
}
__all__ = sorted([*_EXPORTS, "__version__"])
lazy_exports(__name__, _EXPORTS)
