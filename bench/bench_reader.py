"""Training input throughput: batches/s from the HDF5 cache against the same batches from memory,
the data-wait share of real training steps, and an estimate of a 30-epoch AVE-sized run.

A synthetic cache (float16, ResNet-152 shapes: visual (S, 4, 8, 8, 2048), audio (S, 4, 6, 4, 512))
is written with CacheWriter; batches are read through avstm.memnet.data (one random second per
video, SecondSampler order, DataLoader workers) in four states:
  hdf5_cold   the file's pages evicted first (posix_fadvise DONTNEED on the file; with
              --drop-caches, also `echo 3 > /proc/sys/vm/drop_caches`): a cache larger than RAM;
  hdf5_warm   the file in the page cache;
  stored_cold, stored_warm   the same, with workers handing over the maps as stored (float16,
              channels-last) and `model_batch` converting them on the device (what `avstm train`
              does from HDF5 on a GPU; on a CPU the conversion lands in the main process);
  memory      the split preloaded into RAM, read through DataLoader workers.
  held        the split as tensors on the training device, batches gathered by indexing
              (what `avstm train --in-memory yes|auto` does).
For each: reading alone (batches/s, MB/s) and with a training step per batch (forward + backward
+ Adam of STMNet, bf16 autocast on CUDA), where the time spent waiting for the next batch over
the whole loop is the data-wait share.

    python bench/bench_reader.py --device cpu
    python bench/bench_reader.py --device cuda --batch 128 --videos 1000 --workers 8
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from avstm.cache import CacheWriter, VideoRecord  # noqa: E402
from avstm.memnet import data  # noqa: E402
from avstm.memnet.model import ModelConfig, STMNet  # noqa: E402

AVE_TRAIN, AVE_EPOCHS, AVE_BATCH = 3339, 30, 128


def make_cache(path: Path, videos: int, seconds: int, channels: int) -> Path:
    """A float16 cache of random features (reused when it exists with the same shape)."""
    if path.exists():
        return path
    cfg = {"dtype": "float16", "fps": 4, "visual_channels": channels, "bench": True}
    rng = np.random.default_rng(0)
    vis = rng.standard_normal((seconds, 4, 8, 8, channels), dtype=np.float32)
    aud = rng.standard_normal((seconds, 4, 6, 4, 512), dtype=np.float32)
    times = np.arange(seconds)[:, None] + (np.arange(4) + 0.5) / 4
    with CacheWriter(path, config=cfg, classes=[f"c{i}" for i in range(28)]) as w:
        for i in range(videos):
            w.write(VideoRecord(id=f"v{i:05d}", visual=np.roll(vis, i, axis=-1), audio=aud, times=times,
                                labels=np.full(seconds, i % 28), label=i % 28, split="train",
                                source=f"v{i}.mp4", duration=float(seconds)))
    return path


def evict(path: Path, drop_caches: bool) -> None:
    """Remove the file's pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if drop_caches:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError as e:
            print(f"  (drop_caches not permitted: {e})")


class Epochs(torch.utils.data.Sampler):
    """SecondSampler's epochs ``first .. first + count - 1`` back to back: one DataLoader start
    for many batches, so that the rates are the steady state's."""

    def __init__(self, infos, first: int, count: int):
        self.inner = data.SecondSampler([i.num_seconds for i in infos], seed=0)
        self.first, self.count = first, count

    def __len__(self) -> int:
        return len(self.inner) * self.count

    def __iter__(self):
        for e in range(self.first, self.first + self.count):
            self.inner.set_epoch(e)
            yield from self.inner


def loader(path: Path, infos, memory, batch: int, workers: int, first: int, epochs: int,
           stored: bool = False) -> DataLoader:
    ds = data.TrainSeconds(path, infos, memory=memory, stored=stored)
    return DataLoader(ds, batch_size=batch, sampler=Epochs(infos, first, epochs), num_workers=workers,
                      drop_last=True, pin_memory=torch.cuda.is_available(), persistent_workers=False,
                      prefetch_factor=4 if workers else None)


def held(infos, memory, batch: int, first: int, epochs: int, device: torch.device) -> data.HeldSeconds:
    """What ``avstm train`` does in memory: the split as tensors on the device, batches indexed."""
    return data.HeldSeconds(memory, infos, Epochs(infos, first, epochs), batch, device=device)


