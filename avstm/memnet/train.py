"""Training the STM network on a feature cache: ``train(cache_path, out_dir, *, config)``.

Each epoch draws one random second (T = 4 steps) of every training video, as the paper does,
and trains with cross-entropy on the weak labels. Validation runs the memory over each whole
val video at once (all its seconds as one clip, causal window of K past steps), which is what
streaming ``localize`` does over a long video; accuracy is counted per step.

Under ``torchrun`` the same call trains with DistributedDataParallel (nccl on CUDA, gloo on
CPU): each rank draws its part of the epoch, validation is sharded and summed, and only rank 0
writes. Outputs in ``out_dir``: ``best.pt``, ``last.pt`` (with optimizer state, for
``resume``), ``metrics.jsonl`` (one JSON object per epoch) and ``config.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from avstm.cache import FeatureCache, check_fits, compare_configs
from avstm.device import Distributed, init_distributed, resolve_device
from avstm.errors import CacheError, CheckpointError, ConfigMismatch
from avstm.io import check_writable, remove_stale_temporaries, write_json, write_text
from avstm.memnet import data
from avstm.memnet.checkpoint import read_checkpoint, save_checkpoint
from avstm.memnet.config import (IN_MEMORY_CHOICES, RUNTIME_FIELDS, ModelConfig, TrainConfig,  # noqa: F401
                                 map_parts)
from avstm.memnet.model import STMNet
from avstm.memnet.objective import training_loss

@dataclass
class TrainResult:
    """What ``train`` leaves behind; ``model`` is the trained network (last epoch, eval mode)."""

    model: STMNet
    out_dir: Path
    best_path: Path
    last_path: Path
    history: list[dict] = field(default_factory=list)
    in_memory: bool = False
    rank: int = 0  # this process's rank under torchrun (only rank 0 wrote the outputs)


def _setup_distributed(config: TrainConfig) -> tuple[Distributed, torch.device]:
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return init_distributed(device), device


def _use_memory(choice: str, cache_path, infos: list[data.VideoInfo]) -> bool:
    if choice != "auto":
        return choice == "yes"
    copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # one copy per rank on this machine
    return data.split_bytes(cache_path, infos) * copies < 0.5 * data.available_memory()


def _fits_on_gpu(memory: dict, infos: list[data.VideoInfo], device: torch.device) -> bool:
    """Whether the held training split takes under half of the GPU's free memory."""
    need = sum(memory[i.id].visual.nbytes + memory[i.id].audio.nbytes for i in infos)
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.5 * free


def _check_resume(ckpt: dict, cache_path, cache_cfg: dict, classes: list[str], config: TrainConfig,
                  path) -> None:
    check_fits(path, ckpt.get("extract_config") or {}, cache_path, cache_cfg,
               trained_classes=ckpt.get("classes") or [], cache_classes=classes)
    saved = TrainConfig.from_dict(ckpt.get("train_config", {})).to_dict()
    diff = [k for k in compare_configs(saved, config.to_dict()) if k not in RUNTIME_FIELDS]
    if diff:
        what = ", ".join(f"{k}: {saved.get(k)!r} then, {config.to_dict().get(k)!r} now" for k in diff)
        raise ConfigMismatch(f"{path}: resumed with other training options ({what})")


def unrefined(config: ModelConfig) -> str:
    """The map the network computes while it trains and validates: its own map without a
    refinement (no loss reads the maps; a refinement only costs time there)."""
    return map_parts(config.map)[0]


def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def _validate(model: STMNet, loader: DataLoader, device: torch.device, amp: bool) -> torch.Tensor:
    """Sums over whole videos: [loss·steps, correct steps, steps, correct videos, videos]."""
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)
    num_events = model.config.num_classes - 1
    for batch in loader:  # videos of one length: (B, S·T, ...)
        visual, audio, targets, label = data.model_batch(batch, device)
        with _autocast(device, amp):
            logits = model(visual, audio, map=unrefined(model.config)).logits.float()  # (B, S·T, classes)
        flat = logits.flatten(0, 1)
        sums[0] += F.cross_entropy(flat, targets.flatten(), reduction="sum").item()
        sums[1] += (flat.argmax(-1) == targets.flatten()).sum().item()
        sums[2] += targets.numel()
        video_pred = logits.mean(dim=1)[:, :num_events].argmax(-1)  # events only, (B,)
        sums[3] += (video_pred == label).sum().item()
        sums[4] += label.numel()
    return sums


