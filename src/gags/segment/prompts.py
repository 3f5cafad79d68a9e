"""How many SAM prompts each patch gets, and where inside the patch they go (paper Eq. 1).

Three modes:

- ``gas`` (paper Eq. 1, the default): ``n_P = mean_p(D^2 / MD^2) * n`` over the pixels of patch P
  that carry an MD value (the centre of a visible Gaussian); patches without any keep ``n``.
  The nearest view gets ``n`` per patch, a view twice as far ``4 n``.
- ``gas-reference`` (the authors' code, SAM_utils.py:321-353): ``r = mean(D) / mean(MD > 0)``
  over the patch; ``k = int(4 r)`` (``k = 1`` when ``r < 1`` or undefined), clamped to [1, 20];
  ``k^2`` points. The nearest view gets 16 per patch.
- ``uniform`` (no GaS, the ablation and LangSplat's setting): a regular ``points_per_side``^2
  grid over the whole image (LangSplat uses 32 x 32).

Defaults: an 8 x 8 patch grid and 10 x 10 sub-cells per patch come from the reference call
(preprocess.py:224-225, SAM_utils.py:294-319); ``n = 16`` is the reference's count at the nearest
view (the paper gives no value); at most 400 points per patch is the reference's 20^2 cap.

Placement (``gas`` modes): each patch's prompts fall into its sub-cells with probability
proportional to the number of visible Gaussian centres there (uniform when the patch has none),
at a uniformly random pixel centre inside the chosen cell; seeded.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

PromptMode = Literal["gas", "gas-reference", "uniform"]


@dataclasses.dataclass
class PromptConfig:
    """Prompt counts and placement.

    Attributes:
        mode: ``gas`` (Eq. 1), ``gas-reference`` (authors' code) or ``uniform`` (no GaS).
        grid: patches per image side (8 in the reference).
        n: prompts per patch at the nearest view for ``gas`` (16 = the reference's nearest-view count).
        max_per_patch: cap per patch (400 = the reference's 20^2).
        subcells: sub-cells per patch side for density-guided placement (10 in the reference).
        points_per_side: grid side for ``uniform`` (32 as LangSplat).
    """

    mode: PromptMode = "gas"
    grid: int = 8
    n: int = 16
    max_per_patch: int = 400
    subcells: int = 10
    points_per_side: int = 32


def patch_edges(size: int, parts: int) -> torch.Tensor:
    """(parts + 1,) int64 boundaries splitting ``size`` pixels into ``parts`` near-equal runs."""
    return torch.round(torch.linspace(0, size, parts + 1, dtype=torch.float64)).long()


def _pixel_cells(height: int, width: int, gy: int, gx: int) -> torch.Tensor:
    """(H, W) int64 id ``row * gx + col`` of the grid cell that holds each pixel."""
    ys = torch.bucketize(torch.arange(height), patch_edges(height, gy)[1:], right=True)
    xs = torch.bucketize(torch.arange(width), patch_edges(width, gx)[1:], right=True)
    return ys[:, None] * gx + xs[None, :]


def _cell_sums(values: torch.Tensor, gy: int, gx: int) -> torch.Tensor:
    """Sum of (H, W) ``values`` per grid cell -> (gy, gx) float64."""
    cells = _pixel_cells(*values.shape, gy, gx).to(values.device)
    sums = torch.bincount(cells.reshape(-1), weights=values.reshape(-1).double(), minlength=gy * gx)
    return sums.reshape(gy, gx)


def counts_eq1(depth: torch.Tensor, md: torch.Tensor, cfg: PromptConfig) -> torch.Tensor:
    """Paper Eq. 1 -> (grid, grid) int32 prompts per patch.

    Args:
        depth: (H, W) rendered depth D (0 = none). md: (H, W) MD map (0 = no visible centre).
    The ratio is taken over pixels where both are positive and clamped below at 1 (a view is never
    nearer than the nearest). The result is rounded and clamped to [1, max_per_patch].
    """
    valid = (depth > 0) & (md > 0)
    ratio = ((depth / md.clamp(min=1e-12)) ** 2).clamp(min=1.0)
    ratio = torch.where(valid, ratio, torch.zeros_like(ratio))
    total = _cell_sums(ratio, cfg.grid, cfg.grid)
    count = _cell_sums(valid.double(), cfg.grid, cfg.grid)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.ones_like(total))
    return torch.round(mean * cfg.n).clamp(1, cfg.max_per_patch).int()


def counts_reference(depth: torch.Tensor, md: torch.Tensor, cfg: PromptConfig) -> torch.Tensor:
    """The authors' variant -> (grid, grid) int32 prompts per patch: ``k^2``, ``k = clamp(int(4 r), 1, 20)``.

    ``r`` = mean of D over the whole patch / mean of MD over the patch's nonzero MD pixels.
    """
    g = cfg.grid
    pixels = _cell_sums(torch.ones_like(depth), g, g)
    mean_d = _cell_sums(depth, g, g) / pixels.clamp(min=1)
    mean_md = _cell_sums(md, g, g) / _cell_sums((md > 0).double(), g, g)  # nan/inf where no MD
    r = mean_d / mean_md
    k = torch.where(torch.isfinite(r) & (r >= 1), torch.floor(4 * r), torch.ones_like(r))
    return (k.clamp(1, 20) ** 2).int()


def uniform_points(height: int, width: int, points_per_side: int) -> torch.Tensor:
    """Regular grid of prompts as SAM's ``build_point_grid`` -> (S*S, 2) float32 pixel (x, y)."""
    offset = 0.5 / points_per_side
    t = torch.linspace(offset, 1 - offset, points_per_side)
    ys, xs = torch.meshgrid(t * height, t * width, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()


def points_per_patch(points: torch.Tensor, height: int, width: int, grid: int) -> torch.Tensor:
    """Count (P, 2) pixel points per patch -> (grid, grid) int32."""
    if points.shape[0] == 0:
        return torch.zeros(grid, grid, dtype=torch.int32)
    xs = torch.bucketize(points[:, 0].floor().long(), patch_edges(width, grid)[1:], right=True)
    ys = torch.bucketize(points[:, 1].floor().long(), patch_edges(height, grid)[1:], right=True)
    counts = torch.bincount((ys.clamp(max=grid - 1) * grid + xs.clamp(max=grid - 1)), minlength=grid * grid)
    return counts.reshape(grid, grid).int()


def place_prompts(
    counts: torch.Tensor, density: torch.Tensor, subcells: int, generator: torch.Generator
) -> torch.Tensor:
    """Density-guided prompt placement -> (sum(counts), 2) float32 pixel centres (x, y).

    Args:
        counts: (g, g) prompts per patch.
        density: (H, W) weight per pixel (number of visible Gaussian centres).
        subcells: sub-cells per patch side; a patch's prompts pick sub-cells (with replacement) with
            probability proportional to their summed density, uniform when the patch has none.
        generator: seeded torch generator (CPU).
    """
    g = counts.shape[0]
    H, W = density.shape
    fine = g * subcells
    weights = _cell_sums(density.cpu(), fine, fine).float()  # (fine, fine)
    # (g*g, s*s): row = patch, column = its sub-cells in raster order
    weights = weights.reshape(g, subcells, g, subcells).permute(0, 2, 1, 3).reshape(g * g, -1)
    ex, ey = patch_edges(W, fine), patch_edges(H, fine)
    widths = (ex[1:] - ex[:-1]).reshape(g, subcells)
    heights = (ey[1:] - ey[:-1]).reshape(g, subcells)
    nonempty = (heights[:, None, :, None] > 0) & (widths[None, :, None, :] > 0)  # (g, g, s, s)
    nonempty = nonempty.reshape(g * g, -1).float()
    weights = weights * nonempty
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, nonempty)

    flat_counts = counts.reshape(-1).long()
    total = int(flat_counts.sum())
    if total == 0 or int(flat_counts.max()) == 0:
        return torch.zeros(0, 2, dtype=torch.float32)
    has = weights.sum(1) > 0
    picks = torch.zeros(g * g, int(flat_counts.max()), dtype=torch.long)
    picks[has] = torch.multinomial(
        weights[has], int(flat_counts.max()), replacement=True, generator=generator
    )
    take = torch.arange(picks.shape[1])[None, :] < flat_counts[:, None]
    take &= has[:, None]
    patch = torch.arange(g * g)[:, None].expand_as(picks)[take]
    cell = picks[take]
    fy = (patch // g) * subcells + cell // subcells
    fx = (patch % g) * subcells + cell % subcells
    u = torch.rand(patch.shape[0], 2, generator=generator)
    x = ex[fx] + torch.floor(u[:, 0] * (ex[fx + 1] - ex[fx])).long()
    y = ey[fy] + torch.floor(u[:, 1] * (ey[fy + 1] - ey[fy])).long()
    return torch.stack([x, y], dim=1).float() + 0.5


def make_prompts(
    depth: torch.Tensor | None,
    md: torch.Tensor | None,
    density: torch.Tensor | None,
    height: int,
    width: int,
    cfg: PromptConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for one view -> (points (P, 2) float32 pixel (x, y), patch_counts (grid, grid) int32).

    ``depth``, ``md`` and ``density`` are (H, W) maps (see :mod:`gags.segment.depth`); the
    ``uniform`` mode ignores them and may pass None.
    """
    if cfg.mode == "uniform":
        points = uniform_points(height, width, cfg.points_per_side)
        return points, points_per_patch(points, height, width, cfg.grid)
    if depth is None or md is None or density is None:
        raise ValueError(f"prompt mode {cfg.mode!r} needs depth, MD and density maps")
    if cfg.mode == "gas":
        counts = counts_eq1(depth.cpu(), md.cpu(), cfg)
    elif cfg.mode == "gas-reference":
        counts = counts_reference(depth.cpu(), md.cpu(), cfg)
    else:
        raise ValueError(f"unknown prompt mode {cfg.mode!r}; choose gas, gas-reference or uniform")
    points = place_prompts(counts, density, cfg.subcells, generator)
    return points, counts
