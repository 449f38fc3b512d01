"""The extended protocol with non-sounding pairs (``avstm evaluate --extended``).

Mo & Morgado (NeurIPS 2022, "A Closer Look at Weakly-Supervised Audio-Visual Source
Localization") score a method on sounding and non-sounding (frame, audio) pairs together: each
pair gets a confidence that something sounds in view and a cIoU; at a confidence threshold c a
sounding pair with confidence >= c is a true positive when its cIoU >= 0.5 and a false positive
otherwise, a non-sounding pair with confidence >= c is a false positive, a sounding pair below c
a false negative (precision and recall as in their SLAVC code; 1 when their denominator is 0).
Reported: AP (interpolated precision over the recall steps of every distinct confidence, from
recall 0), max-F1 over those thresholds, and the precision when every pair counts as detected.
Juanola et al. (ICASSP 2025) add the share of the image a method activates when nothing in
view sounds: under silence, noise and off-screen audio.

The pairs, from the annotated frames of the cache's ``split``:

- sounding: frames with a sounding box, with their own audio;
- ``background``: frames without a sounding box (what ``avstm synth`` annotates in its
  background seconds), with their own audio;
- ``silence``, ``noise``, ``swap``: the sounding frames again, the network run over the whole
  video with its audio features replaced by those of silence, of white noise (``noise_dbfs``
  RMS, fresh per step) or of the next evaluated video of another class (tiled or cut to the
  length; off-screen sound). Silence and noise go through the cache's own audio backbone
  (rebuilt from its config and checked against the stored weight checksum).

Confidence: ``background`` = 1 - p(background) of the step's softmax (STM's classifier has a
background class), or ``map-max`` = the maximum of the upsampled map. Baselines have no
classifier and always use ``map-max``. Activated share: the fraction of pixels of a pair's
upsampled map >= θ, where θ is the median over the sounding pairs of the smallest map value the
primary binarisation keeps (per-map normalised binarisations would activate the same share
whatever the audio; a fixed θ measures whether the map itself reacts to the sound).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from avstm.cache import FeatureCache
from avstm.config import PlainConfig
from avstm.errors import AvstmError
from avstm.evaluate.baselines import BASELINES, baseline_prediction
from avstm.evaluate.config import CONFIDENCES
from avstm.evaluate.inputs import (IMAGE_FORMATS, annotated_step, check_fit, resolve_device,
                                   run_model)
from avstm.evaluate.metrics import evaluate_frame
from avstm.evaluate.protocols import get_protocol
from avstm.io import write_json

EXTENDED_FORMAT = "avstm-extended/1"
NEGATIVES = ("background", "silence", "noise", "swap")


@dataclass(frozen=True)
class ExtendedConfig(PlainConfig):
    """What ``evaluate_extended`` adds to an EvaluateConfig; stored in extended.json."""

    negatives: tuple[str, ...] = NEGATIVES  # kinds of non-sounding pairs
    confidence: str = "background"  # the model's confidence: "background" or "map-max"
    noise_dbfs: float = -20.0  # RMS level of the white noise, dB full scale
    seed: int = 0  # seed of the noise
    baselines: tuple[str, ...] = tuple(BASELINES)  # scored on the same pairs

    def __post_init__(self):
        bad = [n for n in self.negatives if n not in NEGATIVES]
        if bad or not self.negatives:
            raise ValueError(f"negatives {bad or '()'} are not among {', '.join(NEGATIVES)}")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence {self.confidence!r} is not one of {', '.join(CONFIDENCES)}")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"unknown baselines {bad}; valid: {', '.join(BASELINES)}")


# ---- the scores over pairs -----------------------------------------------------------------


def precision_recall(hit: np.ndarray, sounding: np.ndarray, confidence: np.ndarray,
                     threshold: float) -> tuple[float, float]:
    """Precision and recall at one confidence threshold (module docstring's counting).

    hit: (P,) bool sounding pair localized (cIoU >= 0.5); sounding: (P,) bool; confidence (P,).
    """
    on = confidence >= threshold
    tp = int((on & sounding & hit).sum())
    fp = int((on & ~(sounding & hit)).sum())
    fn = int((~on & sounding).sum())
    return (1.0 if tp + fp == 0 else tp / (tp + fp)), (1.0 if tp + fn == 0 else tp / (tp + fn))


def pair_scores(hit, sounding, confidence) -> dict:
    """AP, max-F1 and the all-detected precision of a set of pairs (module docstring)."""
    hit, sounding = np.asarray(hit, bool), np.asarray(sounding, bool)
    confidence = np.asarray(confidence, np.float64)
    if not len(confidence):
        return {"ap": None, "max_f1": None, "precision": None, "pairs": 0}
    thresholds = np.unique(confidence)[::-1]  # descending: recall grows
    pr = np.array([precision_recall(hit, sounding, confidence, t) for t in thresholds])
    p, r = pr[:, 0], pr[:, 1]
    envelope = np.maximum.accumulate(p[::-1])[::-1]  # best precision at this recall or beyond
    ap = float(np.sum(envelope * np.diff(np.concatenate([[0.0], r]))))
    f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    return {"ap": ap, "max_f1": float(f1.max()), "precision": float(p[-1]),
            "pairs": int(len(confidence))}


# ---- audio of the negatives ----------------------------------------------------------------


class AudioFeatures:
    """The cache's audio backbone, rebuilt from its config: waveforms -> features."""

    def __init__(self, cache: FeatureCache, device):
        from avstm.extract.backbones import weights_checksum
        from avstm.extract.vggish import load_vggish

        cfg = cache.config
        try:
            self.net = load_vggish(cfg.get("audio_weights", "vggish"), seed=int(cfg.get("seed", 0)))
        except AvstmError as e:
            raise AvstmError(f"{cache.path}: cannot rebuild the audio backbone of the cache for "
                             f"silence and noise ({e})") from None
        want = cfg.get("audio_weights_sha")
        if want and weights_checksum(self.net) != want:
            raise AvstmError(f"{cache.path}: the audio backbone rebuilt from the cache's config "
                             f"has other weights than the cache was extracted with")
        self.net = self.net.to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, examples: np.ndarray) -> np.ndarray:
        """(N, L) 16 kHz 0.975 s examples -> (N, 6, 4, 512) float32 features."""
        from avstm.extract.vggish import log_mel

        mel = log_mel(torch.from_numpy(np.asarray(examples, np.float32))).to(self.device)
        return self.net(mel).float().permute(0, 2, 3, 1).cpu().numpy()


