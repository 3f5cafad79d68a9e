"""3D queries: the relevance of each Gaussian from its own decoded feature, and selection by threshold.

The 2D mask rule carries over without the image smoothing: relevance over the Gaussians is stretched
with the same ``clip(2 minmax(r) - 1, 0, 1)`` and thresholded (0.4 by default). With several levels
(LangSplat's three fields) the level with the highest maximum relevance is used, as the 2D mask does.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from gags.query.postprocess import MASK_THRESHOLD, normalise_relevance
from gags.query.relevance import relevance
from gags.splats.gaussians import Gaussians

Mode = Literal["select", "extract", "delete"]


@dataclasses.dataclass
class Selection3D:
    """Which Gaussians match a query.

    Attributes:
        relevance: (N,) float32 raw LERF relevance of each Gaussian at the chosen level.
        normalised: (N,) float32 stretched relevance in [0, 1].
        mask: (N,) bool, ``normalised > threshold``.
        level: index of the level used.
    """

    relevance: torch.Tensor
    normalised: torch.Tensor
    mask: torch.Tensor
    level: int

    @property
    def count(self) -> int:
        return int(self.mask.sum())


def select_gaussians(
    level_features: list[torch.Tensor],
    query: torch.Tensor,
    negatives: torch.Tensor,
    threshold: float = MASK_THRESHOLD,
) -> Selection3D:
    """Select the Gaussians relevant to one query.

    Args:
        level_features: L tensors (N, D), the decoded feature of every Gaussian at each level.
        query: (D,) query embedding. negatives: (K, D).
        threshold: on the stretched relevance.
    """
    if not level_features:
        raise ValueError("select_gaussians needs at least one level of features")
    rel = torch.stack([relevance(f, query, negatives) for f in level_features])  # (L, N)
    level = int(rel.amax(dim=-1).argmax())
    normalised = normalise_relevance(rel[level].to(torch.float64), dims=(-1,)).float()
    return Selection3D(relevance=rel[level], normalised=normalised, mask=normalised > threshold, level=level)


def apply_selection(gaussians: Gaussians, mask: torch.Tensor, mode: Mode) -> Gaussians:
    """``extract``/``select``: the matching Gaussians; ``delete``: the scene without them."""
    if mask.shape != (len(gaussians),):
        raise ValueError(f"selection mask has shape {tuple(mask.shape)}, expected ({len(gaussians)},)")
    keep = ~mask if mode == "delete" else mask
    return gaussians.subset(keep.to(gaussians.device))
