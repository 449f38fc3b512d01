"""Shared helpers of the benchmarks: generated reference clips, timing, device choice, JSON output.

The clips imitate the AVE reference (YouTube 480×360, 30 fps H.264, AAC): a textured
background panning behind moving discs with mild per-frame grain, so that the encoder produces
P- and B-frames of a realistic size, and 44.1 kHz stereo audio so that decoding resamples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

REF_WIDTH, REF_HEIGHT, REF_FPS = 480, 360, 30


def clip_frames(seconds: float, *, width: int = REF_WIDTH, height: int = REF_HEIGHT, fps: int = REF_FPS,
                seed: int = 0):
    """Yield (H, W, 3) uint8 RGB frames of a moving scene, ``seconds * fps`` of them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height * 2, 0:width * 2].astype(np.float32)
    base = np.stack([128 + 60 * np.sin(xx / 23.0 + c) * np.cos(yy / 31.0 - c) for c in (0.0, 1.3, 2.6)],
                    axis=-1)  # (2H, 2W, 3), larger than a frame so that it can pan
    base = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    discs = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 60), rng.uniform(-4, 4),
              rng.uniform(-3, 3), rng.integers(0, 255, 3)) for _ in range(4)]
    y, x = np.ogrid[0:height, 0:width]
    for i in range(int(round(seconds * fps))):
        ox, oy = int(i * 1.5) % width, int(i * 0.7) % height
        frame = base[oy:oy + height, ox:ox + width].copy()
        for cx, cy, r, vx, vy, colour in discs:
            px, py = (cx + vx * i) % width, (cy + vy * i) % height
            frame[(x - px) ** 2 + (y - py) ** 2 < r * r] = colour
        grain = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
        yield np.clip(frame.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def write_reference_clip(path: str | os.PathLike, *, seconds: float = 10.0, seed: int = 0,
                         width: int = REF_WIDTH, height: int = REF_HEIGHT, fps: int = REF_FPS) -> Path:
    """An mp4 like the AVE reference: H.264 (libx264, crf 23) + AAC 44.1 kHz stereo."""
    from avstm.media import write_mp4

    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.05 * np.random.default_rng(seed).normal(size=t.size)
    audio = np.stack([tone, tone[::-1]]).astype(np.float32)
    return write_mp4(path, clip_frames(seconds, width=width, height=height, fps=fps, seed=seed), fps,
                     audio, sample_rate=sr, threads=1)


def reference_clips(folder: str | os.PathLike, count: int, *, seconds: float = 10.0) -> list[Path]:
    """``count`` reference clips in ``folder`` (reused when already there)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"clip{i:03d}_{int(seconds)}s.mp4"
        if not p.exists():
            write_reference_clip(p, seconds=seconds, seed=i)
        paths.append(p)
    return paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, opt, amp, visual, audio, targets) -> None:
    """One STMNet training step as ``avstm train`` takes it: forward under ``amp``, cross-entropy
    over every step's logits, backward, Adam. visual (B, T, C_v, 8, 8), audio (B, T, 512, 6, 4),
    targets (B, T)."""
    opt.zero_grad(set_to_none=True)
    with amp:
        logits = model(visual, audio).logits.flatten(0, 1).float()
        loss = torch.nn.functional.cross_entropy(logits, targets.flatten())
    loss.backward()
    opt.step()


def timeit(fn, *, device: torch.device, warmup: int = 1, repeat: int = 3, min_time: float = 0.0) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls (synchronising CUDA around each)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--work", default=os.environ.get("AVSTM_BENCH_WORK", "/tmp/avstm-bench"),
                   help="folder for generated clips and caches (reused between runs)")
    p.add_argument("--json", default=None, help="append this benchmark's results to this JSON file")
    p.add_argument("--quick", action="store_true", help="smallest sizes (a smoke run)")
    return p


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def machine() -> dict:
    info = {"host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def report(name: str, results: dict, json_path: str | None) -> None:
    """Print ``results`` and merge them under ``name`` into the JSON file (if given)."""
    print(f"== {name}: results")
    for k, v in results.items():
        print(f"  {k}: {round(v, 4) if isinstance(v, float) else v}")
    if json_path:
        path = Path(json_path)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[name] = {"machine": machine(), **results}
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
