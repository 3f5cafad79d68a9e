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

Memory: one (column, weight) pair per (pixel, contributing Gaussian) in W and again in its transpose,
16 bytes in all; on the demo run 5.1 MB per 100 x 75 view (265 MB for its 52 views, measured), so
about 125 MB at 494 x 365 by the pixel count. :class:`ViewRenderers` keeps views within a memory budget
(``--render-cache-mb``) and rasterises the rest, so the cache does not grow with the number of views.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence

import torch

from gags.scene.cameras import Camera, stack_cameras
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

    @property
    def nbytes(self) -> int:
        """Bytes held by ``W`` and ``WT`` (row pointers, column indices, values)."""
        parts = [m.crow_indices() for m in (self.W, self.WT)]
        parts += [m.col_indices() for m in (self.W, self.WT)] + [m.values() for m in (self.W, self.WT)]
        return sum(t.numel() * t.element_size() for t in parts)

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
        return CachedView(W=_int32_indices(W), WT=_int32_indices(WT), width=width, height=height)


def _int32_indices(m: torch.Tensor) -> torch.Tensor:
    """A compact copy of the CSR matrix ``m``, with 32-bit row pointers and column indices when they fit
    (a third less memory than torch's 64-bit default; the product is the same and as fast).

    Every part is copied: the ``values()`` of a matrix built by ``coalesce`` / ``to_sparse_csr`` keeps
    a larger allocation alive (measured: about 3x the nominal bytes per view held)."""
    fits = m.values().numel() < 2**31 and max(m.shape) < 2**31
    index = torch.int32 if fits else torch.int64
    return torch.sparse_csr_tensor(
        m.crow_indices().to(index, copy=True),
        m.col_indices().to(index, copy=True),
        m.values().clone(),
        m.shape,
        check_invariants=False,
    )


#: default memory budget of the cached compositing weights, MB (``gags distill --render-cache-mb``):
#: every view of the demo run (265 MB), about 100 views of that size
DEFAULT_CACHE_MB = 512.0


class ViewRenderers(Sequence):
    """One renderer per view camera, ``renderers[i](field)``: (N, F) per-Gaussian features -> (H', W', F).

    ``cameras`` are the views' cameras at the supervision resolution (``ViewTargets.camera``), so no
    view's targets need to be in memory. A view's compositing weights are computed the first time it
    is rendered (:func:`cache_view`) and kept while the cache holds less than ``budget_mb``; views
    seen after the budget is spent, and every view when ``budget_mb`` is 0, are rasterised at every
    call (:func:`gags.distill.train.render_field` with ``backend``). Memory is therefore bounded by
    the budget whatever the number of views; which views are cached depends only on the order in
    which they are first rendered (seeded), and both paths give the same render up to float rounding.
    """

    def __init__(
        self, gaussians: Gaussians, cameras: Sequence[Camera], backend: str = "auto", budget_mb: float = 0.0
    ) -> None:
        self.gaussians = gaussians
        self.cameras = list(cameras)
        self.backend = backend
        self.budget_bytes = max(0.0, float(budget_mb)) * 2**20
        self.cached: dict[int, CachedView] = {}
        self.cached_bytes = 0
        self._full = self.budget_bytes <= 0

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, index: int) -> Callable[[torch.Tensor], torch.Tensor]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"view {index} of {len(self)}")
        return functools.partial(self.render, index % len(self))

    def render(self, index: int, field: torch.Tensor) -> torch.Tensor:
        """View ``index``'s (H', W', F) render of ``field`` (N, F), differentiable in ``field``."""
        view = self.cached.get(index)
        if view is None and not self._full:
            view = self._try_cache(index)
        if view is not None:
            return view.render(field)
        from gags.distill.train import render_field

        return render_field(self.gaussians, field, self.cameras[index], self.backend)

    def _try_cache(self, index: int) -> CachedView | None:
        cam = self.cameras[index]
        viewmats, Ks = stack_cameras([cam], self.gaussians.device)
        view = cache_view(self.gaussians, viewmats[0], Ks[0], cam.width, cam.height)
        if self.cached_bytes + view.nbytes > self.budget_bytes:
            self._full = True  # later views are rasterised; this one is used once and dropped
            return view
        self.cached[index] = view
        self.cached_bytes += view.nbytes
        return view


def view_renderers(
    gaussians: Gaussians,
    cameras: Sequence[Camera],
    backend: str = "auto",
    cache: bool = True,
    budget_mb: float = DEFAULT_CACHE_MB,
) -> ViewRenderers:
    """:class:`ViewRenderers` of ``cameras``: cached compositing weights within ``budget_mb`` when
    ``cache``, else a rasterisation at every call."""
    return ViewRenderers(gaussians, cameras, backend, budget_mb if cache else 0.0)
