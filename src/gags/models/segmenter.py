"""The segmenter interface shared by SAM and the synthetic oracle."""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np
import torch

LEVELS: tuple[str, str, str] = ("subpart", "part", "whole")


@dataclasses.dataclass
class MaskProposals:
    """Candidate masks for one image, one group per granularity level (subpart, part, whole).

    Attributes:
        masks: three (M_l, H, W) bool tensors.
        pred_iou: three (M_l,) float tensors, the model's predicted IoU (SAM's ``iou_predictions``).
        stability: three (M_l,) float tensors, SAM's stability score (1.0 where a model has none).
    """

    masks: list[torch.Tensor]
    pred_iou: list[torch.Tensor]
    stability: list[torch.Tensor]

    def __post_init__(self) -> None:
        if not (len(self.masks) == len(self.pred_iou) == len(self.stability) == len(LEVELS)):
            raise ValueError("MaskProposals needs exactly one entry per level (subpart, part, whole)")

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the masks."""
        return tuple(self.masks[0].shape[-2:])  # type: ignore[return-value]


@runtime_checkable
class Segmenter(Protocol):
    """Point-prompted multi-granularity segmentation.

    ``segment`` takes an RGB image (H, W, 3) uint8 and prompt points (P, 2) in pixel coordinates
    (x, y), and returns for every prompt up to one mask per level, already filtered by the
    model's own quality thresholds. ``image_name`` identifies the view (the oracle needs it; SAM
    ignores it).
    """

    def segment(self, image: np.ndarray, points: np.ndarray, *, image_name: str) -> MaskProposals: ...
