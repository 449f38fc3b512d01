"""The ``avstm`` command: one click group, one command per stage.

Each command parses options, builds its stage's config, calls the library function and
prints or writes the result. Library errors (``avstm.errors.AvstmError``) become one line on
stderr and exit code 1; nothing else is caught here.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
import click

from avstm._version import __version__
from avstm.device import DEVICE_HELP
from avstm.errors import AvstmError
from avstm.demo import DemoConfig
from avstm.evaluate.baselines import BASELINES
from avstm.datasets import DATASET_FORMATS
from avstm.evaluate.protocols import PROTOCOLS, SIZES as EVALUATE_SIZES
from avstm.evaluate.config import CONFIDENCES, EvaluateConfig
from avstm.extract.config import DTYPES, VISUAL_BACKBONE_NAMES, ExtractConfig
from avstm.localize.config import BOX_METHODS, LocalizeConfig
from avstm.memnet.config import (ATTENTION_SCALES, IN_MEMORY_CHOICES, LABEL_MODES, MAP_CHOICES, MEMORY_MODES,
                                 VISUAL_POOLS, TrainConfig)
from avstm.synth.config import SIZES as SYNTH_SIZES, SynthConfig


def make_config(config_cls, **options):
    """Build a stage config from CLI options, turning a bad value into a usage error that
    names the command's options (``batch_size`` → ``--batch-size``), not the config's fields."""
    try:
        return config_cls(**options)
    except (TypeError, ValueError) as e:
        raise click.UsageError(option_words(str(e))) from None


def option_words(message: str) -> str:
    """``message`` with each name of a parameter of the running command replaced by its option."""
    ctx = click.get_current_context(silent=True)
    names = {p.name: max(p.opts, key=len) for p in (ctx.command.params if ctx else ())
             if isinstance(p, click.Option) and p.name}
    if not names:
        return message
    words = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.sub(rf"(?<![\w-])({words})(?![\w-])", lambda m: names[m.group(1)], message)


def _check_device(ctx, param, value):
    from avstm.device import check_device

    return check_device(value, option=max(param.opts, key=len))


def device_option(default):
    """``--device`` of every command: one reading of a device name (``avstm.device``), checked
    before any work starts."""
    return click.option("--device", default=default, show_default=True, callback=_check_device,
                        help=DEVICE_HELP)


def _folder_out(ctx, param, value):
    if value is not None and value.exists() and not value.is_dir():
        raise AvstmError(f"{value}: a file, not a folder; --out names the folder to write into")
    return value


def _file_out(ctx, param, value):
    if value is not None and value.is_dir():
        raise AvstmError(f"{value}: a folder; --out names the file to write")
    return value


def quiet_option(f):
    """``--quiet`` of every command: no progress bars, no timing lines."""
    return click.option("--quiet", is_flag=True, help="No progress bar and no timing line.")(f)


def config_default(config_cls, field: str):
    """The default of ``config_cls.field``, so options never retype a dataclass default."""
    for f in dataclasses.fields(config_cls):
        if f.name == field:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
    raise KeyError(f"{config_cls.__name__} has no field {field!r}")


class _Group(click.Group):
    """A click group that turns library errors into one line on stderr and exit code 1, and
    lists each command with its whole first paragraph (click would cut it at 45 characters)."""

    def add_command(self, cmd, name=None):
        if cmd.short_help is None and cmd.help:
            cmd.short_help = " ".join(cmd.help.split("\n\n")[0].split())
        super().add_command(cmd, name)

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except AvstmError as e:
            click.echo(f"avstm: error: {e}", err=True)
            ctx.exit(1)
        except OSError as e:  # a filesystem fault the library did not name (it names most)
            click.echo(f"avstm: error: {e.filename}: {e.strerror}" if e.filename and e.strerror
                       else f"avstm: error: {' '.join(str(e).split())}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("avstm: interrupted; finished work is kept, run again to resume", err=True)
            ctx.exit(130)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning (annotation counts, skipped lines) as one line, without Python's
    source location: ``avstm: warning: <message>``."""
    click.echo(f"avstm: warning: {' '.join(str(message).split())}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="avstm")
def cli():
    """avstm: find the objects that make the sound in videos (STM, BMVC 2021)."""


# ---- commands are defined below, one per stage ------------------------------------------

@cli.command()
@click.option("--dataset", type=click.Choice(DATASET_FORMATS), required=True,
              help="ave: ROOT/AVE/<id>.mp4 + Annotations.txt + split files; folder: --videos DIR + --labels CSV; vggss / flickr: --videos DIR of clips named by the annotation ids + --annotations (docs/benchmarks.md).")
@click.option("--root", type=click.Path(path_type=Path), help="AVE root (with --dataset ave).")
@click.option("--videos", type=click.Path(path_type=Path), help="Folder of videos (with --dataset folder, vggss, flickr).")
@click.option("--labels", type=click.Path(path_type=Path), help="CSV id,label[,split][,start,end] (with --dataset folder).")
@click.option("--annotations", type=click.Path(path_type=Path),
              help="vggss.json (--dataset vggss) or the folder of Flickr XMLs (--dataset flickr).")
@click.option("--ids", type=click.Path(path_type=Path),
              help="--dataset flickr: flickr_test.csv (default: every XML of --annotations).")
@click.option("--anchor", type=float, default=None,
              help="vggss / flickr: time of the annotated frame in each clip, made the last step [default: 4.96 for VGG-SS, 10 for Flickr].")
@click.option("--out", type=click.Path(path_type=Path), required=True, callback=_file_out,
              help="The HDF5 cache to write or resume (a file: the one product).")
@click.option("--visual-backbone", type=click.Choice(VISUAL_BACKBONE_NAMES),
              default=config_default(ExtractConfig, "visual_backbone"), show_default=True)
@click.option("--visual-weights", default=config_default(ExtractConfig, "visual_weights"), show_default=True,
              help="imagenet, random, or a state-dict file.")
@click.option("--visual-tap", default=None, help="Feature tap (resnet152: layer4; efficientnet_lite0: blocks|head, or blocks16: the same blocks at stride 16, "
                   "16×16 maps at --frame-size 256).")
@click.option("--audio-weights", default=config_default(ExtractConfig, "audio_weights"), show_default=True,
              help="vggish (AudioSet release), random, or a state-dict file (torchaudio or torchvggish layout).")
@click.option("--frame-size", type=int, default=config_default(ExtractConfig, "frame_size"), show_default=True)
@click.option("--fps", type=int, default=config_default(ExtractConfig, "fps"), show_default=True,
              help="Frames kept per second.")
@click.option("--dtype", type=click.Choice(DTYPES), default=config_default(ExtractConfig, "dtype"),
              show_default=True)
@click.option("--seed", type=int, default=config_default(ExtractConfig, "seed"), show_default=True,
              help="Seed of random-init backbones.")
@device_option(config_default(ExtractConfig, "device"))
@click.option("--batch-size", type=int, default=config_default(ExtractConfig, "batch_size"), show_default=True,
              help="Frames per backbone batch.")
@click.option("--workers", type=int, default=config_default(ExtractConfig, "workers"), show_default=True,
              help="Decoding processes.")
@click.option("--decode-threads", type=int, default=config_default(ExtractConfig, "decode_threads"),
              show_default=True, help="FFmpeg threads per decoding process.")
@click.option("--decode-device", default=config_default(ExtractConfig, "decode_device"), show_default=True,
              help="cpu, or cuda / cuda:N to decode the video on the GPU's NVDEC (FFmpeg's hardware decoder).")
@click.option("--limit", type=int, default=None, help="Extract at most this many new videos.")
@click.option("--compile/--no-compile", default=config_default(ExtractConfig, "compile"), show_default=True,
              help="torch.compile the visual backbone.")
@click.option("--strict/--no-strict", default=config_default(ExtractConfig, "strict"), show_default=True,
              help="Exit with status 1 when any video fails.")
@quiet_option
def extract(dataset, root, videos, labels, annotations, ids, anchor, out, quiet, **options):
    """Decode videos, run the frozen backbones, write per-second maps into an HDF5 cache.

    Resumable: videos already in OUT are skipped; a killed run loses at most its last part.
    """
    from avstm.datasets import read_ave, read_folder
    from avstm.extract.pipeline import extract as run_extract

    config = make_config(ExtractConfig, **options)
    if dataset == "ave":
        if root is None:
            raise click.UsageError("--dataset ave needs --root")
        data = read_ave(root)
    elif dataset in ("vggss", "flickr"):
        from avstm.benchmarks import (FLICKR_FRAME_TIME, VGGSS_FRAME_TIME, read_flickr_clips,
                                      read_vggss_clips)

        if videos is None or annotations is None:
            raise click.UsageError(f"--dataset {dataset} needs --videos and --annotations")
        if dataset == "vggss":
            data = read_vggss_clips(videos, annotations, anchor=anchor or VGGSS_FRAME_TIME)
        else:
            data = read_flickr_clips(videos, annotations, ids, anchor=anchor or FLICKR_FRAME_TIME)
    else:
        if videos is None or labels is None:
            raise click.UsageError("--dataset folder needs --videos and --labels")
        data = read_folder(videos, labels)
    result = run_extract(data, out, config=config, progress=not quiet)
    click.echo(result.summary())
    if result.failed and config.strict:
        raise SystemExit(1)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, callback=_folder_out,
              help="Dataset folder to write or resume (AVE layout + boxes.json + meta.json).")
