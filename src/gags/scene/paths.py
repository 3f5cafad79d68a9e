"""Camera paths for videos: an orbit around the scene centre, the training trajectory, nerfstudio's
``camera_path.json``; and conversions between OpenCV cameras and look-at / field-of-view poses.

nerfstudio's ``camera_path.json`` (what its viewer's "Render" panel exports)::

    {"camera_type": "perspective", "render_width": W, "render_height": H, "fps": 24, "seconds": 4,
     "camera_path": [{"camera_to_world": [16 numbers, row-major 4x4], "fov": 50.0, "aspect": 1.33}, ...]}

with ``camera_to_world`` in OpenGL axes (x right, y up, z backwards) and ``fov`` the vertical field
of view in degrees. They are converted to OpenCV axes here, at the boundary. Coordinates are taken
as the scene's world coordinates (a path exported from nerfstudio's own viewer is in nerfstudio's
normalised frame: apply its ``dataparser_transforms.json`` first).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gags.errors import file_error
from gags.scene.cameras import Camera

#: OpenGL <-> OpenCV camera axes (flip y and z)
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) world-to-camera (OpenCV axes) of a camera at ``eye`` looking at ``target``, ``up`` up."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking along up: any perpendicular will do
        right = np.cross(forward, np.eye(3)[np.argmin(np.abs(forward))])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows: camera axes in world
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ eye
    return w2c


def vertical_fov(camera: Camera) -> float:
    """Vertical field of view of ``camera`` in radians."""
    return 2.0 * math.atan(camera.height / (2.0 * camera.K[1, 1]))


def camera_from_fov(name: str, cam_to_world: np.ndarray, fov_y: float, width: int, height: int) -> Camera:
    """A pinhole camera (square pixels, centred principal point) from an OpenCV camera-to-world pose
    and a vertical field of view in radians."""
    fy = height / (2.0 * math.tan(fov_y / 2.0))
    K = np.array([[fy, 0.0, width / 2.0], [0.0, fy, height / 2.0], [0.0, 0.0, 1.0]])
    return Camera(name=name, K=K, world_to_cam=np.linalg.inv(cam_to_world), width=width, height=height)


def world_up(cameras: Sequence[Camera]) -> np.ndarray:
    """(3,) unit vector: the mean of the cameras' up directions (-y of OpenCV cameras)."""
    up = -np.mean([c.world_to_cam[1, :3] for c in cameras], axis=0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


def scene_centre(cameras: Sequence[Camera]) -> np.ndarray:
    """(3,) the point closest (least squares) to every camera's optical axis.

    For captures whose axes are nearly parallel (forward-facing), where that point is ill-defined,
    the cameras' mean centre moved forward by their mean distance to the first estimate is used.
    """
    centres = np.stack([c.center for c in cameras])
    dirs = np.stack([c.world_to_cam[2, :3] for c in cameras])
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(centres, dirs, strict=True):
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ o
    if len(cameras) >= 2 and np.linalg.eigvalsh(A / len(cameras))[0] > 0.05:
        return np.linalg.solve(A, b)
    spread = max(float(np.linalg.norm(centres - centres.mean(0), axis=1).mean()), 1.0)
    return centres.mean(0) + dirs.mean(0) / max(np.linalg.norm(dirs.mean(0)), 1e-9) * spread


def orbit_path(
    cameras: Sequence[Camera],
    frames: int,
    width: int | None = None,
    height: int | None = None,
    radius_scale: float = 1.0,
    turns: float = 1.0,
) -> list[Camera]:
    """``frames`` cameras on a circle around :func:`scene_centre`, looking at it.

    The circle lies at the cameras' mean height along :func:`world_up`, with their mean horizontal
    distance (times ``radius_scale``) as radius, and starts at the first camera's azimuth. Intrinsics
    are the first camera's, resized to ``width`` x ``height`` when given.
    """
    if not cameras:
        raise ValueError("orbit_path needs at least one camera")
    if frames < 1:
        raise ValueError(f"orbit_path needs at least one frame, got {frames}")
    up = world_up(cameras)
    centre = scene_centre(cameras)
    offsets = np.stack([c.center for c in cameras]) - centre
    heights = offsets @ up
    flat = offsets - heights[:, None] * up
    radius = float(np.linalg.norm(flat, axis=1).mean()) * radius_scale
    e1 = flat[0] / max(np.linalg.norm(flat[0]), 1e-9)
    if np.linalg.norm(flat[0]) < 1e-9:
        e1 = np.cross(up, np.eye(3)[np.argmin(np.abs(up))])
        e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    first = cameras[0].resized(width or cameras[0].width, height or cameras[0].height)
    path = []
    for k in range(frames):
        a = 2.0 * math.pi * turns * k / frames
        eye = centre + float(heights.mean()) * up + radius * (math.cos(a) * e1 + math.sin(a) * e2)
        path.append(
            dataclasses.replace(
                first, name=f"orbit_{k:04d}", world_to_cam=look_at(eye, centre, up), image_path=None
            )
        )
    return path


def read_camera_path(path: str | Path, width: int | None = None, height: int | None = None) -> list[Camera]:
    """Cameras of a nerfstudio ``camera_path.json`` (see the module docstring), OpenCV axes.

    ``width`` / ``height`` override ``render_width`` / ``render_height``; a missing height follows from
    the width and the entry's ``aspect``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise file_error(path, f"cannot read the camera path ({e})") from e
    entries = data.get("camera_path") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise file_error(path, 'has no "camera_path" list (nerfstudio camera_path.json format)')
    cameras = []
    for k, entry in enumerate(entries):
        try:
            c2w_gl = np.asarray(entry["camera_to_world"], dtype=np.float64).reshape(4, 4)
            fov = math.radians(float(entry["fov"]))
            aspect = float(entry.get("aspect", 0) or 0)
            W = int(width or data.get("render_width") or 0)
            H = int(height or data.get("render_height") or 0)
            if not H and W and aspect:
                H = round(W / aspect)
            if not W and H and aspect:
                W = round(H * aspect)
            if not (W > 0 and H > 0):
                raise ValueError("no render_width / render_height (or aspect) to size the image")
            if not (0 < fov < math.pi) or not np.isfinite(c2w_gl).all():
                raise ValueError(f"fov {entry['fov']} or camera_to_world is not valid")
        except (KeyError, TypeError, ValueError) as e:
            raise file_error(path, f"camera_path[{k}] needs camera_to_world (4x4) and fov ({e})") from e
        cameras.append(camera_from_fov(f"path_{k:04d}", c2w_gl @ GL_TO_CV, fov, W, H))
    return cameras


def camera_path_json(cameras: Sequence[Camera], fps: float = 24.0) -> dict:
    """The nerfstudio ``camera_path.json`` dict of ``cameras`` (vertical fov from each camera's fy)."""
    if not cameras:
        raise ValueError("camera_path_json needs at least one camera")
    W, H = cameras[0].width, cameras[0].height
    return {
        "camera_type": "perspective",
        "render_width": W,
        "render_height": H,
        "fps": fps,
        "seconds": len(cameras) / fps,
        "camera_path": [
            {
                "camera_to_world": (c.cam_to_world @ GL_TO_CV).reshape(-1).tolist(),
                "fov": math.degrees(vertical_fov(c)),
                "aspect": c.width / c.height,
            }
            for c in cameras
        ],
    }
