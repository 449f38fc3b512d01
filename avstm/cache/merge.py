"""Joining cache files into one: the writer's parts into its cache, and ``merge_caches``
(e.g. the shards of a multi-process extraction)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from avstm.cache.format import _complete_groups, _mismatch, _read_root, _root_attrs, compare_configs, \
    open_cache_file, video_key
from avstm.cache.lock import acquire_lock, check_unlocked, lock_path, release_lock
from avstm.errors import CacheError, ConfigMismatch
from avstm.io import atomic_path, check_free_space, check_writable

JOIN_MARGIN = 64 * 2**10  # bytes of free space beyond the sources' sizes that a join asks for


def _join(sources: list[Path], out: Path, config_json: str, classes: list[str]) -> int:
    """Copy the complete videos of ``sources`` into a new file renamed onto ``out``; returns the count.

    Videos are copied as stored (no decoding of chunks). The first copy of an id wins. The free
    space the copy takes (the sources' sizes) is checked first: HDF5 must not meet a full disk.
    """
    need = sum(p.stat().st_size for p in sources) + JOIN_MARGIN
    check_free_space(out.parent, need, what=f"joining {len(sources)} file(s) into {out.name}")
    n = 0
    # atomic_path: written to <out>.tmp-<pid>, flushed to the disk and renamed (the joined
    # cache is what lasts), a storage fault raised as StorageError naming ``out``
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as dst:
            _root_attrs(dst, config_json, classes)
            videos = dst.create_group("videos")
            seen: set[str] = set()
            for src_path in sources:
                with open_cache_file(src_path) as src:
                    for vid, g in _complete_groups(src):
                        if vid in seen:
                            continue
                        seen.add(vid)
                        src.copy(g, videos, name=video_key(vid))
                        n += 1
    return n


def merge_caches(inputs: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join caches (e.g. the shards of a multi-process extraction) into one file; returns videos.

    All inputs must hold the same extract config and classes (ConfigMismatch otherwise). The
    result is a copy, self-contained (no links to the inputs). ``out`` is locked while it is
    written, and an input that a writer still holds is refused (CacheError naming its pid).
    """
    inputs, out = [Path(p) for p in inputs], Path(out)
    if not inputs:
        raise CacheError("merge: no input caches")
    check_writable(out.parent)  # the join checks the free space it needs
    lock = acquire_lock(out)
    try:
        return _merge(inputs, out)
    finally:
        release_lock(lock)


def _merge(inputs: list[Path], out: Path) -> int:
    ref = None
    for p in inputs:
        if p.resolve() != out.resolve() and lock_path(p).exists():
            check_unlocked(p)  # a shard still being written would be merged half done
        with open_cache_file(p) as f:
            cfg, classes = _read_root(f, p)
            if ref is None:
                ref = (p, cfg, classes, f.attrs["config"])
            else:
                diff = compare_configs(ref[1], cfg)
                if diff:
                    raise _mismatch(p, cfg, ref[1], diff)
                if classes != ref[2]:
                    raise ConfigMismatch(f"{p}: other classes than {ref[0]}")
    return _join(inputs, out, ref[3], ref[2])
