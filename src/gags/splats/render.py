"""One ``render()`` for RGB, N-D features, expected depth and alpha, over a batch of cameras."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from gags.splats.gaussians import Gaussians
from gags.splats.projection import project_gaussians
from gags.splats.sh import eval_sh_colors

Backend = Literal["auto", "torch", "gsplat", "dense"]


@dataclasses.dataclass
class RenderOutput:
    """What :func:`render` returns for C cameras of size H x W.

    Attributes:
        rgb: (C, H, W, 3) colour composited on the background, or None if not requested.
        features: (C, H, W, F) composited feature channels (background 0), or None.
        depth: (C, H, W) expected camera-z depth normalised by alpha (gsplat's "ED"); 0 where alpha is 0.
        alpha: (C, H, W) accumulated opacity.
        means2d: (C, N, 2) projected centres; call ``retain_grad()`` before backward for densification.
        radii: (C, N, 2) int32 screen radii in pixels; 0 where the Gaussian is culled.
    """

    rgb: torch.Tensor | None
    features: torch.Tensor | None
    depth: torch.Tensor
    alpha: torch.Tensor
    means2d: torch.Tensor
    radii: torch.Tensor


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """``auto`` picks gsplat on CUDA (when importable), else the portable ``torch`` backend."""
    if backend != "auto":
        return backend
    if device.type == "cuda":
        try:
            import gsplat  # noqa: F401

            return "gsplat"
        except ImportError:
            return "torch"
    return "torch"


def render(
    gaussians: Gaussians,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    render_rgb: bool = True,
    render_features: bool = False,
    background: torch.Tensor | None = None,
    backend: Backend = "auto",
) -> RenderOutput:
    """Render ``gaussians`` into C cameras.

    Args:
        gaussians: the splats; ``features`` must be set when ``render_features``.
        viewmats: (C, 4, 4) world-to-camera (OpenCV axes). Ks: (C, 3, 3) intrinsics in pixels.
        width, height: output size in pixels.
        sh_degree: active SH degree (default: all the coefficients hold).
        render_rgb / render_features: which channel groups to composite (depth and alpha always are).
        background: (3,) or (C, 3) RGB added where alpha < 1 (default black).
        backend: see :mod:`gags.splats.backends`.
    """
    if render_features and gaussians.features is None:
        raise ValueError("render_features=True but the Gaussians carry no feature channels")
    degree = gaussians.sh_degree if sh_degree is None else min(sh_degree, gaussians.sh_degree)
    C = viewmats.shape[0]
    name = resolve_backend(backend, gaussians.device)

    channels = []
    if render_rgb:
        cam_centers = torch.linalg.inv(viewmats)[:, :3, 3]
        channels.append(eval_sh_colors(gaussians.sh, gaussians.means, cam_centers, degree))
    if render_features:
        channels.append(gaussians.features[None].expand(C, -1, -1))

    if name == "gsplat":
        from gags.splats.backends.gsplat_backend import render_gsplat

        image, alpha, means2d, radii = render_gsplat(gaussians, channels, viewmats, Ks, width, height)
    else:
        proj = project_gaussians(
            gaussians.means,
            gaussians.quats,
            gaussians.scales,
            gaussians.opacities,
            viewmats,
            Ks,
            width,
            height,
        )
        values = torch.cat(channels + [proj.depths[..., None]], dim=-1)
        image, alpha = _rasterize_portable(name, proj, values, width, height)
        means2d, radii = proj.means2d, proj.radii

    depth = image[..., -1] / alpha.clamp(min=1e-10)
    rgb = feats = None
    if render_rgb:
        rgb = image[..., :3]
        if background is not None:
            bg = background.to(rgb).reshape(-1, 1, 1, 3)
            rgb = rgb + (1.0 - alpha[..., None]) * bg
    if render_features:
        start = 3 if render_rgb else 0
        feats = image[..., start : start + gaussians.features.shape[1]]
    return RenderOutput(rgb=rgb, features=feats, depth=depth, alpha=alpha, means2d=means2d, radii=radii)


def _rasterize_portable(name: str, proj, values: torch.Tensor, width: int, height: int):
    if name == "dense":
        from gags.splats.backends.dense import rasterize_dense

        return rasterize_dense(proj, values, width, height)
    if name == "torch":
        from gags.splats.backends.torch_tiles import rasterize_tiles

        return rasterize_tiles(proj, values, width, height)
    raise ValueError(f"unknown render backend {name!r}; choose auto, torch, gsplat or dense")
