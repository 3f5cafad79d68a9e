"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), world-to-camera."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch


@dataclasses.dataclass
class Camera:
    """One posed pinhole camera.

    Attributes:
        name: image file name (with extension), unique within a scene; used to name outputs.
        K: (3, 3) intrinsics in pixels; pixel centres sit at +0.5 (the centre of pixel (0, 0) is (0.5, 0.5)).
        world_to_cam: (4, 4) world-to-camera rigid transform, OpenCV axes.
        width, height: image size in pixels.
        image_path: the image on disk, or None for cameras without images (e.g. a bare point cloud).
    """

    name: str
    K: np.ndarray
    world_to_cam: np.ndarray
    width: int
    height: int
    image_path: Path | None = None

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.world_to_cam = np.asarray(self.world_to_cam, dtype=np.float64).reshape(4, 4)
        self.width, self.height = int(self.width), int(self.height)

    @property
    def cam_to_world(self) -> np.ndarray:
        """(4, 4) camera-to-world transform."""
        return np.linalg.inv(self.world_to_cam)

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return -R.T @ t

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image downscaled by ``factor`` (size rounded to whole pixels).

        Intrinsics scale with the actual size ratio so that the image plane still spans the image.
        """
        return self.resized(max(1, round(self.width / factor)), max(1, round(self.height / factor)))

    def resized(self, width: int, height: int) -> Camera:
        """The same view rendered at ``width`` x ``height`` pixels (intrinsics scaled per axis)."""
        if (self.width, self.height) == (width, height):
            return self
        K = self.K.copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return dataclasses.replace(self, K=K, width=int(width), height=int(height))


def stack_cameras(
    cameras: list[Camera], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera matrices (C, 4, 4) and intrinsics (C, 3, 3) as float32 tensors."""
    viewmats = torch.tensor(np.stack([c.world_to_cam for c in cameras]), dtype=torch.float32, device=device)
    Ks = torch.tensor(np.stack([c.K for c in cameras]), dtype=torch.float32, device=device)
    return viewmats, Ks