def negative_audio(kind: str, shape: tuple, features: AudioFeatures | None,
                   other: np.ndarray | None, rng: np.random.Generator,
                   noise_dbfs: float) -> np.ndarray:
    """(S, T, 6, 4, 512) audio features of one video under ``kind`` (silence, noise, swap)."""
    from avstm.extract.vggish import EXAMPLE_SAMPLES

    n = int(np.prod(shape[:2]))
    if kind == "silence":
        one = features(np.zeros((1, EXAMPLE_SAMPLES), np.float32))
        return np.broadcast_to(one.reshape(1, 1, *one.shape[1:]), (*shape[:2], *one.shape[1:])).copy()
    if kind == "noise":
        amp = 10.0 ** (noise_dbfs / 20.0)
        wave = np.clip(rng.standard_normal((n, EXAMPLE_SAMPLES)) * amp, -1, 1)
        return features(wave.astype(np.float32)).reshape(shape)
    flat = other.reshape(-1, *other.shape[2:])  # swap: the other video's steps, tiled or cut
    return np.resize(flat, (n, *flat.shape[1:])).reshape(*shape[:2], *flat.shape[1:])


# ---- pairs ---------------------------------------------------------------------------------


@dataclass
class Pair:
    """One (frame, audio) pair: its kind ("sounding" or a negative), confidence, whether it is
    localized (cIoU >= threshold; sounding pairs only), the upsampled map and the smallest
    value its primary binarisation keeps."""

    kind: str
    video: str
    time: float
    confidence: float
    hit: bool
    ciou: float | None
    map: np.ndarray = field(repr=False)  # (h, w) the map as the method gave it
    kept_min: float | None = None


def _confidence(name: str, logits: np.ndarray | None, up: np.ndarray) -> float:
    if name == "background" and logits is not None:
        z = logits - logits.max()
        p = np.exp(z) / np.exp(z).sum()
        return float(1.0 - p[-1])
    return float(np.max(up))


