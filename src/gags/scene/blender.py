"""Blender (NeRF synthetic) and nerfstudio ``transforms*.json`` -> OpenCV cameras.

Both store camera-to-world matrices with OpenGL camera axes (x right, y up, z backward); the
columns for y and z are negated here to get OpenCV axes. Intrinsics come from ``camera_angle_x``
(Blender; square pixels, centred principal point, size from the images) or from nerfstudio's
``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` (top level or per frame).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gags.errors import file_error
from gags.scene.cameras import Camera
from gags.scene.images import IMAGE_EXTENSIONS, image_size

#: OpenGL camera axes -> OpenCV camera axes (flip y and z), applied on the right of camera-to-world
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])

#: train files in preference order; nerfstudio uses a single ``transforms.json``
TRAIN_FILES = ("transforms_train.json", "transforms.json")
EVAL_FILE = "transforms_test.json"
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def find_transforms(root: Path) -> Path | None:
    """The training ``transforms*.json`` in ``root``, or None."""
    for name in TRAIN_FILES:
        if (root / name).is_file():
            return root / name
    return None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; malformed JSON is a :class:`GagsError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise file_error(path, f"cannot be read ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise file_error(path, f"is not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise file_error(path, "expected a JSON object with a non-empty 'frames' list")
    return data


def resolve_image(root: Path, file_path: str, source: Path) -> Path:
    """The image of a frame; ``file_path`` may lack its extension (as in the Blender data sets)."""
    path = (root / file_path).resolve() if not Path(file_path).is_absolute() else Path(file_path)
    if path.is_file():
        return path
    for ext in IMAGE_EXTENSIONS:
        candidate = path.with_name(path.name + ext)
        if candidate.is_file():
            return candidate
    raise file_error(
        source, f"frame image {file_path!r} not found (looked for {path} with and without an extension)"
    )


def read_frames(path: Path, data: dict[str, Any] | None = None) -> list[Camera]:
    """All frames of one ``transforms*.json`` (already parsed: ``data``) as OpenCV cameras at full size."""
    data = read_json(path) if data is None else data
    root = path.parent
    cameras = []
    shared_size: tuple[int, int] | None = None
    for i, frame in enumerate(data["frames"]):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise file_error(path, f"frame {i} needs 'file_path' and 'transform_matrix'")
        image_path = resolve_image(root, str(frame["file_path"]), path)
        meta = {**data, **frame}  # nerfstudio allows per-frame intrinsics
        size = image_size(image_path)
        if "w" in meta and "h" in meta:
            expected = (int(meta["w"]), int(meta["h"]))
        else:
            shared_size = shared_size or size
            expected = shared_size
        if size != expected:
            raise file_error(
                image_path, f"image is {size[0]}x{size[1]} but {path.name} says {expected[0]}x{expected[1]}"
            )
        cameras.append(
            Camera(
                name=image_path.name,
                K=_intrinsics(meta, *expected, path),
                world_to_cam=_world_to_cam(frame["transform_matrix"], path, i),
                width=expected[0],
                height=expected[1],
                image_path=image_path,
            )
        )
    return cameras


def _world_to_cam(matrix: Any, source: Path, index: int) -> np.ndarray:
    """(4, 4) OpenCV world-to-camera from a Blender/OpenGL camera-to-world ``transform_matrix``."""
    try:
        c2w = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise file_error(source, f"frame {index}: transform_matrix is not numeric ({e})") from e
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0, 0, 0, 1]])
    if c2w.shape != (4, 4):
        raise file_error(source, f"frame {index}: transform_matrix has shape {c2w.shape}, expected 4x4")
    if not np.isfinite(c2w).all():
        raise file_error(source, f"frame {index}: transform_matrix contains NaN or inf")
    R = c2w[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-3:
        raise file_error(
            source, f"frame {index}: transform_matrix rotation is not orthonormal (scaled pose?)"
        )
    return np.linalg.inv(c2w @ GL_TO_CV)


def _intrinsics(meta: dict[str, Any], width: int, height: int, source: Path) -> np.ndarray:
    """(3, 3) K from nerfstudio focal lengths or Blender's horizontal field of view (radians)."""
    try:
        if "fl_x" in meta:
            fx = float(meta["fl_x"])
            fy = float(meta.get("fl_y", fx))
        elif "camera_angle_x" in meta:
            fx = 0.5 * width / math.tan(0.5 * float(meta["camera_angle_x"]))
            fy = (
                0.5 * height / math.tan(0.5 * float(meta["camera_angle_y"]))
                if "camera_angle_y" in meta
                else fx
            )
        else:
            raise file_error(
                source, "needs 'camera_angle_x' (Blender) or 'fl_x' (nerfstudio) for the focal length"
            )
        cx = float(meta.get("cx", width / 2))
        cy = float(meta.get("cy", height / 2))
    except (TypeError, ValueError) as e:
        raise file_error(source, f"intrinsics are not numeric ({e})") from e
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
        raise file_error(source, f"invalid intrinsics fx={fx} fy={fy} cx={cx} cy={cy}")
    distortion = {k: meta[k] for k in _DISTORTION_KEYS if meta.get(k)}
    if distortion:
        warnings.warn(
            f"{source}: distortion {distortion} is ignored (images are treated as undistorted)", stacklevel=4
        )
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def read_points_ply(root: Path, data: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """nerfstudio's optional ``ply_file_path`` point cloud -> points (P, 3), colours (P, 3) uint8."""
    if "ply_file_path" not in data:
        return None, None
    from plyfile import PlyData

    path = root / data["ply_file_path"]
    try:
        vertex = PlyData.read(str(path))["vertex"]
        points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
        names = vertex.data.dtype.names
        colors = (
            np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.uint8)
            if {"red", "green", "blue"} <= set(names)
            else np.full_like(points, 128, dtype=np.uint8)
        )
    except (OSError, KeyError, ValueError) as e:
        raise file_error(path, f"cannot be read as a PLY point cloud ({e})") from e
    return points, colors


def load_blender(root: Path) -> tuple[list[Camera], list[str] | None, np.ndarray | None, np.ndarray | None]:
    """Cameras of ``transforms_train.json`` (or ``transforms.json``) and ``transforms_test.json``.

    Returns:
        cameras (full size), names of the eval cameras (the test file's frames, or None when there is
        no test file), points (P, 3) or None, colours (P, 3) uint8 or None.
    """
    train_file = find_transforms(root)
    if train_file is None:
        raise file_error(root, f"no {' or '.join(TRAIN_FILES)}")
    data = read_json(train_file)
    cameras = read_frames(train_file, data)
    eval_names = None
    if (root / EVAL_FILE).is_file() and train_file.name != EVAL_FILE:
        eval_cameras = read_frames(root / EVAL_FILE)
        cameras, eval_names = _unique_names(cameras, eval_cameras, root)
    points, colors = read_points_ply(root, data)
    return cameras, eval_names, points, colors


def _unique_names(train: list[Camera], test: list[Camera], root: Path) -> tuple[list[Camera], list[str]]:
    """Train + test cameras; when file names collide (``train/r_0.png``, ``test/r_0.png``) every
    camera is named by its path relative to ``root`` with ``/`` replaced by ``_``."""
    cameras = train + test
    if len({c.name for c in cameras}) < len(cameras):
        for cam in cameras:
            cam.name = Path(os.path.relpath(cam.image_path, root.resolve())).as_posix().replace("/", "_")
    return cameras, [c.name for c in test]
