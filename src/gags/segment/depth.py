"""Rendered depth D and per-Gaussian minimum visible depth MD (paper Section 3.1, spec section 1).

For every training view we render the alpha-normalised expected depth D. A Gaussian counts as
*seen* in a view when its centre projects inside the image onto a pixel with a rendered depth and
its camera-space z agrees with that depth within ``tolerance * D(pixel)`` (the reference's 0.25):
a Gaussian hidden behind an occluder lands on a pixel whose depth is the occluder's, fails the
test, and so never takes the occluder's depth. As in the reference code (depth_SAM.py:55-69) the
value a view contributes is the rendered depth D(pixel), not z, so the nearest view has
D / MD = 1 exactly. MD is the minimum over all views (inf for a Gaussian never seen).

Everything is vectorised over Gaussians and chunked over views: memory is O(chunk * N) for the
visibility test plus one chunk of depth maps, so a million Gaussians and hundreds of views fit.
"""

from __future__ import annotations

import dataclasses

import torch

from gags.scene.cameras import Camera, stack_cameras
from gags.splats.gaussians import Gaussians
from gags.splats.projection import NEAR_PLANE
from gags.splats.render import Backend, render

#: reference tolerance on |D(pixel) - z| relative to D(pixel) (depth_SAM.py:26-27)
DEPTH_TOLERANCE = 0.25
#: rendered pixels with less accumulated opacity than this carry no depth (D = 0)
MIN_ALPHA = 1e-3


@dataclasses.dataclass
class Visibility:
    """Which Gaussians one view sees.

    Attributes:
        visible: (N,) bool, centre inside the image and in agreement with the rendered depth.
        pixel: (N,) int64 flat pixel index ``y * W + x`` of the centre (only meaningful where visible).
        depth: (N,) float32 rendered depth D at that pixel, world units; inf where not visible.
    """

    visible: torch.Tensor
    pixel: torch.Tensor
    depth: torch.Tensor


@torch.no_grad()
def render_depths(gaussians: Gaussians, cameras: list[Camera], *, backend: Backend = "auto") -> torch.Tensor:
    """Expected depth of C same-sized cameras -> (C, H, W) float32, world units; 0 where nothing is drawn."""
    viewmats, Ks = stack_cameras(cameras, device=gaussians.device)
    out = render(
        gaussians, viewmats, Ks, cameras[0].width, cameras[0].height, render_rgb=False, backend=backend
    )
    return torch.where(out.alpha > MIN_ALPHA, out.depth, torch.zeros_like(out.depth)).float()


def view_visibility(
    means: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    depths: torch.Tensor,
    tolerance: float = DEPTH_TOLERANCE,
) -> Visibility:
    """Occlusion-tested visibility of N centres in C views at once.

    Args:
        means: (N, 3) Gaussian centres, world units.
        viewmats: (C, 4, 4) world-to-camera. Ks: (C, 3, 3) intrinsics, pixel centres at +0.5.
        depths: (C, H, W) rendered depth (0 = none).
        tolerance: relative depth agreement needed, |D - z| <= tolerance * D.
    Returns:
        :class:`Visibility` with (C, N) fields.
    """
    C, H, W = depths.shape
    cam = torch.einsum("cij,nj->cni", viewmats[:, :3, :3], means) + viewmats[:, None, :3, 3]  # (C, N, 3)
    z = cam[..., 2]
    zs = z.clamp(min=NEAR_PLANE)
    u = Ks[:, None, 0, 0] * cam[..., 0] / zs + Ks[:, None, 0, 2]
    v = Ks[:, None, 1, 1] * cam[..., 1] / zs + Ks[:, None, 1, 2]
    px, py = torch.floor(u), torch.floor(v)
    inside = (z > NEAR_PLANE) & (px >= 0) & (px < W) & (py >= 0) & (py < H)
    pixel = (py.clamp(0, H - 1) * W + px.clamp(0, W - 1)).long()  # (C, N)
    d = torch.gather(depths.reshape(C, H * W), 1, pixel)
    visible = inside & (d > 0) & ((d - z).abs() <= tolerance * d)
    depth = torch.where(visible, d, torch.full_like(d, torch.inf))
    return Visibility(visible=visible, pixel=pixel, depth=depth)


@torch.no_grad()
def min_visible_depth(
    gaussians: Gaussians,
    cameras: list[Camera],
    *,
    tolerance: float = DEPTH_TOLERANCE,
    view_chunk: int = 8,
    backend: Backend = "auto",
    progress=None,
    shard=None,
) -> torch.Tensor:
    """Per-Gaussian minimum visible depth MD over ``cameras`` -> (N,) float32 (inf where never seen).

    Views are rendered and tested ``view_chunk`` at a time (cameras of one size per chunk), so
    memory stays at one chunk of depth maps plus (view_chunk, N) visibility arrays.
    ``progress``: optional callable invoked with the number of views done after each chunk.
    ``shard``: optional callable picking the chunks this process renders (a list of chunks ->
    some of them, :func:`gags.distributed.shard`); the caller then takes the minimum over the
    processes. The chunks are the same whoever renders them, so the result is too.
    """
    means = gaussians.means.detach()
    md = torch.full((len(gaussians),), torch.inf, device=means.device)
    chunks = _same_size_chunks(cameras, view_chunk)
    for chunk in chunks if shard is None else shard(chunks):
        depths = render_depths(gaussians, chunk, backend=backend)
        viewmats, Ks = stack_cameras(chunk, device=means.device)
        vis = view_visibility(means, viewmats, Ks, depths, tolerance)
        md = torch.minimum(md, vis.depth.amin(0))
        if progress is not None:
            progress(len(chunk))
    return md


def md_map(vis: Visibility, md: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view MD map and visible-Gaussian count map for ONE view.

    Args:
        vis: visibility of N Gaussians in this view ((N,) fields, or (1, N)).
        md: (N,) minimum visible depth of every Gaussian.
    Returns:
        md_image (H, W) float32: at each pixel hit by visible centres, the smallest MD among them
        (the reference lets the last write win, which is arbitrary); 0 elsewhere.
        counts (H, W) float32: number of visible Gaussian centres per pixel.
    """
    visible, pixel = vis.visible.reshape(-1), vis.pixel.reshape(-1)
    idx, values = pixel[visible], md[visible].float()
    flat = torch.full((height * width,), torch.inf, device=md.device)
    flat = flat.scatter_reduce(0, idx, values, reduce="amin")
    md_image = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat)).reshape(height, width)
    counts = torch.bincount(idx, minlength=height * width).float().reshape(height, width)
    return md_image, counts


def _same_size_chunks(cameras: list[Camera], size: int) -> list[list[Camera]]:
    """Consecutive groups of at most ``size`` cameras that share one image size."""
    chunks: list[list[Camera]] = []
    for cam in cameras:
        last = chunks[-1] if chunks else None
        if last and len(last) < size and (last[0].width, last[0].height) == (cam.width, cam.height):
            last.append(cam)
        else:
            chunks.append([cam])
    return chunks
