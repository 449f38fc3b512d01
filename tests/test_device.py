"""avstm.device: the one reading of torchrun's environment (LOCAL_RANK, WORLD_SIZE).

A real two-rank group is exercised by test_scale.py (extract) and test_memnet_train.py (train)."""

import torch.distributed as dist

from avstm.device import Distributed, init_distributed, local_rank
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import decode_device


def test_outside_torchrun_a_process_is_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not dist.is_initialized()
    assert init_distributed() == Distributed(rank=0, world_size=1, local_rank=0, created=False)
    assert not dist.is_initialized()  # no group is made for one process


def test_local_rank_is_read_once_for_torch_and_nvdec(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_rank() == 3 and init_distributed().local_rank == 3
    # a bare "cuda" is this rank's GPU for FFmpeg's decoder too; an explicit index stays
    assert decode_device(ExtractConfig(decode_device="cuda")) == "cuda:3"
    assert decode_device(ExtractConfig(decode_device="cuda:1")) == "cuda:1"
    assert decode_device(ExtractConfig(decode_device="cpu")) is None
