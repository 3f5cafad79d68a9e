"""The GaD objective for one rendered view (paper Eq. 7); alpha learned or given (fixed-alpha methods).

The methods that use it are :class:`gags.distill.gad.GaD` (learned, averaged or single-level alpha).
"""

from __future__ import annotations

import dataclasses

import torch

from gags.distill.decoders import GaDDecoders
from gags.distill.losses import (
    ConsistencyForm,
    DistillLoss,
    consistency_loss,
    distill_error,
    entropy_loss,
    fused_regions,
    region_average,
)
from gags.distill.views import ViewTargets
from gags.models.segmenter import LEVELS


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """How the GaD loss is computed (module docstring of :mod:`gags.distill.losses` for the variants)."""

    distill_loss: DistillLoss = "paper-l2"
    consistency: ConsistencyForm = "paper"
    region_aware: bool = True
    smooth_kernel: int = 5


def gad_loss(
    f16: torch.Tensor,
    view: ViewTargets,
    decoders: GaDDecoders,
    alpha_const: torch.Tensor | None,
    options: LossOptions,
    lambda_entropy: float,
    lambda_consistency: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 7 for one view: l_r-distill + lambda_ent l_ent + lambda_cons l_cons.

    Args:
        f16: (H', W', F) rendered field at the view's resolution.
        view: the view's targets (only its valid pixels count).
        decoders: feature (and granularity) decoders.
        alpha_const: (L,) fixed alpha, or None to learn it from the decoders.
        lambda_entropy, lambda_consistency: this step's weights (see :func:`losses.loss_weights`).
    Returns:
        the scalar loss and float statistics (loss terms, mean alpha per level).
    """
    H, W, _ = f16.shape
    f_valid = f16.reshape(H * W, -1)[view.valid]  # (P, F)
    f_clip, eta = decoders(f_valid)
    if alpha_const is None:
        if eta is None:
            raise ValueError("alpha is learned but the decoders have no granularity branch")
        alpha = torch.softmax(eta, dim=-1)  # (P, L)
    else:
        alpha = alpha_const.to(f_clip).expand(f_clip.shape[0], -1)

    alpha_map = torch.zeros(H * W, alpha.shape[1], dtype=alpha.dtype, device=alpha.device)
    alpha_map[view.valid] = alpha.detach()  # pixels without masks count as 0 in the smoothing
    region = fused_regions(alpha_map.reshape(H, W, -1), view.maps, options.smooth_kernel).reshape(-1)[
        view.valid
    ]

    error = distill_error(f_clip, view.level_features(), alpha, options.distill_loss)
    l_distill = region_average(error, region) if options.region_aware else error.mean()
    loss = l_distill
    stats = {"distill": float(l_distill.detach())}
    if alpha_const is None and lambda_entropy > 0:
        l_ent = entropy_loss(alpha)
        loss = loss + lambda_entropy * l_ent
        stats["entropy"] = float(l_ent.detach())
    if lambda_consistency > 0:
        source = f_valid if options.consistency == "reference" else f_clip
        l_cons = consistency_loss(source, region, options.consistency, total_pixels=H * W)
        loss = loss + lambda_consistency * l_cons
        stats["consistency"] = float(l_cons.detach())
    for name, a in zip(LEVELS, alpha.detach().mean(0).tolist(), strict=True):
        stats[f"alpha_{name}"] = a
    return loss, stats
