"""avstm's version: a leaf module (imports nothing), read by the cache, checkpoints, packages
and the CLI without importing the stages."""

__version__ = "0.1.0"
