"""avstm.memnet: the space-time memory network (Li, Tian and Xu, BMVC 2021) and its trainer
(``avstm train``)."""

from avstm.memnet.checkpoint import CheckpointInfo, load_model, save_checkpoint
from avstm.memnet.model import MEMORY_MODES, ModelConfig, STMNet, STMOutput, StreamState
from avstm.memnet.train import TrainConfig, TrainResult, train

__all__ = ["CheckpointInfo", "MEMORY_MODES", "ModelConfig", "STMNet", "STMOutput", "StreamState",
           "TrainConfig", "TrainResult", "load_model", "save_checkpoint", "train"]
