"""The memory network's configs, without torch: ``ModelConfig`` (the network, stored in every
checkpoint), ``TrainConfig`` (a training run, stored beside it) and the names they choose from
(``MAPS``, ``ATTENTION_SCALES``, ``MEMORY_MODES``, ``LABEL_MODES``). The CLI builds its options
from them; ``model.py`` and ``train.py`` use them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from avstm.config import PlainConfig


MEMORY_MODES = ("none", "unimodal", "full")  # Without Temporal, U, C+U (the paper's ablations)
# The maps a trained network can localize from, each (N, 8, 8) per step. Every consumer
# (metrics, Otsu boxes, proposal scoring, overlays) min-max normalises a map first, so a map of
# raw dot products is as valid a map as a softmax.
MAPS = {
    "alpha_hat": "the paper's α̂ = f(x̂_a, x̂_av): softmax over positions of x̂_av(i,j)·φ(x̂_a)",
    "alpha_hat_scores": "the scores of α̂ before its softmax, x̂_av(i,j)·φ(x̂_a)",
    "memory_alpha": "the memory layer's cross-modal attention f(x̂_a, x̂_v): softmax of x̂_v(i,j)·φ(x̂_a)",
    "memory_scores": "the scores of the memory layer's cross-modal attention, x̂_v(i,j)·φ(x̂_a)",
    "class_cam": "the class activation map of the visual head: w_c·x̂_v(i,j) for the predicted "
                 "event class c (needs a visual head, TrainConfig.visual_loss > 0)",
    "class_grad": "x̂_v(i,j)·g_c, g_c the gradient of the predicted event class's logit with "
                  "respect to the classifier's visual input Σ_ij x̂_av (Grad-CAM's channel "
                  "weights, Selvaraju et al. 2017, without its ReLU): where the cells look like "
                  "what the classifier takes for the event",
}
DEFAULT_MAP = "memory_scores+affinity"  # the best of MAP_CHOICES on the seeded quality benchmark (README)
# How Eq. 1's dot products are scaled before the softmax (the paper writes none and leaves the
# sharpness to the features' scale): "none" as written; "sqrt" divides by √C like scaled
# dot-product attention (the default: the best on the seeded quality benchmark, README);
# "learned" learns one scalar per attention, starting at 1/√C.
ATTENTION_SCALES = ("none", "sqrt", "learned")


# What a map can be refined by after the network gives it, written "MAP+REFINEMENT" (e.g.
# "memory_scores+affinity"). Each is a function of the map and the step's own cached frame
# features; no weights are learned.
REFINEMENTS = {
    "affinity": "a random walk over the frame's feature affinity, T(p,q) ∝ max(0, cos(f_p, "
                "f_q))^{power} between the cached backbone features f of every two positions: "
                "{keep} × the min-max normalised map plus {walk} × its min-max normalised T^{steps}·map, "
                "so the peak spreads over the cells that look like it (the object) and stays "
                "where it was",
}
AFFINITY_POWER = 8  # sharpness of the affinity     (the three chosen on the 16×16 benchmark,
AFFINITY_STEPS = 4  # random-walk steps              README "Which map")
AFFINITY_KEEP = 0.3  # share of the map itself in the refined map
# Every name a map option takes: each of MAPS alone and with each refinement
MAP_CHOICES = tuple(MAPS) + tuple(f"{m}+{r}" for m in MAPS for r in REFINEMENTS)


def map_parts(name: str) -> tuple[str, str | None]:
    """"memory_scores+affinity" → ("memory_scores", "affinity"); "alpha_hat" → ("alpha_hat",
    None). No check (``check_map`` checks)."""
    base, _, refinement = name.partition("+")
    return base, refinement or None


def map_definition(name: str) -> str:
    """The words that define map ``name`` (one of MAP_CHOICES), as metrics.json records them."""
    base, refinement = map_parts(check_map(name))
    words = MAPS[base]
    if refinement:
        words += "; refined by " + REFINEMENTS[refinement].format(
            power=AFFINITY_POWER, steps=AFFINITY_STEPS, keep=AFFINITY_KEEP, walk=round(1 - AFFINITY_KEEP, 6))
    return words


def check_map(name: str, *, visual_head: bool = True) -> str:
    """``name`` if it is one of MAP_CHOICES that a network with(out) a visual head can give,
    else ValueError naming the valid ones."""
    base, refinement = map_parts(name)
    if base not in MAPS or (refinement is not None and refinement not in REFINEMENTS):
        raise ValueError(f"unknown map {name!r}; valid: {', '.join(MAPS)}, each optionally "
                         f"followed by +{' or +'.join(REFINEMENTS)}")
    if base == "class_cam" and not visual_head:
        raise ValueError(f"map {name} needs the visual head (train with visual_loss > 0)")
    return name
DEFAULT_ATTENTION_SCALE = "sqrt"
# What the visual head (TrainConfig.visual_loss > 0) classifies; its class activation map
# ``class_cam`` is w_c·x̂_v(i,j) either way.
VISUAL_POOLS = {
    "attention": "Σ_ij x̂_av, the audio-attended visual half of O^t",
    "mean": "the mean over positions of x̂_v (a CAM head, Zhou et al. 2016: its class_cam "
            "averages to the head's logit, so every cell of the object is pushed up)",
}


@dataclass(frozen=True)
class ModelConfig(PlainConfig):
    """Hyperparameters of ``STMNet``; stored in every checkpoint."""

    # a checkpoint saved before these fields existed: Eq. 1 unscaled, maps α̂
    LEGACY = {"attention_scale": "none", "map": "alpha_hat"}

    visual_channels: int  # C_v of the cache: 2048 for ResNet-152, 320 for EfficientNet-Lite0
    num_classes: int  # event classes + 1 (background, index len(classes))
    audio_channels: int = 512  # VGGish trunk
    dim: int = 256  # C, the joint embedding of the paper
    proj_layers: int = 2  # 1×1 convolutions per projection (ReLU between them)
    memory: str = "full"  # "none" (Without Temporal), "unimodal" (U), "full" (C+U)
    # K past steps in the memory. 3 = T - 1 for the paper's T = 4 training clips: at training
    # time step t never has more than 3 past steps, so a larger K would let streaming
    # inference attend over windows longer than any the attention weights were trained on.
    memory_length: int = 3
    heads: int = 1  # L in Eq. 2; the weights of the heads are averaged
    hidden: int = 256  # MLP classifier hidden size
    dropout: float = 0.1  # before the classifier's last layer
    map: str = DEFAULT_MAP  # which of MAP_CHOICES ``maps`` returns (localize, evaluate, maps files)
    attention_scale: str = DEFAULT_ATTENTION_SCALE  # one of ATTENTION_SCALES, on both spatial attentions
    # An extra linear head classifying the visual half alone (for TrainConfig.visual_loss),
    # pooled as VISUAL_POOLS[visual_pool] says
    visual_head: bool = False
    visual_pool: str = "attention"
    # Training only: the share of steps whose audio half of O^t is zeroed, so that the
    # classifier has to use the visual half (identity in eval mode)
    audio_dropout: float = 0.0

    def __post_init__(self):
        check_map(self.map, visual_head=self.visual_head)
        if self.attention_scale not in ATTENTION_SCALES:
            raise ValueError(f"attention_scale must be one of {ATTENTION_SCALES}, "
                             f"got {self.attention_scale!r}")
        if self.visual_pool not in VISUAL_POOLS:
            raise ValueError(f"visual_pool must be one of {tuple(VISUAL_POOLS)}, got {self.visual_pool!r}")
        if not 0.0 <= self.audio_dropout < 1.0:
            raise ValueError(f"audio_dropout must lie in [0, 1), got {self.audio_dropout}")
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {self.memory!r}")
        if self.memory_length < 1:
            raise ValueError(f"memory_length must be >= 1, got {self.memory_length}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.proj_layers < 1:
            raise ValueError(f"proj_layers must be >= 1, got {self.proj_layers}")


LABEL_MODES = ("video", "segment")  # weak video label on every step | per-second labels

# The ModelConfig fields a training run sets (TrainConfig declares them flat, model_config
# passes them on); visual_channels and num_classes come from the cache, visual_head from
# TrainConfig.visual_loss.
MODEL_FIELDS = ("dim", "proj_layers", "memory", "memory_length", "heads", "hidden", "dropout",
                "map", "attention_scale", "audio_dropout", "visual_pool")


IN_MEMORY_CHOICES = ("auto", "yes", "no")
# Fields that may change between a run and its --resume (they do not change what is learned;
# map only chooses what localize and evaluate read by default).
RUNTIME_FIELDS = ("epochs", "workers", "in_memory", "device", "map")


@dataclass(frozen=True)
class TrainConfig(PlainConfig):
    """Everything ``train`` does, stored in each checkpoint (flat: records written since the
    first release load as they are). The model fields are MODEL_FIELDS, each with ModelConfig's
    default; the visual channels and the number of classes come from the cache."""

    LEGACY = ModelConfig.LEGACY  # a run saved before these fields existed

    epochs: int = 30  # the paper's
    batch_size: int = 128  # videos (one second each) per step, over all ranks together
    lr: float = 1e-4  # Adam, the paper's
    weight_decay: float = 0.0
    labels: str = "video"  # "video": the video's class on every step (paper); "segment": per second
    seed: int = 0
    workers: int = 4  # DataLoader worker processes per rank (0 = read in the main process)
    # Hold the cache in RAM: "auto" when its float32 maps take < half the available memory
    in_memory: str = "auto"
    device: str = "auto"  # "auto" (cuda:LOCAL_RANK if available, else cpu), "cpu", "cuda"
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    # MODEL_FIELDS, passed on by model_config
    dim: int = ModelConfig.dim
    proj_layers: int = ModelConfig.proj_layers
    memory: str = ModelConfig.memory
    memory_length: int = ModelConfig.memory_length
    heads: int = ModelConfig.heads
    hidden: int = ModelConfig.hidden
    dropout: float = ModelConfig.dropout
    map: str = ModelConfig.map
    attention_scale: str = ModelConfig.attention_scale
    audio_dropout: float = ModelConfig.audio_dropout
    visual_pool: str = ModelConfig.visual_pool  # what the visual_loss head pools (VISUAL_POOLS)
    # Options from the field (objective.py), 0 = off (the paper's objective alone)
    visual_loss: float = 0.0  # weight of the cross-entropy of the visual head (visual_pool)
    contrastive: float = 0.0  # weight of the in-batch audio-visual contrastive term

    def __post_init__(self):
        for name in ("visual_loss", "contrastive"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.visual_pool != ModelConfig.visual_pool and not self.visual_loss > 0:
            raise ValueError(f"visual_pool {self.visual_pool} needs the visual head: visual_loss > 0")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {self.labels!r}")
        if self.in_memory not in IN_MEMORY_CHOICES:
            raise ValueError(f"in_memory must be one of {IN_MEMORY_CHOICES}, got {self.in_memory!r}")
        self.model_config(visual_channels=1, num_classes=2)  # validates the model fields now

    def model_config(self, *, visual_channels: int, num_classes: int) -> ModelConfig:
        """The network this run trains: its MODEL_FIELDS, the cache's channels and classes."""
        return ModelConfig(visual_channels=visual_channels, num_classes=num_classes,
                           visual_head=self.visual_loss > 0,
                           **{name: getattr(self, name) for name in MODEL_FIELDS})


def _check_model_fields() -> None:
    """TrainConfig declares each of MODEL_FIELDS with ModelConfig's default (checked at import,
    so a field added to one list and not the other fails at once)."""
    model = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    train = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    wrong = [n for n in MODEL_FIELDS if n not in train or train[n] != model[n]]
    if wrong:
        raise TypeError(f"TrainConfig's model fields differ from ModelConfig's: {wrong}")


_check_model_fields()
