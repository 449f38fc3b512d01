"""The ``avstm`` command: one click group, one command per stage.

Each command parses options, builds its stage's config, calls the library function and
prints or writes the result. Library errors (``avstm.errors.AvstmError``) become one line on
stderr and exit code 1; nothing else is caught here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import click

from avstm import __version__
from avstm.errors import AvstmError
from avstm.extract.config import ExtractConfig


def make_config(config_cls, **options):
    """Build a stage config from CLI options, turning a bad value into a usage error."""
    try:
        return config_cls(**options)
    except (TypeError, ValueError) as e:
        raise click.UsageError(str(e)) from None


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
    """A click group that turns library errors into one line on stderr and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AvstmError as e:
            click.echo(f"avstm: error: {e}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("avstm: interrupted; finished work is kept, run again to resume", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="avstm")
def cli():
    """avstm: find the objects that make the sound in videos (STM, BMVC 2021)."""


# ---- commands are defined below, one per stage ------------------------------------------

@cli.command()
@click.option("--dataset", type=click.Choice(["ave", "folder"]), required=True,
              help="ave: ROOT/AVE/<id>.mp4 + Annotations.txt + split files; folder: --videos DIR + --labels CSV.")
@click.option("--root", type=click.Path(path_type=Path), help="AVE root (with --dataset ave).")
@click.option("--videos", type=click.Path(path_type=Path), help="Folder of videos (with --dataset folder).")
@click.option("--labels", type=click.Path(path_type=Path), help="CSV id,label[,split][,start,end] (with --dataset folder).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The HDF5 cache to write or resume.")
@click.option("--visual-backbone", type=click.Choice(["resnet152", "efficientnet_lite0"]),
              default=config_default(ExtractConfig, "visual_backbone"), show_default=True)
@click.option("--visual-weights", default=config_default(ExtractConfig, "visual_weights"), show_default=True,
              help="imagenet, random, or a state-dict file.")
@click.option("--visual-tap", default=None, help="Feature tap (resnet152: layer4; efficientnet_lite0: blocks|head).")
@click.option("--audio-weights", default=config_default(ExtractConfig, "audio_weights"), show_default=True,
              help="vggish (AudioSet release), random, or a state-dict file (torchaudio or torchvggish layout).")
@click.option("--frame-size", type=int, default=config_default(ExtractConfig, "frame_size"), show_default=True)
@click.option("--fps", type=int, default=config_default(ExtractConfig, "fps"), show_default=True,
              help="Frames kept per second.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default=config_default(ExtractConfig, "dtype"),
              show_default=True)
@click.option("--seed", type=int, default=config_default(ExtractConfig, "seed"), show_default=True,
              help="Seed of random-init backbones.")
@click.option("--device", default=config_default(ExtractConfig, "device"), show_default=True)
@click.option("--batch-size", type=int, default=config_default(ExtractConfig, "batch_size"), show_default=True,
              help="Frames per backbone batch.")
@click.option("--workers", type=int, default=config_default(ExtractConfig, "workers"), show_default=True,
              help="Decoding processes.")
@click.option("--decode-threads", type=int, default=config_default(ExtractConfig, "decode_threads"),
              show_default=True, help="FFmpeg threads per decoding process.")
@click.option("--limit", type=int, default=None, help="Extract at most this many new videos.")
@click.option("--compile/--no-compile", default=config_default(ExtractConfig, "compile"), show_default=True,
              help="torch.compile the visual backbone.")
@click.option("--strict/--no-strict", default=config_default(ExtractConfig, "strict"), show_default=True,
              help="Exit with status 1 when any video fails.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract(dataset, root, videos, labels, out, quiet, **options):
    """Decode videos, run the frozen backbones, write per-second maps into an HDF5 cache.

    Resumable: videos already in OUT are skipped; a killed run loses at most its last part.
    """
    from avstm.datasets import read_ave, read_folder
    from avstm.extract.pipeline import extract as run_extract

    if dataset == "ave":
        if root is None:
            raise click.UsageError("--dataset ave needs --root")
        data = read_ave(root)
    else:
        if videos is None or labels is None:
            raise click.UsageError("--dataset folder needs --videos and --labels")
        data = read_folder(videos, labels)
    config = make_config(ExtractConfig, **options)
    result = run_extract(data, out, config=config, progress=not quiet)
    click.echo(result.summary())
    if result.failed and config.strict:
        raise SystemExit(1)



def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="avstm")


if __name__ == "__main__":
    main()
