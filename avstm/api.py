"""The Python API in one call: ``model = avstm.load(path)``, then ``model.localize("clip.mp4")``.

    import avstm
    model = avstm.load("runs/stm/best.pt")            # device="auto", the checkpoint's map
    model = avstm.load("https://…/stm.avstm", sha256="…")  # a shared model (avstm export)
    result = model.localize("clip.mp4")               # result.maps (N, 8, 8), result.boxes (B, 6)
    result.class_ids, result.classes, result.times    # (N,), K names, (N,) seconds
    model.localize("clip.mp4", out="out/clip")        # also boxes.json + overlay.mp4 there
"""

from __future__ import annotations

import os

from avstm.localize.run import LocalizeConfig, LocalizeModel, load_localize_model
from avstm.share import local_checkpoint


def load(checkpoint: str | os.PathLike, *, sha256: str | None = None, device: str = "auto",
         batch_size: int = 16, map: str | None = None, visual_weights: str | None = None,
         audio_weights: str | None = None) -> LocalizeModel:
    """A trained model with the frozen backbones it was trained behind, ready to localize
    videos (``LocalizeModel.localize``). ``checkpoint``: a ``best.pt``/``last.pt`` of
    ``avstm train``, a package of ``avstm export`` (``*.avstm``), or a URL (http, https,
    file) of either with its ``sha256`` (downloaded once into the torch hub cache,
    ``share.cache_dir()``). device: auto, cpu, cuda or cuda:N. map: which map (memnet.model.MAP_CHOICES;
    None: the checkpoint's). visual_weights/audio_weights: local copies of the backbone
    weights (checked against the checksums recorded at extraction).
    Raises CheckpointError, WeightsError, DeviceError (one-line messages)."""
    config = LocalizeConfig(device=device, batch_size=batch_size, map=map,
                            visual_weights=visual_weights, audio_weights=audio_weights)
    return load_localize_model(local_checkpoint(checkpoint, sha256=sha256), config=config)
