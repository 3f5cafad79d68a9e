"""Cached compositing weights: the feature render of a frozen geometry is a fixed linear map.

During distillation the Gaussians' geometry and opacity are frozen and only the per-Gaussian
features train. Alpha compositing is linear in the composited values,

    f(p) = sum_i T_i(p) alpha_i(p) f_i,

and the weights ``w_i(p) = T_i(p) alpha_i(p)`` depend on geometry only. So each view's render is a
sparse (H' W', N) matrix ``W`` times the (N, F) feature table, and its backward is ``W^T`` times the
incoming gradient. Both are computed once per view (:func:`compositing_weights`, with the same
per-pixel rules as the tile rasteriser and gsplat: depth order, ``alpha = min(0.999, o exp(-sigma))``,
skipped below 1/255, stop before transmittance reaches 1e-4) and reused at every step, which removes
projection, sorting and rasterisation from the training loop. The render is the same up to float
rounding (``tests/test_distill_render_cache.py``).

Memory: one (row, column, weight) triple per (pixel, contributing Gaussian), typically 5-30 per
pixel on opaque surfaces; a few MB per 100 x 75 view.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from gags.scene.cameras import stack_cameras
from gags.splats.backends.torch_tiles import (
    BUDGET,
    SEGMENT,
    TILE_SIZE,
    _Block,
    _Geometry,
    _table,
    build_tile_lists,
)
from gags.splats.gaussians import Gaussians
from gags.splats.projection import MAX_ALPHA, project_gaussians


@torch.no_grad()
def compositing_weights(
    gaussians: Gaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int
) -> torch.Tensor:
    """The sparse (height * width, N) CSR matrix of compositing weights of one camera.

    Args:
        gaussians: the (frozen) splats; their features are ignored.
        viewmat: (4, 4) world-to-camera. K: (3, 3) intrinsics in pixels of a width x height image.
    Returns:
        W with ``W @ values`` = the (H W, D) composited ``values`` (background 0), rows in raster order.
    """
    proj = project_gaussians(
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        gaussians.opacities,
        viewmat[None],
        K[None],
        width,
        height,
    )
    N = proj.depths.shape[1]
    T = TILE_SIZE
    lists = build_tile_lists(proj, width, height, T)
    geo = _Geometry(lists, width, height, SEGMENT, BUDGET)
    dtype, device = proj.means2d.dtype, proj.means2d.device
    table = _table(
        proj.means2d.reshape(N, 2),
        proj.conics.reshape(N, 3),
        proj.opacities.reshape(N),
        torch.zeros(N, 0, dtype=dtype, device=device),
    )
    clamp = bool(N and proj.opacities.max() > MAX_ALPHA)
    trans = torch.ones(lists.num_tiles, geo.pixels, dtype=dtype, device=device)
    limit = (lists.count + geo.segment - 1) // geo.segment
    # pixel index of each (tile, in-tile pixel) in the raster image, -1 outside
    tile = torch.arange(lists.num_tiles, device=device)
    offs = torch.arange(T, device=device)
    xs = (tile % lists.tiles_x * T)[:, None, None] + offs[None, None, :]
    ys = (tile // lists.tiles_x * T)[:, None, None] + offs[None, :, None]
    pixel = torch.where((xs < width) & (ys < height), ys * width + xs, -1).reshape(lists.num_tiles, T * T)
    rows, cols, vals = [], [], []
    for r, tiles in geo.blocks(limit, trans):
        ids, valid = geo.gather(r, tiles)
        blk = _Block(geo, tiles, ids, valid, table, trans.index_select(0, tiles), clamp)
        w = blk.weights  # (B, P, K)
        hit = (w > 0) & (pixel[tiles][..., None] >= 0)
        b, p, k = torch.nonzero(hit, as_tuple=True)
        rows.append(pixel[tiles][b, p])
        cols.append(ids[b, k])
        vals.append(w[b, p, k])
        trans.index_copy_(0, tiles, blk.T_next[..., -1])
    if rows:
        row, col, val = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    else:
        row = col = torch.zeros(0, dtype=torch.long, device=device)
        val = torch.zeros(0, dtype=dtype, device=device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta" and invariant-check notices
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(
            torch.stack([row, col]), val, (height * width, N), check_invariants=False
        ).coalesce()
        return coo.to_sparse_csr()


class _SparseRender(torch.autograd.Function):
    """W @ x with the backward W^T @ g (W constant)."""

    @staticmethod
    def forward(ctx, W: torch.Tensor, WT: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.WT = WT
        return W @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.WT @ grad.contiguous()


@dataclasses.dataclass
class CachedView:
    """One view's compositing weights and their transpose (both CSR), and the image size."""

    W: torch.Tensor
    WT: torch.Tensor
    width: int
    height: int

    @property
    def nnz(self) -> int:
        return int(self.W.values().numel())

    def render(self, field: torch.Tensor) -> torch.Tensor:
        """(N, F) per-Gaussian features -> (H, W, F) composited map, differentiable in ``field``."""
        out = _SparseRender.apply(self.W, self.WT, field)
        return out.reshape(self.height, self.width, field.shape[1])


def cache_view(
    gaussians: Gaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int
) -> CachedView:
    """:func:`compositing_weights` of one camera, with its transpose, ready for :meth:`CachedView.render`."""
    W = compositing_weights(gaussians, viewmat, K, width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        WT = W.to_sparse_coo().t().coalesce().to_sparse_csr()
    return CachedView(W=W, WT=WT, width=width, height=height)


def view_renderers(gaussians: Gaussians, cameras: list, backend: str = "auto", cache: bool = True) -> list:
    """One callable per view camera: (N, F) per-Gaussian features -> (H', W', F) render of that view.

    ``cameras`` are the views' cameras at the supervision resolution (``ViewTargets.camera``), so no
    view's targets need to be in memory. With ``cache`` each camera's weights are computed once here
    (:func:`cache_view`); without it every call rasterises (:func:`gags.distill.train.render_field`
    with ``backend``).
    """
    if not cache:
        from gags.distill.train import render_field

        return [lambda f, c=c: render_field(gaussians, f, c, backend) for c in cameras]  # noqa: B023
    out = []
    for c in cameras:
        viewmats, Ks = stack_cameras([c], gaussians.device)
        out.append(cache_view(gaussians, viewmats[0], Ks[0], c.width, c.height).render)
    return out