@click.option("--videos", type=int, default=config_default(SynthConfig, "videos"), show_default=True)
@click.option("--seed", type=int, default=config_default(SynthConfig, "seed"), show_default=True)
@click.option("--hard", type=float, default=config_default(SynthConfig, "hard"), show_default=True,
              help="Share of videos that also hold a silent object of the sounding class.")
@click.option("--width", type=int, default=config_default(SynthConfig, "width"), show_default=True)
@click.option("--height", type=int, default=config_default(SynthConfig, "height"), show_default=True)
@click.option("--seconds", type=int, default=config_default(SynthConfig, "seconds"), show_default=True)
@click.option("--fps", type=int, default=config_default(SynthConfig, "fps"), show_default=True)
@click.option("--whole-event-share", type=float, show_default=True,
              default=config_default(SynthConfig, "whole_event_share"),
              help="Share of videos whose event spans the whole clip.")
@click.option("--sizes", type=click.Choice(SYNTH_SIZES), show_default=True,
              default=config_default(SynthConfig, "sizes"),
              help="benchmark: object sizes, placement and backgrounds like the real benchmarks'"
                   " (VGG-SS, AudioSet-Instrument); small: the original small objects.")
@click.option("--multi-share", type=float, show_default=True,
              default=config_default(SynthConfig, "multi_share"),
              help="benchmark sizes: share of videos with two sounding objects.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes.")
