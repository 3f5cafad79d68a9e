"""Dense reference rasteriser: every pixel against every Gaussian. Exact, slow, for tests.

Memory is O(C * H * W * N); use it on a few hundred Gaussians and small images only.
"""

from __future__ import annotations

import torch

from gags.splats.projection import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    MIN_TRANSMITTANCE,
    Projected,
    gaussian_weight_sigma,
)


def rasterize_dense(
    proj: Projected, values: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-composite ``values`` front to back with gsplat's per-pixel rules.

    Args:
        proj: screen-space Gaussians for C cameras.
        values: (C, N, D) per-camera, per-Gaussian channels to composite.
    Returns:
        image (C, H, W, D) and alpha (C, H, W), without background.
    """
    C, N = proj.depths.shape
    culled = (proj.radii == 0).all(-1)
    order = torch.argsort(torch.where(culled, torch.inf, proj.depths.detach()), dim=1)  # (C, N)

    def take(t: torch.Tensor) -> torch.Tensor:
        idx = order.reshape(order.shape + (1,) * (t.dim() - 2)).expand((C, N) + t.shape[2:])
        return torch.gather(t, 1, idx)

    means2d, conics, opac, vals = take(proj.means2d), take(proj.conics), take(proj.opacities), take(values)
    alive = ~take(culled)

    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=means2d.dtype, device=means2d.device) + 0.5,
        torch.arange(width, dtype=means2d.dtype, device=means2d.device) + 0.5,
        indexing="ij",
    )
    dx = means2d[:, None, :, 0] - xs.reshape(1, -1, 1)  # (C, HW, N)
    dy = means2d[:, None, :, 1] - ys.reshape(1, -1, 1)
    sigma = gaussian_weight_sigma(conics[:, None], dx, dy)
    alpha = torch.clamp(opac[:, None] * torch.exp(-sigma), max=MAX_ALPHA)
    use = alive[:, None] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(use, alpha, torch.zeros_like(alpha))
    t_next = torch.cumprod(1.0 - alpha, dim=-1)
    t_prev = torch.cat([torch.ones_like(t_next[..., :1]), t_next[..., :-1]], dim=-1)
    weights = alpha * t_prev * (t_next > MIN_TRANSMITTANCE)
    image = torch.einsum("cpn,cnd->cpd", weights, vals).reshape(C, height, width, -1)
    return image, weights.sum(-1).reshape(C, height, width)
