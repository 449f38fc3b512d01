"""Aggregate per-frame results overall, per class and per video; JSON and printed tables,
including the method × metric layout of the paper's Tables 1 and 2.

A summary (one group of frames) is a plain JSON-able dict::

    {"n_frames", "n_with_truth",
     "ciou": {binarisation: {"success", "mean", "auc",
                             "ceiling_success", "ceiling_mean", "ceiling_auc"}},
     "box_iou": {"definition", "n", "mean", "success", "best_mean", "best_success"},
     "pointing": {"n", "hit", "ceiling"}, "distractor": {"n", "rate"},
     "accuracy": {"n", "value"}}

Rates are fractions in [0, 1] (tables print success rates as percentages); a number over no
frames is None. cIoU, box IoU and pointing count only frames with a sounding box.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from avstm.evaluate.metrics import FrameResult, MetricsConfig, auc, success_rate
from avstm.evaluate.protocols import get_protocol
from avstm.io import write_json

BOX_IOU_DEFINITION = ("IoU of the union mask of the predicted boxes with the union of the true "
                      "sounding boxes at the evaluation resolution; best: max IoU over "
                      "(predicted, true) box pairs")


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(results: Sequence[FrameResult], *, config: MetricsConfig = MetricsConfig()) -> dict:
    """Aggregate FrameResults into one summary dict (layout in the module docstring)."""
    thr = config.iou_threshold
    proto = get_protocol(config.protocol)
    grid = proto.thresholds
    scored = [r for r in results if r.has_truth]
    ciou = {}
    for m in config.modes:
        if proto.scores_boxless:  # every frame counts; an undefined 0/0 fails every threshold
            vals = [r.ciou[m] for r in results if m in r.ciou and r.grid is not None]
        else:
            vals = [r.ciou[m] for r in scored if m in r.ciou and not math.isnan(r.ciou[m])]
        ceil = [r.ceiling_ciou[m] for r in scored
                if m in r.ceiling_ciou and not math.isnan(r.ceiling_ciou[m])]
        ciou[m] = {"n": len(vals),
                   "success": _num(success_rate(vals, thr)),
                   "mean": _mean(np.nan_to_num(vals, nan=0.0)),
                   "auc": _num(auc(vals, grid)) if vals else None,
                   "ceiling_success": _num(success_rate(ceil, thr)), "ceiling_mean": _mean(ceil),
                   "ceiling_auc": _num(auc(ceil, grid)) if ceil else None}
    box = [r.box_iou for r in scored if r.box_iou is not None]
    best = [r.box_iou_best for r in scored if r.box_iou_best is not None]
    point = [r.pointing for r in scored if r.pointing is not None]
    ceil_point = [r.ceiling_pointing for r in scored if r.ceiling_pointing is not None]
    distract = [r.distractor for r in results if r.distractor is not None]
    classes = [(r.pred_class, r.true_class) for r in results
               if r.pred_class is not None and r.true_class is not None]
    return {
        "n_frames": len(results),
        "n_with_truth": len(scored),
        "ciou": ciou,
        "box_iou": {"definition": BOX_IOU_DEFINITION, "n": len(box), "mean": _mean(box),
                    "success": _num(success_rate(box, thr)), "best_mean": _mean(best),
                    "best_success": _num(success_rate(best, thr))},
        "pointing": {"n": len(point), "hit": _mean(point), "ceiling": _mean(ceil_point)},
        "distractor": {"n": len(distract), "rate": _mean(distract)},
        "accuracy": {"n": len(classes),
                     "value": _mean([p == t for p, t in classes])},
    }


@dataclass(frozen=True)
class Report:
    """Summaries overall, per class (frames without a label are under "(none)") and per video."""

    config: MetricsConfig
    overall: dict
    per_class: dict
    per_video: dict

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "overall": self.overall,
                "per_class": self.per_class, "per_video": self.per_video}


def aggregate(results: Sequence[FrameResult], *,
              config: MetricsConfig = MetricsConfig()) -> Report:
    """Summaries of ``results`` overall, per class and per video."""
    by_class: dict[str, list[FrameResult]] = {}
    by_video: dict[str, list[FrameResult]] = {}
    for r in results:
        by_class.setdefault(r.label if r.label is not None else "(none)", []).append(r)
        by_video.setdefault(r.video, []).append(r)
    return Report(config, summarize(results, config=config),
                  {k: summarize(v, config=config) for k, v in sorted(by_class.items())},
                  {k: summarize(v, config=config) for k, v in sorted(by_video.items())})


def write_report(path: str | os.PathLike, report: Report, *,
                 frames: Sequence[FrameResult] | None = None):
    """Write the report as JSON atomically (with per-frame records when ``frames`` is given)."""
    doc = report.to_dict()
    if frames is not None:
        doc["frames"] = [f.to_dict() for f in frames]
    return write_json(path, doc)


# ---- tables --------------------------------------------------------------------------------


def _pct(x) -> str:
    return "-" if x is None else f"{100.0 * x:.2f}"


def _dec(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def format_binarizations(summary: dict, *, title: str = "") -> str:
    """One summary, one row per binarisation: success@0.5, mean cIoU, AUC and their ceilings,
    then the pointing game, box IoU and accuracy lines."""
    header = ["binarisation", "cIoU@0.5 %", "mean cIoU", "AUC",
              "ceil cIoU@0.5 %", "ceil mean", "ceil AUC"]
    rows = [[m, _pct(s["success"]), _dec(s["mean"]), _dec(s["auc"]), _pct(s["ceiling_success"]),
             _dec(s["ceiling_mean"]), _dec(s["ceiling_auc"])] for m, s in summary["ciou"].items()]
    p, b, d, a = summary["pointing"], summary["box_iou"], summary["distractor"], summary["accuracy"]
    tail = [f"frames: {summary['n_frames']} ({summary['n_with_truth']} with a sounding box)",
            f"pointing game: {_pct(p['hit'])} % (ceiling {_pct(p['ceiling'])} %, n={p['n']})"]
    if d["n"]:
        tail.append(f"peak on a silent distractor: {_pct(d['rate'])} % (n={d['n']})")
    if b["n"]:
        tail.append(f"box IoU@0.5: {_pct(b['success'])} %, mean {_dec(b['mean'])}; best-match "
                    f"IoU@0.5: {_pct(b['best_success'])} % (n={b['n']})")
    if a["n"]:
        tail.append(f"classification accuracy: {_pct(a['value'])} % (n={a['n']})")
    return "\n".join(([title] if title else []) + [_render(header, rows)] + tail)


def format_groups(groups: Mapping[str, dict], *, mode: str, title: str = "") -> str:
    """One row per group (class or video) for binarisation ``mode``."""
    header = ["group", "frames", "cIoU@0.5 %", "mean cIoU", "AUC", "pointing %",
              "IoU@0.5 %", "ceil cIoU@0.5 %"]
    rows = []
    for name, s in groups.items():
        c = s["ciou"].get(mode, {})
        rows.append([name, str(s["n_with_truth"]), _pct(c.get("success")), _dec(c.get("mean")),
                     _dec(c.get("auc")), _pct(s["pointing"]["hit"]),
                     _pct(s["box_iou"]["success"]), _pct(c.get("ceiling_success"))])
    return "\n".join(([title] if title else []) + [_render(header, rows)])


def format_report(report: Report, *, per_video: bool = False) -> str:
    """The printed report: overall by binarisation, then per class (and per video)."""
    mode = report.config.primary
    size = "×".join(map(str, report.config.size))
    proto = get_protocol(report.config.protocol)
    parts = [format_binarizations(report.overall, title=f"overall (evaluated at {size}; "
                                  f"protocol {proto.name}: {proto.follows})"),
             format_groups(report.per_class, mode=mode, title=f"per class ({mode})")]
    if per_video:
        parts.append(format_groups(report.per_video, mode=mode, title=f"per video ({mode})"))
    return "\n\n".join(parts)


def format_method_table(methods: Mapping[str, dict], *, mode: str = "value:0.5",
                        title: str = "") -> str:
    """The layout of the paper's Tables 1/2 (and the ablation table): one row per method
    (name -> summary), columns cIoU@0.5, mean cIoU, AUC, IoU@0.5, then the pointing game and
    the ceilings of cIoU@0.5 and pointing at each method's own map resolution."""
    header = ["method", "cIoU@0.5 %", "mean cIoU", "AUC", "IoU@0.5 %", "pointing %",
              "ceil cIoU@0.5 %", "ceil pointing %"]
    rows = []
    for name, s in methods.items():
        c = s["ciou"].get(mode, {})
        rows.append([name, _pct(c.get("success")), _dec(c.get("mean")), _dec(c.get("auc")),
                     _pct(s["box_iou"]["success"]), _pct(s["pointing"]["hit"]),
                     _pct(c.get("ceiling_success")), _pct(s["pointing"]["ceiling"])])
    head = title or f"binarisation {mode}"
    return "\n".join([head, _render(header, rows)])
