"""Decoding throughput: avstm's one-pass decoder against the frames-to-JPEG route, and the
decoder options FFmpeg offers (frame skipping, threading, workers per core).

Every figure is kept frames per second (4 per second of video, 256×256 RGB out, plus the
16 kHz mono audio where the route has it) on 480×360 30 fps H.264 + AAC clips of 10 s:

  avstm           media.decode(path, fps=4, size=(256, 256), threads=1): one pass over audio and
                  video packets, only the kept frames converted and resized (swscale).
  avstm_noaudio   the same without the audio.
  jpeg_route      the peers' ffmpeg-CLI route, done with PyAV in this process (no ffmpeg binary
                  needed): decode every frame, keep 4/s (same frame choice), convert the kept
                  frame at full size and write it as a JPEG (OpenCV, quality 95 ≈ ffmpeg -q:v 2);
                  a second pass writes the audio as 16 kHz mono WAV; then read the JPEGs and the
                  WAV back and resize the frames to 256×256 (cv2.INTER_LINEAR).
  skip_<mode>     codec_context.skip_frame = mode (NONREF: B-frames not decoded; NONKEY: only
                  keyframes): faster, but the frame on screen at t is no longer what is shown;
                  `err_*` is the mean absolute pixel difference to the exact frames (0-255).
  thread_<type>_<n>  one clip, n FFmpeg threads of type SLICE/FRAME/AUTO (wall-clock rate).
  procs_<w>x<t>   w processes with t threads each over many clips: the machine's parallel rate.
  nvdec           media.decode(..., hwaccel="cuda"): the video decoded on the GPU's NVDEC
                  (FFmpeg through PyAV), frames downloaded, then selected and resized as above;
                  one process, and procs_nvdec_<w>x1 over many clips (spawned processes). Only
                  where FFmpeg can open NVDEC; compared with the CPU rows of the same run.

Single-process figures are also given per CPU-second (``*_cpu``), which a loaded machine
distorts less than wall-clock time.

    python bench/bench_decode.py --device cpu
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from avstm import media  # noqa: E402
from avstm.errors import HardwareDecodeError  # noqa: E402

SIZE = (256, 256)
FPS = 4


def _timed(fn, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def avstm_decode(path, *, audio: bool = True, threads: int = 1, hwaccel: str | None = None) -> int:
    return len(media.decode(path, fps=FPS, size=SIZE, audio=audio, threads=threads, hwaccel=hwaccel).frames)


def skip_decode(path, skip: str, thread_type: str = "AUTO", threads: int = 1, count: int | None = None
                ) -> np.ndarray:
    """Video only, with a skip_frame mode, choosing frames like media.decode: (N, 256, 256, 3)."""
    selector = media._FrameSelector(None, FPS, SIZE)
    kept, last = [], 0.0
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v.thread_type = thread_type
        v.codec_context.thread_count = threads
        v.codec_context.skip_frame = skip
        origin = media._video_origin(v)
        for frame in c.decode(v):
            t = media._frame_time(frame, origin)
            last = t if t is not None else last + 1e-6
            kept += [rgb for _, rgb in selector.push(last, frame)]
        rate = float(v.average_rate or 30)
    count = count or media.num_seconds(last + 1.0 / rate) * FPS
    kept += [rgb for _, rgb in selector.finish(count)]
    return np.stack(kept[:count])


def jpeg_route(path, folder: Path) -> int:
    """Frames to JPEG files and audio to WAV (two passes), then read back and resize."""
    selector = media._FrameSelector(None, FPS, None)
    names, last = [], 0.0
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v.codec_context.thread_count = 1
        origin = media._video_origin(v)
        for frame in c.decode(v):
            t = media._frame_time(frame, origin)
            last = t if t is not None else last + 1e-6
            for _, rgb in selector.push(last, frame):
                names.append(folder / f"{len(names):05d}.jpg")
                cv2.imwrite(str(names[-1]), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        rate = float(v.average_rate or 30)
    count = media.num_seconds(last + 1.0 / rate) * FPS
    for _, rgb in selector.finish(count):
        names.append(folder / f"{len(names):05d}.jpg")
        cv2.imwrite(str(names[-1]), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    audio, _ = media.read_audio(path)
    with wave.open(str(folder / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(media.SAMPLE_RATE)
        w.writeframes((audio * 32767).astype("<i2").tobytes())
    frames = np.stack([cv2.resize(cv2.imread(str(n))[:, :, ::-1], SIZE, interpolation=cv2.INTER_LINEAR)
                       for n in names[:count]])
    with wave.open(str(folder / "audio.wav"), "rb") as w:
        np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
    for n in folder.iterdir():
        n.unlink()
    return len(frames)


def _worker(args) -> tuple[int, float]:
    path, threads, hwaccel = args
    t0 = time.process_time()
    return avstm_decode(path, threads=threads, hwaccel=hwaccel), time.process_time() - t0


def parallel(paths: list[Path], workers: int, threads: int, hwaccel: str | None = None) -> dict:
    jobs = [(str(p), threads, hwaccel) for p in paths]
    # CUDA (NVDEC) does not survive a fork from a process that used it: spawn those workers
    context = multiprocessing.get_context("spawn" if hwaccel else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        list(pool.map(_worker, jobs[:workers]))  # start the processes, warm the page cache
        t0 = time.perf_counter()
        out = list(pool.map(_worker, jobs))
        wall = time.perf_counter() - t0
    frames = sum(n for n, _ in out)
    return {"fps": frames / wall, "fps_per_cpu_s": frames / sum(c for _, c in out)}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=None, help="clips for the parallel runs (default 4 × cores)")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    work = Path(args.work)
    n_clips = 2 if args.quick else (args.clips or 4 * cores)
    distinct = common.reference_clips(work / "clips", min(n_clips, 16))
    paths = [distinct[i % len(distinct)] for i in range(n_clips)]
    clip = distinct[0]
    res: dict = {"clip": "480x360 30 fps H.264 (crf 23) + AAC 44.1 kHz stereo, 10 s", "cores": cores}
    print(f"== decode: {clip.name}, {cores} cores, repeat {args.repeat}")

    def single(name, fn, *a, **kw):
        best = None
        for _ in range(1 if args.quick else args.repeat):
            n, wall, cpu = _timed(fn, *a, **kw)
            best = (n, wall, cpu) if best is None or wall < best[1] else best
        n, wall, cpu = best
        n = n if isinstance(n, int) else len(n)
        res[f"{name}_fps"], res[f"{name}_fps_cpu"] = n / wall, n / max(cpu, 1e-9)
        print(f"  {name}: {n / wall:.1f} kept frames/s ({n / max(cpu, 1e-9):.1f} per CPU-second)")

    avstm_decode(clip)  # warm up (imports, first-call costs)
    single("avstm", avstm_decode, clip)
    single("avstm_noaudio", avstm_decode, clip, audio=False)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        single("jpeg_route", jpeg_route, clip, Path(tmp))
    res["ratio_avstm_to_jpeg_route"] = res["avstm_fps"] / res["jpeg_route_fps"]
    res["ratio_avstm_to_jpeg_route_cpu"] = res["avstm_fps_cpu"] / res["jpeg_route_fps_cpu"]
    exact = skip_decode(clip, "DEFAULT")
    for mode in ("DEFAULT", "NONREF", "BIDIR", "NONKEY"):
        single(f"skip_{mode}", skip_decode, clip, mode, count=len(exact))
        got = skip_decode(clip, mode, count=len(exact))
        res[f"err_skip_{mode}"] = float(np.abs(got.astype(np.int16) - exact.astype(np.int16)).mean())
        print(f"    mean |pixel difference| to exact frames: {res[f'err_skip_{mode}']:.2f}")
    for ttype in ("SLICE", "FRAME", "AUTO"):
        for n in sorted({1, 2, min(4, cores)}):
            single(f"thread_{ttype}_{n}", skip_decode, clip, "DEFAULT", ttype, n)
    for w, t in sorted({(cores, 1), (max(1, cores // 2), 2), (1, cores)}, reverse=True):
        r = parallel(paths, w, t)
        res[f"procs_{w}x{t}_fps"], res[f"procs_{w}x{t}_fps_per_cpu_s"] = r["fps"], r["fps_per_cpu_s"]
        print(f"  {w} processes x {t} threads over {len(paths)} clips: {r['fps']:.1f} kept frames/s")
    try:
        res["nvdec_first_frame_format"] = media.probe_decoder(clip, "cuda")  # nv12: NVDEC decoded it
    except HardwareDecodeError as e:
        print(f"  nvdec: not measured ({e})")
    else:
        single("nvdec", avstm_decode, clip, hwaccel="cuda")
        res["ratio_nvdec_to_avstm"] = res["nvdec_fps"] / res["avstm_fps"]
        r = parallel(paths, cores, 1, hwaccel="cuda")
        res[f"procs_nvdec_{cores}x1_fps"], res[f"procs_nvdec_{cores}x1_fps_per_cpu_s"] = r["fps"], r["fps_per_cpu_s"]
        res["ratio_procs_nvdec_to_cpu"] = r["fps"] / res[f"procs_{cores}x1_fps"]
        print(f"  {cores} processes on NVDEC over {len(paths)} clips: {r['fps']:.1f} kept frames/s "
              f"({res['ratio_procs_nvdec_to_cpu']:.2f}x the CPU processes)")
    common.report("decode", res, args.json)


if __name__ == "__main__":
    main()
