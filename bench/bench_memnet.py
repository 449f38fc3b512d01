"""The memory network's cost: the causal-batched clip against a per-step loop, and streaming.

  train_batched    forward + backward of STMNet.forward over (B, T) clips (one call, banded
                   causal mask), cross-entropy on every step: what `avstm train` runs;
  train_loop       the same clips through STMNet.step one step at a time, forward + backward
                   (step() detaches its memory, so this is a cost reference, not a training method);
  infer_batched    forward over (B, T) without gradients, per step;
  infer_stream     STMNet.step without gradients, per step (what `localize` runs on a video).
Figures are clips/s (train) and steps/s (inference); the ratios are batched / loop.

    python bench/bench_memnet.py --device cpu
    python bench/bench_memnet.py --device cuda --batch 128
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from avstm.memnet.model import ModelConfig, STMNet  # noqa: E402


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="clips per batch (default 16 CPU, 128 CUDA)")
    p.add_argument("--steps", type=int, default=4, help="T of a training clip (the paper: 4)")
    p.add_argument("--stream-steps", type=int, default=40, help="T of an inference clip (a 10 s video)")
    p.add_argument("--visual-channels", type=int, default=2048, help="2048 ResNet-152, 320 EfficientNet-Lite0")
    p.add_argument("--memory", default="full", choices=["none", "unimodal", "full"])
    args = p.parse_args()
    device = common.device_of(args.device)
    cuda = device.type == "cuda"
    b = 4 if args.quick else (args.batch or (128 if cuda else 16))
    t, ts = args.steps, args.stream_steps
    torch.manual_seed(0)
    model = STMNet(ModelConfig(visual_channels=args.visual_channels, num_classes=29, memory=args.memory)).to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    vis = torch.randn(b, t, args.visual_channels, 8, 8, device=device)
    aud = torch.randn(b, t, 512, 6, 4, device=device)
    target = torch.randint(0, 29, (b, t), device=device)
    repeat = 1 if args.quick else 5

    def train_batched():
        common.train_step(model, opt, amp, vis, aud, target)

    def train_loop():
        opt.zero_grad(set_to_none=True)
        state = model.init_state(b)
        logits = []
        with amp:
            for k in range(t):
                _, lg, state = model.step(vis[:, k], aud[:, k], state)
                logits.append(lg)
            loss = F.cross_entropy(torch.stack(logits, 1).flatten(0, 1).float(), target.flatten())
        loss.backward()
        opt.step()

    model.train()
    res = {"device": str(device), "batch": b, "steps": t, "visual_channels": args.visual_channels,
           "memory": args.memory}
    tb = common.timeit(train_batched, device=device, repeat=repeat)
    tl = common.timeit(train_loop, device=device, repeat=repeat)
    res.update(train_batched_clips_per_s=b / tb, train_loop_clips_per_s=b / tl, ratio_train_batched_to_loop=tl / tb)
    print(f"train (B={b}, T={t}): batched {b / tb:.1f} clips/s, per-step loop {b / tl:.1f} clips/s "
          f"(batched {tl / tb:.2f}x)")

    model.eval()
    vs = torch.randn(b, ts, args.visual_channels, 8, 8, device=device)
    as_ = torch.randn(b, ts, 512, 6, 4, device=device)

    @torch.inference_mode()
    def infer_batched():
        with amp:
            model(vs, as_)

    @torch.inference_mode()
    def infer_stream():
        state = model.init_state(b)
        with amp:
            for k in range(ts):
                model.step(vs[:, k], as_[:, k], state)

    ib = common.timeit(infer_batched, device=device, repeat=repeat)
    istr = common.timeit(infer_stream, device=device, repeat=repeat)
    res.update(infer_batched_steps_per_s=b * ts / ib, infer_stream_steps_per_s=b * ts / istr,
               ratio_infer_batched_to_stream=istr / ib, stream_ms_per_step_call=1000 * istr / ts)
    print(f"inference (B={b}, T={ts}): batched {b * ts / ib:.0f} steps/s, streaming {b * ts / istr:.0f} "
          f"steps/s ({1000 * istr / ts:.2f} ms per step() call; batched {istr / ib:.2f}x)")
    common.report(f"memnet_{device.type}", res, args.json)


if __name__ == "__main__":
    main()
