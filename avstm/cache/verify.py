"""Checking a cache: ``verify_cache`` lists what is wrong with it (``avstm cache verify``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import h5py
import numpy as np

from avstm.cache.format import DATASETS, FORMAT, config_sha256, video_key


def _expected_shapes(cfg: dict, s: int) -> dict[str, tuple[int, ...]]:
    """The dataset shapes a video of ``s`` seconds must have under the extract config ``cfg``."""
    fps = int(cfg.get("fps", 4))
    side = math.ceil(int(cfg.get("frame_size", 256)) / int(cfg.get("visual_stride", 32)))  # 256 → 8 at stride 32
    return {"visual": (s, fps, side, side, int(cfg.get("visual_channels", 0))),
            "audio": (s, fps, 6, 4, 512), "times": (s, fps), "labels": (s,)}


def _verify_video(key: str, g, cfg: dict, classes: list[str]) -> list[str]:
    """The problems of one ``/videos/<key>`` group (an empty list when it is sound)."""
    where = f"videos/{key}"
    if not isinstance(g, h5py.Group):
        return [f"{where}: not a group"]
    a = g.attrs
    if not a.get("complete", False):
        return [f"{where}: no completion mark (a partial entry that readers ignore)"]
    problems: list[str] = []
    vid = a.get("id")
    if vid is None or video_key(str(vid)) != key:
        problems.append(f"{where}: id attribute {vid!r} does not match the group name")
    missing = [k for k in ("label", "split", "source", "duration", "visual_scale", "audio_scale") if k not in a]
    if missing:
        problems.append(f"{where}: missing attributes {', '.join(missing)}")
    absent = [n for n in DATASETS if not isinstance(g.get(n), h5py.Dataset)]
    if absent:
        return problems + [f"{where}: missing datasets {', '.join(absent)}"]
    s = g["labels"].shape[0] if g["labels"].ndim == 1 else -1
    for name, want in _expected_shapes(cfg, s).items():
        if g[name].shape != want:
            problems.append(f"{where}/{name}: shape {g[name].shape}, expected {want} from the config")
    dtype = str(cfg.get("dtype", "float32"))
    for name in ("visual", "audio"):
        ds = g[name]
        if str(ds.dtype) != dtype:
            problems.append(f"{where}/{name}: dtype {ds.dtype}, the config says {dtype}")
        bad = sum(int((~np.isfinite(ds[i:i + 1])).sum()) for i in range(ds.shape[0])) if ds.ndim else 0
        if bad:
            problems.append(f"{where}/{name}: {bad} values are inf or NaN")
        scale = a.get(f"{name}_scale", 1.0)
        if not (np.isfinite(scale) and scale > 0):
            problems.append(f"{where}: {name}_scale {scale!r} is not a positive number")
    times = g["times"][()]
    if times.size and not (np.isfinite(times).all() and (np.diff(times.reshape(-1)) > 0).all()):
        problems.append(f"{where}/times: not finite and increasing")
    labels = g["labels"][()]
    if labels.size and not ((labels >= 0) & (labels <= len(classes))).all():
        problems.append(f"{where}/labels: values outside 0..{len(classes)} (background = {len(classes)})")
    if "label" in a and not 0 <= int(a["label"]) < len(classes):
        problems.append(f"{where}: label {int(a['label'])} is not a class index (0..{len(classes) - 1})")
    if "split" in a and str(a["split"]) not in ("train", "val", "test"):
        problems.append(f"{where}: unknown split {a['split']!r}")
    return problems


def verify_cache(path: str | os.PathLike) -> list[str]:
    """Check a cache and list what is wrong (an empty list: the cache is sound).

    Checks the root attributes (format, config JSON, ``config_sha256`` against the config,
    classes), and for every video its completion mark, id, attributes, dataset shapes against
    the config (``(S, fps, ceil(frame_size / visual_stride), same, visual_channels)``, ``(S, fps, 6, 4, 512)``,
    ``(S, fps)``, ``(S,)``), dtype, finite values, increasing times and label ranges. Parts left
    by an interrupted run are listed too. Each problem is one line starting with the path.
    Reads every feature value once, one second at a time (memory stays small).
    """
    path = Path(path)
    problems: list[str] = []
    parts = path.with_name(path.name + ".parts")
    if parts.is_dir() and any(parts.glob("*.h5")):
        problems.append(f"{len(list(parts.glob('*.h5')))} finished parts in {parts} are not joined "
                        f"(an interrupted run; run avstm extract again to finish it)")
    if not path.exists():
        return [f"{path}: no such cache"] + [f"{path}: {p}" for p in problems]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        return [f"{path}: not a readable HDF5 file ({e})"]
    with f:
        a = f.attrs
        if a.get("format") != FORMAT:
            problems.append(f"format attribute {a.get('format')!r}, expected {FORMAT!r}")
        cfg, classes = {}, []
        try:
            config_json = str(a["config"])
            cfg = json.loads(config_json)
            if a.get("config_sha256") != config_sha256(config_json):
                problems.append("config_sha256 does not match the config attribute (edited or damaged)")
            if not isinstance(cfg, dict) or int(cfg.get("visual_channels", 0)) <= 0 or int(cfg.get("fps", 0)) <= 0:
                problems.append("config lacks fps or visual_channels")
                cfg = cfg if isinstance(cfg, dict) else {}
        except (KeyError, ValueError, TypeError) as e:
            problems.append(f"unreadable config attribute ({type(e).__name__}: {e})")
        try:
            classes = json.loads(a["classes"])
            if not isinstance(classes, list) or not classes:
                problems.append("classes attribute is not a non-empty list")
                classes = classes if isinstance(classes, list) else []
        except (KeyError, ValueError) as e:
            problems.append(f"unreadable classes attribute ({type(e).__name__}: {e})")
        videos = f.get("videos")
        if not isinstance(videos, h5py.Group):
            problems.append("no /videos group")
        else:
            for key in sorted(videos):
                try:
                    problems += _verify_video(key, videos[key], cfg, classes)
                except (OSError, KeyError, ValueError, TypeError) as e:
                    problems.append(f"videos/{key}: unreadable ({type(e).__name__}: {e})")
    return [f"{path}: {p}" for p in problems]