@click.option("--overwrite", is_flag=True, help="Re-encode videos already present.")
@quiet_option
def synth(out, workers, overwrite, quiet, **options):
    """Generate the synthetic sounding-object dataset as real mp4 files with exact boxes.

    Resumable: videos already in OUT are kept.
    """
    from avstm.synth.generate import generate

    config = make_config(SynthConfig, **options)
    result = generate(out, config=config, workers=workers, overwrite=overwrite, progress=not quiet)
    counts = ", ".join(f"{k} {v}" for k, v in result.split_counts.items())
    click.echo(f"synth: {len(result.videos)} videos in {result.out_dir} ({result.written} written, "
               f"{result.skipped} kept; {counts}) in {result.seconds:.1f} s")


@cli.group(cls=_Group)
def cache():
    """Check and combine feature caches."""


@cache.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@quiet_option
def cache_verify(path, quiet):
    """Check a cache (completion marks, shapes against its config, finite values, attributes).

    Prints one line per problem; exit status 1 when there is any.
    """
    from avstm.cache import verify_cache

    problems = verify_cache(path)
    for line in problems:
        click.echo(line)
    if problems:
        click.echo(f"avstm: {path}: {len(problems)} problem(s)", err=True)
        raise SystemExit(1)
    if not quiet:
        click.echo(f"{path}: ok")


@cache.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, callback=_file_out,
              help="The merged cache to write (a file: the one product).")
@quiet_option
def cache_merge(inputs, out, quiet):
    """Join caches of the same extract config (e.g. shards) into OUT."""
    from avstm.cache import merge_caches

    n = merge_caches(list(inputs), out)
    if not quiet:
        click.echo(f"{out}: {n} videos from {len(inputs)} caches")




def _train_default(name):
    return config_default(TrainConfig, name)


@cli.command("train")
@click.option("--features", type=click.Path(path_type=Path), required=True, help="The HDF5 feature cache.")
@click.option("--out", type=click.Path(path_type=Path), required=True, callback=_folder_out,
              help="Run folder: best.pt, last.pt, metrics.jsonl, config.json.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt (same cache and options; more --epochs allowed).")
