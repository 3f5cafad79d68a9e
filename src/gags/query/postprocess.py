"""From a relevance map to a heatmap, a localisation point and a mask, as LangSplat's evaluation does.

Reference (LangSplat/GAGS ``eval/evaluate_iou_loc.py`` and ``eval/utils.py``), for a relevance map r:

- ``box30(r)``: ``cv2.filter2D(r, -1, ones(30, 30) / 900)``. OpenCV's defaults: the anchor is the
  kernel centre ``(15, 15)``, so pixel y averages rows ``y-15 .. y+14`` (likewise columns); the border
  is ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``, the edge pixel not repeated).
  :func:`box_filter` is the same operator, ``cv2.blur`` with that anchor and border, evaluated in float64.
- smoothed ``r' = 0.5 (r + box30(r))``; normalised ``o = clip(2 (r' - min) / (max - min + 1e-9) - 1, 0, 1)``;
  mask ``o > 0.4`` followed by a 7x7 majority filter (:func:`majority_filter`, with the reference's
  window quirk).
- localisation: every pixel where ``box30(r)`` reaches its maximum (ties kept), as (x, y).
- several levels (LangSplat's three fields): the mask comes from the level whose ``r'`` has the highest
  maximum, the point from the level whose ``box30(r)`` has the highest maximum.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
import torch.nn.functional as F

#: side of the reference's averaging kernel, pixels
BOX_SIZE: int = 30
#: threshold on the normalised relevance that makes the mask (reference ``--mask_thresh 0.4``)
MASK_THRESHOLD: float = 0.4
#: half-size of the majority filter window (7x7)
MAJORITY_RADIUS: int = 3
#: two box-filter values closer than this count as tied maxima. The box is evaluated in float64, where
#: equal neighbourhoods give equal sums to ~1e-15, while two float32 relevance maps that differ by one
#: unit in the last place at a single pixel still differ by ~6e-11 after the 900-pixel average.
TIE_TOLERANCE: float = 1e-12


def box_filter(x: torch.Tensor, size: int = BOX_SIZE) -> torch.Tensor:
    """Mean over a ``size`` x ``size`` window with ``cv2.filter2D`` semantics (anchor, border).

    ``cv2.blur`` (a separable box sum) in float64, one call per map: equal to ``cv2.filter2D`` with
    ``ones / size**2`` to ~1e-15 (OpenCV evaluates that one by DFT for kernels this large), 5x faster,
    and a flat region gives exactly equal values. The maps go through the CPU, as in the reference.

    Args:
        x: (..., H, W) maps.
    Returns:
        (..., H, W) float64 on ``x.device``: pixel (y, x) averages rows ``y - size//2 .. y - size//2 +
        size - 1`` and the same columns, indices outside the image reflected (reflect-101).
    """
    maps = x.detach().cpu().to(torch.float64).reshape(-1, *x.shape[-2:]).numpy()
    out = np.empty_like(maps)
    for m, o in zip(maps, out, strict=True):
        o[...] = cv2.blur(m, (size, size), borderType=cv2.BORDER_REFLECT_101)
    return torch.from_numpy(out).reshape(x.shape).to(x.device)


def smooth_relevance(r: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
    """``r' = 0.5 (r + box30(r))`` for (..., H, W) maps (float64); pass ``box`` if already computed."""
    box = box_filter(r) if box is None else box
    return 0.5 * (r.to(torch.float64) + box)


