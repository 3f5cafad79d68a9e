"""EWA projection of 3D Gaussians to screen space, with gsplat's conventions.

Shared by the portable backends (and cross-checked against gsplat's own torch reference in tests):
pinhole camera, Jacobian evaluated at the centre clamped to 1.3x the field of view, 0.3 px^2 added
to the 2D covariance diagonal (the low-pass filter), near plane 0.01, opacity-aware screen radius
of ``min(3.33, sqrt(2 ln(255 opacity)))`` standard deviations per axis.
"""

from __future__ import annotations

import dataclasses

import torch

ALPHA_THRESHOLD = 1.0 / 255.0
EPS_2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4


@dataclasses.dataclass
class Projected:
    """Screen-space Gaussians for C cameras.

    Attributes:
        means2d: (C, N, 2) centres in pixels (pixel centres at +0.5).
        conics: (C, N, 3) inverse 2D covariance (a, b, c) of [[a, b], [b, c]], 1/px^2.
        depths: (C, N) camera-space z, world units.
        radii: (C, N, 2) int32 screen half-extents in pixels along x and y; 0 means culled.
        opacities: (C, N) opacities in (0, 1).
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    opacities: torch.Tensor


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions (w, x, y, z), normalised here, to (N, 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) world covariances R S S^T R^T from (N, 4) quaternions and (N, 3) std-devs."""
    M = quat_to_rotmat(quats) * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = EPS_2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
) -> Projected:
    """Project N Gaussians into C pinhole cameras.

    Args:
        means: (N, 3) world centres. quats: (N, 4). scales: (N, 3) std-devs. opacities: (N,).
        viewmats: (C, 4, 4) world-to-camera. Ks: (C, 3, 3) intrinsics.
        width, height: image size in pixels.
    Returns:
        :class:`Projected`; differentiable in every float input.
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C, N, 3)
    cov_c = torch.einsum("cij,njk,clk->cnil", R, covariances(quats, scales), R)  # (C, N, 3, 3)

    x, y, z = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    # Clamp the point where the Jacobian is taken to 1.3x the frustum, as gsplat does.
    safe_z = torch.where(z.abs() < 1e-6, torch.full_like(z, 1e-6), z)
    tx = safe_z * torch.clamp(
        x / safe_z, min=-(cx / fx + 0.3 * tan_fovx), max=(width - cx) / fx + 0.3 * tan_fovx
    )
    ty = safe_z * torch.clamp(
        y / safe_z, min=-(cy / fy + 0.3 * tan_fovy), max=(height - cy) / fy + 0.3 * tan_fovy
    )
    zeros = torch.zeros_like(safe_z)
    J = torch.stack(
        [fx / safe_z, zeros, -fx * tx / safe_z**2, zeros, fy / safe_z, -fy * ty / safe_z**2], dim=-1
    ).reshape(z.shape + (2, 3))
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_safe = det.clamp(min=1e-10)
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x / safe_z + cx, fy * y / safe_z + cy], dim=-1)

    opac = opacities[None].expand_as(z)
    with torch.no_grad():
        extend = torch.sqrt(2.0 * torch.log(opac.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(
            max=3.33
        )
        radius = torch.stack([torch.ceil(extend * a.sqrt()), torch.ceil(extend * c.sqrt())], dim=-1)
        valid = (det > 0) & (z > near_plane) & (z < far_plane) & (opac >= ALPHA_THRESHOLD)
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + radius[..., 0] > 0) & (mx - radius[..., 0] < width)
        inside &= (my + radius[..., 1] > 0) & (my - radius[..., 1] < height)
        keep = valid & inside & torch.isfinite(radius).all(-1)
        radii = torch.where(keep[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii, opacities=opac)


def gaussian_weight_sigma(conics: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, broadcasting conics (..., 3) against dx, dy."""
    a, b, c = conics.unbind(-1)
    return 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
