"""Portable tile-based rasteriser in plain PyTorch (CPU, Apple MPS, CUDA), with a hand-written backward.

Same per-pixel rules as :mod:`gags.splats.backends.dense` (gsplat's): Gaussians composited front to back
by camera depth, ``alpha = min(0.999, o exp(-sigma))``, skipped when ``alpha < 1/255``, and a pixel stops
before the Gaussian that would take its transmittance to ``<= 1e-4``.

How it works:

1. :func:`build_tile_lists` intersects each Gaussian's opacity-aware radius box (which contains the
   ellipse where ``alpha >= 1/255``) with the tile grid and sorts the (tile, Gaussian) pairs by tile, then
   depth. No gradients flow through this step.
2. Tiles walk their lists in *rounds* of ``segment`` Gaussians. A round evaluates, for a chunk of tiles,
   a dense (tile pixels x segment) block: ``sigma`` is separable into row, column and cross terms, so the
   block costs a few passes; transmittance is a cumulative product seeded with the carried value.
   A tile leaves the loop when its list ends or all its pixels are saturated (transmittance <= 1e-4), so
   the Gaussians hidden behind opaque surfaces are never evaluated.
3. The backward pass recomputes each block in the same order (nothing per pair is stored), using
   ``dL/dalpha_i = T_i g.v_i - S_i / (1 - alpha_i)`` where the suffix ``S_i`` (what lies behind Gaussian
   i) is the pixel total minus the running prefix, as gsplat's kernel does in reverse.

Memory is bounded by ``budget`` (elements of one tiles x pixels x segment block) plus O(pairs) for the lists
and O(pixels x channels) for the outputs.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from gags.splats.projection import ALPHA_THRESHOLD, MAX_ALPHA, MIN_TRANSMITTANCE, Projected

#: Default tile side in pixels.
TILE_SIZE = 8
#: Default number of Gaussians a tile consumes per round.
SEGMENT = 64
#: Default cap on the elements of one (tiles, pixels, segment) block; about 16 temporaries of this size live.
BUDGET = 1 << 21

_LOG_ALPHA_THRESHOLD = math.log(ALPHA_THRESHOLD)


@dataclasses.dataclass
class TileLists:
    """Per-tile, depth-sorted lists of the Gaussians that may touch the tile, for C cameras.

    Attributes:
        ids: (M,) int64 flat index ``c * N + n`` of each (tile, Gaussian) pair, grouped by tile,
            front to back.
        start: (C * tiles_y * tiles_x,) int64 offset of each tile's list in ``ids``.
        count: (C * tiles_y * tiles_x,) int64 length of each tile's list.
        tile_size: tile side in pixels. tiles_x, tiles_y: grid size per camera.
    """

    ids: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    tile_size: int
    tiles_x: int
    tiles_y: int

    @property
    def num_tiles(self) -> int:
        return int(self.count.shape[0])


@torch.no_grad()
def build_tile_lists(proj: Projected, width: int, height: int, tile_size: int = TILE_SIZE) -> TileLists:
    """Intersect the radius boxes of ``proj`` with a ``tile_size`` grid; see :class:`TileLists`."""
    C, N = proj.depths.shape
    device = proj.depths.device
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    alive = (proj.radii > 0).any(-1)  # (C, N)
    # Front to back per camera; culled Gaussians get an empty box below.
    order = torch.argsort(torch.where(alive, proj.depths, torch.inf), dim=1, stable=True)
    flat = (order + torch.arange(C, device=device)[:, None] * N).reshape(-1)  # (C*N,) sorted flat ids
    mean = proj.means2d.detach().reshape(-1, 2)[flat]
    radius = proj.radii.reshape(-1, 2)[flat].to(mean.dtype)
    # Pixel j (centre j + 0.5) is inside the box iff mean - r <= j + 0.5 <= mean + r.
    lo = torch.floor((mean - radius - 0.5) / tile_size).clamp(min=0).long()
    hi = torch.floor((mean + radius - 0.5) / tile_size).long()
    hi = torch.minimum(hi, torch.tensor([tiles_x - 1, tiles_y - 1], device=device))
    extent = (hi - lo + 1).clamp(min=0) * alive.reshape(-1)[flat, None]
    n_pairs = extent[:, 0] * extent[:, 1]  # (C*N,)

    owner = torch.repeat_interleave(torch.arange(C * N, device=device), n_pairs)  # index into ``flat``
    first = torch.cumsum(n_pairs, 0) - n_pairs
    k = torch.arange(owner.shape[0], device=device) - first[owner]
    width_tiles = extent[owner, 0]
    tx = lo[owner, 0] + k % width_tiles
    ty = lo[owner, 1] + torch.div(k, width_tiles, rounding_mode="floor")
    camera = flat[owner] // N
    tile = (camera * tiles_y + ty) * tiles_x + tx
    tile, perm = torch.sort(tile, stable=True)  # stable: keeps the depth order within a tile
    ids = flat[owner[perm]]
    count = torch.bincount(tile, minlength=C * tiles_y * tiles_x)
    start = torch.cumsum(count, 0) - count
    return TileLists(ids=ids, start=start, count=count, tile_size=tile_size, tiles_x=tiles_x, tiles_y=tiles_y)


def rasterize_tiles(
    proj: Projected,
    values: torch.Tensor,
    width: int,
    height: int,
    *,
    tile_size: int = TILE_SIZE,
    segment: int = SEGMENT,
    budget: int = BUDGET,
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-composite ``values`` front to back, tile by tile; differentiable.

    Args:
        proj: screen-space Gaussians for C cameras (means2d, conics, opacities and values get gradients).
        values: (C, N, D) per-camera, per-Gaussian channels.
        width, height: image size in pixels.
        tile_size: tile side in pixels. segment: Gaussians per tile per round.
        budget: most elements in one (tiles, pixels, segment) block; bounds the memory.
        stats: when given, filled with ``pairs`` (tile, Gaussian) and ``evaluated`` (pixel, Gaussian slots
            the forward pass computed, padding included).
    Returns:
        image (C, H, W, D) and alpha (C, H, W), without background.
    """
    C, N = proj.depths.shape
    D = values.shape[-1]
    lists = build_tile_lists(proj, width, height, tile_size)
    geometry = _Geometry(lists, width, height, segment, budget)
    out = _TileComposite.apply(
        proj.means2d.reshape(C * N, 2),
        proj.conics.reshape(C * N, 3),
        proj.opacities.reshape(C * N),
        values.reshape(C * N, D),
        geometry,
    )  # (tiles, P, D + 1)
    if stats is not None:
        stats["pairs"] = int(lists.ids.numel())
        stats["evaluated"] = int(geometry.rounds.sum()) * segment * geometry.pixels
    T = tile_size
    out = out.reshape(C, lists.tiles_y, lists.tiles_x, T, T, D + 1).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(C, lists.tiles_y * T, lists.tiles_x * T, D + 1)[:, :height, :width]
    return out[..., :D], out[..., D]


