"""Pictures of query results: colormaps, relevance composited over RGB, masks, points, panels.

Pure functions on numpy arrays (``(H, W, 3)`` uint8 images, ``(H, W)`` float maps in [0, 1], ``(H, W)``
bool masks); no rendering and no model. Used by ``gags query`` and ``gags eval`` (pictures written
beside the numbers), ``gags render`` (video frames) and the web viewer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

#: opacity of the relevance colormap over the RGB image
OVERLAY_OPACITY: float = 0.6
#: colours (RGB) of the granularity levels subpart, part, whole in the alpha-argmax map (paper Fig. 6)
LEVEL_COLORS: tuple[tuple[int, int, int], ...] = ((230, 75, 53), (77, 187, 213), (0, 160, 135))
#: colours of several queries' masks, in order
QUERY_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64),
    (64, 160, 255),
    (255, 200, 0),
    (160, 255, 64),
    (220, 80, 255),
    (0, 230, 200),
)
#: highlight colour of the Gaussians selected in 3D
SELECTION_COLOR: tuple[int, int, int] = (255, 0, 255)


@functools.lru_cache(maxsize=4)
def colormap_lut(name: str = "turbo") -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colormap."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def colorize(values: np.ndarray, name: str = "turbo") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 through a colormap (values outside are clipped)."""
    index = (np.clip(np.nan_to_num(values), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return colormap_lut(name)[index]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (or an uint8 image) as uint8."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def composite_relevance(
    rgb: np.ndarray, normalised: np.ndarray, opacity: float = OVERLAY_OPACITY, name: str = "turbo"
) -> np.ndarray:
    """The normalised relevance ``o`` (turbo) over the image, weighted by ``opacity * min(1, 2 o)``.

    Pixels with ``o = 0`` (the lower half of the map's range, see
    :func:`gags.query.postprocess.normalise_relevance`) keep their RGB value exactly.

    Args:
        rgb: (H, W, 3) uint8 or float in [0, 1]. normalised: (H, W) in [0, 1].
    Returns:
        (H, W, 3) uint8.
    """
    base = to_uint8(rgb).astype(np.float32)
    o = np.clip(np.nan_to_num(np.asarray(normalised, dtype=np.float32)), 0.0, 1.0)
    weight = (opacity * np.minimum(1.0, 2.0 * o))[..., None]
    out = base * (1.0 - weight) + colorize(o, name).astype(np.float32) * weight
    return (out + 0.5).astype(np.uint8)


def tint(
    rgb: np.ndarray, weight: np.ndarray, color: Sequence[int], opacity: float = 0.5, outline: bool = False
) -> np.ndarray:
    """Blend ``color`` over the image with per-pixel ``weight`` in [0, 1] (a bool mask works too).

    With ``outline`` the boundary of ``weight > 0.5`` is drawn in full colour.
    """
    base = to_uint8(rgb).astype(np.float32)
    w = (opacity * np.clip(np.asarray(weight, dtype=np.float32), 0.0, 1.0))[..., None]
    out = ((base * (1.0 - w) + np.asarray(color, np.float32) * w) + 0.5).astype(np.uint8)
    if outline:
        mask = (np.asarray(weight) > 0.5).astype(np.uint8)
        edge = mask - cv2.erode(
            mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
        out[edge > 0] = color
    return out


def mask_picture(rgb: np.ndarray, masks: Sequence[np.ndarray], opacity: float = 0.5) -> np.ndarray:
    """Each (H, W) bool mask tinted over the image in its own colour (:data:`QUERY_COLORS`), outlined."""
    out = to_uint8(rgb)
    for k, mask in enumerate(masks):
        out = tint(out, np.asarray(mask, bool), QUERY_COLORS[k % len(QUERY_COLORS)], opacity, outline=True)
    return out


def draw_point(
    image: np.ndarray, point: tuple[int, int], color: Sequence[int] = (255, 255, 255), size: int | None = None
) -> np.ndarray:
    """A copy of ``image`` with a cross at ``point`` (x, y) in ``color`` over a black outline."""
    out = to_uint8(image).copy()
    H, W = out.shape[:2]
    size = size if size is not None else max(3, round(min(H, W) / 40))
    thick = max(1, size // 4)
    x, y = int(point[0]), int(point[1])
    for c, t in (((0, 0, 0), thick + 2), (tuple(int(v) for v in color), thick)):
        cv2.line(out, (x - size, y), (x + size, y), c, t, cv2.LINE_AA)
        cv2.line(out, (x, y - size), (x, y + size), c, t, cv2.LINE_AA)
    return out


def draw_boxes(image: np.ndarray, boxes: np.ndarray, color: Sequence[int] = (0, 255, 0)) -> np.ndarray:
    """A copy of ``image`` with (B, 4) boxes ``x0, y0, x1, y1`` (pixels) drawn as rectangles."""
    out = to_uint8(image).copy()
    thick = max(1, round(min(out.shape[:2]) / 150))
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cv2.rectangle(
            out, (round(x0), round(y0)), (round(x1), round(y1)), tuple(int(v) for v in color), thick
        )
    return out


def label_colors(levels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int level index (0 subpart, 1 part, 2 whole) -> (H, W, 3) uint8 (:data:`LEVEL_COLORS`).

    Pixels where ``valid`` is False (or the level is negative) are black.
    """
    palette = np.asarray(LEVEL_COLORS, np.uint8)
    levels = np.asarray(levels)
    ok = levels >= 0 if valid is None else (np.asarray(valid, bool) & (levels >= 0))
    out = np.zeros((*levels.shape, 3), np.uint8)
    out[ok] = palette[np.clip(levels[ok], 0, len(palette) - 1)]
    return out


def granularity_picture(
    rgb: np.ndarray, levels: np.ndarray, coverage: np.ndarray, opacity: float = 0.7
) -> np.ndarray:
    """The alpha-argmax map (paper Fig. 6) coloured by level, blended over the image by coverage."""
    colours = label_colors(levels)
    w = (opacity * np.clip(np.asarray(coverage, np.float32), 0.0, 1.0))[..., None]
    out = to_uint8(rgb).astype(np.float32) * (1.0 - w) + colours.astype(np.float32) * w
    return (out + 0.5).astype(np.uint8)


class PCABasis:
    """Three principal directions of a low-dimensional feature field, for a stable false-colour view.

    Fitted once on the per-Gaussian features (N, F); :meth:`colors` maps any (..., F) map (a rendered
    16-d field) to RGB with the same basis, so colours do not flicker as the camera moves.
    """

    def __init__(self, features: np.ndarray, seed: int = 0, max_samples: int = 100_000) -> None:
        x = np.asarray(features, dtype=np.float64).reshape(-1, np.asarray(features).shape[-1])
        if x.shape[0] > max_samples:
            x = x[np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)]
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        basis = np.zeros((x.shape[1], 3))
        k = min(3, vt.shape[0])
        basis[:, :k] = vt[:k].T
        # a fixed sign per component (largest loading positive) keeps colours reproducible
        signs = np.sign(basis[np.abs(basis).argmax(0), np.arange(3)])
        self.basis = basis * np.where(signs == 0, 1.0, signs)
        proj = (x - self.mean) @ self.basis
        self.lo = np.percentile(proj, 1, axis=0)
        self.hi = np.percentile(proj, 99, axis=0)

    def colors(self, maps: np.ndarray, coverage: np.ndarray | None = None) -> np.ndarray:
        """(..., F) features -> (..., 3) uint8. Rendered features are alpha-weighted sums, so pass the
        render's (...) ``coverage`` (alpha) to compare them with the per-Gaussian fit."""
        f = np.asarray(maps, dtype=np.float64)
        if coverage is not None:
            a = np.asarray(coverage, np.float64)[..., None]
            f = f / np.maximum(a, 1e-6)
        proj = (f - self.mean) @ self.basis
        rgb = (proj - self.lo) / np.maximum(self.hi - self.lo, 1e-9)
        if coverage is not None:
            rgb = rgb * np.clip(np.asarray(coverage, np.float64), 0.0, 1.0)[..., None]
        return to_uint8(rgb)


def put_label(image: np.ndarray, text: str, scale: float | None = None) -> np.ndarray:
    """A copy of ``image`` with ``text`` in white on a dark band at the top left."""
    out = to_uint8(image).copy()
    H, W = out.shape[:2]
    scale = scale if scale is not None else max(0.3, min(H, W) / 400)
    thick = max(1, round(scale * 1.5))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, round(4 * scale))
    cv2.rectangle(out, (0, 0), (min(W, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(
        out, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA
    )
    return out


def side_by_side(images: Sequence[np.ndarray], gap: int = 0) -> np.ndarray:
    """Images of the same height placed left to right (``gap`` black columns between them)."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    H = images[0].shape[0]
    parts: list[np.ndarray] = []
    for k, im in enumerate(images):
        im = to_uint8(im)
        if im.shape[0] != H:
            raise ValueError(f"image {k} has height {im.shape[0]}, expected {H}")
        if k and gap:
            parts.append(np.zeros((H, gap, 3), np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)


def grid(images: Sequence[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Equal-size images in a grid of ``columns`` (row-major), separated by ``gap`` black pixels."""
    rows = [side_by_side(images[i : i + columns], gap) for i in range(0, len(images), columns)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    out: list[np.ndarray] = []
    for k, r in enumerate(rows):
        if k and gap:
            out.append(np.zeros((gap, width, 3), np.uint8))
        out.append(r)
    return np.concatenate(out, axis=0)


def query_picture(
    rgb: np.ndarray,
    normalised: np.ndarray,
    point: tuple[int, int] | None,
    opacity: float = OVERLAY_OPACITY,
) -> np.ndarray:
    """What ``gags query`` writes as ``<view>_composite.png``: relevance over RGB and the point."""
    out = composite_relevance(rgb, normalised, opacity)
    return draw_point(out, point) if point is not None else out


def eval_panel(
    rgb: np.ndarray,
    gt_mask: np.ndarray,
    pred_mask: np.ndarray,
    points: np.ndarray,
    boxes: np.ndarray,
    normalised: np.ndarray | None = None,
    title: str = "",
    iou: float | None = None,
    hit: bool | None = None,
) -> np.ndarray:
    """One frame-and-query panel of ``gags eval``: RGB | ground-truth mask | predicted mask | point vs box.

    Args:
        rgb: (H, W, 3) the rendered (or captured) view. gt_mask, pred_mask: (H, W) bool.
        points: (P, 2) localisation candidates (x, y); the first is drawn, green on a hit, red on a miss.
        boxes: (B, 4) ground-truth boxes x0, y0, x1, y1. normalised: (H, W) relevance shown under the point.
        title, iou, hit: written on the tiles.
    Returns:
        (H, 4 W + 6, 3) uint8.
    """
    base = to_uint8(rgb)
    gt = tint(base, np.asarray(gt_mask, bool), (0, 220, 0), 0.55, outline=True)
    pred = tint(base, np.asarray(pred_mask, bool), (255, 64, 64), 0.55, outline=True)
    loc = composite_relevance(base, normalised) if normalised is not None else base
    loc = draw_boxes(loc, boxes, (0, 255, 0))
    if len(points):
        good = bool(hit) if hit is not None else False
        loc = draw_point(loc, tuple(np.asarray(points)[0]), (0, 255, 0) if good else (255, 40, 40))
    labels = [
        title or "rgb",
        "ground truth",
        "predicted" + (f" IoU {100 * iou:.0f}%" if iou is not None else ""),
        "point vs box" + ("" if hit is None else (": hit" if hit else ": miss")),
    ]
    return side_by_side([put_label(t, s) for t, s in zip((base, gt, pred, loc), labels, strict=True)], gap=2)


def eval_frame_picture(rgb: np.ndarray, rows: Sequence[dict], tile_width: int = 320) -> np.ndarray:
    """All queries of one evaluation frame: one :func:`eval_panel` row per category, tiles at most
    ``tile_width`` pixels wide (what ``gags eval`` writes as ``eval/frames/<frame>.png``).

    Args:
        rgb: (H, W, 3) the frame's render.
        rows: one dict per category with ``category``, ``gt_mask`` (H, W) bool, ``boxes`` (B, 4),
            ``mask`` (H, W) bool predicted, ``points`` (P, 2) (x, y), and optionally ``normalised``
            (H, W), ``iou``, ``hit``. Torch tensors on the CPU are accepted.
    """
    H, W = rgb.shape[:2]
    s = min(1.0, tile_width / W)
    size = (max(1, round(W * s)), max(1, round(H * s)))

    def small(image: np.ndarray, nearest: bool = False) -> np.ndarray:
        image = np.asarray(image)
        if s == 1.0:
            return image
        if image.dtype == bool:
            return cv2.resize(image.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    base = small(to_uint8(np.asarray(rgb)))
    panels = []
    for row in rows:
        normalised = row.get("normalised")
        panels.append(
            eval_panel(
                base,
                small(np.asarray(row["gt_mask"], bool)),
                small(np.asarray(row["mask"], bool)),
                np.asarray(row["points"], dtype=np.float64).reshape(-1, 2) * s,
                np.asarray(row["boxes"], dtype=np.float64).reshape(-1, 4) * s,
                None if normalised is None else small(np.asarray(normalised, np.float32)),
                title=str(row.get("category", "")),
                iou=row.get("iou"),
                hit=row.get("hit"),
            )
        )
    if not panels:
        return base
    return grid(panels, 1, gap=2)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) or (H, W) image as PNG atomically; returns the path."""
    import imageio.v3 as iio

    from gags.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(np.asarray(image)), extension=".png")
    return path
