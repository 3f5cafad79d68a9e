"""LLFF ``poses_bounds.npy`` -> OpenCV cameras, plus the COLMAP points of the same world frame.

Each row holds a 3x5 matrix ``[R | t | hwf]`` (camera-to-world with LLFF camera axes
[down, right, back], then image height, width and focal length in pixels of the full-size photos)
and the near/far depth bounds. LLFF wrote these poses from a COLMAP model without moving the world
frame, so ``sparse/0/points3D.bin`` lines up with them. Images are matched to rows in name order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gags.errors import file_error
from gags.scene.cameras import Camera
from gags.scene.colmap import read_points3d_binary
from gags.scene.images import check_image_sizes, choose_image_dir, expected_factor, list_images

POSES_FILE = "poses_bounds.npy"


def read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``poses_bounds.npy`` -> OpenCV camera-to-world (N, 4, 4), hwf (N, 3), bounds (N, 2)."""
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise file_error(path, f"cannot be read as a .npy array ({e})") from e
    if table.ndim != 2 or table.shape[1] != 17 or len(table) == 0:
        raise file_error(
            path, f"has shape {table.shape}, expected (N, 17) = flattened 3x5 [R|t|hwf] + near/far"
        )
    if not np.isfinite(table).all():
        rows = np.flatnonzero(~np.isfinite(table).all(axis=1))
        raise file_error(path, f"contains NaN or inf (rows {rows[:5].tolist()})")
    poses = table[:, :15].reshape(-1, 3, 5).astype(np.float64)
    c2w = np.tile(np.eye(4), (len(table), 1, 1))
    # LLFF columns are [down, right, back]; OpenCV wants [right, down, forward]
    c2w[:, :3, 0] = poses[:, :, 1]
    c2w[:, :3, 1] = poses[:, :, 0]
    c2w[:, :3, 2] = -poses[:, :, 2]
    c2w[:, :3, 3] = poses[:, :, 3]
    return c2w, poses[:, :, 4], table[:, 15:17]


def read_llff_points(root: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The COLMAP ``points3D.bin`` next to the poses (``sparse/0`` or ``sparse``), or (None, None).

    LLFF data sets ship it without ``images.bin``, which pycolmap needs to read it (see
    :mod:`gags.scene.colmap`), so it is read by :func:`~gags.scene.colmap.read_points3d_binary`.
    """
    for folder in (root / "sparse" / "0", root / "sparse"):
        if (folder / "points3D.bin").is_file():
            return read_points3d_binary(folder / "points3D.bin")
    return None, None


def load_llff(
    root: Path, downscale: float, images: str | None
) -> tuple[list[Camera], np.ndarray | None, np.ndarray | None]:
    """Cameras at the full photo size (images from ``images_N`` or ``images``), points, colours."""
    path = root / POSES_FILE
    c2w, hwf, _ = read_poses_bounds(path)
    image_dir = choose_image_dir(root, downscale, images)
    files = list_images(image_dir)
    if len(files) != len(c2w):
        raise file_error(image_dir, f"has {len(files)} images but {path.name} has {len(c2w)} poses")
    if (hwf <= 0).any():
        raise file_error(path, "image height, width and focal length must be positive")
    world_to_cam = np.linalg.inv(c2w)
    cameras = [
        Camera(
            name=file.name,
            K=np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]]),
            world_to_cam=viewmat,
            width=round(w),
            height=round(h),
            image_path=file,
        )
        for file, viewmat, (h, w, f) in zip(files, world_to_cam, hwf, strict=True)
    ]
    check_image_sizes(cameras, expected_factor(image_dir))
    points, colors = read_llff_points(root)
    return cameras, points, colors
