"""The space-time memory network (STM, Li, Tian and Xu, BMVC 2021) as torch modules.

Notation follows the paper: ``x_v`` visual maps, ``x_a`` audio maps, ``x_av`` audio-attended
visual maps, all projected to C = ``dim`` channels. Dims: B batch, T steps (frames, 4 per
second), C channels, H×W = 8×8 visual positions, h×w = 6×4 audio positions.

Two ways to run the same weights, which agree to float tolerance on the same inputs:

- ``forward`` over a clip of T steps at once. Temporal attention uses a banded causal mask:
  step t attends to steps t-K..t (K = ``memory_length`` past steps and itself), never t+1.
- ``step`` one time step at a time with a ring buffer holding the last K steps' maps, so
  memory use is constant in the length of the video (streaming in ``localize``).

What the memories hold (the reading of Algorithm 1 under which both ways agree exactly):
``mem_a`` / ``mem_v`` hold the projected maps x_a^k / x_v^k of past steps, before their own
temporal attention; ``mem_av`` holds x_av^k = f(x̂_a^k, x̂_v^k), the output of the spatial
attention of step k before its own cross-modal temporal attention. Every memory entry is a
function of that step's own inputs and earlier entries, never of a later step, so a clip
computed at once with a causal mask equals the same clip streamed step by step. A consequence:
in ``full`` mode x_av^k already carries x̂_v^k (steps k-K..k), so the output of step t depends
on steps t-2K..t; in ``unimodal`` on t-K..t; in ``none`` on t alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avstm.maps import FLAT_RTOL
from avstm.memnet.config import (AFFINITY_KEEP, AFFINITY_POWER, AFFINITY_STEPS, ATTENTION_SCALES,  # noqa: F401
                                 DEFAULT_ATTENTION_SCALE, DEFAULT_MAP, MAP_CHOICES, MAPS,
                                 MEMORY_MODES, ModelConfig, check_map, map_parts)


@dataclass
class STMOutput:
    """Output of ``STMNet.forward``.

    maps: (B, T, 8, 8) float, the localization map named by ``ModelConfig.map`` (MAPS).
    logits: (B, T, num_classes) float, event class scores per step.
    visual_logits: (B, T, num_classes) from Σ_ij x̂_av alone, or None without a visual head.
    visual: (B, T, C, 8, 8) x̂_v and audio_query: (B, T, C) φ(x̂_a), the two sides of the
    memory layer's cross-modal attention (for a contrastive objective on memory_scores).
    """

    maps: Tensor
    logits: Tensor
    visual_logits: Tensor | None = None
    visual: Tensor | None = None
    audio_query: Tensor | None = None


@dataclass
class StreamState:
    """Ring buffers of the last K steps for ``STMNet.step``; make one with ``init_state``.

    audio: (B, K, C, 6, 4), visual: (B, K, C, 8, 8), av: (B, K, C, 8, 8) (allocated at the first
    step, at the maps' sizes); ``steps`` counts the steps seen so far; slot ``steps % K`` is written next and slots < min(steps, K) are valid.
    """

    audio: Tensor
    visual: Tensor
    av: Tensor
    steps: int = 0


def projection(in_channels: int, dim: int, layers: int) -> nn.Sequential:
    """A stack of ``layers`` 1×1 convolutions in_channels → dim with ReLU between them.

    The last convolution has no ReLU, so the joint space is signed and the dot products of
    the spatial attention can be negative as well as positive.
    """
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Conv2d(in_channels if i == 0 else dim, dim, kernel_size=1))
        if i < layers - 1:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


@dataclass
class Attended:
    """What the spatial attention f gives: scores s = x_v(i,j)·φ(x_a) (N, H, W) before any
    scale, α = softmax over positions of scale·s (N, H, W), x_av = α ⊙ x_v (N, C, H, W)."""

    scores: Tensor
    alpha: Tensor
    x_av: Tensor


def spatial_attention(x_v: Tensor, x_a: Tensor, scale: Tensor | float = 1.0) -> Attended:
    """Cross-modal spatial attention f (Eq. 1).

    x_v: (N, C, H, W) maps attended over their positions; x_a: (N, C, h, w), globally pooled.
    ``scale`` multiplies the dot products before the softmax (1: the paper's Eq. 1).
    """
    n, c, h, w = x_v.shape
    query = x_a.mean(dim=(2, 3))  # φ(x_a): (N, C)
    scores = torch.einsum("nchw,nc->nhw", x_v, query)  # (N, H, W)
    alpha = (scores.reshape(n, h * w) * scale).softmax(dim=-1).reshape(n, h, w)  # (N, H, W)
    return Attended(scores=scores, alpha=alpha, x_av=x_v * alpha.unsqueeze(1))


AFFINITY_CHUNK = 2 ** 24  # affinity entries held at once (64 MB in float32): long videos in slices


def _minmax(m: Tensor) -> Tensor:
    """(N, P) → each row min-max normalised to [0, 1]; a flat row (``avstm.maps.is_flat``'s
    rule: range ≤ FLAT_RTOL of the magnitude) → 0."""
    lo, hi = m.amin(dim=1, keepdim=True), m.amax(dim=1, keepdim=True)
    span = hi - lo
    varied = span > FLAT_RTOL * torch.maximum(hi.abs(), lo.abs())
    return torch.where(varied, (m - lo) / torch.where(varied, span, 1), 0)


def affinity_walk(maps: Tensor, features: Tensor, *, power: float = AFFINITY_POWER,
                  steps: int = AFFINITY_STEPS, keep: float = AFFINITY_KEEP) -> Tensor:
    """The ``affinity`` refinement (memnet.config.REFINEMENTS).

    maps: (N, H, W) any real map; features: (N, C, H, W) the step's frame features (the
    cache's, before the network). With m the min-max normalised map and T(p, q) =
    max(0, cos(f_p, f_q))^power normalised over q, the result is keep·m + (1 − keep)·w, w the
    min-max normalised T^steps·m: the walk spreads the map's peak over the cells that look like
    it, and the kept share holds the peak where it was. Returns (N, H, W) in [0, 1] (a flat map:
    0), in ``maps``' dtype; the same for any positive scale and shift of ``maps``.
    """
    n, h, w = maps.shape
    dtype = torch.promote_types(maps.dtype, torch.float32)  # float32 at least (bf16 autocast)
    m = _minmax(maps.reshape(n, h * w).to(dtype))  # (N, HW)
    walked = torch.empty_like(m)
    chunk = max(1, AFFINITY_CHUNK // (h * w) ** 2)  # frames whose (HW, HW) affinities are held at once
    for i in range(0, n, chunk):
        f = nn.functional.normalize(features[i:i + chunk].flatten(2).to(dtype), dim=1)  # (n', C, HW)
        affinity = torch.einsum("ncp,ncq->npq", f, f).clamp_min(0).pow(power)  # (n', HW, HW)
        walk = affinity / affinity.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        x = m[i:i + chunk].unsqueeze(-1)
        for _ in range(steps):
            x = walk @ x
        walked[i:i + chunk] = x.squeeze(-1)
    out = keep * m + (1 - keep) * _minmax(walked)
    return out.reshape(n, h, w).to(maps.dtype)


def refine_map(maps: Tensor, features: Tensor, map_name: str) -> Tensor:
    """``maps`` (N, H, W) refined as ``map_name`` (one of MAP_CHOICES) says; features (N, C_v,
    H, W) the raw frame features of the same steps."""
    refinement = map_parts(map_name)[1]
    return maps if refinement is None else affinity_walk(maps, features)


class TemporalAttention(nn.Module):
    """Multi-modal temporal attention g (Eq. 2) for one modality.

    β^{k,t} = (1/L) Σ_l softmax_k(φ(x^t) W_l^q · (φ(x^k) W_l^k)ᵀ / √d), over the K past steps
    and t itself (d = C / L, the dimension of a head's queries and keys; d = C for L = 1);
    x̂^t = Σ_k β^{k,t} x^k with the full maps as values (no value projection).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim, bias=False)  # W^q of all heads, (C, L·d)
        self.key = nn.Linear(dim, dim, bias=False)  # W^k of all heads

    def _split(self, x: Tensor) -> Tensor:
        *lead, c = x.shape
        return x.reshape(*lead, self.heads, c // self.heads)  # (..., L, d)

    def forward(self, x: Tensor, memory_length: int) -> Tensor:
        """Over a clip with a banded causal mask. x: (B, T, C, H, W) → x̂: (B, T, C, H, W)."""
        b, t = x.shape[:2]
        pooled = x.mean(dim=(3, 4))  # φ(x): (B, T, C)
        q = self._split(self.query(pooled)).transpose(1, 2)  # (B, L, T, d)
        k = self._split(self.key(pooled)).transpose(1, 2)  # (B, L, T, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, L, T_query, T_key)
        steps = torch.arange(t, device=x.device)
        lag = steps[:, None] - steps[None, :]  # query step − key step, (T, T)
        allowed = (lag >= 0) & (lag <= memory_length)  # keys t-K..t
        scores = scores.masked_fill(~allowed, float("-inf"))
        beta = scores.softmax(dim=-1).mean(dim=1)  # (B, T_query, T_key), Eq. 2's head average
        return torch.einsum("bts,bschw->btchw", beta.to(x.dtype), x)  # (B, T, C, H, W)

    def step(self, x: Tensor, memory: Tensor, valid: int) -> Tensor:
        """One step. x: (B, C, H, W) present; memory: (B, K, C, H, W), the first ``valid``
        slots hold past steps (in any order). Returns x̂: (B, C, H, W)."""
        keys = x.unsqueeze(1)  # (B, 1, C, H, W)
        if valid:
            keys = torch.cat([memory[:, :valid], keys], dim=1)  # (B, V+1, C, H, W)
        pooled_q = x.mean(dim=(2, 3))  # (B, C)
        pooled_k = keys.mean(dim=(3, 4))  # (B, V+1, C)
        q = self._split(self.query(pooled_q))  # (B, L, d)
        k = self._split(self.key(pooled_k)).transpose(1, 2)  # (B, L, V+1, d)
        scores = torch.einsum("bld,blsd->bls", q, k) / math.sqrt(q.shape[-1])  # (B, L, V+1)
        beta = scores.softmax(dim=-1).mean(dim=1)  # (B, V+1)
        return torch.einsum("bs,bschw->bchw", beta.to(x.dtype), keys)  # (B, C, H, W)


class STMNet(nn.Module):
    """Projections, the spatio-temporal memory layer (Algorithm 1), the localization map and
    the event classifier.

    Raw cached features go in: the input normalisation buffers (per-channel mean and std,
    identity until the trainer sets them from training-split statistics) are applied first.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("visual_mean", torch.zeros(c.visual_channels))
        self.register_buffer("visual_std", torch.ones(c.visual_channels))
        self.register_buffer("audio_mean", torch.zeros(c.audio_channels))
        self.register_buffer("audio_std", torch.ones(c.audio_channels))
        self.visual_proj = projection(c.visual_channels, c.dim, c.proj_layers)
        self.audio_proj = projection(c.audio_channels, c.dim, c.proj_layers)
        # Only the memories a mode uses exist, so that every parameter gets a gradient (DDP).
        uni, cross = c.memory in ("unimodal", "full"), c.memory == "full"
        self.temporal_a = TemporalAttention(c.dim, c.heads) if uni else None
        self.temporal_v = TemporalAttention(c.dim, c.heads) if uni else None
        self.temporal_av = TemporalAttention(c.dim, c.heads) if cross else None
        self.classifier = nn.Sequential(
            nn.Linear(2 * c.dim, c.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.num_classes),
        )
        self.visual_classifier = nn.Linear(c.dim, c.num_classes) if c.visual_head else None
        # log of the scale on Eq. 1's dot products: [memory layer's f, final f]
        start = math.log(1.0 / math.sqrt(c.dim))
        if c.attention_scale == "learned":
            self.log_scale = nn.Parameter(torch.full((2,), start))
        else:
            self.register_buffer("log_scale", torch.full(
                (2,), start if c.attention_scale == "sqrt" else 0.0), persistent=False)

    @torch.no_grad()
    def set_normalization(self, visual_mean, visual_std, audio_mean, audio_std) -> None:
        """Set the per-channel input statistics: visual (C_v,), audio (512,) array-likes."""
        for name, value in [("visual_mean", visual_mean), ("visual_std", visual_std),
                            ("audio_mean", audio_mean), ("audio_std", audio_std)]:
            buf = getattr(self, name)
            buf.copy_(torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape))

    def _embed(self, visual: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Normalise and project. visual (N, C_v, 8, 8), audio (N, 512, 6, 4) raw features →
        x_v (N, C, 8, 8), x_a (N, C, 6, 4)."""
        dtype = self.visual_mean.dtype
        v = (visual.to(dtype) - self.visual_mean[:, None, None]) / self.visual_std[:, None, None]
        a = (audio.to(dtype) - self.audio_mean[:, None, None]) / self.audio_std[:, None, None]
        return self.visual_proj(v), self.audio_proj(a)

    def _cross(self, x_v: Tensor, x_a: Tensor) -> Attended:
        """The memory layer's f(x̂_a, x̂_v). x_v (N, C, 8, 8), x_a (N, C, 6, 4)."""
        return spatial_attention(x_v, x_a, self.log_scale[0].exp())

    def _head(self, x_a: Tensor, x_v: Tensor, x_av: Tensor, memory: Attended, map_name: str
              ) -> tuple[Tensor, Tensor, Tensor | None]:
        """α̂ = f(x̂_a, x̂_av), the chosen map and the logits of O = [Σ_ij x̂_av; φ(x̂_a)].
        x_a (N, C, 6, 4), x_v, x_av (N, C, 8, 8) → maps (N, 8, 8), logits (N, num_classes),
        visual logits (N, num_classes) or None."""
        pooled_av, query = x_av.sum(dim=(2, 3)), x_a.mean(dim=(2, 3))  # (N, C), (N, C)
        if self.training and self.config.audio_dropout > 0:
            keep = torch.rand(query.shape[0], 1, device=query.device) >= self.config.audio_dropout
            query = query * keep.to(query.dtype)  # the audio half of O only, not the maps
        logits = self.classifier(torch.cat([pooled_av, query], dim=1))  # O: (N, 2C)
        visual_logits = None
        if self.visual_classifier is not None:  # VISUAL_POOLS
            pooled_v = x_v.mean(dim=(2, 3)) if self.config.visual_pool == "mean" else pooled_av  # (N, C)
            visual_logits = self.visual_classifier(pooled_v)
        map_name = map_parts(map_name)[0]  # the refinement comes after (refine_map)
        if map_name == "class_cam":
            cls = logits[:, :-1].argmax(dim=-1)  # predicted event class, background excluded: (N,)
            weight = self.visual_classifier.weight[cls]  # w_c: (N, C)
            maps = torch.einsum("nchw,nc->nhw", x_v, weight.to(x_v.dtype))  # (N, 8, 8)
        elif map_name == "class_grad":
            maps = torch.einsum("nchw,nc->nhw", x_v, self._class_gradient(pooled_av, query, logits))
        elif map_name == "memory_scores":
            maps = memory.scores
        elif map_name == "memory_alpha":
            maps = memory.alpha
        else:
            final = spatial_attention(x_av, x_a, self.log_scale[1].exp())
            maps = final.alpha if map_name == "alpha_hat" else final.scores
        return maps, logits, visual_logits

    def _class_gradient(self, pooled_av: Tensor, query: Tensor, logits: Tensor) -> Tensor:
        """∂ logit_c / ∂ pooled_av for the predicted event class c of each row (background
        excluded), in closed form through the MLP (eval mode: dropout is the identity).
        pooled_av, query (N, C), logits (N, num_classes) → (N, C)."""
        first, last = self.classifier[0], self.classifier[-1]
        hidden = first(torch.cat([pooled_av, query], dim=1))  # (N, hidden), before the ReLU
        cls = logits[:, :-1].argmax(dim=-1)  # (N,)
        upstream = (hidden > 0).to(hidden.dtype) * last.weight[cls].to(hidden.dtype)  # (N, hidden)
        return upstream @ first.weight[:, : pooled_av.shape[1]].to(hidden.dtype)  # (N, C)

    def forward(self, visual: Tensor, audio: Tensor, *, map: str | None = None) -> STMOutput:
        """Run a clip at once with a causal memory window.

        visual: (B, T, C_v, 8, 8) float, raw cached features (channels-first);
        audio: (B, T, 512, 6, 4) float. ``map``: one of MAPS (None: ``config.map``).
        Returns maps (B, T, 8, 8) and logits (B, T, classes) (see STMOutput).
        """
        map_name = self._map_name(map)
        b, t = visual.shape[:2]
        x_v, x_a = self._embed(visual.flatten(0, 1), audio.flatten(0, 1))  # (B·T, C, ·, ·)
        x_v = x_v.unflatten(0, (b, t))  # (B, T, C, 8, 8)
        x_a = x_a.unflatten(0, (b, t))  # (B, T, C, 6, 4)
        mode, k = self.config.memory, self.config.memory_length
        if mode != "none":
            x_a = self.temporal_a(x_a, k)  # x̂_a
            x_v = self.temporal_v(x_v, k)  # x̂_v
        memory = self._cross(x_v.flatten(0, 1), x_a.flatten(0, 1))
        x_av = memory.x_av  # (B·T, C, 8, 8)
        if mode == "full":
            x_av = self.temporal_av(x_av.unflatten(0, (b, t)), k).flatten(0, 1)
        maps, logits, visual_logits = self._head(x_a.flatten(0, 1), x_v.flatten(0, 1), x_av, memory,
                                                 map_name)
        maps = refine_map(maps, visual.flatten(0, 1), map_name)
        return STMOutput(maps=maps.unflatten(0, (b, t)), logits=logits.unflatten(0, (b, t)),
                         visual_logits=None if visual_logits is None else visual_logits.unflatten(0, (b, t)),
                         visual=x_v, audio_query=x_a.mean(dim=(3, 4)))

    def _map_name(self, map: str | None) -> str:
        return check_map(self.config.map if map is None else map,
                         visual_head=self.visual_classifier is not None)

    def init_state(self, batch_size: int) -> StreamState:
        """Empty ring buffers of the last K steps for ``step``, on the model's device.

        The buffers take the maps' spatial size from the first step (8×8 and 6×4 at the
        paper's 256×256 frames and 0.96 s examples, other sizes at other frame sizes)."""
        empty = self.visual_mean.new_zeros(batch_size, 0)
        return StreamState(audio=empty, visual=empty, av=empty)

    def step(self, visual: Tensor, audio: Tensor, state: StreamState, *, map: str | None = None
             ) -> tuple[Tensor, Tensor, StreamState]:
        """Advance one step of a stream.

        visual: (B, C_v, 8, 8), audio: (B, 512, 6, 4) raw features of step t; ``state`` from
        ``init_state`` or the previous call (updated in place and returned); ``map`` as in
        ``forward``. Returns maps (B, 8, 8), logits (B, num_classes), state.
        """
        map_name = self._map_name(map)
        mode, k = self.config.memory, self.config.memory_length
        valid = min(state.steps, k)
        x_v, x_a = self._embed(visual, audio)  # (B, C, 8, 8), (B, C, 6, 4)
        if mode != "none":
            x_a_hat = self.temporal_a.step(x_a, state.audio, valid)
            x_v_hat = self.temporal_v.step(x_v, state.visual, valid)
        else:
            x_a_hat, x_v_hat = x_a, x_v
        memory = self._cross(x_v_hat, x_a_hat)
        x_av = memory.x_av
        x_av_hat = self.temporal_av.step(x_av, state.av, valid) if mode == "full" else x_av
        maps, logits, _ = self._head(x_a_hat, x_v_hat, x_av_hat, memory, map_name)
        maps = refine_map(maps, visual, map_name)
        if state.steps == 0:  # allocate the ring buffers at the maps' own sizes
            state.audio = x_a.new_zeros(x_a.shape[0], k, *x_a.shape[1:])
            state.visual = x_v.new_zeros(x_v.shape[0], k, *x_v.shape[1:])
            state.av = x_av.new_zeros(x_av.shape[0], k, *x_av.shape[1:])
        slot = state.steps % k
        state.audio[:, slot] = x_a.detach()
        state.visual[:, slot] = x_v.detach()
        state.av[:, slot] = x_av.detach()
        state.steps += 1
        return maps, logits, state