def _pair(kind, vid, t, m, logits, boxes, v, config, mc, proto, confidence) -> Pair:
    up = proto.upsampled(np.asarray(m, dtype=np.float64), mc.size)
    conf = _confidence(confidence, logits, up)
    if kind != "sounding":
        return Pair(kind, vid, t, conf, False, None, m)
    r = evaluate_frame(m, boxes, image_size=(v.width, v.height), config=mc, video=vid, time=t)
    region = proto.regions(up, mc.modes)[mc.primary]
    c = r.ciou[mc.primary]
    return Pair(kind, vid, t, conf, bool(c >= mc.iou_threshold), float(c), m,
                float(up[region].min()) if region.any() else None)


def summarize_pairs(pairs: Sequence[Pair], negatives: Sequence[str], *, protocol="avstm",
                    size=(256, 256)) -> dict:
    """The extended scores of one method: per negative kind and over all negatives together;
    maps are upsampled to ``size`` by ``protocol``'s rule for the activated shares."""
    proto = get_protocol(protocol)
    pos = [p for p in pairs if p.kind == "sounding"]
    kept = [p.kept_min for p in pos if p.kept_min is not None]
    theta = float(np.median(kept)) if kept else None
    cious = [p.ciou for p in pos]
    out = {"sounding_pairs": len(pos), "theta": theta,
           "ciou_success": float(np.mean([p.hit for p in pos])) if pos else None,
           "ciou_mean": float(np.mean(cious)) if pos else None,
           "activated": {}, "per_negative": {}}
    def share(ps):
        if not ps or theta is None:
            return None
        return float(np.mean([np.mean(proto.upsampled(np.asarray(p.map, dtype=np.float64), size)
                                      >= theta) for p in ps]))

    out["activated"]["sounding"] = share(pos)
    for kind in negatives:
        neg = [p for p in pairs if p.kind == kind]
        out["activated"][kind] = share(neg)
        sub = pos + neg
        out["per_negative"][kind] = pair_scores([p.hit for p in sub],
                                                [p.kind == "sounding" for p in sub],
                                                [p.confidence for p in sub])
    every = [p for p in pairs if p.kind == "sounding" or p.kind in negatives]
    out.update(pair_scores([p.hit for p in every], [p.kind == "sounding" for p in every],
                           [p.confidence for p in every]))
    return out


@dataclass
class ExtendedResult:
    """Per method (the model, then the baselines) its summary; the printed table; the path."""

    methods: dict
    config: dict
    table: str
    path: Path | None = None

    def to_dict(self) -> dict:
        return {"format": EXTENDED_FORMAT, **self.config, "table": self.table,
                "methods": self.methods}


def format_extended(methods: dict, negatives: Sequence[str], *, title: str = "") -> str:
    """One row per method: confidence, cIoU@0.5 of the sounding pairs, AP, max-F1 and precision
    over all pairs, the activated share per negative kind."""
    from avstm.evaluate.report import _pct, _render

    header = ["method", "confidence", "cIoU@0.5 %", "AP %", "max-F1 %", "precision %",
              "active sounding %"] + [f"active {k} %" for k in negatives]
    rows = [[name, s["confidence"], _pct(s["ciou_success"]), _pct(s["ap"]), _pct(s["max_f1"]),
             _pct(s["precision"]), _pct(s["activated"]["sounding"])]
            + [_pct(s["activated"][k]) for k in negatives] for name, s in methods.items()]
    return "\n".join(([title] if title else []) + [_render(header, rows)])


