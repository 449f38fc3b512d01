"""``evaluate``: score a trained model, a maps file or a baseline on box annotations, and
``evaluate_ablation``: the paper's method × metric table over several checkpoints and the
baselines.

Where maps come from (exactly one):

- a checkpoint + the feature cache: the memory network runs over each evaluated video's whole
  cached sequence of S×T steps as one causal clip (the memory needs the past), and the step
  whose time is nearest an annotated frame time is used when it lies within the tolerance
  (half a frame interval, 1 / (2·fps), by default; ties go to the later step);
- a maps file (``.npz``, keys ``"<video id>@<time with 3 decimals>"``, docs/ARCHITECTURE.md),
  matched the same way (tolerance 0.0005 s, the keys' rounding, when no cache gives the fps);
- a baseline of ``baselines.py`` (centre, whole-image, uniform), on every annotated frame.

An annotated frame without a matching step or map is not scored and is counted
(``matching`` in metrics.json). With a cache, the evaluated videos are the annotated videos of
``config.split``; without one, every annotated video.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from avstm.cache import FeatureCache
from avstm.errors import AvstmError
from avstm.evaluate.config import EvaluateConfig
from avstm.evaluate.annotations import GroundTruth, frame_label, read_ground_truth
from avstm.evaluate.baselines import BASELINES, baseline_prediction
from avstm.evaluate.figure import Panel, draw_figure, load_frames
from avstm.evaluate.inputs import (IMAGE_FORMATS, MAPS_TOLERANCE, MapsFile, VideoMaps,
                                   annotated_step, check_fit, find_groups, model_video,
                                   read_groups, resolve_device)
from avstm.evaluate.metrics import FrameResult, MetricsConfig, evaluate_frame, parse_binarization
from avstm.evaluate.protocols import BINARISE, get_protocol
from avstm.evaluate.report import Report, aggregate, format_method_table, format_report, summarize
from avstm.io import write_json
from avstm.localize.boxes import maps_to_boxes
from avstm.memnet.config import map_definition

METRICS_FORMAT = "avstm-metrics/1"
ABLATION_FORMAT = "avstm-ablation/1"
MEMORY_NAMES = {"none": "STM without temporal memory", "unimodal": "STM uni-modal memory (U)",
                "full": "STM C+U memory"}
_DESCRIPTIONS = {"value": "min-max normalised map > {p:g} (STM paper)",
                 "top": "top {p:.0%} of the pixels, >= the quantile (EZ-VSL)",
                 "median": "map > its upper median, strict (LVS's threshold; a flat map: none)",
                 "max": "raw map > {p:g} x its maximum (DSOL/Qian)"}


# ---- config and results --------------------------------------------------------------------


def describe_binarisations(modes: Sequence[str], protocol: str = "avstm") -> dict:
    """{name: one-line definition} of binarisation names (a reference protocol's own rule)."""
    proto = get_protocol(protocol)
    if proto.mode:
        return {proto.mode: f"{BINARISE[proto.binarise].definition} ({proto.name})"}
    out = {}
    for m in modes:
        b = parse_binarization(m)
        out[b.name] = _DESCRIPTIONS[b.kind].format(p=b.param if b.param is not None else 0)
    return out


@dataclass
class EvaluationResult:
    """Everything ``evaluate`` measured; ``to_dict()`` is the metrics.json document."""

    method: dict  # {"kind": model|maps|baseline, "name", ...}
    config: EvaluateConfig
    report: Report
    frames: list[FrameResult]
    matching: dict  # annotated / matched / unmatched frames, tolerance, examples
    videos: dict  # which videos were evaluated
    classification: dict | None  # per-second accuracy with background (model with labels)
    groups: dict = field(default_factory=dict)  # group name -> summary (e.g. normal / hard)
    annotations: dict = field(default_factory=dict)
    metrics_path: Path | None = None
    figure_path: Path | None = None
    panels: dict = field(default_factory=dict, repr=False)  # figure videos' frames (Panel)

    def ceilings(self) -> dict:
        o = self.report.overall
        return {"binarisations": {m: {k[len("ceiling_"):]: v for k, v in s.items()
                                      if k.startswith("ceiling_")} for m, s in o["ciou"].items()},
                "pointing": o["pointing"]["ceiling"],
                "grids": sorted({tuple(f.grid) for f in self.frames if f.grid})}

    def to_dict(self) -> dict:
        doc = {"format": METRICS_FORMAT, "method": self.method,
               "evaluate_config": self.config.to_dict(),
               "protocol": get_protocol(self.config.protocol).to_dict(),
               "binarisations": {"primary": self.config.primary, "modes": list(self.config.modes),
                                 "definitions": describe_binarisations(self.config.modes,
                                                                       self.config.protocol)}}
        doc.update(self.report.to_dict())  # config (metrics), overall, per_class, per_video
        c = self.ceilings()
        c["grids"] = [list(g) for g in c["grids"]]
        doc.update({"ceilings": c, "classification": self.classification, "groups": self.groups,
                    "matching": self.matching, "videos": self.videos,
                    "annotations": self.annotations,
                    "frames": [f.to_dict() for f in self.frames]})
        return doc

    def summary(self) -> str:
        """The printed report: tables, then matching, classification and group lines."""
        lines = [f"{self.method['name']}: {self.videos['evaluated']} videos, "
                 f"{self.matching['matched']} of {self.matching['annotated']} annotated frames "
                 f"scored ({self.matching['unmatched']} without a matching "
                 f"{'map' if self.method['kind'] == 'maps' else 'step'})",
                 format_report(self.report)]
        if self.classification:
            c = self.classification
            lines.append(f"classification per second (background = {c['background']}): "
                         f"{100 * c['accuracy']:.2f} % of {c['seconds']} seconds")
        if self.groups:
            lines.append(format_method_table(self.groups, mode=self.config.primary,
                                             title=f"groups ({self.config.primary})"))
        return "\n\n".join(lines)


# ---- evaluate ------------------------------------------------------------------------------


def _truth(truth) -> GroundTruth:
    """A GroundTruth from a GroundTruth, a mapping video id -> VideoTruth, or a file path."""
    if isinstance(truth, GroundTruth):
        return truth
    return GroundTruth(dict(truth)) if isinstance(truth, Mapping) else read_ground_truth(truth)


def check_source(checkpoint, maps, baseline) -> None:
    """What ``evaluate`` scores is exactly one of a checkpoint, a maps file or a baseline."""
    if sum([checkpoint is not None, maps is not None, baseline is not None]) != 1:
        raise AvstmError("evaluate needs exactly one of a checkpoint (--checkpoint), a maps file "
                         "(--maps) or a baseline (--baseline)")


def default_out_dir(annotations: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
                    maps: str | os.PathLike | None = None, config: EvaluateConfig = EvaluateConfig(),
                    run: str = "evaluate") -> Path:
    """Where ``avstm evaluate`` writes without ``--out``: beside the (first) checkpoint as
    ``ablation-<split>`` (``run="ablation"``), ``extended-<split>`` (``run="extended"``) or
    ``eval-<checkpoint stem>-<split>``; beside a maps file as ``eval-<maps stem>``; beside the
    annotations as ``eval-<baseline>``. Checks ``check_source`` for a plain evaluation."""
    if run in ("ablation", "extended"):
        return Path(checkpoint).parent / f"{run}-{config.split}"
    check_source(checkpoint, maps, config.baseline)
    if checkpoint is not None:
        return Path(checkpoint).parent / f"eval-{Path(checkpoint).stem}-{config.split}"
    if maps is not None:
        return Path(maps).parent / f"eval-{Path(maps).stem}"
    return Path(annotations).parent / f"eval-{config.baseline}"


def evaluate(truth, *, checkpoint: str | os.PathLike | None = None,
             features: str | os.PathLike | None = None, maps: str | os.PathLike | None = None,
             config: EvaluateConfig = EvaluateConfig(), out_dir: str | os.PathLike | None = None,
             groups: str | os.PathLike | Mapping[str, str] | None = None,
             progress: bool = True) -> EvaluationResult:
    """Score one method on the annotated frames.

    truth: a GroundTruth (annotations.read_ground_truth) or the path of an annotation file.
    checkpoint + features: the model over the cache's videos of ``config.split``; maps: a maps
    file (features optional: split, fps and frames for the figure); neither: the baseline
    ``config.baseline``. groups: video id -> group name, or a file for ``read_groups`` (None:
    ``find_groups`` beside the annotation file). out_dir: where metrics.json and figure.png
    go (None: nothing is written). Raises AvstmError subclasses naming the file at fault.
    """
    from avstm.memnet.checkpoint import load_model

    check_source(checkpoint, maps, config.baseline)
    if checkpoint is not None and features is None:
        raise AvstmError(f"{checkpoint}: evaluating a model needs the feature cache (--features)")
    gt = _truth(truth)
    if groups is None and gt.source and Path(gt.source).is_file():
        groups = find_groups(gt.source)
    group_of = read_groups(groups) if isinstance(groups, (str, os.PathLike)) else groups
    mc = config.metrics_config()
    cache = FeatureCache(features) if features is not None else None
    try:
        if cache is not None:
            in_split = cache.ids(config.split)
            ids = [v for v in in_split if v in gt]
            if not ids:
                raise AvstmError(f"{features}: no video of split {config.split!r} has annotations "
                                 f"in {gt.source or 'the ground truth'}")
            videos = {"split": config.split, "annotated": len(gt), "evaluated": len(ids),
                      "in_split_without_annotations": len(in_split) - len(ids),
                      "annotated_not_in_split": len(gt) - len(ids)}
        else:
            ids = sorted(gt)
            videos = {"split": None, "annotated": len(gt), "evaluated": len(ids)}
        if checkpoint is not None:
            device = resolve_device(config.device)
            model, info = load_model(checkpoint, device=device, map=config.map)
            check_fit(info, cache, checkpoint)
            mem = info.model_config.memory
            method = {"kind": "model", "name": MEMORY_NAMES.get(mem, mem), "memory": mem,
                      "map": info.model_config.map, "map_definition": map_definition(info.model_config.map),
                      "checkpoint": str(checkpoint), "epoch": info.epoch,
                      "model_config": info.model_config.to_dict()}
            source = lambda vid: model_video(model, cache, vid, device)  # noqa: E731
        elif maps is not None:
            mf = MapsFile(maps)
            method = {"kind": "maps", "name": Path(maps).stem, "maps": str(maps)}
            source = lambda vid: VideoMaps(mf.times(vid), lambda i, v=vid: mf.map(v, i))  # noqa: E731
        else:
            method = {"kind": "baseline", "name": config.baseline}
            source = None
        result = _score(gt, ids, source, cache, config, mc, method, group_of, progress)
        result.videos = videos
        if out_dir is not None:
            out_dir = Path(out_dir)
            if config.figure_videos:
                result.figure_path = _figure(result, gt, cache, config, out_dir / "figure.png")
            result.metrics_path = write_json(out_dir / "metrics.json", result.to_dict())
        return result
    finally:
        if cache is not None:
            cache.close()


def _predicted_boxes(m, const_boxes, v, config: EvaluateConfig, size):
    """(N, 4) predicted boxes and the (width, height) of their pixels, or (None, None):
    a baseline's own box, else Otsu + contours on the map at the evaluation resolution."""
    if const_boxes is not None:
        return const_boxes, (v.width, v.height)
    if not config.boxes:
        return None, None
    found = maps_to_boxes(np.asarray(m, dtype=np.float64), size=size, min_area=config.min_box_area)
    return np.array([b.xyxy for b in found], dtype=np.float64).reshape(-1, 4), (size[1], size[0])


def _group_summaries(frames: list[FrameResult], group_of, mc: MetricsConfig) -> dict:
    """group name -> summary (plus its number of videos); videos in no group: "(ungrouped)"."""
    if not group_of:
        return {}
    by: dict[str, list[FrameResult]] = {}
    for r in frames:
        by.setdefault(group_of.get(r.video, "(ungrouped)"), []).append(r)
    out = {}
    for g in sorted(by):
        out[g] = summarize(by[g], config=mc)
        out[g]["videos"] = len({r.video for r in by[g]})
    return out


def _score(gt, ids, source, cache, config, mc, method, group_of, progress) -> EvaluationResult:
    """Score every annotated frame of the videos ``ids``; ``source(vid)`` gives a video's
    VideoMaps (None: the baseline of the config). Keeps the figure videos' panels."""
    size = mc.size
    tol_default = config.tolerance
    frames, unmatched, examples, seconds = [], 0, [], [0, 0]
    fig_ids = set(ids[:config.figure_videos])
    show = progress and sys.stderr.isatty()
    panels: dict[str, list] = {}
    for vid in tqdm(ids, desc="evaluate", unit="video", disable=not show):
        v = gt[vid]
        if source is None:
            pred = baseline_prediction(config.baseline, v.width, v.height, size=size)
            vm = VideoMaps(None, lambda i, m=pred.map: m)
            const_boxes = pred.boxes
        else:
            vm, const_boxes = source(vid), None
            seconds[0] += vm.seconds[0]
            seconds[1] += vm.seconds[1]
        tol = tol_default
        if tol is None:
            tol = 0.5 / cache.entry(vid).fps if cache is not None else MAPS_TOLERANCE
        for t, boxes in sorted(v.frames.items()):
            i = 0 if vm.times is None else annotated_step(
                vm.times, t, tol, image=gt.format in IMAGE_FORMATS and len(v.frames) == 1)
            if i is None:
                unmatched += 1
                if len(examples) < 5:
                    examples.append(f"{vid}@{t:.3f}")
                continue
            m = vm.get(i)
            pb, pb_size = _predicted_boxes(m, const_boxes, v, config, size)
            cls = {}
            if vm.pred_class is not None:
                cls = {"pred_class": int(vm.pred_class[i]), "true_class": int(vm.true_class[i])}
            r = evaluate_frame(m, boxes, image_size=(v.width, v.height), config=mc,
                               pred_boxes=pb, pred_image_size=pb_size, video=vid, time=t,
                               label=frame_label(v, boxes), **cls)
            frames.append(r)
            if vid in fig_ids:
                scale = np.array([v.width / pb_size[0], v.height / pb_size[1]] * 2) \
                    if pb is not None else None
                panels.setdefault(vid, []).append(Panel(
                    vid, t, v.width, v.height, None, np.asarray(m),
                    None if pb is None else np.asarray(pb) * scale, list(boxes),
                    r.ciou.get(mc.primary) if r.has_truth else None))
    n = sum(len(gt[v].frames) for v in ids)
    tol_text = config.tolerance if config.tolerance is not None else (
        "half a frame interval" if cache is not None else MAPS_TOLERANCE)
    matching = {"annotated": n, "matched": len(frames), "unmatched": unmatched,
                "tolerance": tol_text, "unmatched_examples": examples}
    classification = None
    if seconds[1]:
        classification = {"seconds": seconds[1], "correct": seconds[0],
                          "accuracy": seconds[0] / seconds[1],
                          "background": len(cache.classes) if cache is not None else None,
                          "classes": list(cache.classes) if cache is not None else None}
    result = EvaluationResult(method=method, config=config, report=aggregate(frames, config=mc),
                              frames=frames, matching=matching, videos={},
                              classification=classification,
                              groups=_group_summaries(frames, group_of, mc),
                              annotations={"path": gt.source, "format": gt.format,
                                           "warnings": gt.warnings.to_dict()},
                              panels=panels)
    return result


def _figure(result: EvaluationResult, gt, cache, config: EvaluateConfig, path: Path) -> Path:
    """Pick ``figure_frames`` spread frames per figure video (frames with a sounding box
    first) and draw them over the decoded video frames."""
    rows = []
    for vid, panels in result.panels.items():
        scored = [p for p in panels if p.score is not None] or panels
        pick = np.unique(np.linspace(0, len(scored) - 1, min(config.figure_frames, len(scored)))
                         .round().astype(int))
        row = [scored[i] for i in pick]
        source = cache.entry(vid).source if cache is not None else None
        for p, image in zip(row, load_frames(source, [p.time for p in row], gt[vid].width,
                                             gt[vid].height)):
            p.image = image
        rows.append(row)
    return draw_figure(rows, path, title=f"{result.method['name']} ({config.primary}; "
                       "yellow predicted, green sounding, dashed white silent)")


# ---- ablation ------------------------------------------------------------------------------


@dataclass
class AblationResult:
    """One EvaluationResult per method (checkpoints, then baselines) and the printed table."""

    methods: dict[str, EvaluationResult]
    table: str
    path: Path | None = None

    def to_dict(self) -> dict:
        first = next(iter(self.methods.values()))
        return {"format": ABLATION_FORMAT, "evaluate_config": first.config.to_dict(),
                "mode": first.config.primary, "table": self.table,
                "methods": {name: {"method": r.method, "overall": r.report.overall,
                                   "per_class": r.report.per_class, "groups": r.groups,
                                   "ceilings": {k: v for k, v in r.ceilings().items()
                                                if k != "grids"},
                                   "classification": r.classification, "matching": r.matching}
                            for name, r in self.methods.items()}}


def evaluate_ablation(truth, checkpoints: Mapping[str, str | os.PathLike] | Sequence, *,
                      features: str | os.PathLike, config: EvaluateConfig = EvaluateConfig(),
                      baselines: Sequence[str] = tuple(BASELINES),
                      out_dir: str | os.PathLike | None = None,
                      groups: str | os.PathLike | Mapping[str, str] | None = None,
                      progress: bool = True) -> AblationResult:
    """Evaluate checkpoints (name -> path, or a list of paths or (name or None, path) pairs;
    unnamed ones are named by their memory setting) and the baselines on the same frames; the table has the layout of the paper's Tables 1/2, one
    more table per group (e.g. normal / hard). out_dir: ablation.json is written there."""
    from avstm.memnet.checkpoint import read_checkpoint

    gt = _truth(truth)
    if groups is None and gt.source and Path(gt.source).is_file():
        groups = find_groups(gt.source)
    group_of = read_groups(groups) if isinstance(groups, (str, os.PathLike)) else groups
    items = list(checkpoints.items()) if isinstance(checkpoints, Mapping) else [
        c if isinstance(c, tuple) else (None, c) for c in checkpoints]
    named: dict[str, str | os.PathLike] = {}
    for name, path in items:
        if name is None:
            mem = read_checkpoint(path).get("config", {}).get("memory", "?")
            name = MEMORY_NAMES.get(mem, f"memory={mem}")
            name = name if name not in named else f"{name} ({Path(path).name})"
        if name in named:
            raise AvstmError(f"{path}: method name {name!r} is given twice")
        named[name] = path
    quiet = dataclasses.replace(config, figure_videos=0, baseline=None)
    results = {}
    for name, path in named.items():
        results[name] = evaluate(gt, checkpoint=path, features=features, config=quiet,
                                 groups=group_of, progress=progress)
    for b in baselines:
        results[f"baseline: {b}"] = evaluate(gt, features=features, groups=group_of,
                                             config=dataclasses.replace(quiet, baseline=b),
                                             progress=progress)
    mode = config.primary
    proto = get_protocol(config.protocol)
    parts = [format_method_table({n: r.report.overall for n, r in results.items()}, mode=mode,
                                 title=f"all videos ({mode}; protocol {proto.name}: "
                                       f"{proto.follows})")]
    for g in sorted({g for r in results.values() for g in r.groups}):
        parts.append(format_method_table({n: r.groups[g] for n, r in results.items()
                                          if g in r.groups}, mode=mode,
                                         title=f"{g} videos ({mode})"))
    out = AblationResult(results, "\n\n".join(parts))
    if out_dir is not None:
        out.path = write_json(Path(out_dir) / "ablation.json", out.to_dict())
    return out