@click.option("--epochs", type=int, default=_train_default("epochs"), show_default=True)
@click.option("--batch-size", type=int, default=_train_default("batch_size"), show_default=True,
              help="Videos per step over all ranks.")
@click.option("--lr", type=float, default=_train_default("lr"), show_default=True, help="Adam learning rate.")
@click.option("--weight-decay", type=float, default=_train_default("weight_decay"), show_default=True)
@click.option("--labels", type=click.Choice(LABEL_MODES), default=_train_default("labels"),
              show_default=True, help="video: the video's class on every step; segment: per-second labels with background.")
@click.option("--seed", type=int, default=_train_default("seed"), show_default=True)
@click.option("--workers", type=int, default=_train_default("workers"), show_default=True,
              help="DataLoader processes per rank (0: read in the main process).")
@click.option("--in-memory", type=click.Choice(IN_MEMORY_CHOICES), default=_train_default("in_memory"),
              show_default=True, help="Hold the cache in RAM (auto: when it takes under half the free memory).")
@device_option(_train_default("device"))
@click.option("--amp/--no-amp", default=_train_default("amp"), show_default=True, help="bf16 autocast on CUDA.")
@click.option("--memory", type=click.Choice(MEMORY_MODES), default=_train_default("memory"),
              show_default=True, help="none: without temporal; unimodal: U; full: C+U.")
@click.option("--memory-length", type=int, default=_train_default("memory_length"), show_default=True,
              help="K past steps in the memory.")
@click.option("--heads", type=int, default=_train_default("heads"), show_default=True)
@click.option("--dim", type=int, default=_train_default("dim"), show_default=True, help="Joint embedding C.")
@click.option("--proj-layers", type=int, default=_train_default("proj_layers"), show_default=True)
@click.option("--hidden", type=int, default=_train_default("hidden"), show_default=True, help="Classifier hidden size.")
@click.option("--dropout", type=float, default=_train_default("dropout"), show_default=True)
@click.option("--map", type=click.Choice(list(MAP_CHOICES)), default=_train_default("map"), show_default=True,
              help="The map localize and evaluate read by default (changeable there with --map).")
@click.option("--attention-scale", type=click.Choice(list(ATTENTION_SCALES)),
              default=_train_default("attention_scale"), show_default=True,
              help="Scale of Eq. 1's dot products before the softmax: none (as the paper writes it), sqrt (1/√C), learned.")
@click.option("--audio-dropout", type=float, default=_train_default("audio_dropout"), show_default=True,
              help="Share of training steps whose audio half of the classifier input is zeroed.")
@click.option("--visual-loss", type=float, default=_train_default("visual_loss"), show_default=True,
              help="Weight of an extra cross-entropy of the visual half alone (0: off).")
@click.option("--visual-pool", type=click.Choice(list(VISUAL_POOLS)), default=_train_default("visual_pool"),
              show_default=True, help="What that visual head classifies: attention (Σ x̂_av) or mean (x̂_v averaged "
                                      "over positions, a CAM head; read its map with --map class_cam).")
@click.option("--contrastive", type=float, default=_train_default("contrastive"), show_default=True,
              help="Weight of an in-batch audio-visual contrastive term on the memory layer's scores (0: off).")
@quiet_option
@click.option("--no-progress", is_flag=True, hidden=True, help="The old name of --quiet.")
def train_command(features, out, resume, quiet, no_progress, **options):
    """Train the space-time memory network on a feature cache; one JSON line of metrics per epoch.

    Several GPUs or machines: run the same command under torchrun.
    """
    import json

    from avstm.memnet.train import train

    config = make_config(TrainConfig, **options)
    result = train(features, out, config=config, resume=resume, progress=not (quiet or no_progress),
                   on_epoch=lambda m: click.echo(json.dumps(m)))
    if result.rank == 0:
        click.echo(f"{result.best_path} (best), {result.last_path} (last)", err=True)




def _localize_default(name):
    return config_default(LocalizeConfig, name)


@cli.command("localize")
@click.option("--video", type=click.Path(path_type=Path), help="The video to localize (any file FFmpeg reads).")
@click.option("--videos", type=click.Path(path_type=Path),
              help="Instead of --video: a folder of videos or a text file of paths; OUT gets a folder "
                   "per video and summary.csv (resumable).")
@click.option("--features", type=click.Path(path_type=Path),
              help="Instead of --video: a feature cache holding the video (with --id); no backbones run.")
