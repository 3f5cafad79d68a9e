"""LERF-OVS metrics: mask IoU and localisation hits, and their averages (LangSplat's protocol).

- IoU of one (frame, query) pair: |pred AND gt| / |pred OR gt|, gt the union of the category's polygons.
  mIoU is the plain mean over all (frame, query) pairs.
- Localisation: a hit when any of the tied argmax points lies inside any of the category's boxes,
  borders included (x1 <= x <= x2, y1 <= y <= y2, corners in either order). Accuracy = hits / pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """IoU of two (H, W) boolean masks; 1.0 when both are empty (nothing to find, nothing found)."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"mask shapes differ: prediction {tuple(pred.shape)}, ground truth {tuple(gt.shape)}"
        )
    pred, gt = pred.bool(), gt.bool()
    union = int((pred | gt).sum())
    if union == 0:
        return 1.0
    return int((pred & gt).sum()) / union


def localisation_hit(points: torch.Tensor, boxes: torch.Tensor) -> bool:
    """Whether any point lies in any box (inclusive).

    Args:
        points: (P, 2) pixel (x, y).
        boxes: (B, 4) (x1, y1, x2, y2) in pixels, corners in any order.
    """
    if points.numel() == 0 or boxes.numel() == 0:
        return False
    p = points.to(torch.float64)[:, None, :]  # (P, 1, 2)
    b = boxes.to(torch.float64).reshape(-1, 4)
    lo = torch.minimum(b[:, :2], b[:, 2:])[None]  # (1, B, 2)
    hi = torch.maximum(b[:, :2], b[:, 2:])[None]
    inside = ((p >= lo) & (p <= hi)).all(dim=-1)  # (P, B)
    return bool(inside.any())


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; NaN for no values (reported as null in JSON)."""
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def summarise(records: list[dict], group_key: str) -> dict[str, dict]:
    """mIoU, mAcc and the pair count of ``records`` grouped by ``record[group_key]``.

    Each record is one (frame, query) pair with at least ``iou`` (float) and ``hit`` (bool).
    Returns ``{group: {"miou", "macc", "pairs"}}`` in order of first appearance.
    """
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(str(record[group_key]), []).append(record)
    return {name: aggregate(items) for name, items in groups.items()}


def aggregate(records: list[dict]) -> dict[str, float | int]:
    """``{"miou": mean IoU, "macc": hits / pairs, "pairs": count}`` over (frame, query) records."""
    return {
        "miou": mean(r["iou"] for r in records),
        "macc": mean(float(r["hit"]) for r in records),
        "pairs": len(records),
    }
