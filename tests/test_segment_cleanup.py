"""Vectorised mask clean-up against the reference double loop; index-map painting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gags.models.sam import remove_small_regions
from gags.segment.cleanup import CleanupConfig, mask_nms, mask_nms_loop, paint_index_maps


def random_masks(n: int, h: int = 40, w: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectangles and ellipses with near-duplicates and nested pairs, plus scores around the threshold."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    masks = []
    for i in range(n):
        cx, cy = torch.randint(0, w, (1,), generator=g).item(), torch.randint(0, h, (1,), generator=g).item()
        rx, ry = torch.randint(2, 20, (2,), generator=g).tolist()
        if i % 2:
            m = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        else:
            m = ((xs - cx).abs() <= rx) & ((ys - cy).abs() <= ry)
        masks.append(m)
        if i % 5 == 0:  # a near-duplicate
            masks.append(m.clone().roll(1, dims=1))
        if i % 7 == 0:  # a nested sub-region
            masks.append(m & (xs <= cx))
    masks.append(torch.zeros(h, w, dtype=torch.bool))  # an empty mask never survives
    stack = torch.stack(masks)
    scores = 0.6 + 0.4 * torch.rand(stack.shape[0], generator=g)
    return stack, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_loop(seed: int) -> None:
    masks, scores = random_masks(40, seed=seed)
    fast = mask_nms(masks, scores)
    slow = mask_nms_loop(masks, scores)
    assert torch.equal(fast, slow)
    assert 0 < len(fast) < len(masks)  # the test exercises both keeping and dropping


def test_vectorised_equals_loop_with_small_pixel_chunks() -> None:
    masks, scores = random_masks(25, seed=5)
    assert torch.equal(mask_nms(masks, scores, CleanupConfig(pixel_chunk=7)), mask_nms_loop(masks, scores))


def test_rules_on_hand_built_masks() -> None:
    m = torch.zeros(5, 20, 20, dtype=torch.bool)
    m[0, :10, :10] = True  # big square
    m[1, :10, :9] = True  # near-duplicate of 0, lower score: IoU 0.9 -> dropped
    m[2, 12:, 12:] = True  # separate, but score at the threshold -> dropped
    m[3, 12:14, 0:2] = True  # 4 px fully inside mask 4 which it covers < 50% of -> dropped
    m[4, 10:20, 0:10] = True
    scores = torch.tensor([0.95, 0.9, 0.7, 0.99, 0.8])
    assert mask_nms(m, scores).tolist() == [0, 4]


def test_low_scores_fall_back_to_the_top_three() -> None:
    m = torch.zeros(5, 10, 10, dtype=torch.bool)
    for i in range(5):
        m[i, 2 * i : 2 * i + 2] = True
    scores = torch.tensor([0.1, 0.5, 0.3, 0.2, 0.4])
    assert mask_nms(m, scores).tolist() == [1, 2, 4]
    assert mask_nms_loop(m, scores).tolist() == [1, 2, 4]


def test_empty_level_does_not_crash() -> None:
    empty = torch.zeros(0, 8, 9, dtype=torch.bool)
    assert mask_nms(empty, torch.zeros(0)).numel() == 0
    maps = paint_index_maps([empty, torch.ones(2, 8, 9, dtype=torch.bool), empty])
    assert maps.shape == (3, 8, 9) and maps.dtype == torch.int32
    assert torch.all(maps[0] == -1) and torch.all(maps[2] == -1) and torch.all(maps[1] == 1)


def test_paint_index_maps_equals_sequential_painting() -> None:
    levels = [random_masks(k, seed=k)[0] for k in (6, 9, 4)]
    maps = paint_index_maps(levels)
    offset = 0
    for level, masks in enumerate(levels):
        expect = torch.full(masks.shape[1:], -1, dtype=torch.int32)
        for i, m in enumerate(masks):  # later masks overwrite earlier ones
            expect[m] = offset + i
        assert torch.equal(maps[level], expect)
        offset += masks.shape[0]
    assert int(maps.max()) < offset


def test_remove_small_regions_batch_matches_per_mask_semantics() -> None:
    masks = np.zeros((3, 30, 30), dtype=bool)
    masks[0, 2:20, 2:20] = True
    masks[0, 8:10, 8:10] = False  # a 4-px hole: filled
    masks[0, 25:27, 25:27] = True  # a 4-px island: removed by the islands pass
    masks[1, 0:3, 0:3] = True  # only small islands: the largest survives
    masks[1, 10, 10] = True
    masks[2, 5:25, 5:25] = True  # nothing small: unchanged
    filled, changed_h = remove_small_regions(masks, 10, "holes")
    assert filled[0, 8:10, 8:10].all() and changed_h.tolist() == [True, False, False]
    cleaned, changed_i = remove_small_regions(filled, 10, "islands")
    assert not cleaned[0, 25:27, 25:27].any() and cleaned[0, 2:20, 2:20].all()
    assert cleaned[1, 0:3, 0:3].all() and not cleaned[1, 10, 10]
    assert np.array_equal(cleaned[2], masks[2])
    assert changed_i.tolist() == [True, True, False]


def test_remove_small_regions_equals_sam_amg() -> None:
    from scipy.ndimage import gaussian_filter
    from segment_anything.utils.amg import remove_small_regions as sam_remove_small_regions

    rng = np.random.default_rng(4)
    blobs = gaussian_filter(rng.normal(size=(24, 48, 64)), (0, 1.5, 1.5))
    masks = blobs > np.quantile(blobs, np.linspace(0.3, 0.97, 24))[:, None, None]
    extra = np.zeros((5, 48, 64), dtype=bool)  # SAM's edge cases
    extra[0, 3:5, 3:5] = True  # one small island: kept, but SAM still reports "changed"
    extra[1, 3:5, 3:5] = extra[1, 30:32, 40:42] = extra[1, 10, 50] = True  # tied largest: SAM keeps one
    extra[2, 1, 0:2] = extra[2, 0, 10:12] = True  # a tie where OpenCV's label order is not raster order
    extra[4] = True  # empty mask (3) and a full one (4)
    masks = np.concatenate([masks, extra])
    for mode in ("holes", "islands"):
        for area in (0, 10, 100):
            got, changed = remove_small_regions(masks, area, mode)
            for i, mask in enumerate(masks):
                expected, expected_changed = sam_remove_small_regions(mask, area, mode)
                np.testing.assert_array_equal(got[i], expected, err_msg=f"{mode} {area} mask {i}")
                assert changed[i] == expected_changed, (mode, area, i)