@click.option("--id", "video_id", help="The video's id in --features; with --video, the id used in maps.npz (default: file stem).")
@click.option("--checkpoint", required=True,
              help="A trained model: a run's best.pt, a package of avstm export, or a URL of either (with --sha256).")
@click.option("--sha256", default=None, help="The SHA-256 of --checkpoint (needed for a URL).")
@click.option("--out", type=click.Path(path_type=Path), required=True, callback=_folder_out,
              help="Folder for boxes.json, overlay.mp4 and maps.npz (with --videos: a folder per video).")
@click.option("--fps", type=int, default=None, help="Frames per second sampled [default: the checkpoint's extract fps].")
@click.option("--boxes", type=click.Choice(BOX_METHODS), default=_localize_default("boxes"), show_default=True,
              help="otsu: threshold the map, box its contours; rpn: Faster R-CNN proposals scored by the map, NMS.")
@click.option("--detector-weights", default=_localize_default("detector_weights"), show_default=True,
              help="rpn: coco, random, or a state-dict file.")
@click.option("--detector-min-size", type=int, default=_localize_default("detector_min_size"), show_default=True,
              help="rpn: the detector's input size (shorter side).")
@click.option("--detector-score-threshold", type=float, default=_localize_default("detector_score_threshold"),
              show_default=True, help="rpn: minimum detector confidence of a proposal.")
@click.option("--min-area", type=float, default=_localize_default("min_area"), show_default=True,
              help="Drop boxes smaller than this fraction of the frame.")
@click.option("--max-boxes", type=int, default=_localize_default("max_boxes"), show_default=True,
              help="Boxes kept per frame, best first (0: all).")
@click.option("--save-maps", is_flag=True, help="Also write the raw 8×8 maps as maps.npz.")
@click.option("--no-overlay", is_flag=True, help="Do not write overlay.mp4.")
@click.option("--frames", "frames_dir", type=click.Path(path_type=Path), default=None,
              help="Also write each sampled frame's overlay as a PNG into this folder.")
@click.option("--colorbar", is_flag=True, help="Draw the heatmap's colour bar on the overlay.")
@click.option("--visual-weights", default=None, help="Visual backbone weights file replacing the checkpoint's (same checksum).")
@click.option("--audio-weights", default=None, help="VGGish weights file replacing the checkpoint's (same checksum).")
@device_option(_localize_default("device"))
@click.option("--map", type=click.Choice(list(MAP_CHOICES)), default=None,
              help="Which map to localize from [default: the checkpoint's].")
@click.option("--batch-size", type=int, default=_localize_default("batch_size"), show_default=True,
              help="Frames per backbone batch.")
@click.option("--strict", is_flag=True, help="With --videos: exit with status 1 when any video fails.")
@quiet_option
def localize_command(video, videos, features, video_id, checkpoint, sha256, out, save_maps, no_overlay,
                     frames_dir, colorbar, strict, quiet, **options):
    """Localize the sounding objects of a video or a folder of videos: boxes.json, overlay.mp4 in OUT."""
    from avstm.io import check_writable
    from avstm.localize.run import (fps_warnings, load_localize_model, localize_cached, localize_to,
                                    write_result)

    if sum(x is not None for x in (video, videos, features)) != 1:
        raise click.UsageError("give one of --video, --videos or --features with --id")
    if features is not None and not video_id:
        raise click.UsageError("--features needs --id")
    if options["max_boxes"] == 0:
        options["max_boxes"] = None
    config = make_config(LocalizeConfig, **options)
    from avstm.share import local_checkpoint

    check_writable(out)  # before loading models: a read-only or full disk fails now
    model = load_localize_model(local_checkpoint(checkpoint, sha256=sha256), config=config,
                                backbones=features is None)
    products = dict(overlay=not no_overlay, save_maps=save_maps, frames_dir=frames_dir,
                    show_colorbar=colorbar, progress=not quiet)
    if videos is not None:
        from avstm.localize.folder import list_videos, localize_folder

        for line in fps_warnings(model, config):
            click.echo(f"avstm: warning: {line}", err=True)
        res = localize_folder(model, list_videos(videos), out, config=config, **products)
        for row in res.failed:
            click.echo(f"avstm: failed: {row['error']}", err=True)
        click.echo(f"{res.summary}: {len(res.rows)} videos ({res.done} done, {res.kept} kept, "
                   f"{len(res.failed)} failed)" + (f"; {res.failures}" if res.failures else ""))
        if res.failed and strict:
            raise SystemExit(1)
        return
    if video is not None:
        result, written = localize_to(model, video, out, config=config, video_id=video_id, **products)
    else:
        result = localize_cached(model, features, video_id, config=config, progress=not quiet)
        written = write_result(result, out, **products)
    for line in result.warnings:
        click.echo(f"avstm: warning: {line}", err=True)
    n = len(result.frames)
    t = result.timings
    click.echo(f"{written.boxes}: {n} frames of {result.video_id} at {result.fps} fps"
               + (f"; {written.overlay}" if written.overlay else "")
               + (f"; {written.maps}" if written.maps else ""))
    if n and not quiet:
        click.echo("  s/frame: " + ", ".join(f"{k} {t.get(k, 0.0) / n:.4f}"
                                             for k in ("decode", "backbones", "memnet", "boxes", "overlay")),
                   err=True)


