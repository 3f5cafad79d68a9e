"""LERF-OVS label files traced from ground-truth masks.

One JSON per evaluation frame::

    {"info": {"name": "frame_0001.png", "width": W, "height": H},
     "objects": [{"category": "mug handle", "bbox": [x1, y1, x2, y2], "segmentation": [[x, y], ...]}, ...]}

The format has no holes, so a region with holes (the table top around the objects standing on
it) is first cut into horizontal bands through the middle of every hole, which turns each hole
into notches of hole-free pieces. Polygons are the outer boundaries of each piece, traced at the
0.5 level of the mask with ``contourpy`` in the pixel coordinates the LERF evaluation code uses
(pixel (i, j) centred at x = j, y = i), then every vertex is snapped to the centre of the boundary
pixel it touches, so that filling the polygons with their outline (``cv2.fillPoly``, as the
reference evaluation does) gives back the mask exactly. Every piece becomes one object; objects of
the same category are merged by readers.

Two label sets are written for the same frames, each folder with its own ``levels.json`` (category ->
granularity):

- ``labels/`` (:data:`QUERY_LABELS`, the default everywhere): the LERF-OVS-like query set, the regions
  named in each object's ``queries`` (:func:`gags.synthetic.scene.query_names`), each object once or
  twice at a level fixed with the scene;
- ``labels_hierarchy/`` (:data:`HIERARCHY_LABELS`): every region of every level, the "hierarchy stress
  test" (every whole, part and subpart queried in every frame it is visible in), reported separately.
"""

from __future__ import annotations

from pathlib import Path

import contourpy
import numpy as np

from gags.io import write_json_atomic
from gags.synthetic.groundtruth import Hierarchy

#: regions smaller than this many pixels in a frame are not labelled there (too small to query)
MIN_LABEL_AREA = 12
#: folder (inside a scene folder) of the LERF-OVS-like query set, the default label set
QUERY_LABELS = "labels"
#: folder of the all-regions "hierarchy stress test" label set
HIERARCHY_LABELS = "labels_hierarchy"
#: label set name -> folder
LABEL_SETS: dict[str, str] = {"queries": QUERY_LABELS, "hierarchy": HIERARCHY_LABELS}


def label_folder(scene_dir: str | Path, label_set: str = "queries") -> Path:
    """The folder of a generated scene's label set: ``queries`` (default) or ``hierarchy``."""
    if label_set not in LABEL_SETS:
        raise ValueError(f"unknown label set {label_set!r}; choose {' or '.join(LABEL_SETS)}")
    return Path(scene_dir) / LABEL_SETS[label_set]


def trace_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer boundary polygons of the components of ``mask`` (H, W) bool, each (V, 2) float (x, y)."""
    padded = np.pad(mask.astype(np.float64), 1)
    H, W = padded.shape
    gen = contourpy.contour_generator(
        x=np.arange(W) - 1.0, y=np.arange(H) - 1.0, z=padded, fill_type=contourpy.FillType.OuterOffset
    )
    points, offsets = gen.filled(0.5, 2.0)
    polygons = []
    for pts, offs in zip(points, offsets, strict=True):
        outer = _snap_inside(
            pts[offs[0] : offs[1]], padded
        )  # the first ring of a group is its outer boundary
        keep = np.ones(len(outer), bool)
        keep[1:] = (np.diff(outer, axis=0) != 0).any(1)  # drop repeated vertices
        outer = outer[keep]
        if len(outer) < 3:  # a line or a single pixel: repeat vertices (readers want >= 3)
            outer = np.resize(outer, (3, 2))
        polygons.append(outer)
    return polygons


def hole_free_pieces(mask: np.ndarray) -> list[np.ndarray]:
    """Split ``mask`` (H, W) bool into row bands cut through the centre row of every hole.

    Every hole is open towards a band edge afterwards, so each band's components are hole-free;
    the union of the bands is ``mask``.
    """
    from scipy import ndimage

    holes, n = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if n == 0:
        return [mask]
    rows = np.nonzero(holes)[0]
    centres = np.round(ndimage.mean(rows, holes[holes > 0], index=np.arange(1, n + 1))).astype(int)
    cuts = np.unique(np.concatenate([[0], centres, [mask.shape[0]]]))
    pieces = []
    for top, bottom in zip(cuts[:-1], cuts[1:], strict=True):
        piece = np.zeros_like(mask)
        piece[top:bottom] = mask[top:bottom]
        if piece.any():
            pieces.append(piece)
    return pieces


def _snap_inside(poly: np.ndarray, padded: np.ndarray) -> np.ndarray:
    """Move each (V, 2) contour vertex, which sits halfway between an inside and an outside pixel
    centre, onto the inside one. ``padded`` is the mask with a one-pixel zero border (offset 1)."""
    frac_x = np.abs(poly[:, 0] - np.round(poly[:, 0])) > 0.25
    lo = np.where(
        frac_x[:, None],
        np.stack([np.floor(poly[:, 0]), poly[:, 1]], -1),
        np.stack([poly[:, 0], np.floor(poly[:, 1])], -1),
    )
    hi = lo + np.where(frac_x[:, None], [1.0, 0.0], [0.0, 1.0])
    lo_in = padded[lo[:, 1].round().astype(int) + 1, lo[:, 0].round().astype(int) + 1] > 0.5
    return np.where(lo_in[:, None], lo, hi).round()


def frame_objects(
    labels: np.ndarray,
    hierarchy: Hierarchy,
    min_area: int = MIN_LABEL_AREA,
    categories: set[str] | None = None,
) -> list[dict]:
    """LERF-OVS ``objects`` of one frame from its (3, H, W) label maps.

    Every region of every level, or only those named in ``categories``.
    """
    objects = []
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    for rid, count in zip(ids, counts, strict=True):
        if count < min_area or (categories is not None and hierarchy.names[rid] not in categories):
            continue
        level = int(hierarchy.level[rid])
        mask = labels[level] == rid
        for poly in (p for piece in hole_free_pieces(mask) for p in trace_polygons(piece)):
            rows, cols = _polygon_pixels(poly, mask)
            if rows.size == 0:
                continue
            bbox = [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]
            objects.append(
                {
                    "category": hierarchy.names[rid],
                    "bbox": bbox,
                    "segmentation": np.round(poly, 2).tolist(),
                }
            )
    return objects


def _polygon_pixels(poly: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the mask pixels inside the bounding box of ``poly`` (the component's pixels)."""
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    rows, cols = np.nonzero(mask[y0 : y1 + 1, x0 : x1 + 1])
    return rows + y0, cols + x0


def write_frame_labels(
    path: Path,
    image_name: str,
    labels: np.ndarray,
    hierarchy: Hierarchy,
    categories: set[str] | None = None,
) -> dict:
    """Write one LERF-OVS JSON (atomic) and return its content (``categories``: see :func:`frame_objects`)."""
    H, W = labels.shape[1:]
    data = {
        "info": {"name": image_name, "width": int(W), "height": int(H)},
        "objects": frame_objects(labels, hierarchy, categories=categories),
    }
    write_json_atomic(path, data)
    return data
