"""Relevance and post-processing against direct ports of the reference code (small random maps)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from gags.query.postprocess import (
    argmax_points,
    box_filter,
    majority_filter,
    normalise_relevance,
    postprocess,
)
from gags.query.relevance import relevance


def _cv2_border_reflect101(p: int, n: int) -> int:
    """Port of OpenCV's ``borderInterpolate`` for BORDER_REFLECT_101."""
    if n == 1:
        return 0
    while not 0 <= p < n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


def _cv2_filter2d_box(src: np.ndarray, size: int) -> np.ndarray:
    """Loop port of ``cv2.filter2D(src, -1, ones((size, size)) / size**2)`` (default anchor and border)."""
    H, W = src.shape
    a = size // 2
    out = np.zeros((H, W))
    for y in range(H):
        for x in range(W):
            rows = [_cv2_border_reflect101(y + k - a, H) for k in range(size)]
            cols = [_cv2_border_reflect101(x + k - a, W) for k in range(size)]
            out[y, x] = src[np.ix_(rows, cols)].astype(np.float64).mean()
    return out


def _reference_smooth(mask: np.ndarray) -> np.ndarray:
    """LangSplat ``eval/utils.py::smooth`` verbatim (7x7 majority, last row/column excluded)."""
    h, w = mask.shape[:2]
    out = mask.copy()
    scale = 3
    for i in range(h):
        for j in range(w):
            square = mask[
                max(0, i - scale) : min(i + scale + 1, h - 1), max(0, j - scale) : min(j + scale + 1, w - 1)
            ]
            out[i, j] = np.argmax(np.bincount(square.reshape(-1)))
    return out


@pytest.mark.parametrize("shape,size", [((9, 13), 30), ((40, 35), 30), ((6, 5), 4), ((8, 8), 3)])
def test_box_filter_matches_cv2_filter2d_semantics(shape, size):
    src = np.random.default_rng(1).random(shape).astype(np.float32)
    got = box_filter(torch.from_numpy(src), size).numpy()
    np.testing.assert_allclose(got, _cv2_filter2d_box(src, size), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 7), (9, 13), (12, 30), (29, 31), (30, 30), (45, 64), (64, 33)])
def test_box_filter_equals_cv2_filter2d(shape):
    """Odd and even sizes, smaller than the 30 px kernel (reflection wraps) and larger."""
    maps = np.random.default_rng(sum(shape)).random((2, *shape)).astype(np.float32)
    got = box_filter(torch.from_numpy(maps)).numpy()
    kernel = np.ones((30, 30)) / 900
    for m, g in zip(maps, got, strict=True):
        np.testing.assert_allclose(g, cv2.filter2D(m.astype(np.float64), -1, kernel), rtol=0, atol=1e-12)
        # the reference's own call, in float32: equal up to float32 rounding
        np.testing.assert_allclose(g, cv2.filter2D(m, -1, kernel), rtol=0, atol=1e-6)


def test_box_ties_survive_rounding_and_one_float32_ulp_breaks_them():
    r = np.zeros((120, 160), dtype=np.float32)
    r[20:50, 20:50] = r[70:100, 110:140] = 0.9  # two 30x30 plateaus: box30 = 0.9 at one window each
    assert argmax_points(box_filter(torch.from_numpy(r))).tolist() == [[35, 35], [125, 85]]
    r[85, 125] = np.nextafter(np.float32(0.9), np.float32(1))
    assert argmax_points(box_filter(torch.from_numpy(r))).tolist() == [[125, 85]]


def test_box_filter_batches_and_gives_exact_ties_on_flat_regions():
    x = torch.full((2, 3, 50, 60), 0.7312, dtype=torch.float32)
    box = box_filter(x)
    assert box.shape == x.shape and box.dtype == torch.float64
    assert (box == box[0, 0, 0, 0]).all()  # every window sums the same values in the same order


def test_majority_filter_matches_reference_loop():
    rng = np.random.default_rng(2)
    for shape in [(12, 17), (5, 4), (30, 9)]:
        mask = rng.random(shape) < 0.45
        expected = _reference_smooth(mask.astype(np.uint8)).astype(bool)
        got = majority_filter(torch.from_numpy(mask)).numpy()
        np.testing.assert_array_equal(got, expected)
    assert not majority_filter(torch.ones(1, 6, dtype=torch.bool)).any()  # empty windows