@cli.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path), callback=_file_out)
@click.option("--evaluation", type=click.Path(path_type=Path), default=None,
              help="A summary.txt of avstm evaluate for the model card [default: the run's newest eval-*/summary.txt].")
@quiet_option
def export_command(checkpoint, out, evaluation, quiet):
    """Package a trained model in one file to share: weights, configs, classes, model card, SHA-256.

    Writes OUT (e.g. model.avstm) and OUT.sha256; avstm.load and localize --checkpoint read it,
    from a path or a URL with --sha256.
    """
    from avstm.share import export_model

    done = export_model(checkpoint, out, evaluation=evaluation)
    if not quiet:
        click.echo(f"{done.path}: sha256 {done.sha256} ({done.checksum_file})")


def _evaluate_default(name):
    return config_default(EvaluateConfig, name)


def _named_checkpoints(values) -> list[tuple[str | None, str]]:
    """--checkpoint values of --ablation: PATH (named by its memory setting) or NAME=PATH;
    a value that is an existing path is a path even when it holds '='."""
    out = []
    for v in values:
        name, sep, path = v.partition("=")
        out.append((None, v) if Path(v).exists() or not sep else (name, path))
    return out


@cli.command("evaluate")
@click.option("--annotations", type=click.Path(path_type=Path), required=True,
              help="Box ground truth: avstm JSON, VGG-SS, Flickr XML folder, AudioSet-Instrument, COCO.")
@click.option("--checkpoint", multiple=True, help="Trained model; with --ablation repeat it (PATH or NAME=PATH).")
@click.option("--features", type=click.Path(path_type=Path), help="The feature cache (needed with --checkpoint).")
@click.option("--maps", type=click.Path(path_type=Path), help="Score a maps .npz (keys '<video id>@<t.3f>') instead of a model.")
@click.option("--baseline", type=click.Choice(list(BASELINES)), default=None,
              help="Score a model-free baseline instead of a model.")
@click.option("--ablation", is_flag=True, help="Every --checkpoint plus the baselines in one table.")
@click.option("--out", type=click.Path(path_type=Path), default=None, callback=_folder_out,
              help="Output folder (default: beside the checkpoint, maps or annotations).")
@click.option("--split", default=_evaluate_default("split"), show_default=True)
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default=_evaluate_default("protocol"),
              show_default=True,
              help="Rules around cIoU: avstm's, or those of EZ-VSL, LVS or DSOL's code (masks, upsampling, binarisation, consensus, AUC grid, frames without a box).")
@click.option("--size", type=click.Choice([str(s) for s in EVALUATE_SIZES]), default=None,
              help="Evaluation resolution [default: 256; 224 under ezvsl/lvs/dsol].")
@click.option("--binarisation", "modes", multiple=True,
              help="value:T, top:P, median or max:R; repeatable (default: all four; a reference protocol uses its own).")
@click.option("--groups", type=click.Path(path_type=Path), default=None,
              help="JSON of per-video 'hard' flags (default: meta.json beside the annotations).")
@click.option("--tolerance", type=float, default=None,
              help="Frame-time matching in seconds (default: half a frame interval).")
@click.option("--figure-videos", type=int, default=_evaluate_default("figure_videos"), show_default=True)
@click.option("--figure-frames", type=int, default=_evaluate_default("figure_frames"), show_default=True)
@click.option("--map", type=click.Choice(list(MAP_CHOICES)), default=None,
              help="A model's map to score [default: the checkpoint's].")
