"""Tile rasteriser vs the dense reference and gradcheck; projection and (CUDA) gsplat parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gags.splats.backends.dense import rasterize_dense
from gags.splats.backends.torch_tiles import build_tile_lists, rasterize_tiles
from gags.splats.gaussians import Gaussians
from gags.splats.projection import ALPHA_THRESHOLD, covariances, gaussian_weight_sigma, project_gaussians
from gags.splats.render import render
from tests.conftest import shared_dataset

W, H = 37, 29


def _cameras(C: int, dtype=torch.float32, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """C cameras at z = -3 looking down +z, shifted sideways and slightly rotated."""
    viewmats = torch.eye(4, dtype=dtype).repeat(C, 1, 1)
    for c in range(C):
        angle = 0.15 * c
        viewmats[c, 0, 0] = viewmats[c, 2, 2] = math.cos(angle)
        viewmats[c, 0, 2], viewmats[c, 2, 0] = math.sin(angle), -math.sin(angle)
        viewmats[c, :3, 3] = torch.tensor([0.2 * c, -0.1 * c, 3.0], dtype=dtype)
    Ks = torch.tensor([[40.0, 0, W / 2], [0, 42.0, H / 2], [0, 0, 1]], dtype=dtype).repeat(C, 1, 1)
    return viewmats.to(device), Ks.to(device)


def _params(N: int, dtype=torch.float32, seed: int = 0, behind: int = 0, max_opacity: float = 0.95):
    """Random Gaussian parameters around the origin; ``behind`` of them sit behind the cameras."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g, dtype=dtype) * 0.6
    means[:behind, 2] = -4.0 - torch.rand(behind, generator=g, dtype=dtype)
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    scales = torch.rand(N, 3, generator=g, dtype=dtype) * 0.15 + 0.02
    opac = torch.rand(N, generator=g, dtype=dtype) * (max_opacity - 0.05) + 0.05
    return [t.requires_grad_() for t in (means, quats, scales, opac)]


def _render_and_grads(rasterize, params, values, viewmats, Ks, **kwargs):
    """image, alpha and the gradients of a fixed weighted loss w.r.t. params + values."""
    proj = project_gaussians(*params, viewmats, Ks, W, H)
    image, alpha = rasterize(proj, values, W, H, **kwargs)
    weights = torch.linspace(0.2, 1.0, image.shape[-1], dtype=image.dtype)
    pixel_w = torch.rand(image.shape[:-1], generator=torch.Generator().manual_seed(1), dtype=image.dtype)
    loss = (image * weights * pixel_w[..., None]).sum() + (alpha * alpha).sum()
    grads = torch.autograd.grad(loss, [*params, values], allow_unused=True)
    return image.detach(), alpha.detach(), grads


@pytest.mark.parametrize(
    "dtype, C, D, tiling",
    [
        (torch.float64, 2, 4, dict(tile_size=4, segment=8, budget=2000)),
        (torch.float64, 3, 19, dict(tile_size=8, segment=5, budget=10**6)),
        (torch.float32, 2, 3, dict()),
        (torch.float32, 1, 7, dict(tile_size=16, segment=64, budget=300)),
    ],
)
def test_tiles_match_dense_images_and_gradients(dtype, C, D, tiling):
    params = _params(250, dtype, behind=20)
    values = torch.rand(C, 250, D, dtype=dtype, generator=torch.Generator().manual_seed(2)).requires_grad_()
    viewmats, Ks = _cameras(C, dtype)
    ref = _render_and_grads(rasterize_dense, params, values, viewmats, Ks)
    got = _render_and_grads(rasterize_tiles, params, values, viewmats, Ks, **tiling)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert ref[1].max() > 0.99, "scene should have saturated pixels to exercise the early stop"
    torch.testing.assert_close(got[0], ref[0], atol=tol, rtol=0)
    torch.testing.assert_close(got[1], ref[1], atol=tol, rtol=0)
    for name, g_ref, g_got in zip(
        ["means", "quats", "scales", "opacities", "values"], ref[2], got[2], strict=True
    ):
        assert g_ref.abs().max() > 0, name
        scale = g_ref.abs().max()
        torch.testing.assert_close(g_got / scale, g_ref / scale, atol=100 * tol, rtol=0, msg=name)


