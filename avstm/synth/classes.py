"""The sounding-object classes: each a visual object (shape, colour, texture) paired with a
sound (pitch, timbre, rhythm).

Sounds are made ambiguous on purpose: the classes come in pairs whose sounds overlap (same
pitch, timbre and kind of rhythm, slightly different note rates), so audio alone cannot tell
the two apart within a second of noisy audio and the classifier has to look at the object that
makes the sound.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon",
          "crescent", "pentagon")
TEXTURES = ("solid", "stripes", "checker", "dots")
TIMBRES = ("sine", "square", "saw", "bell", "reed")
RHYTHMS = ("beat", "sustain", "random")


@dataclass(frozen=True)
class ClassSpec:
    """One event class. ``colour`` is RGB 0-255; ``pitch`` the fundamental in Hz; ``period``
    the mean time between note onsets in seconds; ``decay`` the note's decay time constant."""

    name: str
    shape: str
    colour: tuple[int, int, int]
    texture: str
    pitch: float
    timbre: str
    rhythm: str
    period: float
    decay: float

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": self.shape, "colour": list(self.colour),
                "texture": self.texture,
                "sound": {"pitch": self.pitch, "timbre": self.timbre, "rhythm": self.rhythm,
                          "period": self.period, "decay": self.decay}}


# Pairs (0, 1), (2, 3), ... share pitch, timbre and kind of rhythm; only their mean note
# period differs a little (and each note's timing is jittered), so their sounds overlap.
CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("chime", "star", (250, 210, 40), "solid", 880.0, "bell", "beat", 0.6, 0.35),
    ClassSpec("bell", "ring", (240, 140, 30), "stripes", 880.0, "bell", "beat", 0.5, 0.35),
    ClassSpec("flute", "circle", (60, 130, 240), "dots", 523.0, "sine", "sustain", 0.8, 1.5),
    ClassSpec("whistle", "diamond", (40, 200, 220), "solid", 523.0, "sine", "sustain", 0.65, 1.2),
    ClassSpec("horn", "triangle", (220, 50, 50), "checker", 233.0, "saw", "random", 0.5, 0.4),
    ClassSpec("trumpet", "pentagon", (230, 90, 160), "stripes", 233.0, "saw", "random", 0.4, 0.4),
    ClassSpec("clarinet", "hexagon", (70, 190, 70), "stripes", 330.0, "reed", "beat", 0.45, 0.3),
    ClassSpec("oboe", "crescent", (150, 80, 220), "dots", 330.0, "reed", "beat", 0.55, 0.3),
    ClassSpec("buzzer", "square", (245, 245, 245), "checker", 440.0, "square", "sustain", 0.9, 2.0),
    ClassSpec("siren", "cross", (120, 60, 30), "solid", 440.0, "square", "sustain", 1.0, 2.0),
)


def partner(cls: int) -> int:
    """The class whose sound overlaps with ``cls``'s."""
    return cls ^ 1


CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
