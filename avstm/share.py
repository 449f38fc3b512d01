"""Sharing a trained model: ``avstm export`` writes one file; ``avstm.load`` reads it back from a
path or a URL, checksum checked, through the torch hub cache.

A package (``*.avstm``, format ``avstm-model/1``) is a zip of::

    manifest.json   format, avstm version, the SHA-256 of model.pt, classes, model and extract
                    configs (what the backbones must be rebuilt with)
    model.pt        the checkpoint without its optimizer state (memnet/checkpoint.py)
    MODEL_CARD.md   what it is, the training data and recipe, its metrics, how to use it

and beside it ``<name>.sha256`` (``sha256sum`` format) holds the package's own SHA-256, the
checksum to publish with its URL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import urllib.error
import urllib.parse
import zipfile
from pathlib import Path

import torch

from avstm._version import __version__
from avstm.errors import CheckpointError
from avstm.io import atomic_path, write_bytes, write_text

PACKAGE_FORMAT = "avstm-model/1"
PACKAGE_SUFFIX = ".avstm"
URL_SCHEMES = ("http", "https", "file")


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class Exported:
    """What ``export_model`` wrote: the package, its SHA-256 and the checksum file."""

    path: Path
    sha256: str
    checksum_file: Path


def _run_records(checkpoint: Path) -> tuple[dict, list[dict], str | None]:
    """The run folder's config.json, metrics.jsonl rows and an evaluation's summary.txt (the
    newest eval-*/summary.txt), when they are beside the checkpoint."""
    folder = checkpoint.parent
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    try:
        rows = [json.loads(line) for line in
                (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        rows = []
    summaries = sorted(folder.glob("eval-*/summary.txt"), key=lambda p: p.stat().st_mtime)
    return config, rows, summaries[-1].read_text(encoding="utf-8") if summaries else None


def model_card(ckpt: dict, *, name: str, run_config: dict, history: list[dict],
               evaluation: str | None) -> str:
    """The MODEL_CARD.md text of a checkpoint dict and its run's records."""
    m, t, e = ckpt.get("config", {}), ckpt.get("train_config", {}), ckpt.get("extract_config", {})
    classes = ckpt.get("classes", [])
    best = ckpt.get("best") or {}
    lines = [f"# {name}", "",
             "A space-time memory network (Li, Tian and Xu, BMVC 2021) for sounding-object "
             f"localization, trained with avstm {ckpt.get('version', '?')}.", "",
             "## Use", "", "```python", "import avstm",
             f'model = avstm.load("{name}{PACKAGE_SUFFIX}")  # or a URL with sha256="..."',
             'result = model.localize("clip.mp4")  # result.maps, result.boxes, result.class_ids',
             "```", "",
             f"or `avstm localize --video clip.mp4 --checkpoint {name}{PACKAGE_SUFFIX} --out out/`.", "",
             "## Training data", "",
             f"- classes ({len(classes)}, background = {len(classes)}): {', '.join(classes)}",
             f"- feature cache: {run_config.get('cache', 'not recorded')}",
             f"- visual backbone: {e.get('visual_backbone')} ({e.get('visual_weights')}, tap "
             f"{e.get('visual_tap')}, checksum {e.get('visual_weights_sha') or 'none'}); audio: "
             f"VGGish ({e.get('audio_weights')}, checksum {e.get('audio_weights_sha') or 'none'})",
             f"- frames: {e.get('fps')} per second at {e.get('frame_size')}×{e.get('frame_size')}", "",
             "## Recipe", "",
             f"- memory {m.get('memory')}, K = {m.get('memory_length')}, C = {m.get('dim')}, "
             f"map {m.get('map')}, attention scale {m.get('attention_scale')}",
             f"- {ckpt.get('epoch')} epochs of {t.get('epochs')}, batch {t.get('batch_size')}, "
             f"lr {t.get('lr')}, labels {t.get('labels')}, seed {t.get('seed')}", "",
             "## Metrics", ""]
    if best:
        lines.append(f"- chosen on {best.get('metric')} = {best.get('value')}")
    if ckpt.get("metrics"):
        lines.append("- at this epoch: " + ", ".join(f"{k} {v}" for k, v in ckpt["metrics"].items()
                                                    if isinstance(v, (int, float))))
    if history:
        lines.append(f"- {len(history)} epochs recorded in metrics.jsonl")
    if evaluation:
        lines += ["", "### Localization (avstm evaluate, summary.txt)", "", "```", evaluation.strip(), "```"]
    if not (best or ckpt.get("metrics") or evaluation):
        lines.append("- none recorded")
    return "\n".join(lines) + "\n"


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                 evaluation: str | os.PathLike | None = None) -> Exported:
    """Write the package ``out`` (see the module docstring) from a checkpoint of ``avstm train``;
    ``evaluation``: a summary.txt for the card (default: the run's newest eval-*/summary.txt).
    Atomic. Raises CheckpointError for a checkpoint that does not load."""
    from avstm.memnet.checkpoint import load_model, read_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    load_model(checkpoint)  # the network must rebuild from it
    ckpt = {**read_checkpoint(checkpoint), "optimizer": None}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    model_bytes = buf.getvalue()
    run_config, history, summary = _run_records(checkpoint)
    if evaluation is not None:
        summary = Path(evaluation).read_text(encoding="utf-8")
    name = out.name[:-len(PACKAGE_SUFFIX)] if out.name.endswith(PACKAGE_SUFFIX) else out.stem
    manifest = {"format": PACKAGE_FORMAT, "avstm_version": __version__,
                "model": {"file": "model.pt", "sha256": hashlib.sha256(model_bytes).hexdigest()},
                "classes": ckpt.get("classes", []), "model_config": ckpt.get("config", {}),
                "extract_config": ckpt.get("extract_config", {}), "source": str(checkpoint)}
    card = model_card(ckpt, name=name, run_config=run_config, history=history, evaluation=summary)
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1) + "\n")
            z.writestr("model.pt", model_bytes)
            z.writestr("MODEL_CARD.md", card)
    digest = sha256_of(out)
    checksum_file = out.with_name(out.name + ".sha256")
    write_text(checksum_file, f"{digest}  {out.name}\n")
    return Exported(path=out, sha256=digest, checksum_file=checksum_file)


