"""A short video of the synthetic scene along a smooth arc, with its true cameras (process-data tests).

Each rendered view can be followed by a blurred copy of itself, so that the video path's frame
selection (the sharpest frame of each stretch) has a known right answer: the even frames.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from gags.scene.cameras import Camera


@dataclasses.dataclass
class OrbitVideoConfig:
    """The arc and the video. Distances in metres around the synthetic scene's centre (world z up)."""

    views: int = 24
    """Rendered views along the arc."""
    width: int = 320
    height: int = 240
    fov_x_deg: float = 60.0
    azimuth_deg: tuple[float, float] = (-40.0, 40.0)
    """First and last azimuth of the arc."""
    elevation_deg: tuple[float, float] = (30.0, 50.0)
    """Elevation at the start and the end of the arc: a path that rises, as a hand-held one does, so
    that the cameras are not all on one circle (which leaves a similarity alignment of their centres
    free to tilt about the circle's chord)."""
    distance: float = 0.7
    blurred_copies: bool = True
    """Follow every view with a Gaussian-blurred copy (sigma ``blur_sigma`` pixels)."""
    blur_sigma: float = 2.5
    fps: int = 12
    seed: int = 0
    """Seed of the synthetic scene."""


def write_orbit_video(path: Path, cfg: OrbitVideoConfig, cache_dir: Path | None = None) -> list[Camera]:
    """Render the arc of ``cfg`` into the mp4 ``path``; returns the cameras of the sharp frames.

    The cameras are named as ``gags process-data`` names the frames it extracts
    (``frame_XXXXXX.jpg``, XXXXXX = index in the video), so they can be compared by name.
    """
    import cv2
    import imageio.v3 as iio
    import torch

    from gags.splats.ply import load_ply
    from gags.splats.render import render
    from gags.synthetic.generate import SCENE_CENTER, SyntheticConfig, generate_scene, look_at

    small = dict(width=64, height=48, n_far=1, n_mid=1, near_per_object=1, n_label_frames=1)
    scene = generate_scene(SyntheticConfig(seed=cfg.seed, cache_dir=cache_dir, **small))
    gaussians = load_ply(scene / "gt_splats.ply")
    fx = cfg.width / 2 / math.tan(math.radians(cfg.fov_x_deg) / 2)
    K = np.array([[fx, 0, cfg.width / 2], [0, fx, cfg.height / 2], [0, 0, 1.0]])
    viewmats = []
    azimuths = np.radians(np.linspace(*cfg.azimuth_deg, cfg.views))
    elevations = np.radians(np.linspace(*cfg.elevation_deg, cfg.views))
    for azim, elev in zip(azimuths, elevations, strict=True):
        c = math.cos(elev)
        direction = np.array([c * math.cos(azim), c * math.sin(azim), math.sin(elev)])
        viewmats.append(look_at(SCENE_CENTER + cfg.distance * direction, SCENE_CENTER))
    with torch.no_grad():
        rgb = render(
            gaussians,
            torch.tensor(np.stack(viewmats), dtype=torch.float32),
            torch.tensor(K, dtype=torch.float32).expand(cfg.views, 3, 3),
            cfg.width,
            cfg.height,
            background=torch.tensor([0.6, 0.6, 0.6]),
        ).rgb
    frames = []
    for image in (rgb.clamp(0, 1).numpy() * 255).astype(np.uint8):
        frames.append(image)
        if cfg.blurred_copies:
            frames.append(cv2.GaussianBlur(image, (0, 0), cfg.blur_sigma))
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), plugin="FFMPEG", fps=cfg.fps, codec="libx264")
    step = 2 if cfg.blurred_copies else 1
    return [
        Camera(name=f"frame_{step * k:06d}.jpg", K=K, world_to_cam=w2c, width=cfg.width, height=cfg.height)
        for k, w2c in enumerate(viewmats)
    ]