def item_cost(path: Path, infos, batch: int, stored: bool, batches: int = 8) -> float:
    """Seconds of one process's work per clip, reading and collating warm items as a worker does
    (float32 channels-first, or ``stored``): what bounds the clips/s of each DataLoader worker."""
    ds = data.TrainSeconds(path, infos, stored=stored)
    sampler = iter(data.SecondSampler([i.num_seconds for i in infos], seed=1))
    keys = [next(sampler) for _ in range(min(len(infos), batch))]
    torch.utils.data.default_collate([ds[k] for k in keys])  # open the file, warm its pages
    t0 = time.perf_counter()
    for _ in range(batches):
        torch.utils.data.default_collate([ds[k] for k in keys])
    return (time.perf_counter() - t0) / (batches * len(keys))


def read_only(dl: DataLoader, device: torch.device, skip: int = 2) -> tuple[int, float]:
    """(batches, seconds) after the first ``skip`` batches (the workers' start)."""
    n = 0
    t0 = time.perf_counter()
    for batch in dl:
        data.model_batch(batch, device)
        n += 1
        if n == skip:
            common.sync(device)
            t0 = time.perf_counter()
    common.sync(device)
    return n - skip, time.perf_counter() - t0


def with_training(dl: DataLoader, device: torch.device, model, opt, amp) -> tuple[int, float, float]:
    """(batches, wall, seconds waiting for data) of a training loop over ``dl``."""
    wait = 0.0
    n = 0
    it = iter(dl)
    next(it)  # the workers' start is not steady state
    t0 = time.perf_counter()
    while True:
        common.sync(device)  # the step before has finished: what follows is waiting for data
        tw = time.perf_counter()
        batch = next(it, None)
        wait += time.perf_counter() - tw
        if batch is None:
            break
        common.train_step(model, opt, amp, *data.model_batch(batch, device))
        n += 1
    common.sync(device)
    return n, time.perf_counter() - t0, wait


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=None, help="videos in the cache (default 48 CPU, 1000 CUDA)")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--batch", type=int, default=None, help="clips per batch (default 16 CPU, 128 CUDA)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default min(8, cores))")
    p.add_argument("--channels", type=int, default=2048)
    p.add_argument("--drop-caches", action="store_true", help="also drop the whole page cache (root)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per measurement (default: ≥ 12 batches)")
    args = p.parse_args()
    device = common.device_of(args.device)
    cuda = device.type == "cuda"
    videos = 16 if args.quick else (args.videos or (1000 if cuda else 48))
    batch = 4 if args.quick else (args.batch or (128 if cuda else 16))
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    path = Path(args.work) / f"reader_{videos}x{args.seconds}s_{args.channels}.h5"
    t0 = time.perf_counter()
    make_cache(path, videos, args.seconds, args.channels)
    size = path.stat().st_size
    print(f"== reader: cache {path.name} {size / 1e9:.2f} GB ({videos} videos of {args.seconds} s), "
          f"batch {batch}, {workers} workers ({time.perf_counter() - t0:.1f} s to make)")
    from avstm.cache import FeatureCache
    with FeatureCache(path) as c:
        infos = data.video_infos(c, "train")
    second_bytes = 4 * (64 * args.channels + 24 * 512) * 2  # one second, float16 on disk
    res = {"device": str(device), "cache_gb": size / 1e9, "videos": videos, "batch": batch, "workers": workers}
    torch.manual_seed(0)
    model = STMNet(ModelConfig(visual_channels=args.channels, num_classes=29)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    t0 = time.perf_counter()
    memory = data.preload(path, infos)
    res["preload_s"] = time.perf_counter() - t0
    epochs = args.epochs or max(1, -(-12 * batch // len(infos)))
    res["epochs_per_measurement"] = epochs
    # one training step on device-resident data: the compute a batch needs
    v0 = torch.randn(batch, 4, args.channels, 8, 8, device=device)
    a0 = torch.randn(batch, 4, 512, 6, 4, device=device)
    y0 = torch.randint(0, 29, (batch, 4), device=device)

    def step():
        common.train_step(model, opt, amp, v0, a0, y0)

    res["step_s"] = common.timeit(step, device=device, repeat=5)
    torch.set_num_threads(1)  # one worker's view
    res["item_ms_float"] = 1e3 * item_cost(path, infos, batch, stored=False)
    res["item_ms_stored"] = 1e3 * item_cost(path, infos, batch, stored=True)
    torch.set_num_threads(os.cpu_count() or 1)
    res["ratio_item_float_to_stored"] = res["item_ms_float"] / res["item_ms_stored"]
    print(f"  one worker's work per clip (read + collate, warm): float32 items {res['item_ms_float']:.2f} ms, "
          f"stored items {res['item_ms_stored']:.2f} ms ({res['ratio_item_float_to_stored']:.1f}x fewer CPU-seconds)")
    for name, mem in (("hdf5_cold", None), ("hdf5_warm", None), ("stored_cold", None), ("stored_warm", None),
                      ("memory", memory), ("held", memory)):
        def make(first, name=name, mem=mem):
            if name == "held":
                return held(infos, mem, batch, first, epochs, device)
            return loader(path, infos, mem, batch, workers, first, epochs, stored=name.startswith("stored"))
        cold = name.endswith("_cold")
        if cold:
            evict(path, args.drop_caches)
        n, wall = read_only(make(0), device)
        res[f"{name}_read_batches_per_s"] = n / wall
        res[f"{name}_read_mb_per_s"] = n * batch * second_bytes / wall / 1e6
        if cold:
            evict(path, args.drop_caches)
        n, wall, wait = with_training(make(epochs), device, model, opt, amp)
        res[f"{name}_train_batches_per_s"] = n / wall
        res[f"{name}_data_wait_share"] = wait / wall
        print(f"  {name}: read {res[f'{name}_read_batches_per_s']:.1f} batches/s "
              f"({res[f'{name}_read_mb_per_s']:.0f} MB/s of float16 maps); with training steps "
              f"{n / wall:.2f} batches/s, data wait {100 * wait / wall:.1f}%")
    res["ratio_hdf5_warm_to_memory_read"] = res["hdf5_warm_read_batches_per_s"] / res["memory_read_batches_per_s"]
    res["ratio_hdf5_cold_to_memory_read"] = res["hdf5_cold_read_batches_per_s"] / res["memory_read_batches_per_s"]
    res["ratio_held_to_memory_read"] = res["held_read_batches_per_s"] / res["memory_read_batches_per_s"]
    for t in ("cold", "warm"):
        res[f"ratio_stored_to_hdf5_{t}_read"] = res[f"stored_{t}_read_batches_per_s"] / res[f"hdf5_{t}_read_batches_per_s"]
    print(f"  held tensors / DataLoader over memory: {res['ratio_held_to_memory_read']:.1f}× the batches per second; "
          f"stored / float32 items from HDF5: {res['ratio_stored_to_hdf5_cold_read']:.2f}× cold, "
          f"{res['ratio_stored_to_hdf5_warm_read']:.2f}× warm")
    # a 30-epoch AVE-sized run: 3339 videos, one second each per epoch, batch 128
    step_s = res["step_s"] * (AVE_BATCH / batch)  # compute scales with the batch
    steps = AVE_EPOCHS * (AVE_TRAIN // AVE_BATCH)
    for name in ("hdf5_cold", "stored_cold", "memory", "held"):
        read_s = AVE_BATCH / batch / res[f"{name}_read_batches_per_s"]  # all workers together
        res[f"ave30_{name}_estimate_s"] = steps * max(step_s, read_s)
    res["ave30_step_s"] = step_s
    print(f"  30 epochs of AVE (3,339 train videos, batch 128, {steps} steps): "
          f"~{res['ave30_hdf5_cold_estimate_s'] / 60:.1f} min from a cold HDF5 cache "
          f"({res['ave30_stored_cold_estimate_s'] / 60:.1f} with stored items), "
          f"~{res['ave30_memory_estimate_s'] / 60:.1f} min from memory through DataLoader workers, "
          f"~{res['ave30_held_estimate_s'] / 60:.1f} min from tensors held on the device (training steps only; "
          f"step {step_s * 1000:.0f} ms at batch 128, scaled from batch {batch}; one random second "
          f"per video; the HDF5 figure assumes every read is cold)")
    common.report(f"reader_{device.type}", res, args.json)


if __name__ == "__main__":
    main()
