"""The configuration of the generated sounding-object dataset (``avstm synth``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from avstm.config import PlainConfig
from avstm.errors import ConfigMismatch

# How object sizes and placement are drawn: "benchmark" matches the sounding-area distribution
# of the real annotation files (VGG-SS, AudioSet-Instrument; docs DESIGN.md), allows objects
# that leave the frame in part, clutter backgrounds and clips with two sounding objects;
# "small" is the original generator (``size_range`` diameters, objects fully inside).
SIZES = ("benchmark", "small")


@dataclass(frozen=True)
class SynthConfig(PlainConfig):
    """Everything that decides what ``avstm synth`` writes. A video depends only on ``seed``,
    its index and the fields below other than ``videos``, so a larger ``videos`` count extends
    an existing dataset without changing the videos already written. Every split holds a video
    (hence ``videos >= 3``); see ``generate.split_of``."""

    LEGACY = {"sizes": "small"}  # a meta.json written before ``sizes`` existed: the old generator
    videos: int = 100
    seed: int = 0
    hard: float = 0.3  # share of videos that also hold a silent object of the sounding class
    width: int = 320
    height: int = 240
    seconds: int = 10
    fps: int = 24
    sample_rate: int = 16000  # Hz, mono AAC
    annotation_fps: int = 4  # boxes at t = s + (k + 0.5) / annotation_fps (ARCHITECTURE.md)
    whole_event_share: float = 0.25  # share of videos whose event spans the whole clip
    min_event_seconds: int = 2
    distractors: tuple[int, int] = (1, 2)  # silent objects of other classes, inclusive range
    # chance that a distractor is of the class that sounds alike (then only the timing of its
    # motion tells the two apart, as with the silent twin of a hard clip)
    partner_share: float = 0.2
    size_range: tuple[float, float] = (0.2, 0.4)  # object diameter / min(width, height); small
    sizes: str = "benchmark"  # one of SIZES
    multi_share: float = 0.25  # benchmark: share of clips with two sounding objects of the class
    snr_db: tuple[float, float] = (-6.0, 12.0)  # note RMS over background-noise RMS
    noise_dbfs: tuple[float, float] = (-38.0, -22.0)  # background-noise RMS level
    pitch_jitter: float = 0.04  # relative random shift of a class's pitch per video
    split_shares: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    crf: int = 23  # libx264 quality (lower is better and larger)

    def __post_init__(self):
        problems = []
        if self.videos < sum(share > 0 for share in self.split_shares):
            problems.append("videos must be >= 3, one per split (train, val, test)")
        if not 0.0 <= self.hard <= 1.0:
            problems.append("hard must lie in [0, 1]")
        if not 0.0 <= self.whole_event_share <= 1.0:
            problems.append("whole_event_share must lie in [0, 1]")
        if not 0.0 <= self.partner_share <= 1.0:
            problems.append("partner_share must lie in [0, 1]")
        for name in ("width", "height"):
            if getattr(self, name) < 32 or getattr(self, name) % 2:
                problems.append(f"{name} must be even and >= 32, got {getattr(self, name)}")
        for name in ("seconds", "fps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fps >= 1 and self.fps % self.annotation_fps:
            problems.append(f"fps must be a multiple of the {self.annotation_fps} annotated "
                            f"frames per second, got {self.fps}")
        if not 1 <= self.min_event_seconds <= self.seconds:
            problems.append("min_event_seconds must lie in [1, seconds]")
        if not 0 <= self.distractors[0] <= self.distractors[1]:
            problems.append("distractors must be an increasing pair >= 0")
        if not 0.05 <= self.size_range[0] <= self.size_range[1] <= 0.5:
            problems.append("size_range must be an increasing pair in [0.05, 0.5]")
        if self.sizes not in SIZES:
            problems.append(f"sizes must be one of {', '.join(SIZES)}")
        if not 0.0 <= self.multi_share <= 1.0:
            problems.append("multi_share must lie in [0, 1]")
        if abs(sum(self.split_shares) - 1.0) > 1e-6:
            problems.append("split_shares must sum to 1")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        """Rebuild from ``to_dict`` output; unknown keys are an error. A field missing from
        ``d`` takes its ``LEGACY`` value where it has one (a dataset written before the
        field existed), else its default."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigMismatch(f"SynthConfig: unknown fields {', '.join(unknown)}")
        return super().from_dict(d)

    def content_differences(self, other: "SynthConfig") -> list[str]:
        """Names of the fields, other than ``videos``, in which the two configs differ: the
        fields that change the content of a video."""
        return [f.name for f in dataclasses.fields(self)
                if f.name != "videos" and getattr(self, f.name) != getattr(other, f.name)]
