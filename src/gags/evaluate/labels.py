"""Reader for LERF-OVS label files (the format LangSplat published; also what ``gags.synthetic`` writes).

One JSON per labelled frame::

    {"info": {"height": H, "width": W, "name": "frame_00001.jpg"},
     "objects": [{"category": "mug", "bbox": [x1, y1, x2, y2], "segmentation": [[x, y], ...]}, ...]}

As in the reference (LangSplat ``eval/evaluate_iou_loc.py`` and ``eval/utils.py::polygon_to_mask``): the
polygon's vertices are cast to int32 (truncated toward zero) and filled, boundary included, with
``cv2.fillPoly`` (8-connected edges, no sub-pixel shift), so the masks are the benchmark's pixel for pixel;
objects that repeat a category are merged (mask OR, boxes collected). The frame is identified by
``info.name`` and matched to the scene's camera of that image name (see :func:`match_cameras`).

``levels.json`` next to the labels (or any file given) maps category -> ``subpart`` | ``part`` | ``whole``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from gags.errors import GagsError, file_error
from gags.models.segmenter import LEVELS

#: name of the category -> granularity file looked for next to the label JSONs
LEVELS_FILE = "levels.json"


@dataclasses.dataclass
class CategoryLabel:
    """Ground truth of one category in one frame.

    Attributes:
        mask: (H, W) bool, union of the category's polygons.
        boxes: (B, 4) float64 boxes (x1, y1, x2, y2) in pixels, one per labelled object.
    """

    mask: torch.Tensor
    boxes: torch.Tensor


@dataclasses.dataclass
class FrameLabels:
    """All labels of one frame.

    Attributes:
        name: image name from ``info.name`` (e.g. ``frame_00001.jpg``).
        path: the label file.
        height, width: label image size in pixels (the evaluation renders at this size).
        categories: category -> label, in order of first appearance in the file.
    """

    name: str
    path: Path
    height: int
    width: int
    categories: dict[str, CategoryLabel]


def polygon_mask(height: int, width: int, polygon: np.ndarray) -> np.ndarray:
    """Fill a polygon (P, 2) of pixel (x, y) vertices into an (H, W) bool mask, boundary included.

    The reference's ``cv2.fillPoly`` on int32 vertices (float coordinates truncated toward zero);
    vertices may lie outside the image.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [np.asarray(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def read_frame_labels(path: Path) -> FrameLabels:
    """Parse one LERF-OVS label JSON; raises :class:`GagsError` naming the file and the problem."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or invalid UTF-8
        raise file_error(path, f"cannot read the label JSON ({type(e).__name__}: {e})") from e
    info = data.get("info") if isinstance(data, dict) else None
    objects = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(info, dict) or not isinstance(objects, list):
        raise file_error(path, 'not a LERF-OVS label file: expected {"info": {...}, "objects": [...]}')
    try:
        height, width, name = int(info["height"]), int(info["width"]), str(info["name"])
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise file_error(path, f"info needs integer height, width and a name ({e})") from e
    if height <= 0 or width <= 0 or height > 1 << 15 or width > 1 << 15:
        raise file_error(path, f"info has an impossible size {width}x{height}")
    if info["height"] != height or info["width"] != width or isinstance(info["height"], bool):
        raise file_error(
            path, f"info height and width must be whole numbers, got {info['width']!r}x{info['height']!r}"
        )

    masks: dict[str, np.ndarray] = {}
    boxes: dict[str, list[np.ndarray]] = {}
    for k, obj in enumerate(objects):
        category, polygon, box = _parse_object(path, k, obj)
        mask = polygon_mask(height, width, polygon)
        masks[category] = masks[category] | mask if category in masks else mask
        boxes.setdefault(category, []).append(box)
    categories = {
        c: CategoryLabel(mask=torch.from_numpy(masks[c]), boxes=torch.from_numpy(np.stack(boxes[c])))
        for c in masks
    }
    return FrameLabels(name=name, path=path, height=height, width=width, categories=categories)


def _parse_object(path: Path, k: int, obj: Any) -> tuple[str, np.ndarray, np.ndarray]:
    """Validate object ``k``: its category, polygon (P, 2) and box (4,)."""
    if not isinstance(obj, dict) or not str(obj.get("category", "")).strip():
        raise file_error(path, f"object {k} has no category")
    category = str(obj["category"]).strip()
    try:
        polygon = np.asarray(obj.get("segmentation") or [], dtype=np.float64).reshape(-1, 2)
    except ValueError as e:
        raise file_error(
            path, f'category "{category}" (object {k}): segmentation is not a list of [x, y]'
        ) from e
    if polygon.shape[0] < 3:
        raise file_error(path, f'category "{category}" (object {k}) has no polygon (needs >= 3 vertices)')
    if not np.isfinite(polygon).all() or np.abs(polygon).max() > 1e6:
        raise file_error(
            path, f'category "{category}" (object {k}): segmentation has NaN, infinite or absurd vertices'
        )
    try:
        box = np.asarray(obj["bbox"], dtype=np.float64).reshape(4)
    except (KeyError, TypeError, ValueError) as e:
        raise file_error(path, f'category "{category}" (object {k}): bbox must be [x1, y1, x2, y2]') from e
    if not np.isfinite(box).all():
        raise file_error(path, f'category "{category}" (object {k}): bbox has NaN or infinite values')
    return category, polygon, box


def read_labels(folder: str | Path, pattern: str = "*.json") -> list[FrameLabels]:
    """Every label file in ``folder`` matching ``pattern`` (``levels.json`` excluded), sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GagsError(f"{folder}: label folder does not exist")
    paths = sorted(p for p in folder.glob(pattern) if p.name != LEVELS_FILE)
    if not paths:
        raise GagsError(f"{folder}: no label files ({pattern}) in the label folder")
    frames = [read_frame_labels(p) for p in paths]
    names = [f.name for f in frames]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GagsError(f"{folder}: several label files name the same frame: {', '.join(duplicates)}")
    return frames


def read_levels(path: str | Path) -> dict[str, str]:
    """Category -> level (``subpart``, ``part`` or ``whole``) from a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or invalid UTF-8
        raise file_error(path, f"cannot read the category-to-level JSON ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise file_error(path, 'expected a JSON object {"category": "subpart" | "part" | "whole", ...}')
    bad = {c: v for c, v in data.items() if v not in LEVELS}
    if bad:
        raise file_error(path, f"levels must be one of {', '.join(LEVELS)}; got {bad}")
    return {str(c).strip(): str(v) for c, v in data.items()}


def find_levels(labels: Path, override: Path | None = None) -> dict[str, str]:
    """The granularity of each category: ``override`` if given, else ``labels/levels.json``, else empty."""
    if override is not None:
        if not Path(override).is_file():
            raise GagsError(f"{override}: category-to-level file does not exist")
        return read_levels(override)
    default = Path(labels) / LEVELS_FILE
    return read_levels(default) if default.is_file() else {}


def match_cameras(frames: list[FrameLabels], camera_names: list[str]) -> list[int]:
    """Index into ``camera_names`` of each frame's camera, by image name with or without extension.

    Raises :class:`GagsError` naming the label file of a frame whose image is not in the scene.
    """
    exact = {n: i for i, n in enumerate(camera_names)}
    by_stem: dict[str, int] = {}
    for i, n in enumerate(camera_names):
        by_stem.setdefault(Path(n).stem, i)
    indices = []
    for frame in frames:
        index = exact.get(frame.name, by_stem.get(Path(frame.name).stem))
        if index is None:
            sample = ", ".join(camera_names[:5]) + (", ..." if len(camera_names) > 5 else "")
            raise file_error(
                frame.path, f'labels frame "{frame.name}", which is not an image of the scene ({sample})'
            )
        indices.append(index)
    return indices
