"""Prompt counts (paper Eq. 1 and the reference variant) and density-guided placement."""

from __future__ import annotations

import torch

from gags.segment.prompts import (
    PromptConfig,
    counts_eq1,
    counts_reference,
    make_prompts,
    patch_edges,
    place_prompts,
    points_per_patch,
    uniform_points,
)

H, W = 48, 64


def _maps(scale: float, flat: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A view ``scale`` times farther than the nearest: D = scale * MD, MD defined on a sparse set of pixels.

    ``flat``: a fronto-parallel surface (constant depth), where the reference's ratio of patch means
    equals the per-pixel ratio.
    """
    gen = torch.Generator().manual_seed(1)
    md_full = 1.0 + torch.rand(H, W, generator=gen)  # nearest-view depth of the visible surface
    if flat:
        md_full = torch.full((H, W), 1.5)
    sparse = torch.rand(H, W, generator=gen) < 0.3  # pixels hit by a visible Gaussian centre
    md = torch.where(sparse, md_full, torch.zeros_like(md_full))
    return scale * md_full, md


def test_eq1_nearest_view_gets_n_and_twice_as_far_gets_four_times() -> None:
    cfg = PromptConfig(n=16)
    near = counts_eq1(*_maps(1.0), cfg)
    far = counts_eq1(*_maps(2.0), cfg)
    assert near.shape == (8, 8) and near.dtype == torch.int32
    assert torch.all(near == 16)
    assert torch.all(far == 64)
    assert torch.all(counts_eq1(*_maps(1.5), cfg) == 36)


def test_eq1_is_the_per_pixel_mean_of_squared_ratios() -> None:
    depth = torch.ones(H, W)
    md = torch.zeros(H, W)
    # one patch (top-left, 6x8 pixels): two MD pixels with ratios 1 and 3 -> mean of squares (1 + 9) / 2 = 5
    md[0, 0], md[1, 1] = 1.0, 1.0 / 3.0
    counts = counts_eq1(depth, md, PromptConfig(n=4))
    assert counts[0, 0] == 20
    assert torch.all(counts.reshape(-1)[1:] == 4)  # patches without MD keep n


def test_eq1_respects_the_cap_and_never_goes_below_n() -> None:
    depth, md = _maps(10.0)
    assert torch.all(counts_eq1(depth, md, PromptConfig(n=16, max_per_patch=400)) == 400)
    depth, md = _maps(0.5)  # a ratio below 1 is clamped: no view is nearer than the nearest
    assert torch.all(counts_eq1(depth, md, PromptConfig(n=16)) == 16)


def test_reference_variant_on_hand_built_depths() -> None:
    cfg = PromptConfig()
    assert torch.all(counts_reference(*_maps(1.0, flat=True), cfg) == 16)  # k = 4
    assert torch.all(counts_reference(*_maps(2.0, flat=True), cfg) == 64)  # k = 8: four times as many
    assert torch.all(counts_reference(*_maps(1.3, flat=True), cfg) == 25)  # k = int(5.2) = 5
    assert torch.all(counts_reference(*_maps(0.9, flat=True), cfg) == 1)  # r < 1 drops to one point
    assert torch.all(counts_reference(*_maps(7.0, flat=True), cfg) == 400)  # k clamped to 20
    # a slanted surface: the ratio of means differs from Eq. 1 (spec section 6.1), here it can drop below 1
    assert int((counts_reference(*_maps(1.0), cfg) == 1).sum()) > 0
    depth, _ = _maps(1.0)
    assert torch.all(counts_reference(depth, torch.zeros(H, W), cfg) == 1)  # no MD: r undefined


def test_patch_edges_cover_the_image() -> None:
    e = patch_edges(37, 8)
    assert e[0] == 0 and e[-1] == 37 and torch.all(e[1:] > e[:-1])


def test_placement_counts_bounds_and_density() -> None:
    counts = torch.randint(0, 30, (8, 8), dtype=torch.int32)
    density = torch.zeros(H, W)
    density[10, 20] = 5.0  # the only visible Gaussians of its patch sit on one pixel
    gen = torch.Generator().manual_seed(0)
    pts = place_prompts(counts, density, subcells=10, generator=gen)
    assert pts.shape == (int(counts.sum()), 2)
    assert torch.all(points_per_patch(pts, H, W, 8) == counts)
    assert torch.all((pts[:, 0] > 0) & (pts[:, 0] < W) & (pts[:, 1] > 0) & (pts[:, 1] < H))
    assert torch.all(pts == pts.floor() + 0.5)  # pixel centres
    # the patch holding (20, 10): every prompt lands in the sub-cell that holds the pixel
    ex, ey = patch_edges(W, 80), patch_edges(H, 80)
    cx = int(torch.bucketize(torch.tensor(20), ex[1:], right=True))
    cy = int(torch.bucketize(torch.tensor(10), ey[1:], right=True))
    py, px = 10 * 8 // H, 20 * 8 // W
    inside = pts[(pts[:, 0] >= patch_edges(W, 8)[px]) & (pts[:, 0] < patch_edges(W, 8)[px + 1])]
    inside = inside[(inside[:, 1] >= patch_edges(H, 8)[py]) & (inside[:, 1] < patch_edges(H, 8)[py + 1])]
    assert len(inside) == counts[py, px]
    assert torch.all((inside[:, 0] >= ex[cx]) & (inside[:, 0] < ex[cx + 1]))
    assert torch.all((inside[:, 1] >= ey[cy]) & (inside[:, 1] < ey[cy + 1]))


def test_placement_is_seeded() -> None:
    counts = torch.full((8, 8), 5, dtype=torch.int32)
    density = torch.rand(H, W)
    a = place_prompts(counts, density, 10, torch.Generator().manual_seed(3))
    b = place_prompts(counts, density, 10, torch.Generator().manual_seed(3))
    c = place_prompts(counts, density, 10, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uniform_mode_is_a_regular_grid() -> None:
    pts, counts = make_prompts(None, None, None, H, W, PromptConfig(mode="uniform", points_per_side=8), None)
    assert pts.shape == (64, 2)
    assert torch.equal(pts, uniform_points(H, W, 8))
    assert counts.sum() == 64 and torch.all(counts == 1)
    assert torch.allclose(pts[0], torch.tensor([W / 16, H / 16]))


def test_gas_mode_end_to_end() -> None:
    depth, md = _maps(2.0)
    gen = torch.Generator().manual_seed(0)
    pts, counts = make_prompts(depth, md, (md > 0).float(), H, W, PromptConfig(), gen)
    assert pts.shape[0] == int(counts.sum()) == 64 * 64
