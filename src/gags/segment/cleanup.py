"""Per-level mask clean-up (LangSplat/GAGS ``mask_nms``, spec section 1) and index-map painting.

Rules, per level, with ``score = stability * pred_iou`` (masks ranked by score, descending):

- drop a mask whose IoU with any higher-scored mask exceeds ``iou_thr`` (0.8) — every
  higher-scored mask counts, kept or not, as in the reference;
- drop a mask whose score is at most ``score_thr`` (0.7); when that would drop every mask, the
  ``fallback_top_k`` (3) best survive this test (the reference means to do this but raises an
  IndexError, spec section 6.7);
- drop a mask with at least ``contain_thr`` (85 %) of its area inside another mask that it covers
  less than ``inner_thr`` (50 %) of, whichever of the two scores higher (preprocess.py:400-441).

The reference evaluates the pairwise overlaps in a Python double loop (minutes per image); here
one matrix product over pixel chunks gives all intersections at once. The survivors keep their
input order, which is also the painting order: later masks overwrite earlier ones.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class CleanupConfig:
    """Thresholds of the per-level clean-up (reference values: preprocess.py:380-471)."""

    iou_thr: float = 0.8
    score_thr: float = 0.7
    inner_thr: float = 0.5
    contain_thr: float = 0.85
    fallback_top_k: int = 3
    #: pixels per chunk of the intersection product (bounds memory to masks x chunk floats)
    pixel_chunk: int = 1 << 16


def pairwise_intersections(masks: torch.Tensor, pixel_chunk: int = 1 << 16) -> torch.Tensor:
    """(M, H, W) bool -> (M, M) float64 pixel counts of every pairwise intersection (exact)."""
    M = masks.shape[0]
    flat = masks.reshape(M, -1)
    inter = torch.zeros(M, M, dtype=torch.float64, device=masks.device)
    for start in range(0, flat.shape[1], pixel_chunk):
        block = flat[:, start : start + pixel_chunk].float()  # exact: chunk sums stay below 2^24
        inter += (block @ block.T).double()
    return inter


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, cfg: CleanupConfig | None = None) -> torch.Tensor:
    """Indices of the masks to keep, in input order -> (K,) int64.

    Args:
        masks: (M, H, W) bool masks of one level. scores: (M,) stability x predicted IoU.
    """
    cfg = cfg or CleanupConfig()
    M = masks.shape[0]
    if M == 0:
        return torch.zeros(0, dtype=torch.long, device=masks.device)
    scores = scores.to(masks.device).double()
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(M, device=masks.device)

    inter = pairwise_intersections(masks, cfg.pixel_chunk)
    area = inter.diagonal().clone()
    union = area[:, None] + area[None, :] - inter
    iou = inter / union.clamp(min=1)
    higher = rank[None, :] < rank[:, None]  # [m, k]: k ranks above m
    drop_iou = (iou > cfg.iou_thr) & higher

    conf = scores > cfg.score_thr
    if not bool(conf.any()):
        conf[order[: cfg.fallback_top_k]] = True

    frac_inside = inter / area[:, None].clamp(min=1)  # [m, k]: share of m inside k
    frac_cover = inter / area[None, :].clamp(min=1)  # [m, k]: share of k covered by m
    contained = (frac_inside >= cfg.contain_thr) & (frac_cover < cfg.inner_thr)
    contained.fill_diagonal_(False)

    keep = conf & ~drop_iou.any(1) & ~contained.any(1) & (area > 0)
    return torch.nonzero(keep).reshape(-1)


def mask_nms_loop(
    masks: torch.Tensor, scores: torch.Tensor, cfg: CleanupConfig | None = None
) -> torch.Tensor:
    """The reference's pairwise double loop (slow; tests and benchmark) -> kept indices, input order."""
    cfg = cfg or CleanupConfig()
    M = masks.shape[0]
    if M == 0:
        return torch.zeros(0, dtype=torch.long)
    sorted_scores, idx = torch.sort(scores.double(), descending=True, stable=True)
    ordered = masks[idx]
    area = ordered.reshape(M, -1).sum(1).double()
    iou_max = torch.zeros(M, dtype=torch.float64)
    inner_drop = torch.zeros(M, dtype=torch.bool)
    for i in range(M):
        for j in range(i + 1, M):
            inter = torch.logical_and(ordered[i], ordered[j]).sum().double()
            union = torch.logical_or(ordered[i], ordered[j]).sum().double()
            iou_max[j] = max(iou_max[j], inter / max(union, 1))
            ri, rj = inter / max(area[i], 1), inter / max(area[j], 1)
            if ri < cfg.inner_thr and rj >= cfg.contain_thr:
                inner_drop[j] = True
            if ri >= cfg.contain_thr and rj < cfg.inner_thr:
                inner_drop[i] = True
    conf = sorted_scores > cfg.score_thr
    if not bool(conf.any()):
        conf[: cfg.fallback_top_k] = True
    keep_sorted = conf & (iou_max <= cfg.iou_thr) & ~inner_drop & (area > 0)
    return torch.sort(idx[keep_sorted]).values


def paint_index_maps(levels: list[torch.Tensor]) -> torch.Tensor:
    """Paint each level's masks into an index map -> (L, H, W) int32.

    Args:
        levels: L tensors (M_l, H, W) bool; rows are numbered across levels in order
            (level 0 gets 0..M_0-1, level 1 continues from M_0, ...). Later masks overwrite
            earlier ones; -1 where no mask covers a pixel. An empty level gives an all -1 map.
    """
    maps = []
    offset = 0
    for masks in levels:
        M, H, W = masks.shape
        if M == 0:
            maps.append(torch.full((H, W), -1, dtype=torch.int32, device=masks.device))
            continue
        last = M - 1 - masks.flip(0).to(torch.uint8).argmax(0)  # last mask covering each pixel
        covered = masks.any(0)
        maps.append(torch.where(covered, last + offset, torch.full_like(last, -1)).int())
        offset += M
    return torch.stack(maps)
