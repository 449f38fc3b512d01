"""avstm: sounding-object localization in videos with a space-time memory network.

The stages, each with one config and one entry function (``docs/ARCHITECTURE.md``)::

    extract(read_ave(root), "features.h5", config=ExtractConfig(...))
    train("features.h5", "runs/stm", config=TrainConfig(...))
    localize(load_localize_model("runs/stm/best.pt"), "clip.mp4", config=LocalizeConfig())

and in one call: ``avstm.load("runs/stm/best.pt").localize("clip.mp4")`` (``avstm/api.py``).
    evaluate(read_ground_truth("boxes.json"), checkpoint=..., features=..., config=EvaluateConfig())
"""

__version__ = "0.1.0"

from avstm.api import load  # noqa: E402
from avstm.cache import FeatureCache, merge_caches, verify_cache  # noqa: E402
from avstm.datasets import read_ave, read_folder  # noqa: E402
from avstm.errors import AvstmError  # noqa: E402
from avstm.evaluate import EvaluateConfig, evaluate, evaluate_ablation, read_ground_truth  # noqa: E402
from avstm.extract import ExtractConfig, extract  # noqa: E402
from avstm.localize import LocalizeConfig, load_localize_model, localize  # noqa: E402
from avstm.memnet import ModelConfig, STMNet, TrainConfig, load_model, train  # noqa: E402
from avstm.share import export_model  # noqa: E402
from avstm.synth import SynthConfig, generate  # noqa: E402

__all__ = ["AvstmError", "EvaluateConfig", "ExtractConfig", "FeatureCache", "LocalizeConfig",
           "ModelConfig", "STMNet", "SynthConfig", "TrainConfig", "__version__", "evaluate",
           "evaluate_ablation", "export_model", "extract", "generate", "load", "load_localize_model", "load_model",
           "localize", "merge_caches", "read_ave", "read_folder", "read_ground_truth", "train",
           "verify_cache"]
