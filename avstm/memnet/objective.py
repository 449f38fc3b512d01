"""The training objective: the paper's weak cross-entropy, and the options from the field.

- The paper's: cross-entropy of the event class from O^t = [Σ_ij x̂_av; φ(x̂_a)] on every step.
- ``visual_loss`` (off by default): cross-entropy of a head that sees the visual half alone,
  so that it must carry the class by itself: Σ_ij x̂_av (``visual_pool`` "attention"), or x̂_v
  averaged over positions ("mean"), a CAM head (Zhou et al. 2016) whose map ``class_cam``
  averages to its logit, so that every cell of the object is pushed up, not only the peak.
- ``contrastive`` (off by default): the audio–visual contrastive term of EZ-VSL / LVS on the
  memory layer's cross-modal scores: for each step, the similarity of a clip's visual map with
  an audio query is the maximum over positions of the cosine between x̂_v(i,j) and φ(x̂_a);
  the clip's own audio is the positive, the batch's other clips are the negatives (both
  directions, temperature ``CONTRASTIVE_TEMPERATURE``).

(Dropping the audio half of O^t for a share of steps is ``ModelConfig.audio_dropout``, applied
inside the model.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avstm.memnet.model import STMOutput

CONTRASTIVE_TEMPERATURE = 0.07  # τ of the in-batch softmax (LVS / EZ-VSL use 0.03–0.07)


def contrastive_loss(visual: Tensor, audio_query: Tensor,
                     temperature: float = CONTRASTIVE_TEMPERATURE) -> Tensor:
    """In-batch audio–visual contrastive loss, averaged over steps and both directions.

    visual: (B, T, C, H, W) x̂_v; audio_query: (B, T, C) φ(x̂_a). Needs B >= 2.
    """
    b, t = visual.shape[:2]
    v = F.normalize(visual.float(), dim=2)  # (B, T, C, H, W)
    a = F.normalize(audio_query.float(), dim=2)  # (B, T, C)
    sim = torch.einsum("btchw,utc->tbuhw", v, a).flatten(3).amax(dim=3) / temperature  # (T, B, B)
    target = torch.arange(b, device=visual.device).repeat(t)  # (T·B,)
    return 0.5 * (F.cross_entropy(sim.flatten(0, 1), target)
                  + F.cross_entropy(sim.transpose(1, 2).flatten(0, 1), target))


def training_loss(out: STMOutput, targets: Tensor, *, visual_loss: float = 0.0,
                  contrastive: float = 0.0) -> tuple[Tensor, Tensor]:
    """(loss, logits) of one batch. out: the model's output over (B, T) steps; targets (B, T)
    class indices. ``logits`` is (B·T, classes), the paper's classifier's, for accuracy."""
    logits = out.logits.float().flatten(0, 1)  # (B·T, classes)
    flat = targets.flatten()
    loss = F.cross_entropy(logits, flat)
    if visual_loss > 0:
        loss = loss + visual_loss * F.cross_entropy(out.visual_logits.float().flatten(0, 1), flat)
    if contrastive > 0 and out.visual.shape[0] > 1:
        loss = loss + contrastive * contrastive_loss(out.visual, out.audio_query)
    return loss, logits