def test_normalise_relevance_stretches_upper_half():
    r = torch.tensor([[0.0, 0.25, 0.5], [0.75, 1.0, 0.6]], dtype=torch.float64)
    o = normalise_relevance(r)
    np.testing.assert_allclose(o.numpy(), [[0, 0, 0], [0.5, 1.0, 0.2]], atol=1e-8)


def test_relevance_equals_min_over_negatives_of_pairwise_softmax():
    g = torch.Generator().manual_seed(3)
    feats, q, negs = (
        torch.randn(4, 5, 8, generator=g),
        torch.randn(8, generator=g),
        torch.randn(4, 8, generator=g),
    )
    got = relevance(feats, q, negs, chunk=7)
    f = torch.nn.functional.normalize(feats, dim=-1)
    qn, nn_ = torch.nn.functional.normalize(q, dim=0), torch.nn.functional.normalize(negs, dim=-1)
    pos = (f @ qn)[..., None].expand(4, 5, 4)
    pairs = torch.stack([pos, f @ nn_.T], dim=-1)  # (4, 5, K, 2)
    expected = torch.softmax(10 * pairs, dim=-1)[..., 0].min(dim=-1).values
    torch.testing.assert_close(got, expected)
    both = relevance(feats, torch.stack([q, -q]), negs)
    assert both.shape == (2, 4, 5)
    torch.testing.assert_close(both[0], expected)
    assert torch.allclose(relevance(torch.zeros(3, 8), q, negs), torch.full((3,), 0.5))


def test_postprocess_finds_the_blob_and_picks_levels():
    H, W = 60, 80
    r = torch.full((3, H, W), 0.4)
    r[1, 20:40, 30:50] = 0.9  # level 1: a strong square
    r[2, 5:15, 5:15] = 0.8  # level 2: a weaker one
    out = postprocess(r)
    assert out.mask_level == 1 and out.point_level == 1
    x, y = out.point
    assert 30 <= x < 50 and 20 <= y < 40
    # the mask is the square, shrunk/grown by at most the smoothing footprint
    assert out.mask[25:35, 35:45].all() and not out.mask[:10].any() and not out.mask[:, :20].any()
    assert out.normalised.max() == pytest.approx(1.0) and out.normalised.min() == 0.0


def test_argmax_points_keeps_ties_in_xy_order():
    box = torch.zeros(4, 5, dtype=torch.float64)
    box[1, 3] = box[2, 0] = 1.0
    assert argmax_points(box).tolist() == [[3, 1], [0, 2]]


def test_mask_and_point_levels_follow_langsplat_rules_separately():
    r = torch.full((2, 40, 40), 0.7)
    r[0, 20, 20] = 1.0  # level 0: one bright pixel -> highest max of r' = 0.5 (r + box30(r))
    r[1] = 0.5
    r[1, 5:35, 5:35] = 0.8  # level 1: a broad plateau -> highest max of box30(r)
    out = postprocess(r)
    assert (out.mask_level, out.point_level) == (0, 1)
    assert out.score == pytest.approx(0.8)


def test_select_gaussians_and_apply_selection():
    from gags.query.select3d import apply_selection, select_gaussians
    from gags.splats.gaussians import Gaussians

    q = torch.tensor([1.0, 0, 0, 0])
    negs = torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 0]])
    weak = torch.tensor([[1.0, 1, 0, 0]]).repeat(6, 1)  # level 0: nothing really matches
    strong = torch.tensor([[1.0, 0, 0, 0]] * 2 + [[0.0, 0, 0, 1]] * 4)  # level 1: Gaussians 0, 1 match
    sel = select_gaussians([weak, strong], q, negs)
    assert sel.level == 1 and sel.mask.tolist() == [True, True, False, False, False, False]
    g = Gaussians(
        torch.arange(18.0).reshape(6, 3),
        torch.ones(6, 4),
        torch.zeros(6, 3),
        torch.zeros(6),
        torch.zeros(6, 1, 3),
    )
    assert apply_selection(g, sel.mask, "extract").means[:, 0].tolist() == [0.0, 3.0]
    assert len(apply_selection(g, sel.mask, "delete")) == 4
