"""Tests of avstm/memnet/train.py, data.py and checkpoint.py on small real HDF5 caches."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader
from click.testing import CliRunner

from avstm.cache import CacheWriter, FeatureCache, VideoRecord
from avstm.cli import cli
from avstm.errors import CheckpointError, ConfigMismatch
from avstm.memnet import data
from avstm.memnet.checkpoint import load_model
from avstm.memnet.train import TrainConfig, evaluate_accuracy, train

CV, T, CLASSES = 32, 4, ["dog", "car", "violin"]
EXTRACT = {"visual_backbone": "test", "visual_channels": CV, "fps": T, "frame_size": [256, 256]}


def make_cache(path, *, per_class=2, seconds=2, seed=0, config=EXTRACT, scale=1e6, offset=3e6):
    """Videos whose class shows as a class-placed blob of a class-coded channel pattern in
    the visual maps and a class-coded audio channel pattern, plus noise; raw features badly
    scaled (``scale``, ``offset``) as random-init backbones make them."""
    rng = np.random.default_rng(seed)
    vpat = rng.normal(size=(len(CLASSES), CV))
    apat = rng.normal(size=(len(CLASSES), 512))
    with CacheWriter(path, config=dict(config), classes=CLASSES) as w:
        for c in range(len(CLASSES)):
            for i in range(per_class * 2):
                split = "train" if i < per_class else "val"
                vis = rng.normal(size=(seconds, T, 8, 8, CV)) * 0.5
                y, x = 2 * c + 1, 5 - c
                vis[:, :, y:y + 2, x:x + 2, :] += vpat[c]
                aud = rng.normal(size=(seconds, T, 6, 4, 512)) * 0.5 + apat[c]
                labels = np.full(seconds, c, dtype=np.int64)
                labels[-1] = len(CLASSES)  # the last second is background
                times = np.arange(seconds)[:, None] + (np.arange(T)[None] + 0.5) / T
                w.write(VideoRecord(id=f"{CLASSES[c]}{i}", visual=(vis * scale + offset).astype(np.float32),
                                    audio=aud.astype(np.float32), times=times, labels=labels, label=c,
                                    split=split, source=f"{CLASSES[c]}{i}.mp4", duration=float(seconds)))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "features.h5")


SMALL = dict(batch_size=4, workers=0, dim=16, hidden=16, dropout=0.0, lr=3e-3, in_memory="no")


def params_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_compute_stats_match_numpy_on_large_values(tmp_path, cache):
    with FeatureCache(cache) as c:
        ids = c.ids("train")
        allv = np.concatenate([c.visual(i).reshape(-1, CV) for i in ids]).astype(np.float64)
    stats = data.compute_stats(cache, ids)
    np.testing.assert_allclose(stats.visual_mean, allv.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats.visual_std, allv.std(0), rtol=1e-7)


def test_train_items_are_one_second_channels_first(cache):
    with FeatureCache(cache) as c:
        infos = data.video_infos(c, "train")
    ds = data.TrainSeconds(cache, infos, labels="segment")
    visual, audio, targets = ds[(0, 1)]
    assert visual.shape == (T, CV, 8, 8) and audio.shape == (T, 512, 6, 4)
    assert targets.tolist() == [len(CLASSES)] * T  # second 1 is background in segment mode
    _, _, targets = data.TrainSeconds(cache, infos, labels="video")[(0, 1)]
    assert targets.tolist() == [infos[0].label] * T


def test_in_memory_copy_of_a_float16_cache_reads_back_exactly(tmp_path):
    path = make_cache(tmp_path / "half.h5", per_class=1, seconds=2, config={**EXTRACT, "dtype": "float16"})
    with FeatureCache(path) as c:
        infos = data.video_infos(c, "train")
    memory = data.preload(path, infos)
    assert memory[infos[0].id].visual.dtype == np.float16
    held, read = data.TrainSeconds(path, infos, memory=memory)[(0, 1)], data.TrainSeconds(path, infos)[(0, 1)]
    assert len(held) == len(read) == 3  # visual, audio, targets
    for a, b in zip(held, read, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_stored_items_converted_by_model_batch_equal_float_items(tmp_path, dtype):
    """What the GPU path reads (maps as stored, converted on the device) is bit for bit what
    the CPU path reads, for training seconds and whole videos, with scales above 1."""
    path = make_cache(tmp_path / f"{dtype}.h5", per_class=2, seconds=3, scale=1e8, offset=0.0,
                      config={**EXTRACT, "dtype": dtype})
    with FeatureCache(path) as c:
        infos = data.video_infos(c, "train")
        if dtype == "float16":
            assert all(c.stored(i.id, "visual")[1] > 1 for i in infos)  # scaled on disk
    sampler = data.SecondSampler([i.num_seconds for i in infos], seed=3)
    plain = DataLoader(data.TrainSeconds(path, infos, labels="segment"), batch_size=4, sampler=sampler)
    stored = DataLoader(data.TrainSeconds(path, infos, labels="segment", stored=True), batch_size=4,
                        sampler=sampler, num_workers=1)
    batches = 0
    for a, b in zip(plain, stored):
        b = data.model_batch(b, "cpu")
        assert b[0].shape[1:] == (T, CV, 8, 8) and b[0].dtype == torch.float32
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        batches += 1
    assert batches == len(infos) // 4 + (len(infos) % 4 > 0)
    whole = data.length_batches(infos, 2)
    batches = 0
    for a, b in zip(DataLoader(data.WholeVideos(path, infos), batch_sampler=whole),
                    DataLoader(data.WholeVideos(path, infos, stored=True), batch_sampler=whole),
                    strict=True):
        b = data.model_batch(b, "cpu")
        assert b[0].shape == (2, 3 * T, CV, 8, 8) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        batches += 1
    assert batches == len(whole) > 0


def test_model_input_is_the_cache_values_channels_first(tmp_path):
    """The one rule of cached maps → model input: value = stored × scale, (.., H, W, C) →
    (.., C, H, W) float32, a new tensor; per-row scales for a batch."""
    path = make_cache(tmp_path / "c.h5", per_class=1, seconds=2, scale=1e8, offset=0.0,
                      config={**EXTRACT, "dtype": "float16"})
    with FeatureCache(path) as c:
        vid = c.ids()[0]
        (stored, scale), values = c.stored(vid, "visual"), c.visual(vid)  # (S, T, 8, 8, C_v)
    assert scale > 1 and stored.dtype == np.float16
    want = torch.from_numpy(values).permute(0, 1, 4, 2, 3)  # (S, T, C_v, 8, 8)
    got = data.model_input(stored, scale)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    rows = torch.tensor([scale, 2 * scale], dtype=torch.float32)  # one scale per second
    assert torch.equal(data.model_input(stored, rows)[1], 2 * want[1])
    first = torch.from_numpy(stored).permute(0, 1, 4, 2, 3)  # held channels-first
    assert torch.equal(data.model_input(first, scale, channels_last=False), want)
    plain = torch.from_numpy(values)
    data.model_input(plain).mul_(0)  # the result is a copy: the maps it came from stay
    assert torch.equal(plain, torch.from_numpy(values)) and plain.abs().max() > 0


def test_stored_items_come_only_from_the_file(cache):
    with FeatureCache(cache) as c:
        infos = data.video_infos(c, "train")
    with pytest.raises(ValueError, match="HDF5"):
        data.TrainSeconds(cache, infos, memory=data.preload(cache, infos), stored=True)


def test_sampler_draws_depend_on_epoch_not_on_rank():
    one = data.SecondSampler([3, 5, 2, 4, 6], seed=1)
    one.set_epoch(2)
    both = []
    for r in range(2):
        s = data.SecondSampler([3, 5, 2, 4, 6], seed=1, rank=r, world_size=2)
        s.set_epoch(2)
        both += list(s)
    assert set(both) == set(one)  # the ranks split the same epoch (with one padded repeat)
    assert all(0 <= sec < [3, 5, 2, 4, 6][i] for i, sec in one)
    epoch2 = list(one)
    assert list(one) == epoch2  # the same epoch draws the same again
    one.set_epoch(3)
    epoch3 = list(one)
    assert epoch3 != epoch2 and sorted(i for i, _ in epoch3) == list(range(5))
    rank0 = data.SecondSampler([3, 5, 2, 4, 6], seed=1, rank=0, world_size=2)
    rank0.set_epoch(3)
    assert set(rank0) <= set(epoch3)  # the ranks follow the epoch too


def test_validation_batches_only_videos_of_one_length():
    infos = [data.VideoInfo(id=str(i), label=0, num_seconds=s) for i, s in enumerate([10, 9, 10, 10, 9])]
    batches = data.length_batches(infos, 2)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    assert all(len({infos[i].num_seconds for i in b}) == 1 and len(b) <= 2 for b in batches)


@pytest.fixture(scope="module")
def run2(tmp_path_factory, cache):
    """A two-epoch run shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("runs") / "run2"
    seen = []
    result = train(cache, out, config=TrainConfig(epochs=2, **SMALL), progress=False,
                   on_epoch=seen.append)
    return out, result, seen


