"""What every stage's config dataclass shares: plain-data round trips for JSON and checkpoints."""

from __future__ import annotations

import dataclasses
from typing import Any


class PlainConfig:
    """Mixin for the frozen config dataclasses: ``to_dict`` gives JSON-able data (tuples become
    lists), ``from_dict`` rebuilds the config from it (unknown keys are ignored, so a record
    written by a newer avstm still loads; lists become tuples again).

    ``LEGACY`` (a class attribute, not a field) gives the values of fields that a record written
    before they existed lacks, where that value differs from today's default: an old record
    then means what it meant when it was written.
    """

    LEGACY: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        d = {**cls.LEGACY, **d}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