@device_option(_evaluate_default("device"))
@click.option("--extended", is_flag=True,
              help="Also score non-sounding pairs (background seconds, silence, noise, another video's audio): AP, max-F1, activated share; model and baselines.")
@click.option("--confidence", type=click.Choice(CONFIDENCES), default=CONFIDENCES[0],
              show_default=True, help="--extended: the model's confidence, 1 - p(background) or the map's maximum.")
@quiet_option
def evaluate_command(annotations, checkpoint, features, maps, ablation, out, groups, size, modes,
                     quiet, extended, confidence, **options):
    """Score localization maps (a model, a maps file or a baseline) against box annotations.

    Writes metrics.json and figure.png (or ablation.json with --ablation) into OUT.
    """
    from avstm.evaluate.run import default_out_dir, evaluate, evaluate_ablation
    from avstm.io import check_writable

    options["size"] = int(size) if size else None
    if modes:
        options["modes"] = tuple(modes)
    config = make_config(EvaluateConfig, **options)
    if extended and ablation:
        raise click.UsageError("--extended and --ablation are separate runs")
    if ablation:
        if not checkpoint or features is None or maps is not None or config.baseline:
            raise click.UsageError("--ablation needs --checkpoint (one or more) and --features, "
                                   "and no --maps or --baseline")
        named = _named_checkpoints(checkpoint)
        out = out or default_out_dir(annotations, checkpoint=named[0][1], config=config, run="ablation")
        check_writable(out)  # before any work: a read-only or full disk fails now
        result = evaluate_ablation(annotations, named, features=features, config=config,
                                   out_dir=out, groups=groups, progress=not quiet)
        click.echo(result.table)
        click.echo(f"{result.path}", err=True)
        return
    if extended:
        from avstm.evaluate.extended import ExtendedConfig, evaluate_extended

        if len(checkpoint) != 1 or features is None or maps is not None or config.baseline:
            raise click.UsageError("--extended needs one --checkpoint and --features "
                                   "(the baselines are scored beside it), and no --maps or --baseline")
        out = out or default_out_dir(annotations, checkpoint=checkpoint[0], config=config, run="extended")
        result = evaluate_extended(annotations, checkpoint=checkpoint[0], features=features,
                                   config=config, extended=ExtendedConfig(confidence=confidence),
                                   out_dir=out)
        click.echo(result.table)
        click.echo(f"{result.path}", err=True)
        return
    if len(checkpoint) > 1:
        raise click.UsageError("several --checkpoint values need --ablation")
    ckpt = checkpoint[0] if checkpoint else None
    out = out or default_out_dir(annotations, checkpoint=ckpt, maps=maps, config=config)
    check_writable(out)
    result = evaluate(annotations, checkpoint=ckpt, features=features, maps=maps, config=config,
                      out_dir=out, groups=groups, progress=not quiet)
    from avstm.evaluate.verdict import write_summary

    words = write_summary(result, annotations, features=features, groups=groups)
    click.echo(result.summary())
    click.echo(f"{result.metrics_path}, {words}" + (f", {result.figure_path}" if result.figure_path else ""),
               err=True)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("avstm-demo"), show_default=True,
              callback=_folder_out,
              help="Folder for the dataset, cache, run, evaluation and localization.")
@click.option("--videos", type=int, default=config_default(DemoConfig, "videos"), show_default=True)
@click.option("--seconds", type=int, default=config_default(DemoConfig, "seconds"), show_default=True)
@click.option("--epochs", type=int, default=config_default(DemoConfig, "epochs"), show_default=True)
@click.option("--audio-weights", default=config_default(DemoConfig, "audio_weights"), show_default=True,
              help="random (offline) or a VGGish state-dict file.")
@device_option(config_default(DemoConfig, "device"))
@quiet_option
def demo(out, quiet, **options):
    """Every stage on a small generated dataset in a few CPU minutes, against the centre prior.

    synth, extract, train, evaluate (beside the centre prior and the whole image), localize one
    test video."""
    from avstm.demo import run_demo

    result = run_demo(out, config=make_config(DemoConfig, **options), progress=not quiet, log=click.echo)
    click.echo(f"\nmetrics: {result.metrics}\nfigure:  {result.figure}\noverlay: {result.overlay}\n"
               f"boxes:   {result.boxes}\ntimes (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="avstm")


if __name__ == "__main__":
    main()
