"""The seeded quality benchmark: does the memory network localize, which map and which
objective localize best, and does the memory help? Mean ± std over training seeds.

synth (benchmark-shaped objects) → extract (EfficientNet-Lite0 with its shipped ImageNet
weights; VGGish trunk with random weights, since its AudioSet weights cannot be downloaded
offline) → for each recipe, memory mode and seed: train → evaluate every map of the network
(memnet.model.MAPS) and the refined default and CAM (DEFAULT_MAPS) on the test split → the model-free baselines on the same frames, normal and
hard videos apart. Every step resumes: re-running reuses what is on disk.

    python bench/quality.py --out /tmp/avstm-quality              # the defaults (README table)
    python bench/quality.py --out DIR --videos 120 --epochs 10 --seeds 0   # a quicker look

Recipes (RECIPES): ``paper`` is the paper's literal recipe (its objective, Eq. 1 unscaled);
``sqrt-scale`` the tool's default (the same objective, Eq. 1's dot products scaled by 1/√C);
both run with every memory mode. The others each add one option from the field (objective.py)
and run with ``--option-modes`` (C+U by default).
Writes DIR/quality.json (every number per seed, the runs of earlier invocations on DIR kept) and
prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from avstm.cache import FeatureCache
from avstm.datasets import read_ave
from avstm.evaluate.annotations import read_ground_truth
from avstm.evaluate.run import EvaluateConfig, evaluate
from avstm.extract.config import ExtractConfig
from avstm.extract.pipeline import extract
from avstm.io import write_json
from avstm.memnet.config import check_map
from avstm.memnet.model import DEFAULT_MAP, MAP_CHOICES, MAPS
from avstm.memnet.train import TrainConfig, train
from avstm.synth.config import SynthConfig
from avstm.synth.generate import generate

MODES = ("none", "unimodal", "full")
MODE_NAMES = {"none": "none", "unimodal": "U", "full": "C+U"}
RECIPES = {  # TrainConfig changes over the tool's defaults
    "paper": {"attention_scale": "none"},  # the paper's literal recipe: Eq. 1 unscaled
    "sqrt-scale": {"attention_scale": "sqrt"},  # the tool's default: Eq. 1 scaled by 1/√C
    "learned-scale": {"attention_scale": "learned"},
    "visual-loss": {"attention_scale": "none", "visual_loss": 1.0},
    "audio-dropout": {"attention_scale": "none", "audio_dropout": 0.5},
    "contrastive": {"attention_scale": "none", "contrastive": 1.0},
    "visual-loss+contrastive": {"attention_scale": "none", "visual_loss": 1.0, "contrastive": 1.0},
    "sqrt+contrastive": {"attention_scale": "sqrt", "contrastive": 1.0},
    "sqrt+visual-loss": {"attention_scale": "sqrt", "visual_loss": 1.0},
    "sqrt+cam": {"attention_scale": "sqrt", "visual_loss": 1.0, "visual_pool": "mean"},
    "sqrt+cam2": {"attention_scale": "sqrt", "visual_loss": 2.0, "visual_pool": "mean"},
}
ALL_MODES = ("paper", "sqrt-scale")  # recipes trained with every memory mode
BASELINES = ("centre", "whole-image")
# the maps evaluated unless --maps says: every map of the network, the default and the class maps refined
DEFAULT_MAPS = (*MAPS, *dict.fromkeys((DEFAULT_MAP, "class_grad+affinity", "class_cam+affinity")))
BINARISATIONS = ("value:0.5", "top:0.5", "median")
# (column title, key in a flat summary, shown as a percentage)
COLUMNS = (("succ value %", "success value:0.5", True), ("succ top50 %", "success top:0.5", True),
           ("mean cIoU", "mean value:0.5", False), ("AUC", "auc value:0.5", False),
           ("pointing %", "pointing", True), ("box@0.5 %", "box", True), ("acc/s %", "accuracy", True))


def flat_summary(summary: dict) -> dict:
    """The numbers the tables read from one report summary (report.summarize's layout)."""
    out = {}
    for m in BINARISATIONS:
        c = summary["ciou"].get(m, {})
        out[f"success {m}"], out[f"mean {m}"], out[f"auc {m}"] = c.get("success"), c.get("mean"), c.get("auc")
    out["pointing"] = summary["pointing"]["hit"]
    out["box"] = summary["box_iou"]["success"]
    out["distractor"] = summary["distractor"]["rate"]
    return out


def scores(result) -> dict:
    """{"all"|"normal"|"hard": flat summary} plus per-second accuracy of one evaluation."""
    out = {"all": flat_summary(result.report.overall)}
    for g, s in result.groups.items():
        out[g] = flat_summary(s)
    acc = result.classification["accuracy"] if result.classification else None
    for v in out.values():
        v["accuracy"] = acc
    return out


def mean_std(values) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def fmt(stat, pct: bool) -> str:
    if stat is None:
        return "-"
    m, s = stat
    k = 100.0 if pct else 1.0
    return f"{m * k:.1f} ± {s * k:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def table(rows: dict[str, dict], group: str, title: str) -> str:
    """rows: name -> {"runs": [scores, ...]} (one per seed) or {"fixed": scores}."""
    head = f"{'method':<38}" + "".join(f"{c[0]:>15}" for c in COLUMNS)
    lines = [title, head, "-" * len(head)]
    for name, row in rows.items():
        runs = row["runs"]
        cells = []
        for _, key, pct in COLUMNS:
            cells.append(fmt(mean_std([r[group][key] for r in runs if group in r]), pct))
        lines.append(f"{name:<38}" + "".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def margins(results: dict, args, runs) -> str:
    """The margins of issue 12's bar, C+U memory, all test videos, mean over seeds: pointing and
    success@0.5 (value:0.5) over the best model-free baseline (bar: +20 and +30 points), AUC
    over the best baseline's (bar: above), per-second accuracy over chance (bar: 3×)."""
    base = [s["all"] for s in results["baselines"].values()]
    best = {k: max(b[k] for b in base) for k in ("pointing", "success value:0.5", "auc value:0.5")}
    chance = 1.0 / (len(results.get("classes", [])) + 1) if results.get("classes") else None
    lines = [f"Margins over the best baseline (pointing {100 * best['pointing']:.1f} %, success "
             f"{100 * best['success value:0.5']:.1f} %, AUC {best['auc value:0.5']:.3f}); bar: +20, +30, "
             f"> 0, accuracy >= 3x chance" + (f" ({100 * chance:.1f} %)" if chance else ""),
             f"{'recipe, C+U, map':<44}{'pointing':>10}{'success':>10}{'AUC':>9}{'acc/chance':>12}"]
    for recipe in args.recipes:
        for m in args.maps:
            rs = runs(recipe, "full", m)
            if not rs:
                continue
            mean = {k: float(np.mean([r["all"][k] for r in rs])) for k in best}
            acc = float(np.mean([r["all"]["accuracy"] for r in rs]))
            lines.append(f"{recipe + ', ' + m:<44}{100 * (mean['pointing'] - best['pointing']):>+10.1f}"
                         f"{100 * (mean['success value:0.5'] - best['success value:0.5']):>+10.1f}"
                         f"{mean['auc value:0.5'] - best['auc value:0.5']:>+9.3f}"
                         + (f"{acc / chance:>12.2f}" if chance else f"{'-':>12}"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--fps", type=int, default=12, help="video frame rate of the generated clips")
    ap.add_argument("--hard", type=float, default=0.3)
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--frame-size", type=int, default=ExtractConfig.frame_size,
                    help="frames are resized to this square before the backbone (256: an 8×8 map, 512: 16×16)")
    ap.add_argument("--visual-tap", default=None,
                    help="EfficientNet-Lite0 tap (None: blocks, 8×8 at 256; blocks16: 16×16 at the same cost ×1.5)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--option-modes", nargs="+", default=["full"], choices=MODES)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                    help="memory modes of the recipes trained with every mode (a subset: a quicker first look)")
    ap.add_argument("--maps", nargs="+", default=list(DEFAULT_MAPS), choices=list(MAP_CHOICES))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--labels", default="video", choices=("video", "segment"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return value

    data = out / "data"
    synth = SynthConfig(videos=args.videos, seconds=args.seconds, fps=args.fps, hard=args.hard,
                        seed=args.data_seed)
    timed("synth", lambda: generate(data, config=synth, workers=args.workers + 1, progress=False))
    print(f"[quality] synth: {seconds['synth']:.0f} s", flush=True)
    features = out / "features.h5"
    ecfg = ExtractConfig(visual_backbone="efficientnet_lite0", visual_weights="imagenet",
                         audio_weights="random", workers=args.workers, batch_size=32, device=args.device,
                         frame_size=args.frame_size, visual_tap=args.visual_tap)
    timed("extract", lambda: extract(read_ave(data), features, config=ecfg, progress=False))
    print(f"[quality] extract: {seconds['extract']:.0f} s", flush=True)
    truth = read_ground_truth(data / "boxes.json")
    with FeatureCache(features) as cache:
        classes = list(cache.classes)
    base_cfg = EvaluateConfig(device=args.device, figure_videos=0, modes=BINARISATIONS, ceilings=False)

    results: dict = {"baselines": {}, "runs": {}, "classes": classes}
    for b in BASELINES:
        r = timed("evaluate", lambda: evaluate(truth, features=features, progress=False,
                                               config=base_cfg.replace(baseline=b, ceilings=True)))
        results["baselines"][b] = scores(r)
        if b == BASELINES[0]:  # the ceilings depend on the frames only
            results["ceilings"] = {k: v for k, v in r.ceilings().items() if k != "grids"}

    for recipe in args.recipes:
        modes = tuple(args.modes) if recipe in ALL_MODES else tuple(args.option_modes)
        for mode in modes:
            for seed in args.seeds:
                run = out / "runs" / recipe / mode / f"seed{seed}"
                tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, memory=mode,
                                   labels=args.labels, seed=seed, workers=0, device=args.device,
                                   **RECIPES[recipe])
                done = run / "scores.json"
                if done.exists():
                    rec = json.loads(done.read_text())
                else:
                    if (run / "last.pt").exists():  # an interrupted run: continue it
                        timed("train", lambda: train(features, run, config=tcfg, resume=True, progress=False))
                    else:
                        timed("train", lambda: train(features, run, config=tcfg, progress=False))
                    rec = {"recipe": recipe, "memory": mode, "seed": seed, "train_config": tcfg.to_dict(),
                           "history": [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()],
                           "maps": {}}
                for name in args.maps:
                    try:  # a map this network cannot give (class_cam needs the visual head)
                        check_map(name, visual_head=tcfg.visual_loss > 0)
                    except ValueError:
                        continue
                    if name not in rec["maps"]:
                        r = timed("evaluate", lambda: evaluate(truth, checkpoint=run / "best.pt", features=features,
                                                               config=base_cfg.replace(map=name), progress=False))
                        rec["maps"][name] = scores(r)
                done.write_text(json.dumps(rec, indent=1) + "\n")
                results["runs"][f"{recipe}/{mode}/seed{seed}"] = rec
                last = rec["history"][-1]
                shown = next((m for m in (DEFAULT_MAP, *args.maps) if m in rec["maps"]), None)
                print(f"[quality] {recipe} {MODE_NAMES[mode]} seed {seed}: val_acc "
                      f"{max(h.get('val_acc', 0) for h in rec['history']):.3f} (best), train_acc "
                      f"{last['train_acc']:.3f}" + ("" if shown is None else
                      f"; {shown} success@0.5 {rec['maps'][shown]['all']['success value:0.5']:.3f}"),
                      flush=True)

    def runs(recipe, mode, map_name):
        return [r["maps"][map_name] for k, r in results["runs"].items()
                if k.startswith(f"{recipe}/{mode}/") and map_name in r["maps"]]

    baseline_rows = {f"baseline: {b}": {"runs": [s]} for b, s in results["baselines"].items()}
    tables = []
    default_map = DEFAULT_MAP if DEFAULT_MAP in args.maps else args.maps[0]
    for recipe, map_name in (("sqrt-scale", default_map), ("paper", "alpha_hat"), ("paper", default_map)):
        if map_name not in args.maps or recipe not in args.recipes:
            continue
        what = {"sqrt-scale": "The default recipe (the paper's objective, Eq. 1 scaled by 1/√C)",
                "paper": "The paper's literal recipe"}[recipe]
        rows = {f"{recipe}, {MODE_NAMES[m]}, {map_name}": {"runs": runs(recipe, m, map_name)} for m in MODES}
        rows.update(baseline_rows)
        for group in ("all", "normal", "hard"):
            tables.append(table(rows, group, f"{what}, map {map_name}: {group} test videos "
                                             f"({len(args.seeds)} seeds, mean ± std)"))
    rows = {f"paper, C+U, {m}": {"runs": runs("paper", "full", m)} for m in args.maps
            if runs("paper", "full", m)}
    rows.update(baseline_rows)
    tables.append(table(rows, "all", "Every map of the same C+U checkpoints (all test videos)"))
    for mode in args.option_modes:
        rows = {f"{rec}, {MODE_NAMES[mode]}, {m}": {"runs": runs(rec, mode, m)}
                for rec in args.recipes for m in args.maps if runs(rec, mode, m)}
        rows.update(baseline_rows)
        for group in ("all", "hard"):
            tables.append(table(rows, group, f"Objectives ({MODE_NAMES[mode]} memory): {group} test videos"))
    tables.append(margins(results, args, runs))
    text = "\n\n".join(tables)
    print(text)
    seconds["total"] = time.perf_counter() - t_all
    summary = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "synth_config": synth.to_dict(), "seconds": seconds, "tables": text, **results}
    path = out / "quality.json"
    if path.exists():  # keep the runs an earlier invocation on DIR recorded (other --recipes, --modes)
        summary["runs"] = {**json.loads(path.read_text()).get("runs", {}), **results["runs"]}
    write_json(path, summary)
    print(f"\n[quality] wrote {path}; seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