def test_train_overfits_tiny_cache(tmp_path, cache):
    config = TrainConfig(epochs=5, **{**SMALL, "lr": 1e-2, "batch_size": 3})
    result = train(cache, tmp_path / "run", config=config, progress=False)
    assert evaluate_accuracy(result.model, cache, split="train")["acc"] == 1.0


def test_train_writes_checkpoints_metrics_and_config(run2):
    out, _, seen = run2
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows == seen
    assert {"train_loss", "val_acc", "val_video_acc", "data_wait_share"} <= set(rows[0])
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2


@pytest.mark.parametrize("reader", [{"workers": 2}, {"in_memory": "yes"}])
def test_train_is_repeatable_with_a_seed_and_any_reader(tmp_path, cache, run2, reader):
    again = train(cache, tmp_path / "b", config=TrainConfig(epochs=2, **{**SMALL, **reader}),
                  progress=False)
    assert params_digest(again.model) == params_digest(run2[1].model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_input_paths_train_alike(tmp_path, cache):
    """On CUDA: stored items from HDF5 converted on the GPU, and the split held on the GPU, feed
    the same values (bf16 kernels may differ in the last bits)."""
    runs = [train(cache, tmp_path / name, config=TrainConfig(epochs=2, device="cuda", **{**SMALL, **reader}),
                  progress=False) for name, reader in (("hdf5", {"workers": 2}), ("held", {"in_memory": "yes"}))]
    losses = [r.history[-1]["train_loss"] for r in runs]
    assert all(np.isfinite(losses)) and abs(losses[0] - losses[1]) <= 1e-2 * abs(losses[1])


def test_resume_equals_an_uninterrupted_run(tmp_path, cache, run2):
    full = train(cache, tmp_path / "full", config=TrainConfig(epochs=3, **SMALL), progress=False)
    shutil.copytree(run2[0], tmp_path / "part")
    resumed = train(cache, tmp_path / "part", config=TrainConfig(epochs=3, **SMALL),
                    resume=True, progress=False)
    assert params_digest(resumed.model) == params_digest(full.model)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_resume_refuses_a_cache_of_another_extract_config(tmp_path, run2):
    other = make_cache(tmp_path / "other.h5", per_class=1, seconds=1, config={**EXTRACT, "fps": 8})
    with pytest.raises(ConfigMismatch, match="fps"):
        train(other, run2[0], config=TrainConfig(epochs=3, **SMALL), resume=True, progress=False)


def test_existing_run_needs_resume(cache, run2):
    with pytest.raises(CheckpointError, match="resume"):
        train(cache, run2[0], config=TrainConfig(epochs=2, **SMALL), progress=False)


def test_checkpoint_round_trip_gives_identical_outputs(cache, run2):
    out, result, _ = run2
    model, info = load_model(out / "last.pt")
    with FeatureCache(cache) as c:
        vid = c.ids("val")[0]
        visual = torch.from_numpy(c.visual(vid)).permute(0, 1, 4, 2, 3).flatten(0, 1)[None]
        audio = torch.from_numpy(c.audio(vid)).permute(0, 1, 4, 2, 3).flatten(0, 1)[None]
        extract = c.config
    with torch.no_grad():
        want, got = result.model(visual, audio), model(visual, audio)
    assert torch.equal(want.maps, got.maps) and torch.equal(want.logits, got.logits)
    assert info.classes == CLASSES and info.extract_config == extract and info.epoch == 2
    assert info.train_config == TrainConfig(epochs=2, **SMALL)
    assert model.visual_mean.abs().max() > 1e5  # the normalisation travelled with the weights


def _ddp_worker(rank: int, port: int, cache: str, out: str, sums: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    result = train(cache, out, config=TrainConfig(epochs=2, **SMALL), progress=False)
    with open(os.path.join(sums, f"rank{rank}.txt"), "w") as f:
        f.write(params_digest(result.model))


def test_two_process_gloo_run_keeps_weights_in_sync(tmp_path, cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(port, str(cache), str(tmp_path / "run"), str(tmp_path)),
                       nprocs=2, join=True, start_method="spawn")
    digests = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert digests[0] == digests[1]
    model, info = load_model(tmp_path / "run" / "last.pt")
    assert params_digest(model) == digests[0] and info.epoch == 2
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and json.loads(rows[0])["world_size"] == 2


def test_cli_train_end_to_end(tmp_path, cache):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--features", str(cache), "--out", str(out),
                                      "--epochs", "2", "--batch-size", "4", "--workers", "0",
                                      "--dim", "16", "--hidden", "16", "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert (out / "best.pt").is_file() and (out / "metrics.jsonl").is_file()


@pytest.mark.parametrize("labels", ["video", "segment"])
def test_held_seconds_gives_the_dataloader_batches(cache, labels):
    """The in-memory reader (tensors indexed on the device) yields exactly the batches of a
    DataLoader over TrainSeconds with the same sampler."""
    with FeatureCache(cache) as c:
        infos = data.video_infos(c, "train")
    sampler = data.SecondSampler([i.num_seconds for i in infos], seed=3)
    sampler.set_epoch(1)
    held = data.HeldSeconds(data.preload(cache, infos), infos, sampler, 3, labels=labels)
    loader = DataLoader(data.TrainSeconds(cache, infos, labels=labels), batch_size=3, sampler=sampler)
    pairs = list(zip(held, loader))
    assert len(pairs) == len(held) == len(loader) > 1
    for got, want in pairs:
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and torch.equal(g, w)