def cache_dir() -> Path:
    """Where downloaded and unpacked models go: ``<torch hub dir>/avstm``."""
    return Path(torch.hub.get_dir()) / "avstm"


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in URL_SCHEMES


def _download(url: str, sha256: str | None) -> Path:
    if not sha256:
        raise CheckpointError(f"{url}: a model from a URL needs its SHA-256 (sha256=..., --sha256)")
    sha256 = sha256.lower()
    name = Path(urllib.parse.urlparse(url).path).name or "model"
    dst = cache_dir() / "downloads" / f"{sha256[:16]}-{name}"
    if dst.is_file() and sha256_of(dst) == sha256:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        try:
            torch.hub.download_url_to_file(url, str(tmp), progress=False)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
            raise CheckpointError(f"{url}: cannot download ({reason})") from None
        got = sha256_of(tmp)
        if got != sha256:
            raise CheckpointError(f"{url}: SHA-256 {got}, not the {sha256} it was given with; "
                                  f"not loaded")
    return dst


def _unpack(package: Path) -> Path:
    """The checkpoint inside a package, checked against the manifest and unpacked once into
    the cache; returns its path."""
    try:
        with zipfile.ZipFile(package) as z:
            manifest = json.loads(z.read("manifest.json"))
            if manifest.get("format") != PACKAGE_FORMAT:
                raise CheckpointError(f"{package}: not an avstm model package "
                                      f"(format {manifest.get('format')!r}, expected {PACKAGE_FORMAT})")
            data = z.read(manifest["model"]["file"])
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise CheckpointError(f"{package}: not a readable avstm model package ({e})") from None
    want = manifest["model"]["sha256"]
    if hashlib.sha256(data).hexdigest() != want:
        raise CheckpointError(f"{package}: model.pt does not match the SHA-256 in its manifest "
                              f"(damaged or altered)")
    dst = cache_dir() / "models" / want[:16] / "model.pt"
    if not dst.is_file():
        write_bytes(dst, data)
    return dst


def local_checkpoint(source: str | os.PathLike, *, sha256: str | None = None) -> Path:
    """A loadable checkpoint path for ``source``: a checkpoint file, a package (``*.avstm``),
    or a URL (http, https, file) of either, downloaded into the torch hub cache with its
    SHA-256 checked (required for a URL; for a local file, checked when given)."""
    text = str(source)
    if _is_url(text):
        path = _download(text, sha256)
    else:
        path = Path(source)
        if sha256 and path.is_file() and sha256_of(path) != sha256.lower():
            raise CheckpointError(f"{path}: SHA-256 {sha256_of(path)}, not the {sha256} it was "
                                  f"given with; not loaded")
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if "manifest.json" in z.namelist():
                return _unpack(path)
    return path


