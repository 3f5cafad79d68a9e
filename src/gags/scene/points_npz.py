"""A point cloud with cameras and no images in one ``.npz`` (the gsplat test-asset layout).

Keys: ``means3d`` (or ``points``/``means``) (P, 3), ``colors`` (P, 3) uint8 or float in [0, 1],
``viewmats`` (C, 4, 4) world-to-camera (OpenCV), ``Ks`` (C, 3, 3), ``width`` and ``height``
(scalars or (C,)). Cameras are named ``view_000``, ... and have no image.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from gags.errors import file_error
from gags.scene.cameras import Camera

POINT_KEYS = ("means3d", "points", "means")
REQUIRED_KEYS = ("colors", "viewmats", "Ks", "width", "height")


def find_npz(root: Path) -> Path | None:
    """``root`` itself when it is an ``.npz`` file, else the only ``.npz`` inside it, else None."""
    if root.is_file():
        return root if root.suffix == ".npz" else None
    found = sorted(root.glob("*.npz")) if root.is_dir() else []
    return found[0] if len(found) == 1 else None


def load_points_npz(path: Path) -> tuple[list[Camera], np.ndarray, np.ndarray]:
    """Cameras without images, points (P, 3) float64 and colours (P, 3) uint8 from ``path``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise file_error(path, f"cannot be read as an .npz archive ({e})") from e
    point_key = next((k for k in POINT_KEYS if k in arrays), None)
    missing = [k for k in REQUIRED_KEYS if k not in arrays] + ([] if point_key else ["/".join(POINT_KEYS)])
    if missing:
        raise file_error(path, f"missing keys {missing} (has {sorted(arrays)})")
    points = arrays[point_key].astype(np.float64)
    colors = _uint8_colors(arrays["colors"])
    viewmats, Ks = arrays["viewmats"].astype(np.float64), arrays["Ks"].astype(np.float64)
    n = len(viewmats)
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise file_error(path, f"{point_key} {points.shape} and colors {colors.shape} must both be (P, 3)")
    if viewmats.shape != (n, 4, 4) or Ks.shape != (n, 3, 3) or n == 0:
        raise file_error(
            path, f"viewmats {viewmats.shape} and Ks {Ks.shape} must be (C, 4, 4) and (C, 3, 3), C > 0"
        )
    for key, array in ((point_key, points), ("viewmats", viewmats), ("Ks", Ks)):
        if not np.isfinite(array).all():
            raise file_error(path, f"{key} contains NaN or inf")
    widths = np.broadcast_to(arrays["width"], (n,))
    heights = np.broadcast_to(arrays["height"], (n,))
    cameras = [
        Camera(name=f"view_{i:03d}", K=Ks[i], world_to_cam=viewmats[i], width=widths[i], height=heights[i])
        for i in range(n)
    ]
    return cameras, points, colors


def _uint8_colors(colors: np.ndarray) -> np.ndarray:
    """Colours as uint8: integer arrays pass through, floats in [0, 1] are scaled by 255."""
    if np.issubdtype(colors.dtype, np.floating):
        return (np.clip(colors, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(colors, 0, 255).astype(np.uint8)
