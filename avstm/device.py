"""The one reading of a ``--device`` value, and the one joining of torchrun's process group,
shared by every stage and command (torch is imported only when a device is resolved)."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING

from avstm.errors import AvstmError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (cuda when a GPU is present, else cpu), cpu, cuda or cuda:N."
_NAME = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


class DeviceError(AvstmError):
    """A device name that is not one, or a device this machine lacks."""


def check_device(name: str, *, option: str = "--device") -> str:
    """Return ``name`` if it is auto, cpu, cuda or cuda:N and usable here; else DeviceError
    with a one-line message naming ``option``."""
    m = _NAME.match(str(name))
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise DeviceError(f"{option} {name}: not a device; use auto, cpu, cuda or cuda:N")
    if m.group(1) == "cuda":
        import torch  # here, not at the top: the CLI reads DEVICE_HELP without loading torch

        if not torch.cuda.is_available():
            raise DeviceError(f"{option} {name}: no CUDA GPU on this machine; use {option} cpu "
                              f"or {option} auto")
        count = torch.cuda.device_count()
        if m.group(2) is not None and int(m.group(2)) >= count:
            raise DeviceError(f"{option} {name}: this machine has {count} CUDA GPU(s), "
                              f"cuda:0 to cuda:{count - 1}")
    return str(name)


def resolve_device(name: str, *, option: str = "--device") -> torch.device:
    """``check_device``, then "auto" → cuda when present, else cpu. A bare "cuda" (or "auto"
    on a GPU machine) means this process's GPU, ``cuda:LOCAL_RANK`` under torchrun."""
    import torch

    check_device(name, option=option)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    return device


def local_rank() -> int:
    """This process's index on its machine under torchrun (``LOCAL_RANK``; 0 outside it): the
    GPU a bare "cuda" means, for torch and for FFmpeg's NVDEC alike."""
    return int(os.environ.get("LOCAL_RANK", "0"))


@dataclasses.dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False  # this call initialised the process group (the caller tears it down)


def init_distributed(device: "torch.device | None" = None, *, backend: str | None = None) -> Distributed:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 and none is initialised yet
    (``backend``: nccl for a CUDA ``device``, else gloo, when None), and say where this process
    stands. A group the caller initialised is used as it is."""
    import torch.distributed as dist

    d = Distributed(local_rank=local_rank())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if backend is None:
            backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        d.created = True
    if dist.is_available() and dist.is_initialized():
        d.rank, d.world_size = dist.get_rank(), dist.get_world_size()
    return d
