"""Saving and loading trained STM networks.

A checkpoint is a ``torch.save`` of plain data, loadable with ``weights_only=True``::

    {"format": "avstm-checkpoint/1", "version": <avstm version>,
     "config": ModelConfig.to_dict(), "model": state_dict (incl. the normalisation buffers),
     "train_config": TrainConfig.to_dict(), "classes": [...], "extract_config": {...},
     "epoch": completed epochs, "metrics": {...}, "optimizer": state_dict or None,
     "best": {"metric": name, "value": float} or None}

Loading rebuilds ``ModelConfig`` first and the module from it; nothing is inferred from weight
shapes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from avstm._version import __version__
from avstm.errors import CheckpointError
from avstm.io import torch_load_problem, write_bytes
from avstm.memnet.config import ModelConfig, TrainConfig
from avstm.memnet.model import STMNet

FORMAT = "avstm-checkpoint/1"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint records besides the weights."""

    model_config: ModelConfig
    train_config: TrainConfig
    classes: list[str]  # event classes; background = len(classes)
    extract_config: dict  # the extract config of the cache it was trained on
    epoch: int  # completed epochs
    metrics: dict  # the metrics of that epoch


def _plain(obj):
    """JSON-able plain data (tuples become lists), so that weights_only loading accepts it."""
    return json.loads(json.dumps(obj))


def save_checkpoint(path: str | os.PathLike, model: STMNet, *, train_config: dict,
                    classes: list[str], extract_config: dict, epoch: int,
                    metrics: dict | None = None, optimizer: dict | None = None,
                    best: dict | None = None) -> Path:
    """Write ``model`` and its provenance to ``path`` atomically; returns the path.

    ``optimizer`` is an optimizer state_dict (kept for ``--resume``; omit it in exports).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "version": __version__,
        "config": _plain(model.config.to_dict()),
        "model": state,
        "train_config": _plain(train_config),
        "classes": list(map(str, classes)),
        "extract_config": _plain(extract_config),
        "epoch": int(epoch),
        "metrics": _plain(metrics or {}),
        "optimizer": optimizer,
        "best": _plain(best) if best is not None else None,
    }
    # serialised in memory, written with plain file I/O: a full disk is then an OSError that
    # ``write_bytes`` reports, not torch's "[enforce fail at inline_container.cc] unexpected pos"
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return write_bytes(path, buf.getbuffer())


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of an HDF5 file (a feature cache)


def read_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict (see the module docstring), checked for its format."""
    path = Path(path)
    if path.is_dir():
        hint = next((f"; did you mean {path / n}?" for n in ("best.pt", "last.pt")
                     if (path / n).is_file()), " (give a run's best.pt or last.pt)")
        raise CheckpointError(f"{path}: a folder, not a checkpoint{hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"{path}: {torch_load_problem(e)}") from None
    if head == HDF5_SIGNATURE:
        raise CheckpointError(f"{path}: an HDF5 feature cache, not a checkpoint (give a run's "
                              f"best.pt or last.pt; the cache goes to --features)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors alike
        raise CheckpointError(f"{path}: {torch_load_problem(e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an avstm checkpoint (expected format {FORMAT})")
    return ckpt


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu",
               map: str | None = None) -> tuple[STMNet, CheckpointInfo]:
    """Rebuild the trained network from a checkpoint alone, in eval mode on ``device``.

    The model takes raw cached features (its normalisation buffers come with it). ``map``
    (one of ``model.MAP_CHOICES``) replaces the map the checkpoint was saved to give (None: keep it);
    the returned info's model config names the map in use.
    """
    ckpt = read_checkpoint(path, device=device)
    try:
        config = ModelConfig.from_dict(ckpt["config"])
        if map is not None:
            config = config.replace(map=map)
        model = STMNet(config)
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path}: model does not fit its config ({first})") from None
    info = CheckpointInfo(
        model_config=config,
        train_config=TrainConfig.from_dict(ckpt.get("train_config") or {}),
        classes=list(ckpt.get("classes", [])),
        extract_config=dict(ckpt.get("extract_config") or {}),
        epoch=int(ckpt.get("epoch", 0)),
        metrics=dict(ckpt.get("metrics") or {}),
    )
    return model.to(device).eval(), info
