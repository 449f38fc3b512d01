"""`avstm localize` on one video, end to end, against the backbones alone.

A checkpoint of an untrained STMNet (random weights; the speed does not depend on them) is
written with an extract config of random-init backbones, then `avstm.localize.run.localize_to`
(what `avstm localize --video` runs) localizes a reference clip (default 1280×720 25 fps H.264
+ 44.1 kHz AAC) into a folder: decode, backbones, memory, boxes, and the overlay at the
source frame rate (every frame drawn and encoded by a worker thread beside the model, the
audio copied), boxes.json. Its wall-clock time per sampled frame is compared with the
backbones alone on the same sampled frames (`FeatureExtractor.visual` + `.audio` in batches
of --batch-size): the ratio is the whole command's cost over the backbones' cost, as wall
time (median of --repeat alternated pairs, and each pair's own ratio) and as CPU time (the
process's, all threads: what the overlay adds on a machine whose cores are all busy). The
untrained model's classifier is biased to an event class, so that every frame is sounding
and the overlay draws a heatmap, boxes and scores on every frame (the costly case).

    python bench/bench_localize.py --device cpu --backbone efficientnet_lite0
    python bench/bench_localize.py --device cpu --backbone resnet152 --width 1280 --height 720
    python bench/bench_localize.py --device cuda --rpn
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from avstm.extract.config import ExtractConfig  # noqa: E402
from avstm.extract.pipeline import FeatureExtractor, audio_examples  # noqa: E402
from avstm.localize.run import LocalizeConfig, load_localize_model, localize_to  # noqa: E402
from avstm.memnet.checkpoint import save_checkpoint  # noqa: E402
from avstm.memnet.model import ModelConfig, STMNet  # noqa: E402
from avstm import media  # noqa: E402


def make_checkpoint(path: Path, backbone: str, device: str) -> FeatureExtractor:
    """An untrained model's checkpoint at ``path``; returns the backbones it names."""
    ex = FeatureExtractor(ExtractConfig(visual_backbone=backbone, visual_weights="random",
                                        audio_weights="random", device=device))
    net = STMNet(ModelConfig(visual_channels=ex.config.visual_channels, num_classes=29))
    with torch.no_grad():  # class 0 wins everywhere: every frame sounds, with a heatmap and boxes
        net.classifier[-1].bias[0] = 1e3
    save_checkpoint(path, net, train_config={}, classes=[f"c{i}" for i in range(28)],
                    extract_config=ex.config.to_dict(), epoch=0)
    return ex


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet152", choices=["resnet152", "efficientnet_lite0"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rpn", action="store_true", help="also time the detector-proposal boxes")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=25, help="the clip's own frame rate")
    p.add_argument("--repeat", type=int, default=3, help="end-to-end runs, each followed by a reference run")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's choice); 1 makes the CPU times the work done, "
                        "without the time torch's idle threads spin on a busy machine")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = common.device_of(args.device)
    seconds = 2.0 if args.quick else args.seconds
    work = Path(args.work)
    clip = work / "clips" / f"localize_{int(seconds)}s_{args.width}x{args.height}_{args.fps}.mp4"
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        common.write_reference_clip(clip, seconds=seconds, seed=99, width=args.width,
                                    height=args.height, fps=args.fps)
    res = {"device": str(device), "backbone": args.backbone, "clip_seconds": seconds,
           "clip": f"{args.width}x{args.height} {args.fps} fps", "batch_size": args.batch_size,
           "torch_threads": torch.get_num_threads()}
    print(f"== localize: {args.backbone} on {device}, {clip.name}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        ckpt = Path(tmp) / "model.pt"
        ex = make_checkpoint(ckpt, args.backbone, str(device))
        clip_data = media.decode(clip, fps=ex.config.fps, size=(ex.config.frame_size, ex.config.frame_size))
        examples = audio_examples(clip_data.audio, clip_data.times)
        b = args.batch_size

        def backbones():
            for k in range(0, len(examples), b):
                ex.visual(clip_data.frames[k:k + b])
                ex.audio(examples[k:k + b])
            common.sync(device)

        methods = ["otsu"] + (["rpn"] if args.rpn else [])
        for method in methods:
            cfg = LocalizeConfig(device=str(device), boxes=method, batch_size=args.batch_size,
                                 detector_weights="random")
            t0 = time.perf_counter()
            model = load_localize_model(ckpt, config=cfg)
            load_s = time.perf_counter() - t0
            localize_to(model, clip, Path(tmp) / "warm", config=cfg, progress=False)  # first calls
            backbones()
            walls, refs, cpus, ref_cpus, ratios = [], [], [], [], []
            for _ in range(args.repeat):  # alternated, so that a shared machine's load hits both alike
                t0, c0 = time.perf_counter(), time.process_time()
                result, _ = localize_to(model, clip, Path(tmp) / method, config=cfg, progress=False)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                t0, c0 = time.perf_counter(), time.process_time()
                backbones()
                refs.append(time.perf_counter() - t0)
                ref_cpus.append(time.process_time() - c0)
                ratios.append(walls[-1] / refs[-1] * len(examples) / len(result.frames))
            n = len(result.frames)
            wall, tb = float(np.median(walls)) / n, float(np.median(refs)) / len(examples)
            cpu, ref_cpu = float(np.median(cpus)) / n, float(np.median(ref_cpus)) / len(examples)
            res[f"{method}_ratios_of_each_pair"] = [round(r, 3) for r in ratios]
            res[f"{method}_cpu_s_per_frame"] = cpu
            res[f"{method}_reference_cpu_s_per_frame"] = ref_cpu
            res[f"{method}_ratio_cpu"] = cpu / ref_cpu
            res[f"{method}_frames"] = n
            res[f"{method}_overlay_frames"] = result.overlay["frames"]
            res[f"{method}_load_s"] = load_s
            res[f"{method}_end_to_end_s_per_frame"] = wall
            res[f"{method}_reference_backbones_s_per_frame"] = tb
            res[f"{method}_ratio_end_to_end_to_backbones"] = wall / tb
            for key, value in result.timings.items():
                res[f"{method}_{key}_s_per_frame"] = value / n
            print(f"  {method}: {n} sampled frames, {result.overlay['frames']} overlay frames; "
                  f"end to end {wall:.4f} s/frame (median of {args.repeat}), the backbones alone on "
                  f"the same frames {tb:.4f}: ratio {wall / tb:.2f} (each pair: "
                  + ", ".join(f"{r:.2f}" for r in ratios) + f"); CPU s/frame {cpu:.4f} vs "
                  f"{ref_cpu:.4f}: ratio {cpu / ref_cpu:.2f}; last run's main thread s/frame: "
                  + ", ".join(f"{k} {v / n:.4f}" for k, v in result.timings.items())
                  + f" (loading {load_s:.1f} s)")
    common.report(f"localize_{device.type}", res, args.json)


if __name__ == "__main__":
    main()
