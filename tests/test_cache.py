import json

import h5py
import numpy as np
import pytest
import torch

from avstm.cache import (CONTENT_FIELDS, CacheWriter, FeatureCache, VideoRecord, check_fits, finite_max_abs,
                         merge_caches, video_key)
from avstm.errors import CacheError, ConfigMismatch

CFG = {"dtype": "float16", "fps": 4, "visual_channels": 8}


def record(i, *, scale=1.0, split="train", seconds=3):
    rng = np.random.default_rng(i)
    return VideoRecord(
        id=f"vid/{i}", visual=(rng.standard_normal((seconds, 4, 8, 8, 8)) * scale).astype(np.float32),
        audio=rng.random((seconds, 4, 6, 4, 512), dtype=np.float32),
        times=np.arange(seconds * 4).reshape(seconds, 4) / 4 + 0.125,
        labels=np.arange(seconds) % 3, label=i % 2, split=split, source=f"/x/{i}.mp4", duration=float(seconds))


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "c.h5"
    recs = [record(0), record(1, split="val"), record(2, split="test")]
    with CacheWriter(path, config=CFG, classes=["a", "b"]) as w:
        for r in recs:
            w.write(r)
    with FeatureCache(path) as c:
        assert c.ids() == ["vid/0", "vid/1", "vid/2"] and c.ids("val") == ["vid/1"]
        assert c.classes == ["a", "b"] and c.background == 2 and c.config["fps"] == 4
        e = c.entry("vid/1")
        assert (e.label, e.split, e.num_seconds, e.fps, e.source) == (1, "val", 3, 4, "/x/1.mp4")
        for r in recs:
            np.testing.assert_allclose(c.visual(r.id), r.visual, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(c.audio(r.id), r.audio, atol=1e-3)
            np.testing.assert_array_equal(c.labels(r.id), r.labels)
            np.testing.assert_array_equal(c.times(r.id), r.times)
        assert c.visual("vid/0", 1).shape == (4, 8, 8, 8)
    with h5py.File(path) as f:
        ds = f["videos"][video_key("vid/0")]["visual"]
        assert ds.dtype == np.float16 and ds.chunks == (1, 4, 8, 8, 8)  # one chunk per second
        assert json.loads(f.attrs["config"]) == CFG


def test_float16_never_overflows_on_huge_features(tmp_path):
    big = record(0, scale=1.6e8)  # random-init ResNet-152 magnitudes
    with CacheWriter(tmp_path / "c.h5", config=CFG, classes=["a"]) as w:
        w.write(big)
    with FeatureCache(tmp_path / "c.h5") as c:
        v = c.visual("vid/0")
    assert np.isfinite(v).all()
    np.testing.assert_allclose(v, big.visual, rtol=2e-3, atol=1.6e8 * 2e-3)


def test_non_finite_features_are_refused_and_leave_no_entry(tmp_path):
    bad = record(0)
    bad.visual[0, 0, 0, 0, 0] = np.nan
    w = CacheWriter(tmp_path / "c.h5", config=CFG, classes=["a"])
    w.write(bad)
    w.write(record(1))
    w.flush()  # both handled by the writer thread, before close
    assert [r[0] for r in w.rejected] == ["vid/0"] and w.done_ids() == {"vid/1"}
    w.close()
    assert len(w.rejected) == 1 and w.rejected[0][0] == "vid/0" and "inf or NaN" in w.rejected[0][1]
    with FeatureCache(tmp_path / "c.h5") as c:
        assert c.ids() == ["vid/1"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("at", [0, 1, 77, -1])  # first, inside a SIMD lane, odd offset, the tail
def test_finite_max_abs_sees_every_non_finite_value(bad, at):
    x = torch.randn(5, 7, 131)  # 4585 values: not a multiple of any vector width
    finite, top = finite_max_abs(x)
    assert bool(finite) and float(top) == float(x.abs().max())
    x.view(-1)[at] = bad
    assert not bool(finite_max_abs(x)[0])
    row = np.unravel_index(at % x.numel(), x.shape)[1]
    per_row, _ = finite_max_abs(x, 1)  # (7,): one flag per index of dim 1
    assert per_row.tolist() == [i != row for i in range(7)]


def test_finite_max_abs_per_index_equals_the_reference():
    x = torch.randn(6, 4, 8, 8, 33) * torch.logspace(-3, 9, 6).view(6, 1, 1, 1, 1)
    finite, top = finite_max_abs(x, 0)
    assert finite.all() and torch.equal(top, x.abs().flatten(1).max(1).values)


def test_resume_skips_done_and_rerun_changes_nothing(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, config=CFG, classes=["a"]) as w:
        w.write(record(0))
    with CacheWriter(path, config=CFG, classes=["a"]) as w:
        assert w.done_ids() == {"vid/0"}
        w.write(record(1))
    mtime = path.stat().st_mtime_ns
    with CacheWriter(path, config=CFG, classes=["a"]) as w:
        assert w.done_ids() == {"vid/0", "vid/1"}
    assert path.stat().st_mtime_ns == mtime  # nothing new: the file is not rewritten
    assert not (tmp_path / "c.h5.parts").exists()


def test_other_config_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, config=CFG, classes=["a"]) as w:
        w.write(record(0))
    with pytest.raises(ConfigMismatch, match="fps: 4 in the file, 8 now"):
        CacheWriter(path, config=dict(CFG, fps=8), classes=["a"])
    with pytest.raises(ConfigMismatch, match="other classes"):
        CacheWriter(path, config=CFG, classes=["a", "b"])
    # fields outside content_fields may differ
    CacheWriter(path, config=dict(CFG, workers=9), classes=["a"], content_fields=["fps"]).close()


def test_second_writer_is_refused_while_first_holds_the_lock(tmp_path):
    path = tmp_path / "c.h5"
    w = CacheWriter(path, config=CFG, classes=["a"])
    with pytest.raises(CacheError, match="another avstm process"):
        CacheWriter(path, config=CFG, classes=["a"])
    w.close()
    CacheWriter(path, config=CFG, classes=["a"]).close()


def test_finished_parts_survive_a_writer_that_never_closed(tmp_path):
    path = tmp_path / "c.h5"
    w = CacheWriter(path, config=CFG, classes=["a"], part_videos=1)
    w.write(record(0))
    w.write(record(1))
    w._queue.put(None)
    w._thread.join()  # the writes landed in finished parts; now the process "dies"
    w._unlock()
    (tmp_path / "c.h5.parts" / "part-x.h5.tmp").write_bytes(b"half a part")
    with CacheWriter(path, config=CFG, classes=["a"]) as w2:
        assert w2.done_ids() == {"vid/0", "vid/1"}
    with FeatureCache(path) as c:
        assert c.ids() == ["vid/0", "vid/1"]
    assert not (tmp_path / "c.h5.parts").exists()


def test_merge_shards(tmp_path):
    for k in range(2):
        with CacheWriter(tmp_path / f"s{k}.h5", config=CFG, classes=["a"]) as w:
            w.write(record(k))
    n = merge_caches([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "all.h5")
    assert n == 2
    with FeatureCache(tmp_path / "all.h5") as c:
        assert c.ids() == ["vid/0", "vid/1"]
        np.testing.assert_allclose(c.audio("vid/1"), record(1).audio, atol=1e-3)
    with CacheWriter(tmp_path / "s2.h5", config=dict(CFG, fps=2), classes=["a"]) as w:
        w.write(record(2))
    with pytest.raises(ConfigMismatch, match="fps"):
        merge_caches([tmp_path / "s0.h5", tmp_path / "s2.h5"], tmp_path / "bad.h5")


def test_merge_refuses_a_shard_being_written_and_a_locked_output(tmp_path):
    for k in range(2):
        with CacheWriter(tmp_path / f"s{k}.h5", config=CFG, classes=["a"]) as w:
            w.write(record(k))
    busy = CacheWriter(tmp_path / "s1.h5", config=CFG, classes=["a"])  # resumed, still writing
    try:
        with pytest.raises(CacheError, match=r"s1.h5: another avstm process \(pid \d+\) is writing"):
            merge_caches([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "all.h5")
        with pytest.raises(CacheError, match="s1.h5: another avstm process"):
            merge_caches([tmp_path / "s0.h5"], tmp_path / "s1.h5")  # nor into a file being written
    finally:
        busy.close()
    assert not (tmp_path / "all.h5").exists()
    # an input may be the output: joined in place, under the output's lock
    assert merge_caches([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "s0.h5") == 2


def test_reader_errors(tmp_path):
    with pytest.raises(CacheError, match="no such cache"):
        FeatureCache(tmp_path / "none.h5")
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(CacheError, match="not a readable HDF5"):
        FeatureCache(tmp_path / "x.h5")


def test_check_fits_is_one_rule_of_every_content_field_and_the_classes():
    trained = {k: f"v-{k}" for k in CONTENT_FIELDS}
    check_fits("m.pt", trained, "c.h5", {**trained, "workers": 8}, trained_classes=["a"],
               cache_classes=["a"])  # a field outside CONTENT_FIELDS does not matter
    for field in CONTENT_FIELDS:
        with pytest.raises(ConfigMismatch, match=f"^m.pt: .* c.h5 .*{field}: 'v-{field}' in the checkpoint"):
            check_fits("m.pt", trained, "c.h5", {**trained, field: "other"})
    with pytest.raises(ConfigMismatch, match="other classes"):
        check_fits("m.pt", trained, "c.h5", trained, trained_classes=["a"], cache_classes=["b"])