def evaluate_accuracy(model: STMNet, cache_path: str | os.PathLike, *, split: str = "val",
                      labels: str = "video", device: str | torch.device = "cpu") -> dict:
    """Loss and accuracy of ``model`` on every second of every video of ``split``.

    Returns {"loss", "acc" (per step), "video_acc" (mean logits of a video vs its class),
    "videos"}.
    """
    with FeatureCache(cache_path) as cache:
        infos = data.video_infos(cache, split)
    if not infos:
        raise CacheError(f"{cache_path}: no videos in split {split!r}")
    device = torch.device(device)
    loader = DataLoader(data.WholeVideos(cache_path, infos, labels=labels, stored=device.type == "cuda"),
                        batch_sampler=data.length_batches(infos, 16))
    s = _validate(model.to(device), loader, device, amp=True)
    return {"loss": s[0].item() / s[2].item(), "acc": s[1].item() / s[2].item(),
            "video_acc": s[3].item() / s[4].item(), "videos": int(s[4].item())}


def _broadcast(obj, d: Distributed):
    if d.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_sum(t: torch.Tensor, d: Distributed, device: torch.device) -> torch.Tensor:
    if d.world_size == 1:
        return t
    t = t.to(device)
    dist.all_reduce(t)
    return t.cpu()


def train(cache_path: str | os.PathLike, out_dir: str | os.PathLike, *,
          config: TrainConfig = TrainConfig(), resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train an STM network on the train split of a cache, validating on its val split.

    ``resume``: continue from ``out_dir/last.pt`` (refused with ConfigMismatch if the cache's
    extract config, its classes or a learned training option differ); without it an existing
    ``last.pt`` is refused. ``on_epoch`` gets each epoch's metrics (rank 0 only).
    """
    cache_path, out = Path(cache_path), Path(out_dir)
    d, device = _setup_distributed(config)
    try:
        return _train(cache_path, out, config, resume, progress, on_epoch, d, device)
    finally:
        if d.created:
            dist.destroy_process_group()


def checkpoint_bytes(model: STMNet) -> int:
    """A first estimate of the disk a run takes: best.pt (weights), last.pt (weights and Adam's
    two moments), and a second last.pt while it is replaced (atomic writes)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return weights * (1 + 3 + 3)


def _train(cache_path, out, config, resume, progress, on_epoch, d: Distributed, device) -> TrainResult:
    if d.rank == 0:
        check_writable(out)  # before any work: a read-only or full disk fails now
        remove_stale_temporaries(out)  # what a killed run's atomic writes left
    with FeatureCache(cache_path) as cache:
        cache_cfg, classes = dict(cache.config), list(cache.classes)
        train_infos, val_infos = data.video_infos(cache, "train"), data.video_infos(cache, "val")
        if not train_infos:
            raise CacheError(f"{cache_path}: no videos in the train split")
        visual_channels = int(cache.visual(train_infos[0].id, seconds=0).shape[-1])
    last_path, best_path = out / "last.pt", out / "best.pt"
    ckpt = None
    if last_path.exists():
        if not resume:
            raise CheckpointError(f"{last_path}: a run exists here; pass --resume or choose another --out")
        ckpt = read_checkpoint(last_path)
        _check_resume(ckpt, cache_path, cache_cfg, classes, config, last_path)

    model_config = config.model_config(visual_channels=visual_channels, num_classes=len(classes) + 1)
    torch.manual_seed(config.seed)
    model = STMNet(model_config)
    if d.rank == 0:
        check_writable(out, need_bytes=checkpoint_bytes(model), what="the checkpoints (best.pt, last.pt)")
    show = progress and d.rank == 0 and sys.stderr.isatty()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    else:
        stats = data.compute_stats(cache_path, [i.id for i in train_infos], progress=show) \
            if d.rank == 0 else None
        stats = _broadcast(stats, d)
        model.set_normalization(stats.visual_mean, stats.visual_std, stats.audio_mean, stats.audio_std)
    model.to(device)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if d.world_size > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if ckpt is not None and ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
    start = int(ckpt["epoch"]) if ckpt is not None else 0
    best = ckpt.get("best") if ckpt is not None else None
    history = _read_history(out / "metrics.jsonl", start) if ckpt is not None else []

    in_memory = _use_memory(config.in_memory, cache_path, train_infos + val_infos)
    memory = data.preload(cache_path, train_infos + val_infos, progress=show) if in_memory else None
    sampler = data.SecondSampler([i.num_seconds for i in train_infos], seed=config.seed,
                                 rank=d.rank, world_size=d.world_size)
    per_rank_batch = max(1, config.batch_size // d.world_size)
    workers = min(config.workers, len(os.sched_getaffinity(0)))  # more than the cores only thrash
    loader_opts = dict(num_workers=workers, pin_memory=device.type == "cuda",
                       persistent_workers=workers > 0)
    if workers > 0:
        loader_opts["prefetch_factor"] = 4
    # From HDF5 on a GPU, workers hand over the maps as stored (float16, channels-last) and the
    # GPU converts them: a tenth of the workers' CPU work, half the bytes through shared memory.
    stored = memory is None and device.type == "cuda"
    # In memory on a GPU (or without workers), batches are gathered by indexing tensors held on
    # the device: no worker copies, no collation, no 300 MB host-to-device copy per batch. On a
    # CPU with workers, the DataLoader overlaps reading with the step and wins instead.
    if memory is not None and (device.type == "cuda" or workers == 0):
        held_on = device if device.type == "cuda" and _fits_on_gpu(memory, train_infos, device) else "cpu"
        train_loader = data.HeldSeconds(memory, train_infos, sampler, per_rank_batch,
                                        labels=config.labels, device=held_on)
        for info in train_infos:  # the tensors are the copy now; validation keeps its videos
            memory.pop(info.id, None)
    else:
        train_loader = DataLoader(data.TrainSeconds(cache_path, train_infos, labels=config.labels,
                                                    memory=memory, stored=stored),
                                  batch_size=per_rank_batch, sampler=sampler, **loader_opts)
    val_shard = val_infos[d.rank::d.world_size]
    val_loader = DataLoader(data.WholeVideos(cache_path, val_shard, labels=config.labels, memory=memory,
                                             stored=stored),
                            batch_sampler=data.length_batches(val_shard, max(1, per_rank_batch // 4)),
                            num_workers=0 if in_memory else min(workers, 2),
                            persistent_workers=not in_memory and workers > 0)
    if d.rank == 0:
        write_json(out / "config.json", {
            "train": config.to_dict(), "model": model_config.to_dict(), "extract": cache_cfg,
            "classes": classes, "cache": str(cache_path), "world_size": d.world_size,
            "in_memory": in_memory, "workers": workers, "resumed_from_epoch": start})
    for epoch in range(start, config.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(config.seed * 100003 + epoch * 101 + d.rank)  # dropout, repeatable
        net.train()
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss·steps, correct steps
        steps = 0  # counted on the host: no device sync per batch
        t_start, wait = time.perf_counter(), 0.0
        it = iter(train_loader)
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not show, leave=False)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            visual, audio, targets = data.model_batch(batch, device)
            wait += time.perf_counter() - t0
            with _autocast(device, config.amp):
                output = net(visual, audio, map=unrefined(model.config))
                loss, logits = training_loss(output, targets, visual_loss=config.visual_loss,
                                             contrastive=config.contrastive)  # logits (B·T, classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                n = targets.numel()
                steps += n
                sums += torch.stack([loss.detach().double() * n,
                                     (logits.argmax(-1) == targets.flatten()).sum().double()])
            bar.update(1)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - t_start
        sums = _all_sum(torch.cat([sums.cpu(), torch.tensor([float(steps)], dtype=torch.float64)]), d, device)
        t_val = time.perf_counter()
        val = _all_sum(_validate(model, val_loader, device, config.amp), d, device)
        metrics = {"epoch": epoch + 1, "train_loss": sums[0].item() / sums[2].item(),
                   "train_acc": sums[1].item() / sums[2].item()}
        if val[2] > 0:
            metrics.update(val_loss=val[0].item() / val[2].item(), val_acc=val[1].item() / val[2].item(),
                           val_video_acc=val[3].item() / val[4].item())
        metrics.update(train_s=round(train_s, 3), val_s=round(time.perf_counter() - t_val, 3),
                       data_wait_s=round(wait, 3), data_wait_share=round(wait / max(train_s, 1e-9), 4),
                       videos_per_s=round(len(sampler) * d.world_size / max(train_s, 1e-9), 1),
                       in_memory=in_memory, world_size=d.world_size)
        history.append(metrics)
        if d.rank == 0:
            key = "val_acc" if "val_acc" in metrics else "train_acc"
            improved = best is None or metrics[key] > best["value"]
            if improved:
                best = {"metric": key, "value": metrics[key], "epoch": epoch + 1}
            common = dict(train_config=config.to_dict(), classes=classes,
                          extract_config=cache_cfg, epoch=epoch + 1, metrics=metrics, best=best)
            save_checkpoint(last_path, model, optimizer=optimizer.state_dict(), **common)
            if improved:
                save_checkpoint(best_path, model, **common)
            _write_history(out / "metrics.jsonl", history)
            if on_epoch is not None:
                on_epoch(metrics)
        if d.world_size > 1:
            dist.barrier()
    return TrainResult(model=model.eval(), out_dir=out, best_path=best_path, last_path=last_path,
                       history=history, in_memory=in_memory, rank=d.rank)


def _read_history(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("epoch", 0) <= upto]


def _write_history(path: Path, history: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in history))
