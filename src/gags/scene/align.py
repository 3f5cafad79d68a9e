"""Comparing two reconstructions of one scene: similarity alignment (Umeyama) and pose errors.

SfM recovers cameras up to a similarity (rotation, translation, scale), so poses from two runs, or
from SfM and a ground truth, are compared after aligning their camera centres.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gags.errors import GagsError
from gags.scene.cameras import Camera


def umeyama(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity ``x -> s R x + t`` taking ``src`` (N, 3) closest to ``dst`` (N, 3) in least squares.

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    TPAMI 1991. Returns (s, R (3, 3) with det +1, t (3,)); s is 1 when ``with_scale`` is False.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise GagsError(f"umeyama needs two (N, 3) arrays with N >= 3, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    var_s = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


@dataclasses.dataclass
class PoseErrors:
    """Per-camera errors after a similarity alignment of the estimated cameras onto the reference.

    Attributes:
        names: cameras compared (present in both). rotation_deg: (N,) angle of R_ref R_est^T, degrees.
        center: (N,) distance between aligned and reference centres, in reference units.
        extent: largest distance of a reference centre from their mean (the scale errors are read at).
        scale, R, t: the alignment (estimated -> reference).
    """

    names: list[str]
    rotation_deg: np.ndarray
    center: np.ndarray
    extent: float
    scale: float
    R: np.ndarray
    t: np.ndarray


def compare_cameras(estimated: list[Camera], reference: list[Camera]) -> PoseErrors:
    """Align ``estimated`` onto ``reference`` by their centres (matched by name) and measure the errors."""
    ref = {c.name: c for c in reference}
    pairs = [(c, ref[c.name]) for c in estimated if c.name in ref]
    if len(pairs) < 3:
        raise GagsError(f"need at least 3 cameras in common to align, got {len(pairs)}")
    est_c = np.stack([e.center for e, _ in pairs])
    ref_c = np.stack([r.center for _, r in pairs])
    s, R, t = umeyama(est_c, ref_c)
    center = np.linalg.norm(s * est_c @ R.T + t - ref_c, axis=1)
    angles = []
    for e, r in pairs:
        # world_to_cam rotations: R_est maps estimated world, aligned world = R x, so R_est R^T vs R_ref
        diff = r.world_to_cam[:3, :3] @ (e.world_to_cam[:3, :3] @ R.T).T
        cos = np.clip((np.trace(diff) - 1) / 2, -1.0, 1.0)
        angles.append(np.degrees(np.arccos(cos)))
    extent = float(np.linalg.norm(ref_c - ref_c.mean(0), axis=1).max())
    return PoseErrors([e.name for e, _ in pairs], np.array(angles), center, extent, s, R, t)
