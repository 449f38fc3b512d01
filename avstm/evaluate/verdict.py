"""In words: how a method did against the model-free baselines, for people, beside the numbers.

``compare`` gives one line per baseline; ``write_summary`` scores the baselines on the same
annotations (and the same split of the cache) and writes ``summary.txt`` beside metrics.json.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

from avstm.evaluate.baselines import BASELINES
from avstm.io import write_text

BASELINE_NAMES = {"centre": "the centre prior", "whole-image": "the whole image",
                  "uniform": "the uniform map"}
_METRICS = (("pointing", lambda s, m: s["pointing"]["hit"], True),
            ("mean cIoU", lambda s, m: s["ciou"][m]["mean"], False),
            ("success@0.5", lambda s, m: s["ciou"][m]["success"], True))


def compare(model: dict, other: dict, mode: str, name: str) -> str:
    """One line: the model against ``name`` on pointing, mean cIoU and success@0.5
    (binarisation ``mode``), from two report summaries (``Report.overall``)."""
    parts, ahead = [], 0
    for metric, get, pct in _METRICS:
        a, b = get(model, mode), get(other, mode)
        if a is None or b is None:
            continue
        ahead += a > b
        text = f"{100 * a:.1f} vs {100 * b:.1f} %" if pct else f"{a:.3f} vs {b:.3f}"
        parts.append(f"{metric} {text} ({'ahead' if a > b else 'behind'})")
    word = "ahead of" if ahead == len(parts) and parts else "not ahead of"
    return f"verdict: the model is {word} {name}: " + ", ".join(parts)


def _scores(summary: dict, mode: str) -> str:
    out = []
    for metric, get, pct in _METRICS:
        v = get(summary, mode)
        if v is not None:
            out.append(f"{metric} {100 * v:.1f} %" if pct else f"{metric} {v:.3f}")
    return ", ".join(out)


def summary_text(result, baselines: Mapping[str, object]) -> str:
    """The text of summary.txt for an EvaluationResult and the EvaluationResults of baselines
    (by BASELINES name) on the same annotations."""
    mode, o = result.config.primary, result.report.overall
    m = result.matching
    lines = [f"{result.method['name']} ({result.method['kind']}): {result.videos['evaluated']} videos, "
             f"{m['matched']} of {m['annotated']} annotated frames scored; binarisation {mode}.",
             f"  {_scores(o, mode)}."]
    for b, res in baselines.items():
        lines.append(compare(o, res.report.overall, mode, BASELINE_NAMES.get(b, b)) + ".")
    if result.classification:
        c = result.classification
        chance = 1.0 / (len(c.get("classes") or [0]) + 1) if c.get("classes") else None
        lines.append(f"per-second class accuracy {100 * c['accuracy']:.1f} %"
                     + (f" (chance {100 * chance:.1f} %)." if chance else "."))
    lines.append("How to read it: a model is only worth its maps where it beats the centre prior "
                 "and the whole image on every line; pointing does not depend on a threshold, "
                 "cIoU and success do (metrics.json gives every binarisation with its ceiling, "
                 "per class and per video).")
    return "\n".join(lines) + "\n"


def write_summary(result, truth, *, features: str | os.PathLike | None = None,
                  groups=None, baselines: Sequence[str] = ("centre", "whole-image")) -> Path:
    """Score ``baselines`` like ``result`` (same annotations, split and config) and write
    ``summary.txt`` beside its metrics.json; a baseline's own result compares with nothing.
    Returns the path."""
    from avstm.evaluate.run import evaluate

    if result.metrics_path is None:
        raise ValueError("the result was not written (no metrics.json)")
    others = {}
    if result.method["kind"] != "baseline":
        for b in baselines:
            if b not in BASELINES:
                raise ValueError(f"unknown baseline {b!r}; valid: {', '.join(BASELINES)}")
            cfg = dataclasses.replace(result.config, baseline=b, figure_videos=0)
            others[b] = evaluate(truth, features=features, config=cfg, groups=groups, progress=False)
    path = Path(result.metrics_path).with_name("summary.txt")
    return write_text(path, summary_text(result, others))
