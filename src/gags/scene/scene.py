"""A scene: posed cameras, an optional point cloud, a train/eval split, and image loading."""

from __future__ import annotations

import dataclasses

import numpy as np

from gags.scene.cameras import Camera


@dataclasses.dataclass
class Scene:
    """Everything the later stages need from a data set.

    Attributes:
        cameras: all cameras, sorted by image name.
        train_indices: indices into ``cameras`` used for training.
        eval_indices: held-out indices (every ``holdout_every``-th image by default).
        points: (P, 3) float32 SfM points, or None when the data set has none.
        point_colors: (P, 3) uint8 colours of ``points``, or None.
        background: (3,) float RGB in [0, 1] that transparent images were composited on.
        source: the folder the scene was loaded from, and its detected format.
    """

    cameras: list[Camera]
    train_indices: list[int]
    eval_indices: list[int]
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = ""
    format: str = ""

    @property
    def train_cameras(self) -> list[Camera]:
        return [self.cameras[i] for i in self.train_indices]

    @property
    def eval_cameras(self) -> list[Camera]:
        return [self.cameras[i] for i in self.eval_indices]

    def camera_by_name(self, name: str) -> Camera:
        """The camera whose image is ``name`` (with or without the extension)."""
        for cam in self.cameras:
            if cam.name == name or cam.name.rsplit(".", 1)[0] == name:
                return cam
        raise KeyError(name)

    def scene_extent(self) -> float:
        """Radius of the camera centres around their mean, times 1.1 (the 3DGS 'cameras_extent')."""
        centers = np.stack([c.center for c in self.cameras])
        return float(np.linalg.norm(centers - centers.mean(0), axis=1).max() * 1.1) or 1.0
