"""Training targets of the distillation: per view, the segment-index maps and the mask features.

Reads the prepare stage's ``segments/STEM.npz`` (``maps`` int32 (3, H, W), -1 = none) and
``features/STEM.npz`` (``features`` float16 (N, D)) for every training camera, checks them, and
resizes the maps (nearest, as the reference's ``F.interpolate``) to the camera downscaled by the
distillation's factor. :func:`load_all_view_targets` keeps every view in memory, as the reference
does (a few MB per view; small scenes, tests); ``gags distill`` streams them instead
(:class:`gags.distill.targets.ViewTargetStore`), so its memory does not grow with the views.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gags.errors import file_error, suggest
from gags.io import NPZ_ERRORS
from gags.models.segmenter import LEVELS
from gags.runfolder import RunFolder
from gags.scene.cameras import Camera, stack_cameras


@dataclasses.dataclass
class ViewTargets:
    """One training view at the distillation resolution.

    Attributes:
        camera: the camera scaled to (width, height) = (W', H').
        maps: (L, H', W') int64 segment ids per level (rows of ``features``), -1 = none.
        features: (N, D) float32 L2-normalised mask features.
        valid: (P,) int64 flat pixel indices (into H' * W') that have a mask at every level.
    """

    camera: Camera
    maps: torch.Tensor
    features: torch.Tensor
    valid: torch.Tensor

    @property
    def valid_ids(self) -> torch.Tensor:
        """(P, L) segment ids of the valid pixels."""
        return self.maps.reshape(self.maps.shape[0], -1)[:, self.valid].T

    def level_features(self) -> torch.Tensor:
        """(P, L, D) per-level target features f_n at the valid pixels."""
        return self.features[self.valid_ids]

    def subsample(self, pixels: int, seed: int) -> ViewTargets:
        """The same view supervised at ``pixels`` of its valid pixels, drawn uniformly without replacement.

        ``pixels <= 0`` or at least the valid count returns the view itself. The draw depends only on
        ``seed`` (callers pass one per step and view, so resuming a run redraws the same pixels). Every
        GaD term is a mean over regions of per-region means (Eq. 5) or variances (Eq. 6), which a
        uniform sample estimates without bias; the alpha smoothing that builds m_f sees zeros at the
        unsampled pixels, which scales every level alike within a window and so keeps its argmax an
        estimate of the full map's.
        """
        n = int(self.valid.numel())
        if pixels <= 0 or n <= pixels:
            return self
        g = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(n, generator=g)[:pixels].sort().values.to(self.valid.device)
        return dataclasses.replace(self, valid=self.valid[keep])

    def camera_tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(viewmats (1, 4, 4), Ks (1, 3, 3)) of this view."""
        return stack_cameras([self.camera], device)


def _load_npz(path: Path, key: str, produced_by: str) -> np.ndarray:
    if not path.exists():
        raise file_error(path, f"is missing: run {produced_by} first")
    try:
        with np.load(path) as data:
            if key not in data:
                raise file_error(path, f"has no array {key!r} (found {sorted(data.files)})")
            return data[key]
    except NPZ_ERRORS as e:
        raise file_error(
            path,
            f"is not a readable .npz file ({type(e).__name__}: {e}): "
            f"re-run {produced_by} (it redoes unreadable views)",
        ) from e


def load_view_targets(run: RunFolder, camera: Camera, downscale: float) -> ViewTargets:
    """Read and check one view's segments and features, resized to ``camera.scaled(downscale)``."""
    seg_path, feat_path = run.segment_file(camera.name), run.feature_file(camera.name)
    maps = _load_npz(seg_path, "maps", suggest("gags", "prepare", run.root))
    feats = _load_npz(feat_path, "features", suggest("gags", "prepare", run.root))
    if maps.dtype.kind not in "iu":
        raise file_error(seg_path, f"'maps' must hold integers, got {maps.dtype}")
    if feats.dtype.kind not in "fiu":
        raise file_error(feat_path, f"'features' must hold numbers, got {feats.dtype}")
    if maps.ndim != 3 or maps.shape[0] != len(LEVELS):
        raise file_error(seg_path, f"'maps' must have shape (3, H, W), got {maps.shape}")
    if maps.shape[1:] != (camera.height, camera.width):
        raise file_error(
            seg_path,
            f"'maps' is {maps.shape[2]}x{maps.shape[1]} but camera {camera.name} is "
            f"{camera.width}x{camera.height}: re-run `gags prepare`",
        )
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise file_error(feat_path, f"'features' must have shape (N, D) with N > 0, got {feats.shape}")
    if maps.max() >= feats.shape[0] or maps.min() < -1:
        raise file_error(
            seg_path, f"segment ids must lie in [-1, {feats.shape[0] - 1}] (the rows of {feat_path.name})"
        )
    features = torch.from_numpy(feats.astype(np.float32))
    if not torch.isfinite(features).all():
        raise file_error(feat_path, "'features' holds NaN or infinite values")

    scaled = camera.scaled(downscale)
    maps_t = torch.from_numpy(maps.astype(np.int64))
    if (scaled.height, scaled.width) != tuple(maps_t.shape[1:]):
        # exact for ids < 2^24 in float32; float64 keeps every int32 exact
        resized = F.interpolate(maps_t[None].double(), size=(scaled.height, scaled.width), mode="nearest")
        maps_t = resized[0].long()
    valid = torch.nonzero((maps_t >= 0).all(0).reshape(-1)).squeeze(1)
    return ViewTargets(camera=scaled, maps=maps_t, features=features, valid=valid)


def load_all_view_targets(run: RunFolder, cameras: list[Camera], downscale: float) -> list[ViewTargets]:
    """:func:`load_view_targets` for every camera; checks that the feature size agrees across views."""
    views = [load_view_targets(run, cam, downscale) for cam in cameras]
    dims = {v.features.shape[1] for v in views}
    if len(dims) > 1:
        raise file_error(run.features, f"feature files disagree on the embedding size: {sorted(dims)}")
    if sum(int(v.valid.numel()) for v in views) == 0:
        raise file_error(
            run.segments, "no pixel has a mask at all three levels in any view: nothing to distil"
        )
    return views


class ViewSampler:
    """One random view per step, without replacement within an epoch (reference train.py:134-137)."""

    def __init__(self, num_views: int, seed: int) -> None:
        self.num_views = num_views
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> int:
        """Index of the next view."""
        if not self.order:
            self.order = torch.randperm(self.num_views, generator=self.generator).tolist()
        return self.order.pop()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = list(state["order"])
