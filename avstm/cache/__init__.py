"""avstm.cache: the HDF5 feature cache, per-second visual and audio maps of every video,
written once by ``avstm extract`` and read by train, localize and evaluate.

    format.py  the file layout, ``VideoRecord`` / ``VideoEntry``, ``CONTENT_FIELDS`` and
               ``check_fits`` (no torch)
    lock.py    one writer at a time per cache (``<cache>.lock``)
    writer.py  ``CacheWriter``: parts built in memory by a background thread, joined on close
    merge.py   ``merge_caches`` and the join of parts into a cache
    reader.py  ``FeatureCache``
    verify.py  ``verify_cache``

The store knows no model: nothing here imports memnet, extract, localize, evaluate or the CLI.
"""

from avstm._lazy import lazy_exports

# public name -> the module that defines it; imported on first use (avstm/_lazy.py)
_EXPORTS = {
    **dict.fromkeys(("FORMAT", "FP16_LIMIT", "DATASETS", "CONTENT_FIELDS", "VideoRecord", "VideoEntry",
                     "video_key", "config_sha256", "fp16_scale", "open_cache_file", "check_fits",
                     "compare_configs"), "avstm.cache.format"),
    **dict.fromkeys(("lock_path", "acquire_lock", "release_lock", "check_unlocked"), "avstm.cache.lock"),
    **dict.fromkeys(("PART_VIDEOS", "PART_SECONDS", "PART_BYTES", "finite_max_abs", "CacheWriter"),
                    "avstm.cache.writer"),
    **dict.fromkeys(("JOIN_MARGIN", "merge_caches"), "avstm.cache.merge"),
    "FeatureCache": "avstm.cache.reader",
    "verify_cache": "avstm.cache.verify",
}
__all__ = sorted([*_EXPORTS])
lazy_exports(__name__, _EXPORTS)
