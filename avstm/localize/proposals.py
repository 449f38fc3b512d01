"""Proposal grounding: score a detector's boxes by the attention inside them, then NMS.

The paper's second way of turning α̂ into boxes: take the boxes of a COCO-pretrained Faster
R-CNN ResNet-50-FPN (torchvision), score each by S_n = Σ m_n ⊙ α̂ (m_n the box's binary mask
on the frame, α̂ upsampled to the frame and min-max normalised), and keep the best after
non-maximum suppression. The detector's own class and score only decide which boxes are
proposed (``score_threshold``), not their rank. A kept box's score is S_n divided by the
map's whole mass: the share of the map inside it, in [0, 1], as for the Otsu boxes.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import torch
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, FasterRCNN_ResNet50_FPN_Weights
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d, nms

from avstm.errors import WeightsError
from avstm.extract.backbones import read_state_dict
from avstm.localize.boxes import Box, box_sums, integral_image

COCO_WEIGHTS = FasterRCNN_ResNet50_FPN_Weights.COCO_V1
COCO_NUM_CLASSES = 91  # torchvision's COCO label space (with background and unused ids)
WEIGHT_CHOICES = ("coco", "random")  # or a path to a state dict


def build_detector(*, min_size: int = 800, max_size: int = 1333, score_threshold: float = 0.05,
                   max_proposals: int = 100) -> FasterRCNN:
    """Faster R-CNN ResNet-50-FPN with torchvision's pretrained layout, random weights, eval mode.

    Built the way torchvision builds it for its COCO weights (frozen batch norm, 91 classes),
    so that the COCO state dict — or one saved from this module — loads with strict=True.
    min_size/max_size: the detector's own input resize (torchvision's defaults 800/1333).
    """
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, trainable_layers=0)
    model = FasterRCNN(backbone, num_classes=COCO_NUM_CLASSES, min_size=min_size,
                       max_size=max_size, box_score_thresh=score_threshold,
                       box_detections_per_img=max_proposals)
    return model.eval().requires_grad_(False)


def _coco_state_dict() -> dict:
    """The COCO weights from the torch hub cache, downloaded there when online."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(COCO_WEIGHTS.url)
    try:
        return COCO_WEIGHTS.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(
            f"{cached}: Faster R-CNN COCO weights not cached and cannot be loaded or downloaded "
            f"({reason}); fetch {COCO_WEIGHTS.url} and pass --detector-weights PATH"
        ) from e


def _file_state_dict(path: str | os.PathLike) -> dict:
    """The state dict in a detector weights file (``backbones.read_state_dict``), with a hint
    when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: detector weights file not found "
                           f"(give a state dict path, or one of {', '.join(WEIGHT_CHOICES)})")
    return read_state_dict(path)


def load_detector(weights: str | os.PathLike = "coco", **build_options) -> FasterRCNN:
    """A ready detector: ``weights`` is "coco" (torchvision's COCO_V1 through the hub cache),
    "random" (tests), or a path to a state dict in torchvision's layout."""
    if str(weights) == "random":
        return build_detector(**build_options)
    state = _coco_state_dict() if str(weights) == "coco" else _file_state_dict(weights)
    model = build_detector(**build_options)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        where = COCO_WEIGHTS.url if str(weights) == "coco" else weights
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise WeightsError(f"{where}: not Faster R-CNN ResNet-50-FPN weights "
                           f"({first[0].strip()})") from e
    return model.eval().requires_grad_(False)


class ProposalDetector:
    """Class-agnostic box proposals from Faster R-CNN for RGB frames.

    weights: "coco", "random" or a state-dict path (see ``load_detector``).
    score_threshold: the detector's own minimum confidence for a proposal.
    max_proposals: at most this many boxes per frame (the detector's best).
    min_size/max_size: the detector's internal resize; boxes come back in frame pixels.
    """

    def __init__(self, *, weights: str | os.PathLike = "coco", device: str | torch.device = "cpu",
                 score_threshold: float = 0.05, max_proposals: int = 100, min_size: int = 800,
                 max_size: int = 1333, batch_size: int = 4):
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = load_detector(weights, min_size=min_size, max_size=max_size,
                                   score_threshold=score_threshold,
                                   max_proposals=max_proposals).to(self.device)

    @torch.inference_mode()
    def propose(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """frames: (N, H, W, 3) uint8 RGB. Returns N pairs (boxes (P, 4) float32 xyxy frame
        pixels, det_scores (P,) float32 in [0, 1]), P ≤ max_proposals, best first."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} "
                             f"{frames.dtype}")
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = torch.from_numpy(frames[start:start + self.batch_size]).to(self.device)
            images = list(chunk.permute(0, 3, 1, 2).float().div_(255.0))  # N × (3, H, W)
            for det in self.model(images):
                boxes, scores = det["boxes"].float().cpu(), det["scores"].float().cpu()
                ok = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
                out.append((boxes[ok].numpy(), scores[ok].numpy()))
        return out


def score_proposals(boxes: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """S_n = Σ m_n ⊙ α̂ for each box.

    boxes: (P, 4) float xyxy frame pixels. amap: (H, W) float, the frame-sized map (e.g. from
    ``upsample_map``). m_n holds the pixels whose centre lies in the box (see
    ``avstm.maps.pixel_span``). Returns (P,) float64; computed from one integral image.
    """
    amap = np.asarray(amap)
    if amap.ndim != 2:
        raise ValueError(f"map must be (H, W), got shape {amap.shape}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return box_sums(integral_image(amap), boxes)


def ground(boxes: np.ndarray, amap: np.ndarray, *, iou_threshold: float = 0.5,
           max_boxes: int | None = None) -> list[Box]:
    """Rank proposals by the attention inside them and suppress overlaps.

    boxes: (P, 4) float xyxy frame pixels. amap: (H, W) frame-sized map in [0, 1].
    iou_threshold: NMS drops a box overlapping a better one by more than this IoU.
    Returns ``Box`` objects best first, at most ``max_boxes`` (None: all), each scored by the
    share of the map's mass inside it, S_n / Σ α̂, in [0, 1] (the ranking is S_n's).
    Boxes with no attention inside (S_n = 0) are dropped.
    """
    if max_boxes is not None and max_boxes < 1:
        raise ValueError(f"max_boxes must be at least 1 (or None for all), got {max_boxes}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = score_proposals(boxes, amap)
    live = scores > 0
    boxes, scores = boxes[live], scores[live]
    if len(boxes) == 0:
        return []
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), float(iou_threshold)).numpy()
    if max_boxes is not None:
        keep = keep[:max_boxes]
    total = float(np.asarray(amap, dtype=np.float64).sum())
    return [Box(xyxy=tuple(float(v) for v in boxes[i]), score=min(1.0, float(scores[i]) / total))
            for i in keep]
