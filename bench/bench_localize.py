"""`avstm localize` on one video: seconds per frame by part.

A checkpoint of an untrained STMNet (random weights; the speed does not depend on them) is
written with an extract config of random-init backbones, then `avstm.localize.run.localize`
runs over a reference clip (480×360 30 fps H.264 + AAC) and its timings are divided by the
frames: decode (frames at the sample times at native size, audio, resize), backbones, memnet
(STMNet.step frame by frame), boxes (Otsu + contours, or with --rpn detector proposals + NMS),
and overlay (write_result's overlay.mp4: a second decoding pass, drawing, encoding).
The reference in the same run is the extraction-side cost of the same frames: the backbones on
one batch, per frame (`FeatureExtractor.visual` + `.audio`).

    python bench/bench_localize.py --device cpu --backbone efficientnet_lite0
    python bench/bench_localize.py --device cuda --rpn
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from avstm.extract.config import ExtractConfig  # noqa: E402
from avstm.extract.pipeline import FeatureExtractor, audio_examples  # noqa: E402
from avstm.localize.run import LocalizeConfig, load_localize_model, localize, write_result  # noqa: E402
from avstm.memnet.checkpoint import save_checkpoint  # noqa: E402
from avstm.memnet.model import ModelConfig, STMNet  # noqa: E402
from avstm import media  # noqa: E402


def make_checkpoint(path: Path, backbone: str, device: str) -> FeatureExtractor:
    """An untrained model's checkpoint at ``path``; returns the backbones it names."""
    ex = FeatureExtractor(ExtractConfig(visual_backbone=backbone, visual_weights="random",
                                        audio_weights="random", device=device))
    net = STMNet(ModelConfig(visual_channels=ex.config.visual_channels, num_classes=29))
    save_checkpoint(path, net, train_config={}, classes=[f"c{i}" for i in range(28)],
                    extract_config=ex.config.to_dict(), epoch=0)
    return ex


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet152", choices=["resnet152", "efficientnet_lite0"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rpn", action="store_true", help="also time the detector-proposal boxes")
    args = p.parse_args()
    device = common.device_of(args.device)
    seconds = 2.0 if args.quick else args.seconds
    work = Path(args.work)
    clip = work / "clips" / f"localize_{int(seconds)}s.mp4"
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        common.write_reference_clip(clip, seconds=seconds, seed=99)
    res = {"device": str(device), "backbone": args.backbone, "clip_seconds": seconds,
           "batch_size": args.batch_size}
    print(f"== localize: {args.backbone} on {device}, {clip.name} (480x360 30 fps), batch {args.batch_size}")
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        ckpt = Path(tmp) / "model.pt"
        ex = make_checkpoint(ckpt, args.backbone, str(device))
        methods = ["otsu"] + (["rpn"] if args.rpn else [])
        for method in methods:
            cfg = LocalizeConfig(device=str(device), boxes=method, batch_size=args.batch_size,
                                 detector_weights="random")
            t0 = time.perf_counter()
            model = load_localize_model(ckpt, config=cfg)
            load_s = time.perf_counter() - t0
            localize(model, clip, config=cfg, progress=False)  # warm-up (autotuning, first calls)
            result = localize(model, clip, config=cfg, progress=False)
            write_result(result, Path(tmp) / method, overlay=True, progress=False)
            n = len(result.frames)
            res[f"{method}_frames"] = n
            res[f"{method}_load_s"] = load_s
            for key, value in result.timings.items():
                res[f"{method}_{key}_s_per_frame"] = value / n
            print(f"  {method}: {n} frames; s/frame: " + ", ".join(
                f"{k} {v / n:.4f}" for k, v in result.timings.items()) + f" (loading {load_s:.1f} s)")
        clip_data = media.decode(clip, fps=4, size=(ex.config.frame_size, ex.config.frame_size))
        frames = clip_data.frames[:args.batch_size]
        examples = audio_examples(clip_data.audio, clip_data.times[:args.batch_size])
        tb = common.timeit(lambda: (ex.visual(frames), ex.audio(examples)), device=device, repeat=3)
        res["reference_backbones_s_per_frame"] = tb / len(frames)
        res["ratio_localize_backbones_to_reference"] = res["otsu_backbones_s_per_frame"] / (tb / len(frames))
        print(f"  reference: the backbones on one batch of {len(frames)} frames {tb / len(frames):.4f} s/frame")
    common.report(f"localize_{device.type}", res, args.json)


if __name__ == "__main__":
    main()
