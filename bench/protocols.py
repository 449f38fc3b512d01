"""How much the evaluation protocol moves the numbers: one random 8×8 map per entry of the
real VGG-SS file (../shared/data/vggss/vggss.json), scored under every protocol of
avstm.evaluate.protocols (avstm's rules at 224 with the top-50 % binarisation beside them).

    PYTHONPATH=$PWD python bench/protocols.py [--annotations vggss.json] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from avstm.evaluate.annotations import read_ground_truth
from avstm.evaluate.inputs import write_maps
from avstm.evaluate.protocols import PROTOCOLS
from avstm.evaluate.run import EvaluateConfig, evaluate

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "vggss" / "vggss.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=Path, default=DEFAULT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gt = read_ground_truth(args.annotations)
    rng = np.random.default_rng(args.seed)
    maps = {(v, t): rng.random((8, 8)).astype(np.float32)
            for v in sorted(gt) for t in gt[v].frames}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_maps(Path(tmp) / "maps.npz", maps)
        runs = [(name, EvaluateConfig(protocol=name, size=224, figure_videos=0, boxes=False,
                                      ceilings=False)) for name in PROTOCOLS]
        runs.insert(1, ("avstm top:0.5", EvaluateConfig(size=224, modes=("top:0.5",),
                                                         figure_videos=0, boxes=False,
                                                         ceilings=False)))
        for name, config in runs:
            start = time.perf_counter()
            r = evaluate(gt, maps=path, config=config, progress=False)
            s = r.report.overall["ciou"][config.primary]
            rows[name] = {"binarisation": config.primary, "n": s["n"], "success": s["success"],
                          "mean": s["mean"], "auc": s["auc"],
                          "seconds": time.perf_counter() - start}
    print(f"{args.annotations.name}: {len(maps)} random 8x8 maps (seed {args.seed}), 224x224")
    print(f"{'protocol':16s} {'binarisation':12s} {'frames':>6s} {'cIoU@0.5 %':>10s} "
          f"{'mean cIoU':>9s} {'AUC':>7s}")
    for name, r in rows.items():
        print(f"{name:16s} {r['binarisation']:12s} {r['n']:6d} {100 * r['success']:10.3f} "
              f"{r['mean']:9.4f} {r['auc']:7.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
