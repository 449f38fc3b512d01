"""The extract stage: decode videos in parallel workers, run the frozen backbones in large
batches, write per-second maps into the HDF5 cache.

    items ──(DataLoader workers: decode + log-mel)──► frames, log-mel examples
          ──(main: backbones in batches, autocast on CUDA)──► maps
          ──(writer thread)──► cache parts ──(close)──► cache.h5

A video that fails (missing, corrupt, no video stream, non-finite features) is reported and
skipped; it never stops the run nor leaves a partial entry. Under ``torchrun`` each rank takes
every world-th video into its own shard and rank 0 merges the shards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from avstm import media
from avstm.cache import CacheWriter, VideoRecord, merge_caches
from avstm.datasets import Dataset, VideoItem, second_labels
from avstm.errors import AvstmError, MediaError
from avstm.extract.backbones import VisualBackbone, load_visual_backbone, weights_checksum
from avstm.extract.config import CONTENT_FIELDS, ExtractConfig
from avstm.extract.vggish import example_windows, load_vggish, log_mel


def resolve_device(name: str) -> torch.device:
    """"auto" → cuda when present, else cpu; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class FeatureExtractor:
    """The frozen backbones on a device: frames → visual maps, waveform → audio maps.

    Used by ``extract`` over datasets and by ``localize`` over single videos.
    """

    def __init__(self, config: ExtractConfig):
        self.device = resolve_device(config.device)
        self.batch_size = config.batch_size
        self.visual_backbone: VisualBackbone = load_visual_backbone(
            config.visual_backbone, weights=config.visual_weights, tap=config.visual_tap, seed=config.seed)
        self.vggish = load_vggish(config.audio_weights, seed=config.seed)
        # the checksums and channels go into the cache's config (computed before moving)
        self.config = config.replace(
            visual_tap=self.visual_backbone.tap, visual_channels=self.visual_backbone.channels,
            visual_weights_sha=self.visual_backbone.checksum(), audio_weights_sha=weights_checksum(self.vggish))
        cuda = self.device.type == "cuda"
        self.visual_net = self.visual_backbone.module.to(self.device)
        self.audio_net = self.vggish.to(self.device)
        if cuda:
            self.visual_net = self.visual_net.to(memory_format=torch.channels_last)
        if config.compile:
            self.visual_net = torch.compile(self.visual_net)
        # bf16 on CUDA: float16 overflows on random-init ResNet-152 features (~1e8); CPU stays fp32
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    @torch.inference_mode()
    def visual(self, frames: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB → (N, h, w, C_v) float32 channels-last maps (8×8 at 256×256)."""
        frames = torch.as_tensor(frames)
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = frames[i:i + self.batch_size].to(self.device, non_blocking=True)
            x = self.visual_backbone.preprocess(x)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast:
                y = self.visual_net(x)
            out.append(y.float().permute(0, 2, 3, 1).cpu())  # (B, h, w, C)
        return torch.cat(out).numpy() if out else np.zeros((0, 8, 8, self.config.visual_channels), np.float32)

    @torch.inference_mode()
    def audio(self, examples: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 96, 64) float32 log-mel examples → (N, 6, 4, 512) float32 channels-last maps."""
        examples = torch.as_tensor(examples)
        out = []
        for i in range(0, len(examples), 4 * self.batch_size):
            x = examples[i:i + 4 * self.batch_size].to(self.device, non_blocking=True)
            with self.autocast:
                y = self.audio_net(x)  # (B, 512, 6, 4)
            out.append(y.float().permute(0, 2, 3, 1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 6, 4, 512), np.float32)


def audio_examples(wave: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(M,) 16 kHz mono waveform, (N,) times → (N, 96, 64) float32 log-mel examples centred on the times."""
    return log_mel(example_windows(wave, np.asarray(times).reshape(-1))).numpy().astype(np.float32)


@dataclasses.dataclass
class Decoded:
    """A decoded video ready for the backbones (or the reason it failed)."""

    item: VideoItem
    frames: torch.Tensor | None = None  # (N, H, W, 3) uint8
    logmel: torch.Tensor | None = None  # (N, 96, 64) float32
    times: np.ndarray | None = None  # (S, T)
    duration: float = 0.0
    has_audio: bool = True
    error: str | None = None
    seconds: float = 0.0  # decoding time


class _DecodeSet(torch.utils.data.Dataset):
    def __init__(self, items: list[VideoItem], config: ExtractConfig):
        self.items, self.config = items, config

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Decoded:
        item, cfg = self.items[i], self.config
        t0 = time.perf_counter()
        try:
            clip = media.decode(item.path, fps=cfg.fps, size=(cfg.frame_size, cfg.frame_size),
                                threads=cfg.decode_threads)
        except MediaError as e:
            return Decoded(item, error=e.problem)
        except Exception as e:  # an FFmpeg oddity we did not foresee: report it, keep going
            return Decoded(item, error=f"cannot decode ({type(e).__name__}: {e})")
        times = clip.times.reshape(-1, cfg.fps)
        logmel = audio_examples(clip.audio, times)
        return Decoded(item, frames=torch.from_numpy(clip.frames), logmel=torch.from_numpy(logmel),
                       times=times, duration=clip.info.duration, has_audio=clip.info.has_audio,
                       seconds=time.perf_counter() - t0)


def _worker_init(_):
    torch.set_num_threads(1)


@dataclasses.dataclass
class ExtractResult:
    """What a run did. ``failed``: (id, path, reason) per video that could not be extracted."""

    out: str
    done: int = 0
    skipped: int = 0  # already in the cache
    failed: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    frames: int = 0
    wall: float = 0.0
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # decode_wait, backbone, write
    config: dict = dataclasses.field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    def summary(self) -> str:
        lines = [f"{self.out}: {self.done} videos extracted, {self.skipped} already cached, "
                 f"{len(self.failed)} failed; {self.frames} frames in {self.wall:.1f} s "
                 f"({self.frames_per_second:.1f} frames/s)"]
        lines += [f"  failed: {path}: {reason}" for _, path, reason in self.failed]
        return "\n".join(lines)


def _dist() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batches(loader: Iterator[Decoded], batch_frames: int, timings: dict) -> Iterator[list[Decoded]]:
    """Group decoded videos until they hold ``batch_frames`` frames (failures pass alone)."""
    group: list[Decoded] = []
    n = 0
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            d = next(it)
        except StopIteration:
            break
        finally:
            timings["decode_wait"] += time.perf_counter() - t0
        if d.error is not None:
            yield [d]
            continue
        group.append(d)
        n += len(d.frames)
        if n >= batch_frames:
            yield group
            group, n = [], 0
    if group:
        yield group


def extract(dataset: Dataset, out: str | os.PathLike, *, config: ExtractConfig = ExtractConfig(),
            progress: bool = True) -> ExtractResult:
    """Extract the features of ``dataset``'s videos into the cache ``out`` (resumable).

    Videos already in ``out`` are skipped without reading their data; ``config.limit`` caps the
    number of new videos. Returns the run's summary; failures are listed, not raised.
    """
    out = Path(out)
    rank, world = _dist()
    t_start = time.perf_counter()
    extractor = FeatureExtractor(config)
    cfg = extractor.config
    stored = {k: v for k, v in cfg.to_dict().items()}
    target = out if world == 1 else out.with_name(f"{out.stem}.shard{rank}of{world}{out.suffix}")
    result = ExtractResult(out=str(out), config=stored,
                           timings={"decode_wait": 0.0, "backbone": 0.0, "write": 0.0})
    with CacheWriter(target, config=stored, classes=dataset.classes, content_fields=CONTENT_FIELDS) as writer:
        done = writer.done_ids()
        if world > 1 and out.exists():
            from avstm.cache import FeatureCache
            with FeatureCache(out) as merged:
                done |= set(merged.ids())
        mine = [it for i, it in enumerate(dataset.items) if i % world == rank]
        todo = [it for it in mine if it.id not in done]
        result.skipped = len(mine) - len(todo)
        if cfg.limit is not None:
            todo = todo[:cfg.limit]
        loader = torch.utils.data.DataLoader(
            _DecodeSet(todo, cfg), batch_size=None, shuffle=False, num_workers=cfg.workers,
            collate_fn=lambda d: d, worker_init_fn=_worker_init if cfg.workers else None,
            prefetch_factor=4 if cfg.workers else None, persistent_workers=False,
            pin_memory=extractor.device.type == "cuda")
        bar = tqdm(total=len(todo), unit="video", disable=not progress or not sys.stderr.isatty(),
                   desc=f"extract{'' if world == 1 else f' [rank {rank}]'}")
        for group in _batches(loader, cfg.batch_size, result.timings):
            if group[0].error is not None:
                d = group[0]
                result.failed.append((d.item.id, d.item.path, d.error))
                bar.update(1)
                continue
            t0 = time.perf_counter()
            visual = extractor.visual(torch.cat([d.frames for d in group]))
            audio = extractor.audio(torch.cat([d.logmel for d in group]))
            result.timings["backbone"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            start = 0
            for d in group:
                n = len(d.frames)
                s, t = d.times.shape
                rec = VideoRecord(
                    id=d.item.id, visual=visual[start:start + n].reshape(s, t, *visual.shape[1:]),
                    audio=audio[start:start + n].reshape(s, t, *audio.shape[1:]), times=d.times,
                    labels=second_labels(d.item, s, dataset.classes),
                    label=dataset.classes.index(d.item.label), split=d.item.split, source=d.item.path,
                    duration=d.duration, has_audio=d.has_audio)
                start += n
                if not (np.isfinite(rec.visual).all() and np.isfinite(rec.audio).all()):
                    result.failed.append((d.item.id, d.item.path, "backbone produced inf or NaN"))
                    continue
                writer.write(rec)
                result.done += 1
                result.frames += n
            result.timings["write"] += time.perf_counter() - t0
            bar.update(len(group))
            bar.set_postfix(frames_per_s=f"{result.frames / max(time.perf_counter() - t_start, 1e-9):.1f}")
        bar.close()
        t0 = time.perf_counter()
    result.timings["write"] += time.perf_counter() - t0  # the final join
    for vid, reason in writer.rejected:
        result.done -= 1
        result.failed.append((vid, next(it.path for it in dataset.items if it.id == vid), reason))
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        if rank == 0:
            shards = [out.with_name(f"{out.stem}.shard{r}of{world}{out.suffix}") for r in range(world)]
            merge_caches(([out] if out.exists() else []) + shards, out)
            for s in shards:
                s.unlink()
        dist.barrier()
    result.wall = time.perf_counter() - t_start
    return result