def _assert_tiles_match_dense(params, values, viewmats, Ks) -> None:
    """Tiles (8 px, rounds of 4 Gaussians) give the dense reference's image and every gradient."""
    ref = _render_and_grads(rasterize_dense, params, values, viewmats, Ks)
    got = _render_and_grads(rasterize_tiles, params, values, viewmats, Ks, tile_size=8, segment=4)
    torch.testing.assert_close(got[0], ref[0])
    for g_ref, g_got in zip(ref[2], got[2], strict=True):
        torch.testing.assert_close(g_got, g_ref)


def test_high_opacity_alpha_cap_matches_dense():
    """Opacities above 0.999 hit the alpha cap, whose gradient is zero: same as the reference."""
    params = _params(60, torch.float64, max_opacity=0.99999)
    with torch.no_grad():
        params[3][:20] = 0.9999
    values = torch.rand(1, 60, 3, dtype=torch.float64).requires_grad_()
    viewmats, Ks = _cameras(1, torch.float64)
    _assert_tiles_match_dense(params, values, viewmats, Ks)


def test_saturated_tiles_stop_early_and_still_match_dense():
    """Large opaque Gaussians saturate every tile within a few rounds; the ones behind are never evaluated."""
    N = 120
    g = torch.Generator().manual_seed(5)
    means = torch.cat([torch.rand(N, 2, generator=g) * 0.6 - 0.3, torch.rand(N, 1, generator=g) * 2], 1)
    params = [
        means.double().requires_grad_(),
        torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).repeat(N, 1).requires_grad_(),
        torch.full((N, 3), 2.0, dtype=torch.float64).requires_grad_(),
        torch.full((N,), 0.98, dtype=torch.float64).requires_grad_(),
    ]
    values = torch.rand(1, N, 3, dtype=torch.float64, generator=g).requires_grad_()
    viewmats, Ks = _cameras(1, torch.float64)
    _assert_tiles_match_dense(params, values, viewmats, Ks)
    stats: dict = {}
    proj = project_gaussians(*params, viewmats, Ks, W, H)
    rasterize_tiles(proj, values, W, H, tile_size=8, segment=4, stats=stats)
    lists = build_tile_lists(proj, W, H, tile_size=8)
    full = int(((lists.count + 3) // 4).sum()) * 4 * 64
    assert stats["pairs"] == lists.ids.numel()
    rounds = stats["evaluated"] // (4 * 64 * int((lists.count > 0).sum()))
    assert (lists.count == N).all() and full == 30 * 4 * 64 * lists.num_tiles
    assert 1 <= rounds <= 5 and stats["evaluated"] % (4 * 64) == 0


def test_empty_image_when_everything_is_behind_the_camera():
    params = _params(30, behind=30)
    values = torch.rand(2, 30, 3).requires_grad_()
    viewmats, Ks = _cameras(2)
    image, alpha, grads = _render_and_grads(rasterize_tiles, params, values, viewmats, Ks)
    assert image.shape == (2, H, W, 3) and alpha.shape == (2, H, W)
    assert image.abs().max() == 0 and alpha.abs().max() == 0
    for g in grads:
        assert g is None or (torch.isfinite(g).all() and g.abs().max() == 0)


def test_gradcheck_float64():
    """Random projections of image and alpha (a full Jacobian would cost one backward per pixel)."""
    params = _params(6, torch.float64, seed=3)
    values = torch.rand(2, 6, 2, dtype=torch.float64).requires_grad_()
    viewmats, Ks = _cameras(2, torch.float64)
    with torch.no_grad():
        params[0].mul_(0.3)  # keep them overlapping, in view
        params[2].mul_(3.0)
    g = torch.Generator().manual_seed(4)
    probe_image = torch.randn(3, 2, H, W, 2, generator=g, dtype=torch.float64)
    probe_alpha = torch.randn(3, 2, H, W, generator=g, dtype=torch.float64)

    def fn(means, quats, scales, opac, vals):
        proj = project_gaussians(means, quats, scales, opac, viewmats, Ks, W, H)
        image, alpha = rasterize_tiles(proj, vals, W, H, tile_size=8, segment=2, budget=500)
        return (probe_image * image).sum((1, 2, 3, 4)) + (probe_alpha * alpha).sum((1, 2, 3))

    assert torch.autograd.gradcheck(fn, (*params, values), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_tile_lists_cover_every_contributing_pair():
    """Every (pixel, Gaussian) pair with alpha >= 1/255 has the Gaussian in that pixel's tile list."""
    params = [p.detach() for p in _params(200, torch.float64, behind=10)]
    viewmats, Ks = _cameras(2, torch.float64)
    proj = project_gaussians(*params, viewmats, Ks, W, H)
    T = 8
    lists = build_tile_lists(proj, W, H, tile_size=T)
    C, N = proj.depths.shape
    member = torch.zeros(lists.num_tiles, C * N, dtype=torch.bool)
    tile_of_pair = torch.repeat_interleave(torch.arange(lists.num_tiles), lists.count)
    member[tile_of_pair, lists.ids] = True
    # list order: front to back within each tile
    depths = proj.depths.reshape(-1)[lists.ids]
    same_tile = tile_of_pair[1:] == tile_of_pair[:-1]
    assert (depths[1:][same_tile] >= depths[:-1][same_tile]).all()

    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    dx = proj.means2d[:, None, :, 0] - xs.reshape(1, -1, 1)
    dy = proj.means2d[:, None, :, 1] - ys.reshape(1, -1, 1)
    alpha = proj.opacities[:, None] * torch.exp(-gaussian_weight_sigma(proj.conics[:, None], dx, dy))
    hits = (alpha >= ALPHA_THRESHOLD) & (proj.radii > 0).any(-1)[:, None]  # (C, HW, N)
    assert hits.sum() > 1000
    c, p, n = torch.nonzero(hits, as_tuple=True)
    pix_tile = (c * lists.tiles_y + (p // W) // T) * lists.tiles_x + (p % W) // T
    assert member[pix_tile, c * N + n].all()


def test_gsplat_backend_refuses_cpu_tensors():
    from gags.errors import GagsError
    from gags.splats.backends.gsplat_backend import render_gsplat

    pytest.importorskip("gsplat")
    gs = _gaussians(10, 2)
    viewmats, Ks = _cameras(1)
    with pytest.raises(GagsError, match="CUDA"):
        render_gsplat(gs, [], viewmats, Ks, W, H)


def test_projection_matches_gsplat_torch_reference():
    _torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    means, quats, scales, opac = [p.detach() for p in _params(300, torch.float64, behind=15)]
    viewmats, Ks = _cameras(3, torch.float64)
    ours = project_gaussians(means, quats, scales, opac, viewmats, Ks, W, H)
    radii, means2d, depths, conics, _ = _torch_impl._fully_fused_projection(
        means, covariances(quats, scales), viewmats, Ks, W, H, eps2d=0.3, near_plane=0.01
    )
    valid = (radii > 0).all(-1) & (ours.radii > 0).all(-1)
    assert valid.sum() > 500
    torch.testing.assert_close(ours.means2d[valid], means2d[valid])
    torch.testing.assert_close(ours.conics[valid], conics[valid])
    torch.testing.assert_close(ours.depths[valid], depths[valid])
    # Behind the near plane both cull.
    behind = ours.depths <= 0.01
    assert behind.any() and (ours.radii[behind] == 0).all() and (radii[behind] == 0).all()


def _gaussians(N: int, F: int, device="cpu", seed: int = 0) -> Gaussians:
    means, quats, scales, opac = [p.detach().to(device) for p in _params(N, seed=seed, behind=5)]
    g = torch.Generator().manual_seed(seed + 1)
    return Gaussians(
        means=means.requires_grad_(),
        quats=quats.requires_grad_(),
        log_scales=scales.log().requires_grad_(),
        opacity_logits=torch.logit(opac).requires_grad_(),
        sh=(torch.rand(N, 4, 3, generator=g) - 0.5).to(device).requires_grad_(),
        features=torch.randn(N, F, generator=g).to(device).requires_grad_(),
        feature_names=[f"f_{i}" for i in range(F)],
    )


def _render_outputs(gs: Gaussians, viewmats, Ks, backend: str):
    out = render(gs, viewmats, Ks, W, H, render_features=True, backend=backend)
    loss = out.rgb.sum() + (out.features * 0.3).sum() + out.depth.sum() * 0.1 + out.alpha.sum()
    params = [gs.means, gs.quats, gs.log_scales, gs.opacity_logits, gs.sh, gs.features]
    grads = torch.autograd.grad(loss, params)
    return [out.rgb, out.features, out.depth, out.alpha], grads


def test_render_torch_backend_matches_dense():
    gs = _gaussians(200, 5)
    viewmats, Ks = _cameras(2)
    maps_ref, grads_ref = _render_outputs(gs, viewmats, Ks, "dense")
    maps, grads = _render_outputs(gs, viewmats, Ks, "torch")
    for a, b in zip(maps, maps_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a / b.abs().max(), b / b.abs().max(), atol=1e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat rasterisation needs a CUDA GPU")
def test_torch_backend_matches_gsplat_on_cuda():
    pytest.importorskip("gsplat")
    gs = _gaussians(2000, 16, device="cuda")
    viewmats, Ks = (t.cuda() for t in _cameras(3))
    maps_ref, grads_ref = _render_outputs(gs, viewmats, Ks, "gsplat")
    maps, grads = _render_outputs(gs, viewmats, Ks, "torch")
    for name, a, b in zip(["rgb", "features", "depth", "alpha"], maps, maps_ref, strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3, msg=name)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a / b.abs().max(), b / b.abs().max(), atol=2e-3, rtol=0)


def test_garden_points_render_smoke():
    """The real garden cloud through render(): finite, mostly covered, gradients reach every parameter."""
    data = np.load(shared_dataset("garden_points") / "test_garden.npz")
    pts = torch.from_numpy(data["means3d"][::8]).float()
    N = pts.shape[0]
    scale = 0.02 * torch.ones(N, 3)
    gs = Gaussians(
        means=pts.clone().requires_grad_(),
        quats=torch.tensor([1.0, 0, 0, 0]).repeat(N, 1).requires_grad_(),
        log_scales=scale.log().requires_grad_(),
        opacity_logits=torch.full((N,), math.log(0.5 / 0.5)).requires_grad_(),
        sh=torch.rand(N, 1, 3).requires_grad_(),
    )
    viewmats = torch.from_numpy(data["viewmats"][:1]).float()
    Ks = torch.from_numpy(data["Ks"][:1]).float()
    Ks[:, :2] /= 8
    w, h = int(data["width"]) // 8, int(data["height"]) // 8
    out = render(gs, viewmats, Ks, w, h, backend="torch")
    assert out.rgb.shape == (1, h, w, 3) and torch.isfinite(out.rgb).all()
    assert (out.alpha > 0.5).float().mean() > 0.3
    out.rgb.sum().backward()
    assert gs.means.grad.abs().sum() > 0 and gs.opacity_logits.grad.abs().sum() > 0
