"""gsplat's CUDA rasteriser behind :func:`gags.splats.render.render` (CUDA devices only).

gsplat is imported lazily so that the package works without it; its conventions are the ones the
portable backends copy (see :mod:`gags.splats.projection`).
"""

from __future__ import annotations

import torch

from gags.errors import GagsError
from gags.splats.gaussians import Gaussians
from gags.splats.projection import EPS_2D, FAR_PLANE, NEAR_PLANE

#: gsplat's tile side in pixels (its default).
GSPLAT_TILE_SIZE = 16


def render_gsplat(
    gaussians: Gaussians,
    channels: list[torch.Tensor],
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite ``channels`` and camera depth with ``gsplat.rasterization`` ("RGB+D" mode).

    Args:
        gaussians: the splats (on a CUDA device).
        channels: list of (C, N, d_i) per-camera, per-Gaussian channels, concatenated in order (may be empty).
        viewmats: (C, 4, 4) world-to-camera (OpenCV). Ks: (C, 3, 3) intrinsics in pixels.
        width, height: image size in pixels.
    Returns:
        image (C, H, W, D + 1), D = sum of d_i, whose last channel is the alpha-weighted (unnormalised)
        camera depth; alpha (C, H, W); means2d (C, N, 2) (gsplat's, for densification statistics);
        radii (C, N, 2) int32 (0 = culled).
    """
    try:
        from gsplat import rasterization
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise GagsError("backend 'gsplat' needs the gsplat package: pip install 'gags[cuda]'") from exc
    if gaussians.device.type != "cuda":
        raise GagsError(f"backend 'gsplat' needs CUDA tensors, got {gaussians.device}; use backend='torch'")
    C, N = viewmats.shape[0], len(gaussians)
    colors = torch.cat(channels, dim=-1) if channels else gaussians.means.new_zeros(C, N, 0)
    empty = colors.shape[-1] == 0
    if empty:  # gsplat wants at least one colour channel; composite a zero and drop it
        colors = gaussians.means.new_zeros(C, N, 1)
    image, alpha, meta = rasterization(
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        gaussians.opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        eps2d=EPS_2D,
        sh_degree=None,
        packed=False,
        tile_size=GSPLAT_TILE_SIZE,
        render_mode="RGB+D",
        rasterize_mode="classic",
    )
    if empty:
        image = image[..., 1:]
    return image, alpha[..., 0], meta["means2d"], meta["radii"]
