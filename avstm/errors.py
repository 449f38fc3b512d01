"""The exceptions avstm raises. Only ``avstm.cli`` turns them into messages and exit codes."""

from __future__ import annotations

import os


class AvstmError(Exception):
    """Base class: a problem the user can act on, worded as one line."""


class MediaError(AvstmError):
    """A video or audio file that cannot be read, or lacks what is needed."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class HardwareDecodeError(AvstmError):
    """A hardware video decoder (NVDEC through FFmpeg) that cannot be used on this machine."""


class AnnotationError(AvstmError):
    """A malformed annotation, label or split file."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        self.path = str(path)
        self.problem = problem
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class CacheError(AvstmError):
    """A feature cache that is missing, corrupt, locked or of an incompatible config."""


class ConfigMismatch(CacheError):
    """Two configs that must agree differ; the message names the fields."""


class CheckpointError(AvstmError):
    """A checkpoint that cannot be loaded or does not fit its use."""


class WeightsError(AvstmError):
    """Backbone weights that cannot be found, downloaded or loaded."""


class StorageError(AvstmError):
    """An output that cannot be written: read-only file system, no space left, no permission,
    quota exceeded. Raised before work starts where a check can tell, else when the write fails
    (finished work is kept; no temporary file is left)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # raised in a worker process (joblib, DataLoader), re-raised here
        return type(self), (self.path, self.problem)