def normalise_relevance(smoothed: torch.Tensor, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """``clip(2 minmax(r') - 1, 0, 1)``, min and max taken over ``dims`` (default: per (H, W) map).

    The upper half of each map's range, stretched to [0, 1]; the lower half becomes 0.
    """
    lo = smoothed.amin(dim=dims, keepdim=True)
    hi = smoothed.amax(dim=dims, keepdim=True)
    stretched = (smoothed - lo) / (hi - lo + 1e-9)
    return (2.0 * stretched - 1.0).clamp(0.0, 1.0)


def majority_filter(mask: torch.Tensor, radius: int = MAJORITY_RADIUS) -> torch.Tensor:
    """The reference ``smooth()``: each pixel takes the majority value of its window (ties -> False).

    Reference quirk kept (LangSplat ``eval/utils.py``): the window of pixel (i, j) is rows
    ``max(0, i - r) .. min(i + r + 1, H - 1) - 1`` (Python slice end), so the last row and column
    never vote. An empty window (H or W = 1) gives False. Counted with an integral image.

    Args:
        mask: (..., H, W) bool.
    Returns:
        (..., H, W) bool.
    """
    H, W = mask.shape[-2:]
    integral = F.pad(mask.to(torch.int64).cumsum(-1).cumsum(-2), (1, 0, 1, 0))  # (..., H+1, W+1)

    def bounds(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.arange(n, device=mask.device)
        lo = (i - radius).clamp(min=0)
        hi = torch.minimum(i + radius + 1, torch.tensor(n - 1, device=mask.device))
        return lo, torch.maximum(hi, lo)

    r0, r1 = bounds(H)
    c0, c1 = bounds(W)
    r0, r1, c0, c1 = r0[:, None], r1[:, None], c0[None, :], c1[None, :]
    ones = integral[..., r1, c1] - integral[..., r0, c1] - integral[..., r1, c0] + integral[..., r0, c0]
    total = (r1 - r0) * (c1 - c0)
    return 2 * ones > total


def argmax_points(box: torch.Tensor, tolerance: float = TIE_TOLERANCE) -> torch.Tensor:
    """All pixels of an (H, W) map within ``tolerance`` of its maximum, as (P, 2) int64 (x, y)."""
    ties = box >= box.max() - tolerance
    return torch.nonzero(ties).flip(-1)


@dataclasses.dataclass
class QueryMaps:
    """The post-processed result of one query in one view (levels already chosen).

    Attributes:
        smoothed: (H, W) float32 ``r'`` of the mask level.
        normalised: (H, W) float32 ``o`` in [0, 1] of the mask level (what the heatmap shows).
        mask: (H, W) bool predicted mask (threshold, then majority filter).
        points: (P, 2) int64 localisation candidates (x, y) pixel indices; all tied maxima.
        score: maximum of ``box30(r)`` at the point level.
        mask_level / point_level: index of the level (feature map) each came from.
    """

    smoothed: torch.Tensor
    normalised: torch.Tensor
    mask: torch.Tensor
    points: torch.Tensor
    score: float
    mask_level: int
    point_level: int

    @property
    def point(self) -> tuple[int, int]:
        """The first tied maximum (x, y) (row-major order), the one to display."""
        x, y = self.points[0].tolist()
        return int(x), int(y)


def postprocess(
    relevance_maps: torch.Tensor, threshold: float = MASK_THRESHOLD, box_size: int = BOX_SIZE
) -> QueryMaps:
    """Heatmap, mask and point from the relevance of one query at L levels (L = 1 for GAGS).

    Args:
        relevance_maps: (L, H, W) or (H, W) relevance in [0, 1].
        threshold: mask threshold on the normalised relevance.
        box_size: side of the averaging window (reference 30, for ~1000 x 730 LERF frames).
    """
    r = relevance_maps[None] if relevance_maps.ndim == 2 else relevance_maps
    box = box_filter(r, box_size)  # (L, H, W) float64
    smoothed = smooth_relevance(r, box)
    mask_level = int(smoothed.amax(dim=(-2, -1)).argmax())
    box_max = box.amax(dim=(-2, -1))
    point_level = int(box_max.argmax())
    normalised = normalise_relevance(smoothed[mask_level])
    mask = majority_filter(normalised > threshold)
    return QueryMaps(
        smoothed=smoothed[mask_level].float(),
        normalised=normalised.float(),
        mask=mask,
        points=argmax_points(box[point_level]),
        score=float(box_max[point_level]),
        mask_level=mask_level,
        point_level=point_level,
    )
