"""avstm: sounding-object localization in videos with a space-time memory network."""

__version__ = "0.1.0"
