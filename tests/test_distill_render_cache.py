"""Cached compositing weights render exactly what the rasteriser renders; alpha-argmax maps (Fig. 6)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gags.distill.alpha import alpha_argmax, alpha_argmax_maps, colourise, render_alpha
from gags.distill.decoders import GaDDecoders, GranularityDecoder, decoder_config
from gags.distill.field import LanguageField
from gags.distill.render_cache import cache_view, view_renderers
from gags.errors import GagsError
from gags.splats.gaussians import Gaussians
from gags.splats.render import render
from tests.test_render import H, W, _cameras, _gaussians


@pytest.mark.parametrize("backend", ["dense", "torch"])
def test_cached_render_matches_the_rasteriser_and_its_gradient(backend):
    gs = _gaussians(200, 6).detach()
    viewmats, Ks = _cameras(2)
    field = torch.randn(len(gs), 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    weights = torch.rand(H, W, 6, generator=torch.Generator().manual_seed(2))
    for c in range(2):
        ref = render(
            dataclasses.replace(gs, features=field),
            viewmats[c : c + 1],
            Ks[c : c + 1],
            W,
            H,
            render_rgb=False,
            render_features=True,
            backend=backend,
        ).features[0]
        cached = cache_view(gs, viewmats[c], Ks[c], W, H)
        got = cached.render(field)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        (g_ref,) = torch.autograd.grad((ref * weights).sum(), field)
        (g_got,) = torch.autograd.grad((got * weights).sum(), field)
        torch.testing.assert_close(g_got, g_ref, atol=1e-5, rtol=1e-5)
        assert 0 < cached.nnz < H * W * len(gs)


def test_render_cache_stays_within_its_budget_and_renders_the_rest_alike():
    from gags.scene.cameras import Camera

    gs = _gaussians(200, 6).detach()
    viewmats, Ks = _cameras(2)
    cams = [Camera(f"v{i}", Ks[i % 2].numpy(), viewmats[i % 2].numpy(), W, H) for i in range(6)]
    field = torch.randn(len(gs), 6, generator=torch.Generator().manual_seed(1))
    one_view = cache_view(gs, viewmats[0], Ks[0], W, H).nbytes
    budget_mb = 2.5 * one_view / 2**20  # room for two views of this size, not three
    cached = view_renderers(gs, cams, "dense", cache=True, budget_mb=budget_mb)
    plain = view_renderers(gs, cams, "dense", cache=False)
    assert len(cached) == len(cams)
    for i in (3, 0, 5, 1, 3, 0, 2):
        torch.testing.assert_close(cached[i](field), plain[i](field), atol=1e-5, rtol=1e-5)
    assert sorted(cached.cached) == [0, 3]  # the first two views rendered, then the budget is spent
    assert cached.cached_bytes <= budget_mb * 2**20
    assert not plain.cached and plain.cached_bytes == 0
    with pytest.raises(IndexError):
        cached[6]


def _two_blobs() -> Gaussians:
    """Opaque, round Gaussians in two clusters: left (x < 0) and right (x > 0), on the z = 0 plane."""
    xs = torch.linspace(-0.9, 0.9, 10)
    ys = torch.linspace(-0.6, 0.6, 8)
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    means = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.zeros(gx.numel())], -1)
    N = len(means)
    return Gaussians(
        means=means,
        quats=torch.tensor([1.0, 0, 0, 0]).repeat(N, 1),
        log_scales=torch.full((N, 3), 0.12).log(),
        opacity_logits=torch.full((N,), 4.0),
        sh=torch.zeros(N, 1, 3),
    )


def _write_field(tmp_path, gs: Gaussians, features: torch.Tensor, form: str) -> LanguageField:
    from gags.splats.ply import save_ply

    decoders = GaDDecoders(form, embed_dim=8, in_dim=features.shape[1], hidden=16)
    granularity = None
    if form == "reference-two-nets":
        # eta = the first three (non-negative) channels: identity blocks through the ReLU MLP
        net = GranularityDecoder(features.shape[1])
        with torch.no_grad():
            for layer in (m for m in net.modules() if isinstance(m, torch.nn.Linear)):
                layer.weight.zero_()
                layer.bias.zero_()
                layer.weight[:3, :3] = torch.eye(3)
        granularity = net.state_dict()
    payload = {
        "features": features,
        "decoder": decoders.feature.state_dict(),
        "decoder_config": decoder_config(form, 8, features.shape[1], 16),
        "granularity_decoder": granularity,
        "embed_dim": 8,
        "method": "gags",
        "encoder": {},
        "config": {},
    }
    torch.save(payload, tmp_path / "language.pt")
    save_ply(tmp_path / "splats.ply", gs)
    return LanguageField.load(tmp_path / "language.pt")


def test_alpha_argmax_map_follows_the_rendered_granularity(tmp_path):
    gs = _two_blobs()
    left = gs.means[:, 0] < 0
    features = torch.zeros(len(gs), 4)
    features[left, 0] = 5.0  # subpart on the left
    features[~left, 2] = 5.0  # whole on the right
    field = _write_field(tmp_path, gs, features, "reference-two-nets")
    viewmats, Ks = _cameras(1)
    viewmats[0] = torch.eye(4)
    viewmats[0, 2, 3] = 3.0
    levels = alpha_argmax_maps(field, viewmats, Ks, W, H, backend="dense")
    assert levels.shape == (1, H, W) and levels.dtype == torch.int64
    m = levels[0]
    assert (m[H // 2, W // 2 - 10 : W // 2 - 3] == 0).all(), m
    assert (m[H // 2, W // 2 + 3 : W // 2 + 10] == 2).all(), m
    assert m[0, 0] == -1 and m[-1, -1] == -1  # nothing rendered in the corners
    rgb = colourise(m)
    assert rgb.shape == (H, W, 3) and (rgb[0, 0] == 1.0).all()


def test_alpha_of_the_shared_form_uses_its_eta_head_and_fixed_alpha_fields_refuse(tmp_path):
    gs = _two_blobs()
    features = torch.randn(len(gs), 4, generator=torch.Generator().manual_seed(0))
    field = _write_field(tmp_path, gs, features, "shared-two-heads")
    viewmats, Ks = _cameras(1)
    alpha, opacity = render_alpha(field, viewmats, Ks, W, H, backend="dense")
    f16 = render(
        dataclasses.replace(gs, features=features),
        viewmats,
        Ks,
        W,
        H,
        render_rgb=False,
        render_features=True,
        backend="dense",
    ).features
    with torch.no_grad():
        expected = torch.softmax(field.decoder.both(f16)[1], -1)
    torch.testing.assert_close(alpha, expected)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(1, H, W))
    assert (alpha_argmax(alpha, opacity) == torch.where(opacity >= 0.5, expected.argmax(-1), -1)).all()
    field.payload["method"] = "average"
    with pytest.raises(GagsError, match="fixed alpha"):
        render_alpha(dataclasses.replace(field, method="average"), viewmats, Ks, W, H)
