"""Extraction throughput: `avstm extract` (the library function) end to end against its parts.

Measured in one run, on one device, at one batch size:
  bare      the visual backbone alone (preprocess + forward on frames already on the device), and
            with the VGGish trunk too: the ceiling of the model side;
  decode    the parallel decode rate: the extractor's DataLoader (one pass per video, kept frames
            converted and resized, log-mel) with no model, --decode-workers processes;
  writer    the cache writer alone (`avstm.cache.CacheWriter`, its one background thread): frames/s
            it stores from float32 maps of this backbone's size (10 s videos at 4 fps, float16
            cache); it must stay well above the decode rate, since on a GPU it is the next limit;
  extract   `avstm.extract.pipeline.extract` over the same clips: frames/s over the loop (after the
            backbones are loaded) and over the whole call, and the time split among decoding,
            batching, transfer, backbones and HDF5 writes (on CUDA, a second `profile=True` run
            synchronises to separate transfer from compute).
Ratios printed: extract / bare (the figure that matters on CPU, where the model is the
bottleneck: backbone share of the loop's wall time), extract / decode (on a GPU, where decoding
is the bottleneck).

    python bench/bench_extract.py --backbone resnet152 --device cpu --videos 4
    python bench/bench_extract.py --backbone resnet152 --device cuda --videos 96 --batch-size 256
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from avstm.cache import CacheWriter, VideoRecord  # noqa: E402
from avstm.datasets import Dataset, VideoItem  # noqa: E402
from avstm.extract.config import ExtractConfig  # noqa: E402
from avstm.errors import HardwareDecodeError  # noqa: E402
from avstm.extract.pipeline import FeatureExtractor, check_decode_device, decode_loader, extract  # noqa: E402


def make_clips(work: Path, distinct: int, seconds: float) -> list[Path]:
    """``distinct`` reference clips, written in parallel (reused when present)."""
    folder = work / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip{i:03d}_{int(seconds)}s.mp4" for i in range(distinct)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
            list(pool.map(_write_one, [(str(paths[i]), seconds, i) for i in missing]))
        print(f"wrote {len(missing)} reference clips in {time.perf_counter() - t0:.1f} s")
    return paths


def _write_one(args):
    path, seconds, seed = args
    common.write_reference_clip(path, seconds=seconds, seed=seed)


def dataset_of(paths: list[Path], videos: int, tag: str) -> Dataset:
    """``videos`` items cycling over the clips (distinct ids; a clip may be decoded several times)."""
    items = [VideoItem(id=f"{tag}{k:04d}", path=str(paths[k % len(paths)]), label="tone", split="train",
                       segments=((0.0, 1e9, "tone"),)) for k in range(videos)]
    return Dataset(items=items, classes=["tone"])


def bare_backbone(cfg: ExtractConfig, device: torch.device, repeat: int) -> dict:
    """frames/s of the visual backbone alone, and with the audio trunk, on device-resident batches."""
    ex = FeatureExtractor(cfg)
    b = cfg.batch_size
    frames = torch.randint(0, 256, (b, cfg.frame_size, cfg.frame_size, 3), dtype=torch.uint8, device=device)
    logmel = torch.randn(b, 96, 64, device=device)

    @torch.inference_mode()
    def visual():
        x = ex.preprocess(frames)
        with ex.autocast:
            return ex.visual_net(x)

    @torch.inference_mode()
    def audio():
        with ex.autocast:
            return ex.audio_net(logmel)

    tv = common.timeit(visual, device=device, warmup=2 if cfg.compile else 1, repeat=repeat)
    ta = common.timeit(audio, device=device, warmup=1, repeat=repeat)
    return {"bare_visual_fps": b / tv, "bare_audio_fps": b / ta, "bare_visual_audio_fps": b / (tv + ta),
            "visual_channels": ex.config.visual_channels}


def decode_rate(data: Dataset, cfg: ExtractConfig) -> dict:
    """Kept frames/s of the decoding DataLoader alone (cfg.workers processes)."""
    t0 = time.perf_counter()
    frames = worker_seconds = 0.0
    for d in decode_loader(data.items, cfg):
        frames += len(d.frames)
        worker_seconds += d.seconds
    wall = time.perf_counter() - t0
    return {"decode_fps": frames / wall, "decode_frames": int(frames), "decode_workers": cfg.workers,
            "decode_fps_per_worker": frames / worker_seconds}


def writer_rate(work: Path, channels: int, videos: int, *, seconds: int = 10, fps: int = 4) -> dict:
    """Frames/s that the cache writer stores (float32 maps in, float16 parts out, the final join
    excluded), fed as fast as it takes them: what the extractor's writer thread can sustain."""
    rng = np.random.default_rng(0)
    visual = (rng.standard_normal((seconds, fps, 8, 8, channels), dtype=np.float32) * 3e4)  # scaled
    audio = rng.random((seconds, fps, 6, 4, 512), dtype=np.float32)
    times = (np.arange(seconds * fps).reshape(seconds, fps) + 0.5) / fps
    out = work / "writer_bench.h5"
    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    out.unlink(missing_ok=True)
    w = CacheWriter(out, config={"dtype": "float16", "visual_channels": channels}, classes=["tone"])
    t0 = time.perf_counter()
    for k in range(videos):
        w.write(VideoRecord(id=f"w{k}", visual=visual, audio=audio, times=times, labels=np.zeros(seconds, np.int64),
                            label=0, split="train", source="bench", duration=float(seconds)))
    w.flush()
    wall = time.perf_counter() - t0
    w.close()
    out.unlink()
    return {"writer_fps": videos * seconds * fps / wall, "writer_ms_per_video": 1e3 * wall / videos}


