"""SAM through ``segment_anything``: one image embedding per image, batched point prompts, three levels.

Each prompt's three multimask outputs become the subpart, part and whole candidates (channels
0/1/2, as the reference fork of ``SamAutomaticMaskGenerator``). Per level we apply the
reference settings (preprocess.py:227-237): predicted IoU > 0.7, stability score >= 0.85 (offset
1.0), box NMS at 0.7 by predicted IoU, then holes and islands under 100 px removed and a second
box NMS that prefers unchanged masks. segment_anything's own ``amg`` utilities do the scoring;
small regions are removed as ``amg.remove_small_regions`` does (:func:`remove_small_regions`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from gags.errors import GagsError, file_error
from gags.models.segmenter import LEVELS, MaskProposals

SamModel = Literal["vit_h", "vit_l", "vit_b"]

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
#: model type -> (file name, size as published, URL)
SAM_CHECKPOINTS: dict[str, tuple[str, str, str]] = {
    "vit_h": ("sam_vit_h_4b8939.pth", "2.56 GB", _SAM_URL + "sam_vit_h_4b8939.pth"),
    "vit_l": ("sam_vit_l_0b3195.pth", "1.25 GB", _SAM_URL + "sam_vit_l_0b3195.pth"),
    "vit_b": ("sam_vit_b_01ec64.pth", "375 MB", _SAM_URL + "sam_vit_b_01ec64.pth"),
}


def sam_cache_dir() -> Path:
    """Where downloaded SAM checkpoints live: ``$GAGS_CACHE/sam`` or ``~/.cache/gags/sam``."""
    root = os.environ.get("GAGS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "gags") / "sam"


@dataclasses.dataclass
class SamConfig:
    """SAM model and the reference thresholds.

    Attributes:
        model: ``vit_h`` (the paper's), ``vit_l`` or ``vit_b``.
        checkpoint: weights file; None downloads the official one into :func:`sam_cache_dir`.
        random_weights: build the architecture with random weights (tests and timing only).
        pred_iou_thresh / stability_thresh / stability_offset / box_nms_thresh / min_region_area:
            the reference's 0.7 / 0.85 / 1.0 / 0.7 / 100 px.
        points_per_batch: prompts decoded at once (64 as SAM's default).
    """

    model: SamModel = "vit_h"
    checkpoint: Path | None = None
    random_weights: bool = False
    pred_iou_thresh: float = 0.7
    stability_thresh: float = 0.85
    stability_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_region_area: int = 100
    points_per_batch: int = 64


def sam_spec(cfg: SamConfig) -> dict:
    """``cfg`` as a JSON-able segmenter spec (``kind`` = ``sam``)."""
    spec = dataclasses.asdict(cfg)
    spec["checkpoint"] = None if cfg.checkpoint is None else str(cfg.checkpoint)
    return {"kind": "sam", **spec}


def resolve_sam_checkpoint(model: str, checkpoint: Path | None, *, download: bool = True) -> Path:
    """The checkpoint to load: ``checkpoint`` if given, else the cached official file (downloaded once)."""
    if model not in SAM_CHECKPOINTS:
        raise GagsError(f"unknown SAM model {model!r}; choose one of {', '.join(SAM_CHECKPOINTS)}")
    name, size, url = SAM_CHECKPOINTS[model]
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise file_error(
                checkpoint, f"SAM checkpoint not found (the official {model} file is {name}, {size}, {url})"
            )
        return checkpoint
    path = sam_cache_dir() / name
    if path.is_file():
        return path
    missing = (
        f"SAM {model} checkpoint {name} ({size}) is missing; download it from {url} "
        f"to {path} or pass --sam-checkpoint"
    )
    if not download:
        raise GagsError(missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as e:  # no network, HTTP error, disk full: the user needs the same advice
        raise GagsError(f"{missing} (download failed: {e})") from e
    return path


def build_sam(cfg: SamConfig, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The SAM model of ``cfg.model`` on ``device``, in eval mode, with its weights loaded."""
    from segment_anything import sam_model_registry

    if cfg.model not in sam_model_registry:
        raise GagsError(f"unknown SAM model {cfg.model!r}; choose one of {', '.join(SAM_CHECKPOINTS)}")
    model = sam_model_registry[cfg.model](checkpoint=None)
    if not cfg.random_weights:
        path = resolve_sam_checkpoint(cfg.model, cfg.checkpoint)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as e:
            raise file_error(
                path, f"is not a valid SAM {cfg.model} checkpoint ({type(e).__name__}: {e})"
            ) from e
    return model.to(device).eval()


def remove_small_regions(masks: np.ndarray, area: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``amg.remove_small_regions`` on each mask of a stack (8-connectivity).

    The same ``cv2.connectedComponentsWithStats`` call per mask, so the result is SAM's exactly,
    including which region survives when every island is small and several are the largest (the first
    in OpenCV's label order, which is not raster order).

    Args:
        masks: (M, H, W) bool. area: regions below this many pixels go. mode: ``holes`` or ``islands``.
    Returns:
        the new (M, H, W) masks and (M,) bool "changed", which is SAM's flag: True when the mask had a
        small region, even if it was kept. For ``islands``, a mask whose regions are all small keeps its
        largest one, as SAM does.
    """
    holes = mode == "holes"
    new = masks.copy()
    changed = np.zeros(masks.shape[0], dtype=bool)
    for i, mask in enumerate(masks):
        working = (mask ^ holes).astype(np.uint8)
        _, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
        sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
        small = sizes < area
        if not small.any():
            continue
        changed[i] = True
        if holes:
            fill = np.concatenate([[True], small])  # label 0 of the inverted mask is the mask itself
        else:
            fill = np.concatenate([[False], ~small])
            if not fill.any():
                fill[1 + np.argmax(sizes)] = True
        new[i] = fill[regions]
    return new, changed


class SamSegmenter:
    """:class:`~gags.models.segmenter.Segmenter` backed by ``segment_anything.SamPredictor``.

    After each :meth:`segment`, ``last_timings`` holds seconds spent in ``sam_encoder`` (the
    image embedding, once per image) and ``sam_decoder`` (prompt decoding and per-level filtering).
    """

    def __init__(self, model: torch.nn.Module, cfg: SamConfig | None = None) -> None:
        from segment_anything import SamPredictor

        self.cfg = cfg or SamConfig()
        self.predictor = SamPredictor(model)
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_config(cls, cfg: SamConfig, device: torch.device | str = "cpu") -> SamSegmenter:
        return cls(build_sam(cfg, device), cfg)

    @property
    def spec(self) -> dict:
        """What :func:`gags.models.registry.build_segmenter` needs to rebuild this segmenter."""
        return sam_spec(self.cfg)

    @torch.no_grad()
    def segment(self, image: np.ndarray, points: np.ndarray, *, image_name: str = "") -> MaskProposals:
        """(H, W, 3) uint8 RGB and (P, 2) pixel (x, y) prompts -> filtered masks per level."""
        t0 = time.perf_counter()
        self.predictor.set_image(np.ascontiguousarray(image), image_format="RGB")
        t1 = time.perf_counter()
        H, W = image.shape[:2]
        device = self.predictor.device
        coords = self.predictor.transform.apply_coords(np.asarray(points, dtype=np.float64), (H, W))
        parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in LEVELS]
        for start in range(0, len(coords), self.cfg.points_per_batch):
            batch = torch.as_tensor(coords[start : start + self.cfg.points_per_batch], dtype=torch.float32)
            batch = batch.to(device)[:, None, :]
            labels = torch.ones(batch.shape[:2], dtype=torch.int64, device=device)
            logits, iou, _ = self.predictor.predict_torch(
                batch, labels, multimask_output=True, return_logits=True
            )
            for level in range(len(LEVELS)):
                parts[level].append(self._threshold(logits[:, level], iou[:, level]))
        result = [self._postprocess(level_parts, H, W) for level_parts in parts]
        self.last_timings = {"sam_encoder": t1 - t0, "sam_decoder": time.perf_counter() - t1}
        return MaskProposals(
            masks=[r[0] for r in result], pred_iou=[r[1] for r in result], stability=[r[2] for r in result]
        )

    def _threshold(self, logits: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, H, W) logits, (B,) predicted IoU -> kept (masks bool, iou, stability) on the CPU."""
        from segment_anything.utils.amg import calculate_stability_score

        threshold = self.predictor.model.mask_threshold
        stability = calculate_stability_score(logits, threshold, self.cfg.stability_offset)
        keep = (iou > self.cfg.pred_iou_thresh) & (stability >= self.cfg.stability_thresh)
        return (logits[keep] > threshold).cpu(), iou[keep].float().cpu(), stability[keep].float().cpu()

    def _postprocess(self, parts: list[tuple[torch.Tensor, ...]], H: int, W: int) -> tuple[torch.Tensor, ...]:
        """Box NMS, small-region removal and the second NMS for one level, as SAM's AMG does."""
        from segment_anything.utils.amg import batched_mask_to_box
        from torchvision.ops import batched_nms

        if not parts:
            return torch.zeros(0, H, W, dtype=torch.bool), torch.zeros(0), torch.zeros(0)
        masks = torch.cat([p[0] for p in parts])
        iou = torch.cat([p[1] for p in parts])
        stability = torch.cat([p[2] for p in parts])
        if masks.shape[0] == 0:
            return masks, iou, stability
        zeros = torch.zeros(masks.shape[0], dtype=torch.long)
        keep = batched_nms(batched_mask_to_box(masks).float(), iou, zeros, self.cfg.box_nms_thresh)
        masks, iou, stability = masks[keep], iou[keep], stability[keep]
        if self.cfg.min_region_area > 0:
            arr = masks.numpy()
            arr, changed_holes = remove_small_regions(arr, self.cfg.min_region_area, "holes")
            arr, changed_islands = remove_small_regions(arr, self.cfg.min_region_area, "islands")
            masks = torch.from_numpy(arr)
            unchanged = torch.from_numpy(~(changed_holes | changed_islands)).float()
            zeros = torch.zeros(masks.shape[0], dtype=torch.long)
            keep = batched_nms(batched_mask_to_box(masks).float(), unchanged, zeros, self.cfg.box_nms_thresh)
            masks, iou, stability = masks[keep], iou[keep], stability[keep]
        return masks, iou, stability
