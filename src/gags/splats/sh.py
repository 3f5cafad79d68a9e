"""Real spherical harmonics up to degree 3, with the 3DGS/gsplat constants and colour offset."""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that renders as ``rgb`` (any shape, values in [0, 1])."""
    return (rgb - 0.5) / C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_sh0`."""
    return sh0 * C0 + 0.5


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """SH basis values (..., (degree+1)^2) for unit directions ``dirs`` (..., 3)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh_colors(
    sh: torch.Tensor, means: torch.Tensor, cam_centers: torch.Tensor, degree: int
) -> torch.Tensor:
    """View-dependent RGB per camera and Gaussian, as gsplat computes it.

    Args:
        sh: (N, K, 3) coefficients; only the first (degree+1)^2 are used.
        means: (N, 3) Gaussian centres.
        cam_centers: (C, 3) camera centres.
        degree: active SH degree (0..3).
    Returns:
        (C, N, 3) colours, clamped below at 0 (``max(sh . basis + 0.5, 0)``).
    """
    k = (degree + 1) ** 2
    if degree == 0:
        rgb = (sh[:, 0] * C0).unsqueeze(0).expand(cam_centers.shape[0], -1, -1)
    else:
        dirs = torch.nn.functional.normalize(means[None] - cam_centers[:, None], dim=-1)  # (C, N, 3)
        basis = sh_basis(dirs, degree)  # (C, N, k)
        rgb = torch.einsum("cnk,nkd->cnd", basis, sh[:, :k])
    return torch.clamp_min(rgb + 0.5, 0.0)