def run_extract(data: Dataset, out: Path, cfg: ExtractConfig, *, profile: bool) -> dict:
    if out.exists():
        out.unlink()
    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    r = extract(data, out, config=cfg, progress=False, profile=profile)
    if r.failed:
        raise SystemExit(f"extraction failed: {r.failed[:3]}")
    loop = r.wall - r.timings["setup"] - r.timings["close"]  # the steady state: no loading, no final join
    res = {"frames": r.frames, "wall_s": r.wall, "loop_s": loop, "fps_loop": r.frames / loop,
           "fps_total": r.frames / r.wall}
    res.update({f"t_{k}_s": v for k, v in r.timings.items()})
    res["backbone_share_of_loop"] = r.timings["backbone"] / loop
    res["decode_wait_share_of_loop"] = r.timings["decode_wait"] / loop
    res["write_share_of_loop"] = r.timings["write"] / loop
    out.unlink()
    return res


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet152", choices=["resnet152", "efficientnet_lite0"])
    p.add_argument("--videos", type=int, default=None, help="videos per run (default: 4 on CPU, 96 on CUDA)")
    p.add_argument("--distinct", type=int, default=None, help="distinct clips generated (default: min(videos, 16))")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (the AVE reference: 10 s)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per batch (default 32 CPU, 256 CUDA)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes of extract (default: 1 on CPU, cores - 1 on CUDA)")
    p.add_argument("--decode-workers", type=int, default=None,
                   help="processes of the decode-rate reference (default: all cores)")
    p.add_argument("--decode-threads", type=int, default=1)
    p.add_argument("--decode-device", default="cpu", help="cpu, or cuda: NVDEC (extract and the decode reference)")
    p.add_argument("--compile", action="store_true", help="torch.compile the visual backbone")
    args = p.parse_args()
    device = common.device_of(args.device)
    cuda = device.type == "cuda"
    cores = os.cpu_count() or 1
    videos = 2 if args.quick else (args.videos or (96 if cuda else 4))
    batch = 8 if args.quick else (args.batch_size or (256 if cuda else 32))
    # on CUDA the main process (batching, copies, the cache writer thread) needs about a core
    workers = args.workers if args.workers is not None else (max(1, cores - 1) if cuda else 1)
    work = Path(args.work)
    paths = make_clips(work, args.distinct or min(videos, 16), args.seconds)
    cfg = ExtractConfig(visual_backbone=args.backbone, visual_weights="random", audio_weights="random",
                        device=str(device), batch_size=batch, workers=workers,
                        decode_threads=args.decode_threads, decode_device=args.decode_device,
                        compile=args.compile)
    if args.decode_device != "cpu":
        try:
            check_decode_device(dataset_of(paths, 1, "c").items, cfg)
        except HardwareDecodeError as e:
            raise SystemExit(f"extract with --decode-device {args.decode_device}: not measured ({e})") from None
    name = (f"extract_{args.backbone}_{device.type}" + ("_compile" if args.compile else "")
            + ("_nvdec" if args.decode_device != "cpu" else ""))
    print(f"== {name}: {videos} videos of {args.seconds:.0f} s (480x360 30 fps H.264 + AAC), "
          f"batch {batch}, {workers} decode workers, {cores} cores")
    res = {"backbone": args.backbone, "device": str(device), "batch_size": batch, "videos": videos,
           "workers": workers, "compile": args.compile, "decode_device": args.decode_device}
    res.update(bare_backbone(cfg, device, repeat=3 if not args.quick else 1))
    print(f"bare visual backbone: {res['bare_visual_fps']:.1f} frames/s; with the audio trunk "
          f"{res['bare_visual_audio_fps']:.1f} frames/s")
    dcfg = cfg.replace(workers=args.decode_workers or cores)
    res.update(decode_rate(dataset_of(paths, videos, "d"), dcfg))
    print(f"parallel decode ({dcfg.workers} workers): {res['decode_fps']:.1f} kept frames/s "
          f"({res['decode_fps_per_worker']:.1f} per worker)")
    res.update(writer_rate(work, res["visual_channels"], 16 if args.quick else 64))
    res["ratio_writer_to_decode"] = res["writer_fps"] / res["decode_fps"]
    print(f"cache writer alone (one thread, {res['visual_channels']} channels): {res['writer_fps']:.0f} "
          f"frames/s ({res['writer_ms_per_video']:.1f} ms per 10 s video) = "
          f"{res['ratio_writer_to_decode']:.1f} x the parallel decode rate")
    out = work / f"{name}.h5"
    if cuda:  # warm up cudnn autotuning / compilation in this process
        run_extract(dataset_of(paths, max(2, batch // 40 + 1), "w"), out, cfg, profile=False)
    e = run_extract(dataset_of(paths, videos, "e"), out, cfg, profile=False)
    res.update({f"extract_{k}": v for k, v in e.items()})
    if cuda:
        e2 = run_extract(dataset_of(paths, videos, "p"), out, cfg, profile=True)
        res.update({f"profiled_{k}": v for k, v in e2.items()})
    res["ratio_extract_to_bare_visual"] = res["extract_fps_loop"] / res["bare_visual_fps"]
    res["ratio_extract_to_bare_visual_audio"] = res["extract_fps_loop"] / res["bare_visual_audio_fps"]
    res["ratio_extract_to_decode"] = res["extract_fps_loop"] / res["decode_fps"]
    print(f"extract: {e['fps_loop']:.1f} frames/s over the loop ({e['fps_total']:.1f} with setup and "
          f"the final join: {e['t_setup_s']:.1f} + {e['t_close_s']:.1f} s); "
          f"ratio to bare visual {res['ratio_extract_to_bare_visual']:.2f}, to bare visual+audio "
          f"{res['ratio_extract_to_bare_visual_audio']:.2f}, to parallel decode "
          f"{res['ratio_extract_to_decode']:.2f}; backbone share of loop {e['backbone_share_of_loop']:.2f}")
    common.report(name, res, args.json)


if __name__ == "__main__":
    main()
