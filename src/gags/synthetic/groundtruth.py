"""Ground truth of a synthetic scene: rendering it through ``render()``, and reading it back.

Label maps are rendered as one-hot feature channels of the subpart id through the same
:func:`gags.splats.render.render` as everything else, then ``argmax`` where alpha > 0.5 (-1
elsewhere); parts and wholes follow from the hierarchy. Region ids are unique across levels.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import torch

from gags.errors import GagsError, file_error
from gags.scene.cameras import Camera, stack_cameras
from gags.splats.gaussians import Gaussians
from gags.splats.projection import project_gaussians
from gags.splats.render import render

LEVELS: tuple[str, str, str] = ("subpart", "part", "whole")
#: pixels with accumulated opacity below this are background (-1)
ALPHA_FOREGROUND = 0.5
#: side of the square blocks rendered one at a time: bounds memory on large images (one block at 200x150)
BLOCK = 256


@dataclasses.dataclass
class ViewTruth:
    """Ground truth of one view: ``rgb`` (H, W, 3) float in [0, 1], ``depth`` (H, W) camera z in metres
    (0 on background), ``alpha`` (H, W), ``subpart`` (H, W) int64 subpart region id or -1."""

    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray
    subpart: np.ndarray


def render_view_truth(
    gaussians: Gaussians, subpart_of: torch.Tensor, n_regions: int, camera: Camera, backend: str = "torch"
) -> ViewTruth:
    """Render RGB, depth and the subpart label map of ``camera`` block by block.

    Args:
        gaussians: the scene's splats (SH colours).
        subpart_of: (N,) int64 subpart region id of every Gaussian (ids index one-hot channels).
        n_regions: number of one-hot channels (largest region id + 1).
    Only the Gaussians whose screen footprint touches a block are rendered for it, with the
    principal point shifted so the block is a small image of its own.
    """
    viewmat, K = stack_cameras([camera])
    with torch.no_grad():
        proj = project_gaussians(
            gaussians.means,
            gaussians.quats,
            gaussians.scales,
            gaussians.opacities,
            viewmat,
            K,
            camera.width,
            camera.height,
        )
        center, radius = proj.means2d[0], proj.radii[0].float()
        visible = (proj.radii[0] > 0).all(-1)
        onehot = torch.nn.functional.one_hot(subpart_of, n_regions).float()
        tagged = dataclasses.replace(gaussians, features=onehot, feature_names=[])
        H, W = camera.height, camera.width
        rgb, depth, alpha = (
            np.zeros((H, W, 3), np.float32),
            np.zeros((H, W), np.float32),
            np.zeros((H, W), np.float32),
        )
        feats = np.zeros((H, W, n_regions), np.float32)
        for y0 in range(0, H, BLOCK):
            for x0 in range(0, W, BLOCK):
                h, w = min(BLOCK, H - y0), min(BLOCK, W - x0)
                lo = center - radius
                hi = center + radius
                touch = (
                    visible
                    & (hi[:, 0] >= x0)
                    & (lo[:, 0] <= x0 + w)
                    & (hi[:, 1] >= y0)
                    & (lo[:, 1] <= y0 + h)
                )
                if not bool(touch.any()):
                    continue
                K_block = K.clone()
                K_block[0, 0, 2] -= x0
                K_block[0, 1, 2] -= y0
                out = render(
                    tagged.subset(touch),
                    viewmat,
                    K_block,
                    w,
                    h,
                    render_features=True,
                    backend=backend,  # type: ignore[arg-type]
                )
                rgb[y0 : y0 + h, x0 : x0 + w] = out.rgb[0].numpy()
                depth[y0 : y0 + h, x0 : x0 + w] = out.depth[0].numpy()
                alpha[y0 : y0 + h, x0 : x0 + w] = out.alpha[0].numpy()
                feats[y0 : y0 + h, x0 : x0 + w] = out.features[0].numpy()
    subpart = np.where(alpha > ALPHA_FOREGROUND, feats.argmax(-1), -1)
    depth = np.where(alpha > 1e-6, depth, 0.0).astype(np.float32)
    return ViewTruth(rgb=np.clip(rgb, 0, 1), depth=depth, alpha=alpha, subpart=subpart)


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """The region tree. Arrays are indexed by region id (unique across levels).

    Attributes:
        names: (R,) region names. level: (R,) int 0 subpart / 1 part / 2 whole.
        parent: (R,) id of the parent region (-1 for wholes). object: (R,) id of the whole it belongs to.
    """

    names: list[str]
    level: np.ndarray
    parent: np.ndarray
    object: np.ndarray

    @classmethod
    def from_json(cls, path: Path) -> Hierarchy:
        try:
            regions = json.loads(Path(path).read_text())["regions"]
            regions = sorted(regions, key=lambda r: r["id"])
            if [r["id"] for r in regions] != list(range(len(regions))):
                raise ValueError("region ids must be 0..R-1")
            return cls(
                names=[r["name"] for r in regions],
                level=np.array([LEVELS.index(r["level"]) for r in regions]),
                parent=np.array([r["parent"] for r in regions]),
                object=np.array([r["object"] for r in regions]),
            )
        except FileNotFoundError as e:
            raise file_error(path, "is missing: not a synthetic scene folder (run `gags demo`)") from e
        except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
            raise file_error(path, f"is not a valid hierarchy file ({e})") from e

    def to_json(self) -> dict:
        return {
            "levels": list(LEVELS),
            "regions": [
                {"id": i, "name": n, "level": LEVELS[int(lv)], "parent": int(p), "object": int(o)}
                for i, (n, lv, p, o) in enumerate(
                    zip(self.names, self.level, self.parent, self.object, strict=True)
                )
            ],
        }

    def __len__(self) -> int:
        return len(self.names)

    def ancestors(self, subpart: np.ndarray) -> np.ndarray:
        """(3, ...) region ids of (subpart, part, whole) for an array of subpart ids (-1 stays -1)."""
        parent = np.append(self.parent, -1)  # index -1 -> -1
        part = parent[subpart]
        return np.stack([subpart, part, parent[part]])

    def levels_of_names(self) -> dict[str, str]:
        """Category name -> granularity (``subpart`` / ``part`` / ``whole``)."""
        return {n: LEVELS[int(lv)] for n, lv in zip(self.names, self.level, strict=True)}


class GroundTruthStore:
    """Reads ``hierarchy.json`` and ``gt/<stem>.npz`` of a generated scene folder (cached per view)."""

    def __init__(self, scene_dir: str | Path) -> None:
        self.root = Path(scene_dir)
        if not self.root.is_dir():
            raise GagsError(
                f"{self.root}: synthetic scene folder does not exist (generate it with `gags demo`)"
            )
        self.hierarchy = Hierarchy.from_json(self.root / "hierarchy.json")

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one store per scene, lives as long as the oracle
    def view(self, image_name: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels (3, H, W) int32 region ids or -1, depth (H, W) float32) of the view ``image_name``."""
        path = self.root / "gt" / f"{Path(image_name).stem}.npz"
        if not path.exists():
            raise file_error(path, f"no ground truth for image {image_name!r} in this synthetic scene")
        try:
            with np.load(path) as data:
                labels, depth = data["labels"].astype(np.int32), data["depth"].astype(np.float32)
        except (OSError, KeyError, ValueError) as e:
            raise file_error(path, f"is not a valid ground-truth file ({e})") from e
        if labels.ndim != 3 or labels.shape[0] != 3 or labels.shape[1:] != depth.shape:
            raise file_error(
                path, f"labels {labels.shape} / depth {depth.shape} do not match (3, H, W) / (H, W)"
            )
        return labels, depth

    def labels_at(self, image_name: str, height: int, width: int) -> np.ndarray:
        """(3, height, width) labels of a view, nearest-resized when the caller works at another size."""
        labels = self.view(image_name)[0]
        if labels.shape[1:] == (height, width):
            return labels
        ys = ((np.arange(height) + 0.5) * labels.shape[1] / height).astype(int)
        xs = ((np.arange(width) + 0.5) * labels.shape[2] / width).astype(int)
        return labels[:, ys[:, None], xs[None, :]]
