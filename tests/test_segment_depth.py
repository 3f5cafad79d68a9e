"""Rendered depth, occlusion-tested minimum visible depth MD, and per-view MD maps."""

from __future__ import annotations

import math

import numpy as np
import torch

from gags.scene.cameras import Camera, stack_cameras
from gags.segment.depth import md_map, min_visible_depth, render_depths, view_visibility
from gags.splats.gaussians import Gaussians

S = 32  # image side, pixels
K = np.array([[32.0, 0, S / 2], [0, 32.0, S / 2], [0, 0, 1]])


def gaussians(means: list[list[float]], scales: list[float]) -> Gaussians:
    n = len(means)
    return Gaussians(
        means=torch.tensor(means, dtype=torch.float32),
        quats=torch.tensor([[1.0, 0, 0, 0]] * n),
        log_scales=torch.log(torch.tensor(scales, dtype=torch.float32))[:, None].repeat(1, 3),
        opacity_logits=torch.full((n,), 7.0),
        sh=torch.zeros(n, 1, 3),
    )


def camera_a() -> Camera:
    """At the origin, looking along +z."""
    return Camera("a.png", K, np.eye(4), S, S)


def camera_b() -> Camera:
    """At (4, 0, 6), looking along -x: sees the hidden Gaussian 4 units away, not the occluder."""
    w2c = np.eye(4)
    w2c[:3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    w2c[:3, 3] = [-6, 0, 4]
    return Camera("b.png", K, w2c, S, S)


def scene() -> Gaussians:
    # 0: occluder 3 units in front of A; 1: hidden behind it (6 units); 2: off-axis, seen by A only
    return gaussians([[0, 0, 3], [0, 0, 6], [2, 2, 8]], [0.3, 0.05, 0.05])


def test_rendered_depth_is_the_expected_depth() -> None:
    d = render_depths(scene(), [camera_a()], backend="dense")
    assert d.shape == (1, S, S)
    assert abs(float(d[0, S // 2, S // 2]) - 3.0) < 0.1  # the opaque occluder
    assert float(d[0, 0, 0]) == 0.0  # empty pixel: no depth


def test_occluded_gaussian_does_not_take_the_occluders_depth() -> None:
    g, cams = scene(), [camera_a(), camera_b()]
    md = min_visible_depth(g, cams, backend="dense", view_chunk=2)
    assert abs(float(md[0]) - 3.0) < 0.1  # occluder: from A
    assert abs(float(md[1]) - 4.0) < 0.1  # hidden: from B (A's pixel holds the occluder's 3.0)
    assert abs(float(md[2]) - 8.0) < 0.1
    # seen by nobody -> inf
    assert math.isinf(float(min_visible_depth(g, [camera_b()], backend="dense")[0]))


def test_chunking_over_views_does_not_change_md() -> None:
    g, cams = scene(), [camera_a(), camera_b(), camera_a()]
    one = min_visible_depth(g, cams, backend="dense", view_chunk=1)
    all_ = min_visible_depth(g, cams, backend="dense", view_chunk=8)
    assert torch.equal(one, all_)


def test_md_maps_per_view() -> None:
    g, cams = scene(), [camera_a(), camera_b()]
    md = min_visible_depth(g, cams, backend="dense")
    depths = render_depths(g, cams, backend="dense")
    viewmats, Ks = stack_cameras(cams)
    vis = view_visibility(g.means, viewmats, Ks, depths)
    assert vis.visible.tolist() == [[True, False, True], [False, True, False]]
    md_a, count_a = md_map(_view(vis, 0), md, S, S)
    md_b, count_b = md_map(_view(vis, 1), md, S, S)
    assert count_a.sum() == 2 and count_b.sum() == 1
    assert abs(float(md_a[S // 2, S // 2]) - 3.0) < 0.1  # occluder's pixel in A
    assert abs(float(md_b[S // 2, S // 2]) - 4.0) < 0.1  # hidden Gaussian's pixel in B
    assert int((md_a > 0).sum()) == 2 and int((md_b > 0).sum()) == 1


def test_md_map_collisions_take_the_smallest() -> None:
    g = gaussians([[0, 0, 3], [0.001, 0, 3.05]], [0.3, 0.3])  # same pixel, both visible
    cams = [camera_a()]
    depths = render_depths(g, cams, backend="dense")
    viewmats, Ks = stack_cameras(cams)
    vis = view_visibility(g.means, viewmats, Ks, depths)
    md = torch.tensor([2.0, 1.0])
    md_img, counts = md_map(_view(vis, 0), md, S, S)
    assert float(md_img.max()) == 1.0 and float(counts.max()) == 2.0


def _view(vis, c: int):
    from gags.segment.depth import Visibility

    return Visibility(vis.visible[c], vis.pixel[c], vis.depth[c])
