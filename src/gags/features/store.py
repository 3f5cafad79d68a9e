"""The on-disk per-image outputs of ``gags prepare``: ``segments/IMAGE.npz`` and ``features/IMAGE.npz``.

- segments: ``maps`` int32 (3, H, W) row indices into the image's features (unique across the
  levels subpart/part/whole), -1 = no mask; ``points`` float32 (P, 2) prompt pixels (x, y);
  ``patch_counts`` int32 (gy, gx) prompts per patch.
- features: ``features`` float16 (N, D) L2-normalised; ``levels`` int8 (N,) level of each row.

Writers are atomic (:mod:`gags.io`); readers check shapes and dtypes and raise a
:class:`~gags.errors.GagsError` naming the file.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from gags.errors import GagsError, file_error
from gags.io import save_npz_atomic


@dataclasses.dataclass
class ImageSegments:
    """Contents of one ``segments/IMAGE.npz`` (see the module docstring for shapes)."""

    maps: np.ndarray
    points: np.ndarray
    patch_counts: np.ndarray


@dataclasses.dataclass
class ImageFeatures:
    """Contents of one ``features/IMAGE.npz``: ``features`` (N, D) float16, ``levels`` (N,) int8."""

    features: np.ndarray
    levels: np.ndarray


def save_segments(path: Path, seg: ImageSegments) -> None:
    """Validate and write ``seg`` atomically."""
    _check_segments(path, seg)
    save_npz_atomic(
        path,
        maps=seg.maps.astype(np.int32),
        points=seg.points.astype(np.float32),
        patch_counts=seg.patch_counts.astype(np.int32),
    )


def save_features(path: Path, feats: ImageFeatures) -> None:
    """Validate and write ``feats`` atomically (features stored as float16)."""
    out = ImageFeatures(feats.features.astype(np.float16), feats.levels.astype(np.int8))
    _check_features(path, out)
    save_npz_atomic(path, features=out.features, levels=out.levels)


def load_segments(path: Path, size: tuple[int, int] | None = None) -> ImageSegments:
    """Read a segments file; ``size`` (H, W) is checked when given."""
    data = _read_npz(path, ("maps", "points", "patch_counts"))
    seg = ImageSegments(data["maps"], data["points"], data["patch_counts"])
    _check_segments(path, seg)
    if size is not None and tuple(seg.maps.shape[1:]) != tuple(size):
        raise file_error(path, f"maps are {seg.maps.shape[1:]} but the camera is {tuple(size)} (H, W)")
    return seg


def load_features(path: Path) -> ImageFeatures:
    """Read a features file."""
    data = _read_npz(path, ("features", "levels"))
    feats = ImageFeatures(data["features"], data["levels"])
    _check_features(path, feats)
    return feats


def check_pair(seg_path: Path, feat_path: Path, size: tuple[int, int] | None = None) -> None:
    """Raise a GagsError unless both files are readable and agree (indices within rows, levels match)."""
    seg, feats = load_segments(seg_path, size), load_features(feat_path)
    n = feats.features.shape[0]
    if int(seg.maps.max(initial=-1)) >= n:
        raise file_error(seg_path, f"indexes row {int(seg.maps.max())} but {feat_path} has {n} rows")
    for level in range(seg.maps.shape[0]):
        rows = np.unique(seg.maps[level])
        rows = rows[rows >= 0]
        if rows.size and not np.all(feats.levels[rows] == level):
            raise file_error(seg_path, f"level {level} map points at rows of another level in {feat_path}")


def is_valid_pair(seg_path: Path, feat_path: Path, size: tuple[int, int] | None = None) -> bool:
    """True when :func:`check_pair` passes (missing or corrupt files give False)."""
    if not (seg_path.is_file() and feat_path.is_file()):
        return False
    try:
        check_pair(seg_path, feat_path, size)
    except GagsError:
        return False
    return True


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data]
            if missing:
                raise file_error(path, f"lacks the arrays {missing}")
            return {k: data[k] for k in keys}
    except FileNotFoundError as e:
        raise file_error(path, "does not exist") from e
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise file_error(path, f"is not a readable .npz file ({e})") from e


def _check_segments(path: Path, seg: ImageSegments) -> None:
    if seg.maps.ndim != 3 or seg.maps.shape[0] != 3 or seg.maps.dtype.kind not in "iu":
        raise file_error(path, f"maps must be int (3, H, W), got {seg.maps.dtype} {seg.maps.shape}")
    if seg.maps.size and int(seg.maps.min()) < -1:
        raise file_error(path, "maps hold indices below -1")
    if seg.points.ndim != 2 or seg.points.shape[1] != 2:
        raise file_error(path, f"points must be (P, 2), got {seg.points.shape}")
    if seg.patch_counts.ndim != 2:
        raise file_error(path, f"patch_counts must be (gy, gx), got {seg.patch_counts.shape}")


def _check_features(path: Path, feats: ImageFeatures) -> None:
    f, lv = feats.features, feats.levels
    if f.ndim != 2 or f.dtype != np.float16:
        raise file_error(path, f"features must be float16 (N, D), got {f.dtype} {f.shape}")
    if lv.shape != (f.shape[0],) or lv.dtype != np.int8:
        raise file_error(path, f"levels must be int8 ({f.shape[0]},), got {lv.dtype} {lv.shape}")
    if lv.size and (lv.min() < 0 or lv.max() > 2):
        raise file_error(path, "levels must be 0, 1 or 2")
    if not np.all(np.isfinite(f)):
        raise file_error(path, "features hold NaN or inf")