def evaluate_extended(truth, *, checkpoint: str | os.PathLike, features: str | os.PathLike,
                      config=None, extended: ExtendedConfig = ExtendedConfig(),
                      out_dir: str | os.PathLike | None = None) -> ExtendedResult:
    """Score a checkpoint and the baselines on sounding and non-sounding pairs (module
    docstring). truth: a GroundTruth or an annotation path; config: an EvaluateConfig (split,
    protocol, size, primary binarisation, tolerance, device). out_dir: extended.json goes there."""
    from avstm.evaluate.run import EvaluateConfig, MEMORY_NAMES, _truth
    from avstm.memnet.checkpoint import load_model

    config = config or EvaluateConfig()
    gt, mc, proto = _truth(truth), config.metrics_config(), get_protocol(config.protocol)
    device = resolve_device(config.device)
    cache = FeatureCache(features)
    try:
        model, info = load_model(checkpoint, device=device, map=config.map)
        check_fit(info, cache, checkpoint)
        ids = [v for v in cache.ids(config.split) if v in gt]
        if not ids:
            raise AvstmError(f"{features}: no video of split {config.split!r} has annotations")
        audio_net = AudioFeatures(cache, device) if {"silence", "noise"} & set(extended.negatives) else None
        labels = {v: gt[v].label for v in ids}
        rng = np.random.default_rng(extended.seed)
        model_pairs: list[Pair] = []
        frames_of: dict[str, list] = {}
        for k, vid in enumerate(ids):
            v = gt[vid]
            tol = config.tolerance if config.tolerance is not None else 0.5 / cache.entry(vid).fps
            times, maps, logits = run_model(model, cache, vid, device=device)
            matched = []
            for t, boxes in sorted(v.frames.items()):
                i = annotated_step(times, t, tol, image=gt.format in IMAGE_FORMATS
                                   and len(v.frames) == 1)
                if i is None:
                    continue
                kind = "sounding" if any(b.sounding for b in boxes) else "background"
                matched.append((t, i, boxes, kind))
                if kind == "background" and "background" not in extended.negatives:
                    continue
                model_pairs.append(_pair(kind, vid, t, maps[i], logits[i], boxes, v, config, mc,
                                         proto, extended.confidence))
            frames_of[vid] = matched
            shape = cache.audio(vid).shape
            others = [o for o in ids[k + 1:] + ids[:k] if labels[o] != labels[vid]] or \
                [o for o in ids if o != vid]
            for kind in [n for n in extended.negatives if n != "background"]:
                if kind == "swap" and not others:
                    continue
                audio = negative_audio(kind, shape, audio_net,
                                       cache.audio(others[0]) if kind == "swap" else None,
                                       rng, extended.noise_dbfs)
                _, neg_maps, neg_logits = run_model(model, cache, vid, device=device, audio=audio)
                for t, i, boxes, fkind in matched:
                    if fkind == "sounding":
                        model_pairs.append(_pair(kind, vid, t, neg_maps[i], neg_logits[i], boxes,
                                                 v, config, mc, proto, extended.confidence))
        mem = info.model_config.memory
        methods = {MEMORY_NAMES.get(mem, mem): {"confidence": extended.confidence,
                                                **summarize_pairs(model_pairs, extended.negatives,
                                                                  protocol=proto.name,
                                                                  size=mc.size)}}
        for b in extended.baselines:
            pairs = []
            for vid in ids:
                v = gt[vid]
                pred = baseline_prediction(b, v.width, v.height, size=mc.size)
                for t, _, boxes, fkind in frames_of[vid]:
                    kinds = [fkind] if fkind == "background" else ["sounding"] + [
                        n for n in extended.negatives if n != "background"]
                    for kind in kinds:
                        if kind in extended.negatives or kind == "sounding":
                            pairs.append(_pair(kind, vid, t, pred.map, None, boxes, v, config,
                                               mc, proto, "map-max"))
            methods[f"baseline: {b}"] = {"confidence": "map-max",
                                         **summarize_pairs(pairs, extended.negatives,
                                                           protocol=proto.name, size=mc.size)}
    finally:
        cache.close()
    table = format_extended(methods, extended.negatives,
                            title=f"extended protocol ({config.primary}; protocol {proto.name}; "
                                  f"cIoU over sounding pairs, AP / max-F1 / precision over "
                                  f"sounding + {', '.join(extended.negatives)} pairs)")
    result = ExtendedResult(methods, {"checkpoint": str(checkpoint), "features": str(features),
                                      "evaluate_config": config.to_dict(),
                                      "extended_config": extended.to_dict(),
                                      "protocol": proto.to_dict()}, table)
    if out_dir is not None:
        result.path = write_json(Path(out_dir) / "extended.json", result.to_dict())
    return result
