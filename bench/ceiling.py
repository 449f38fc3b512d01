"""How well can the cached visual features localize at all? A supervised upper reference for
bench/quality.py: a linear probe trained on the true object class of every 8×8 cell (cells
whose centre lies in the box of exactly one object, or in none: background), whose map for a
test frame is the logit of the video's true event class. No weak supervision, no audio: what
the features carry, not what a method learns.

    python bench/quality.py --out /tmp/avstm-quality        # first: data and features
    python bench/ceiling.py --out /tmp/avstm-quality        # then: the probe on the same split

Prints pointing and success@0.5 (value:0.5 and top:0.5) of the probe's maps, all / normal / hard
test videos, and writes DIR/ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from avstm.cache import FeatureCache
from avstm.evaluate.annotations import read_ground_truth
from avstm.evaluate.inputs import write_maps
from avstm.evaluate.run import EvaluateConfig, evaluate
from avstm.synth.classes import CLASS_NAMES


def cell_labels(frame_boxes: list[dict], width: float, height: float, grid: int) -> np.ndarray:
    """(grid, grid) int: the synth class index of the one object whose box holds the cell's
    centre, len(CLASS_NAMES) for none, -1 where boxes of two classes overlap (left out)."""
    out = np.full((grid, grid), len(CLASS_NAMES), dtype=np.int64)
    for i in range(grid):
        for j in range(grid):
            cx, cy = (j + 0.5) / grid * width, (i + 0.5) / grid * height
            hit = {b["label"] for b in frame_boxes
                   if b["xyxy"][0] <= cx < b["xyxy"][2] and b["xyxy"][1] <= cy < b["xyxy"][3]}
            if len(hit) > 1:
                out[i, j] = -1
            elif hit:
                out[i, j] = CLASS_NAMES.index(hit.pop())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="a bench/quality.py folder")
    ap.add_argument("--train-videos", type=int, default=120, help="training videos the probe sees")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    t0 = time.perf_counter()
    boxes = json.loads((args.out / "data" / "boxes.json").read_text())["videos"]
    meta = json.loads((args.out / "data" / "meta.json").read_text())["videos"]
    features = args.out / "features.h5"
    xs, ys = [], []
    with FeatureCache(features) as cache:
        for vid in cache.ids("train")[:args.train_videos]:
            v, times = cache.visual(vid), cache.times(vid)  # (S, T, 8, 8, C), (S, T)
            frames = {round(f["time"], 3): f["boxes"] for f in boxes[vid]["frames"]}
            w, h = boxes[vid]["width"], boxes[vid]["height"]
            for s in range(v.shape[0]):
                for k in range(v.shape[1]):
                    fb = frames.get(round(float(times[s, k]), 3))
                    if fb is None:
                        continue
                    lab = cell_labels(fb, w, h, v.shape[2]).reshape(-1)
                    keep = lab >= 0
                    xs.append(v[s, k].reshape(-1, v.shape[-1])[keep])
                    ys.append(lab[keep])
        x = torch.from_numpy(np.concatenate(xs).astype(np.float32))
        y = torch.from_numpy(np.concatenate(ys))
        mean, std = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / std
        weight = torch.zeros(x.shape[1], len(CLASS_NAMES) + 1, requires_grad=True)
        bias = torch.zeros(len(CLASS_NAMES) + 1, requires_grad=True)
        opt = torch.optim.Adam([weight, bias], lr=1e-2)
        for _ in range(args.steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 1e-3 * (weight ** 2).sum()
            loss.backward()
            opt.step()
        maps = {}
        with torch.no_grad():
            for vid in cache.ids("test"):
                v = (torch.from_numpy(cache.visual(vid).astype(np.float32)) - mean) / std  # (S, T, 8, 8, C)
                logit = v @ weight[:, CLASS_NAMES.index(meta[vid]["class"])]  # (S, T, 8, 8)
                for t, m in zip(cache.times(vid).reshape(-1), logit.reshape(-1, *logit.shape[2:]).numpy()):
                    maps[(vid, float(t))] = m
    maps_path = write_maps(args.out / "ceiling-maps.npz", maps)
    result = evaluate(read_ground_truth(args.out / "data" / "boxes.json"), maps=maps_path, features=features,
                      config=EvaluateConfig(figure_videos=0, modes=("value:0.5", "top:0.5"), ceilings=False),
                      progress=False)
    out = {"train_cells": int(len(y)), "seconds": time.perf_counter() - t0}
    for name, s in [("all", result.report.overall), *sorted(result.groups.items())]:
        out[name] = {"pointing": s["pointing"]["hit"], "success value:0.5": s["ciou"]["value:0.5"]["success"],
                     "success top:0.5": s["ciou"]["top:0.5"]["success"], "mean value:0.5": s["ciou"]["value:0.5"]["mean"]}
        print(f"{name:>7}: pointing {100 * out[name]['pointing']:.1f} %, success@0.5 value "
              f"{100 * out[name]['success value:0.5']:.1f} % / top50 {100 * out[name]['success top:0.5']:.1f} %, "
              f"mean cIoU {out[name]['mean value:0.5']:.3f}")
    (args.out / "ceiling.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"[ceiling] {len(y)} training cells, {out['seconds']:.0f} s; wrote {args.out / 'ceiling.json'}")


if __name__ == "__main__":
    main()
