"""avstm.memnet: the space-time memory network (Li, Tian and Xu, BMVC 2021) and its trainer
(``avstm train``)."""

from avstm._lazy import lazy_exports

# public name -> the module that defines it; imported on first use (avstm/_lazy.py)
_EXPORTS = {
    "CheckpointInfo": "avstm.memnet.checkpoint", "load_model": "avstm.memnet.checkpoint",
    "save_checkpoint": "avstm.memnet.checkpoint",
    "MEMORY_MODES": "avstm.memnet.config", "ModelConfig": "avstm.memnet.config", "STMNet":
    "avstm.memnet.model", "STMOutput": "avstm.memnet.model", "StreamState":
    "avstm.memnet.model",
    "TrainConfig": "avstm.memnet.config", "TrainResult": "avstm.memnet.train", "train":
    "avstm.memnet.train",
}
__all__ = sorted([*_EXPORTS])
lazy_exports(__name__, _EXPORTS)