class _Geometry:
    """Tile lists plus the fixed pixel grid and the chunking; what both passes iterate over."""

    def __init__(self, lists: TileLists, width: int, height: int, segment: int, budget: int):
        self.lists = lists
        self.segment = segment
        T = lists.tile_size
        device = lists.ids.device
        self.pixels = T * T
        self.chunk = max(1, budget // (self.pixels * segment))
        tile = torch.arange(lists.num_tiles, device=device)
        per_cam = lists.tiles_x * lists.tiles_y
        # (tiles,) left / top edges in px; float32 is exact for these integers and works on every device
        self.origin_x = ((tile % per_cam) % lists.tiles_x * T).to(torch.float32)
        self.origin_y = ((tile % per_cam) // lists.tiles_x * T).to(torch.float32)
        # Pixels outside the image never count against a tile's saturation.
        offs = torch.arange(T, device=device)
        xs = self.origin_x[:, None].long() + offs  # (tiles, T)
        ys = self.origin_y[:, None].long() + offs
        self.outside = ((ys[:, :, None] >= height) | (xs[:, None, :] >= width)).reshape(-1, self.pixels)
        self.rounds: torch.Tensor | None = None  # (tiles,) rounds each tile ran, set by the forward pass

    def blocks(self, limit: torch.Tensor, trans: torch.Tensor | None = None):
        """Yield (round, tiles) for chunks of the tiles that run in each round.

        Args:
            limit: (tiles,) rounds each tile may run at most.
            trans: (tiles, P) transmittance the caller updates while consuming the blocks; when given, a
                tile stops once all its pixels are saturated (the forward pass). The backward pass replays
                the recorded ``rounds`` instead.
        """
        alive = limit > 0
        r = 0
        while True:
            if trans is not None and r > 0:
                alive &= ~((trans <= MIN_TRANSMITTANCE) | self.outside).all(-1)
            alive &= limit > r
            tiles = torch.nonzero(alive).squeeze(1)
            if tiles.numel() == 0:
                return
            for chunk in tiles.split(self.chunk):
                yield r, chunk
            r += 1

    def gather(self, r: int, tiles: torch.Tensor):
        """(B, K) flat Gaussian ids of round ``r`` for ``tiles`` and the (B, K) mask of real entries."""
        lists = self.lists
        pos = lists.start[tiles, None] + r * self.segment + torch.arange(self.segment, device=tiles.device)
        valid = pos < (lists.start + lists.count)[tiles, None]
        ids = _take(lists.ids, pos.clamp(max=lists.ids.shape[0] - 1))  # only called when pairs exist
        return ids, valid


class _Block:
    """One dense (B tiles, P pixels, K Gaussians) evaluation; shared by the forward and backward passes."""

    def __init__(self, geo: _Geometry, tiles, ids, valid, table, T_carry, clamp: bool):
        T = geo.lists.tile_size
        dtype = table.dtype
        offs = torch.arange(T, device=table.device, dtype=dtype) + 0.5
        rows = _take(table, ids)  # (B, K, 6 + D + 1)
        m, con, self.opac, self.values = rows[..., 0:2], rows[..., 2:5], rows[..., 5], rows[..., 6:]
        # dx (B, T, K) over tile columns, dy (B, T, K) over tile rows; dx = mean - pixel centre.
        xs = _take(geo.origin_x, tiles).to(dtype)[:, None, None] + offs[None, :, None]  # (B, T, 1) centres
        ys = _take(geo.origin_y, tiles).to(dtype)[:, None, None] + offs[None, :, None]
        self.dx, self.dy = m[:, None, :, 0] - xs, m[:, None, :, 1] - ys
        self.a, self.b, self.c = (con[:, None, :, i] for i in range(3))
        log_o = torch.where(valid, torch.log(self.opac), -torch.inf)[:, None, :]
        col = log_o - 0.5 * self.a * self.dx * self.dx  # (B, Tx, K)
        row = -0.5 * self.c * self.dy * self.dy  # (B, Ty, K)
        # log alpha before the cap: (B, Ty, Tx, K) -> (B, P, K)
        cross = (-self.b * self.dx)[:, None]  # (B, 1, Tx, K), times dy
        nsig = torch.addcmul(row[:, :, None] + col[:, None], cross, self.dy[:, :, None])
        B, K = ids.shape
        raw = torch.exp(nsig.reshape(B, T * T, K))
        self.raw = raw
        self.used = raw >= ALPHA_THRESHOLD
        alpha = raw.clamp(max=MAX_ALPHA) if clamp else raw
        self.alpha = alpha * self.used
        factors = torch.empty(B, T * T, K + 1, dtype=dtype, device=raw.device)
        factors[..., 0] = T_carry
        torch.sub(1.0, self.alpha, out=factors[..., 1:])
        self.one_minus_alpha = factors[..., 1:]
        trans = torch.cumprod(factors, dim=-1)
        self.T_prev, self.T_next = trans[..., :-1], trans[..., 1:]
        self.weights = (self.alpha * self.T_prev).masked_fill_(self.T_next <= MIN_TRANSMITTANCE, 0.0)


class _TileComposite(torch.autograd.Function):
    """(C*N, 2) means2d, (C*N, 3) conics, (C*N,) opacities, (C*N, D) values -> (tiles, P, D + 1)."""

    @staticmethod
    def forward(ctx, means2d, conics, opac, values, geo: _Geometry):
        lists = geo.lists
        dtype, device = means2d.dtype, means2d.device
        table = _table(means2d, conics, opac, values)
        clamp = bool(opac.numel() and opac.max() > MAX_ALPHA)
        trans = torch.ones(lists.num_tiles, geo.pixels, dtype=dtype, device=device)
        out = torch.zeros(lists.num_tiles, geo.pixels, values.shape[1] + 1, dtype=dtype, device=device)
        rounds = torch.zeros(lists.num_tiles, dtype=torch.long, device=device)
        limit = (lists.count + geo.segment - 1) // geo.segment
        for r, tiles in geo.blocks(limit, trans):
            rounds[tiles] = r + 1
            ids, valid = geo.gather(r, tiles)
            blk = _Block(geo, tiles, ids, valid, table, trans.index_select(0, tiles), clamp)
            out.index_add_(0, tiles, torch.bmm(blk.weights, blk.values))
            trans.index_copy_(0, tiles, blk.T_next[..., -1])
        geo.rounds = rounds
        ctx.geo, ctx.clamp = geo, clamp
        ctx.save_for_backward(table, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        table, out = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        grad_out = grad_out.contiguous()
        g_table = torch.zeros_like(table)  # gradients in the table's layout
        total = (grad_out * out).sum(-1)  # (tiles, P): sum over all contributions of w_j g.v_j
        prefix = torch.zeros_like(total)
        trans = torch.ones_like(total)
        for r, tiles in geo.blocks(geo.rounds):
            ids, valid = geo.gather(r, tiles)
            blk = _Block(geo, tiles, ids, valid, table, trans.index_select(0, tiles), ctx.clamp)
            g = grad_out.index_select(0, tiles)  # (B, P, D + 1)
            gv = torch.bmm(g, blk.values.transpose(1, 2))  # (B, P, K)
            running = torch.cumsum(blk.weights * gv, dim=-1)  # within this block
            # what lies behind each Gaussian, weighted by g: total - earlier blocks - this block so far
            behind = (total - prefix).index_select(0, tiles)[..., None] - running
            g_alpha = blk.T_prev * gv - behind / blk.one_minus_alpha
            live = blk.weights > 0
            if ctx.clamp:
                live &= blk.raw <= MAX_ALPHA
            g_nsig = torch.where(live, g_alpha * blk.raw, 0.0)  # d/d(log alpha_raw)
            g_rows = torch.cat([_geometry_grads(blk, g_nsig), torch.bmm(blk.weights.transpose(1, 2), g)], -1)
            g_table.index_add_(0, ids.reshape(-1), g_rows.flatten(0, 1))
            prefix.index_add_(0, tiles, running[..., -1])
            trans.index_copy_(0, tiles, blk.T_next[..., -1])
        return g_table[:, 0:2], g_table[:, 2:5], g_table[:, 5], g_table[:, 6:-1], None


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along dim 0 for an index of any shape (index_select is much faster on CPU)."""
    return x.index_select(0, index.reshape(-1)).reshape(index.shape + x.shape[1:])


def _table(means2d, conics, opac, values) -> torch.Tensor:
    """(C*N, 6 + D + 1) rows [mean x, mean y, conic a, b, c, opacity, values..., 1]; one gather per block.

    The trailing 1 composites into the alpha channel.
    """
    ones = torch.ones_like(opac[:, None])
    return torch.cat([means2d, conics, opac[:, None], values, ones], dim=-1)


def _geometry_grads(blk: _Block, g_nsig: torch.Tensor) -> torch.Tensor:
    """Turn d/d(log alpha) (B, P, K) into (B, K, 6) gradients of [mean x, mean y, a, b, c, opacity].

    log alpha = log o - 0.5 a dx^2 - 0.5 c dy^2 - b dx dy with dx = mean_x - x, dy = mean_y - y.
    """
    B, P, K = g_nsig.shape
    T = blk.dx.shape[1]
    grid = g_nsig.reshape(B, T, T, K)  # (B, Ty, Tx, K)
    col = grid.sum(1)  # (B, Tx, K)
    row = grid.sum(2)  # (B, Ty, K)
    cross = (grid * blk.dy[:, :, None]).sum(1)  # (B, Tx, K): sum over rows of g dy
    dx, dy = blk.dx, blk.dy
    a, b, c = blk.a[:, 0], blk.b[:, 0], blk.c[:, 0]  # (B, K)
    col_dx, row_dy = (col * dx).sum(1), (row * dy).sum(1)  # (B, K)
    g_a = -0.5 * (col * dx * dx).sum(1)
    g_c = -0.5 * (row * dy * dy).sum(1)
    g_b = -(cross * dx).sum(1)
    g_mx = -(a * col_dx + b * row_dy)
    g_my = -(c * row_dy + b * col_dx)
    g_o = col.sum(1) / blk.opac
    return torch.stack([g_mx, g_my, g_a, g_b, g_c, g_o], dim=-1)
