"""Frames of the viewer and ``gags render`` (query/live), the pictures they are made of, the alpha map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gags.query.pictures import PCABasis, composite_relevance, eval_frame_picture, label_colors


def test_composite_keeps_rgb_where_relevance_is_zero_and_colours_it_elsewhere():
    rgb = np.full((4, 6, 3), 100, np.uint8)
    o = np.zeros((4, 6), np.float32)
    o[:, 3:] = 1.0
    out = composite_relevance(rgb, o, opacity=0.6)
    assert np.array_equal(out[:, :3], rgb[:, :3])
    assert np.abs(out[:, 3:].astype(int) - 100).sum(-1).min() > 60


def test_eval_frame_picture_has_one_row_per_query_at_the_tile_width():
    H, W = 150, 200
    rgb = np.zeros((H, W, 3), np.uint8)
    mask = np.zeros((H, W), bool)
    mask[40:80, 50:120] = True
    row = {"category": "mug", "gt_mask": mask, "boxes": [[50, 40, 120, 80]], "mask": mask,
           "points": [[60, 50]], "normalised": mask.astype(np.float32), "iou": 1.0, "hit": True}  # fmt: skip
    out = eval_frame_picture(rgb, [row, {**row, "hit": False, "iou": 0.0}], tile_width=100)
    assert out.shape == (2 * 75 + 2, 4 * 100 + 3 * 2, 3)
    assert label_colors(np.array([[0, 1, 2, -1]])).shape == (1, 4, 3)


def test_pca_colours_are_stable_and_in_range():
    feats = np.random.default_rng(0).normal(size=(500, 16))
    a, b = PCABasis(feats), PCABasis(feats)
    assert np.array_equal(a.colors(feats[:10]), b.colors(feats[:10]))
    assert a.colors(feats).dtype == np.uint8


@pytest.fixture(scope="module")
def live(reduced_run):
    import gags.stages  # noqa: F401 - registers the synthetic oracles
    from gags.query.live import LiveRenderer
    from gags.query.maps import open_engine
    from gags.runfolder import RunFolder
    from gags.scene.load import load_run_scene

    scene = load_run_scene(RunFolder(reduced_run))
    return LiveRenderer(open_engine(reduced_run), scene.background), scene


def test_every_mode_renders_and_says_what_it_shows(live):
    from gags.query.live import MODES, FrameSettings

    renderer, scene = live
    camera = scene.train_cameras[0]
    selection = renderer.engine.select("mug").mask
    for mode in MODES:
        for source in ("pixel", "gaussian"):
            frame = renderer.frame(camera, FrameSettings(mode=mode, texts=("mug", "pencil"), source=source))
            assert frame.image.shape == (camera.height, camera.width, 3) and frame.image.dtype == np.uint8
            assert frame.shown
    assert (
        "per-Gaussian"
        in renderer.frame(camera, FrameSettings("relevance", ("mug",), source="gaussian")).shown
    )
    assert "pixel-space" in renderer.frame(camera, FrameSettings("mask", ("mug",), source="pixel")).shown
    assert "granularity" in renderer.frame(camera, FrameSettings("granularity")).shown
    assert "selected" in renderer.frame(camera, FrameSettings("rgb"), selection).shown


def test_pixel_path_equals_the_query_core_and_the_preview_agrees(live):
    from gags.query.live import FrameCancelled

    renderer, scene = live
    camera = scene.train_cameras[1]
    queries = renderer.embed(["mug", "teapot"])
    pixel = renderer.relevance(camera, queries, "pixel")
    assert torch.allclose(pixel, renderer.engine.relevance(camera, queries), atol=1e-5)
    preview = renderer.relevance(camera, queries, "gaussian")
    assert preview.shape == pixel.shape
    corr = np.corrcoef(preview.flatten().numpy(), pixel.flatten().numpy())[0, 1]
    assert corr > 0.8
    with pytest.raises(FrameCancelled):
        from gags.query.live import FrameSettings

        renderer.frame(camera, FrameSettings("relevance", ("mug",), source="pixel"), cancel=lambda: True)


def test_granularity_mode_colours_the_alpha_argmax_of_the_field(live):
    from gags.distill.alpha import alpha_argmax_maps
    from gags.query.live import FrameSettings
    from gags.query.pictures import LEVEL_COLORS
    from gags.scene.cameras import stack_cameras

    renderer, scene = live
    camera = scene.train_cameras[0]
    parts = renderer.render(camera, fields=True)
    levels = renderer.alpha_levels(parts)  # the same map as distill.alpha's Fig. 6 maps
    viewmats, Ks = stack_cameras([camera])
    assert torch.equal(
        levels, alpha_argmax_maps(renderer.field, viewmats, Ks, camera.width, camera.height)[0]
    )
    frame = renderer.frame(camera, FrameSettings("granularity"))
    assert "granularity" in frame.shown
    solid = (parts.alpha.numpy() > 0.99) & (levels.numpy() >= 0)
    colour = np.asarray(LEVEL_COLORS)[levels.numpy()[solid]]
    # opaque pixels are mostly their level's colour (0.7 of it over the render)
    assert np.abs(frame.image[solid].astype(float) - colour).mean() < np.abs(frame.rgb[solid] - colour).mean()
