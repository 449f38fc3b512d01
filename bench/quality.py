"""The quality benchmark (issue 3): does the memory network localize, and does memory help?

synth → extract (EfficientNet-Lite0 with its shipped ImageNet weights; VGGish trunk with random
weights, since its AudioSet weights cannot be downloaded offline) → train with memory none /
unimodal / full → evaluate on the test split against the model-free baselines, normal and hard
videos apart. Every step is resumable: re-running reuses what is on disk.

    python bench/quality.py --out /tmp/avstm-quality            # defaults: 400 videos of 8 s
    python bench/quality.py --out DIR --videos 120 --epochs 10  # a quicker look

Prints the ablation table (success@0.5, mean cIoU, AUC, box IoU@0.5, pointing game, ceilings)
for the value:0.5 binarisation (the paper's) and for top:0.5, and writes DIR/quality-LABELS.json
and DIR/eval-LABELS/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from avstm.datasets import read_ave
from avstm.evaluate.annotations import read_ground_truth
from avstm.evaluate.report import format_method_table
from avstm.evaluate.run import EvaluateConfig, evaluate_ablation
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import extract
from avstm.memnet.train import TrainConfig, train
from avstm.synth.config import SynthConfig
from avstm.synth.generate import generate

MODES = ("none", "unimodal", "full")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--hard", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--labels", default="video", choices=("video", "segment"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out: Path = args.out
    seconds: dict[str, float] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        print(f"[quality] {name}: {seconds[name]:.0f} s", flush=True)
        return value

    data = out / "data"
    timed("synth", lambda: generate(data, config=SynthConfig(videos=args.videos, seconds=args.seconds,
                                                             hard=args.hard, seed=args.seed),
                                    workers=args.workers + 1, progress=False))
    features = out / "features.h5"
    ecfg = ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights="imagenet",
                         audio_weights="random", workers=args.workers, batch_size=32, device=args.device)
    timed("extract", lambda: extract(read_ave(data), features, config=ecfg, progress=False))
    checkpoints = {}
    for mode in MODES:
        run = out / "runs" / f"{mode}-{args.labels}"
        if not (run / "best.pt").exists():
            tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, memory=mode,
                               labels=args.labels, seed=args.seed, workers=0, device=args.device)
            timed(f"train {mode}", lambda: train(features, run, config=tcfg, progress=False))
        checkpoints[{"none": "STM without temporal memory", "unimodal": "STM U memory",
                     "full": "STM C+U memory"}[mode]] = run / "best.pt"
    truth = read_ground_truth(data / "boxes.json")
    ecfg_eval = EvaluateConfig(device=args.device, figure_videos=0)
    result = timed("evaluate", lambda: evaluate_ablation(
        truth, checkpoints, features=features, config=ecfg_eval,
        baselines=("centre", "whole-image", "uniform"), out_dir=out / f"eval-{args.labels}",
        progress=False))
    print(result.table)
    # the same methods under the top:0.5 binarisation (EZ-VSL's), which a softmax map can pass
    tables = {"value:0.5": result.table}
    for mode in ("top:0.5",):
        parts = [format_method_table({n: r.report.overall for n, r in result.methods.items()},
                                     mode=mode, title=f"all videos ({mode})")]
        for g in sorted({g for r in result.methods.values() for g in r.groups}):
            parts.append(format_method_table({n: r.groups[g] for n, r in result.methods.items()
                                              if g in r.groups}, mode=mode, title=f"{g} videos ({mode})"))
        tables[mode] = "\n\n".join(parts)
        print("\n" + tables[mode])
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": seconds, "tables": tables,
               "ablation": str(result.path)}
    path = out / f"quality-{args.labels}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n[quality] wrote {path}; seconds: " +
          ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
