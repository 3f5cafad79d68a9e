"""Initial Gaussians: one per SfM point, or random points seen by many cameras when a scene has none."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from gags.errors import GagsError
from gags.scene.cameras import Camera
from gags.splats.gaussians import Gaussians
from gags.splats.sh import rgb_to_sh0

#: smallest initial standard deviation, so coincident points do not give log(0)
MIN_SCALE = 1e-7


def from_points(
    points: np.ndarray | torch.Tensor,
    colors: np.ndarray | torch.Tensor | None = None,
    sh_degree: int = 3,
    init_opacity: float = 0.1,
) -> Gaussians:
    """Isotropic Gaussians centred on ``points``, as 3DGS initialises from SfM.

    Args:
        points: (P, 3) positions, world units.
        colors: (P, 3) uint8 colours (0-255), or None for mid grey.
        sh_degree: SH degree of the result (K = (degree+1)^2 coefficients, higher ones zero).
        init_opacity: opacity of every Gaussian, in (0, 1).
    Returns:
        P Gaussians: std-dev = root-mean-square distance to the 3 nearest other points, identity rotation.
    """
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32).reshape(-1, 3)
    if len(pts) == 0:
        raise GagsError("cannot initialise Gaussians from an empty point cloud")
    if not torch.isfinite(pts).all():
        raise GagsError("the initial point cloud holds NaN/inf positions")
    if colors is None:
        rgb = torch.full_like(pts, 0.5)
    else:
        rgb = torch.as_tensor(np.asarray(colors), dtype=torch.float32).reshape(-1, 3) / 255.0
    n = len(pts)
    sh = torch.zeros(n, (sh_degree + 1) ** 2, 3)
    sh[:, 0] = rgb_to_sh0(rgb)
    return Gaussians(
        means=pts.clone(),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        log_scales=torch.log(nearest_neighbour_scale(pts.numpy())).unsqueeze(-1).repeat(1, 3),
        opacity_logits=torch.full((n,), float(torch.logit(torch.tensor(init_opacity)))),
        sh=sh,
    )


def nearest_neighbour_scale(points: np.ndarray, k: int = 3) -> torch.Tensor:
    """(P,) root-mean-square distance of each point to its ``k`` nearest other points (>= MIN_SCALE)."""
    if len(points) < 2:
        return torch.ones(len(points))
    k = min(k, len(points) - 1)
    dist, _ = cKDTree(points).query(points, k=k + 1)  # column 0 is the point itself
    rms = np.sqrt(np.mean(np.square(dist[:, 1:]), axis=1))
    return torch.from_numpy(np.maximum(rms, MIN_SCALE)).float()


def random_in_frusta(
    cameras: list[Camera],
    n: int,
    sh_degree: int = 3,
    seed: int = 0,
    near: float | None = None,
    far: float | None = None,
    min_view_fraction: float = 0.8,
) -> Gaussians:
    """Random Gaussians inside the region that most cameras see (for scenes without SfM points).

    Candidates are drawn along random pixel rays of random cameras at depths uniform in
    [near, far]; a candidate is kept when it projects inside at least ``min_view_fraction`` of the
    cameras (in front of them), which concentrates the points where the views overlap (e.g. the
    object of a Blender scene). Colours are uniform random, as in 3DGS's random initialisation.

    Args:
        cameras: the training cameras.
        n: number of Gaussians.
        near, far: depth range along each ray, world units (default 0.05x and 2x the camera spread).
    """
    if not cameras or n <= 0:
        raise GagsError("random initialisation needs at least one camera and n > 0")
    rng = np.random.default_rng(seed)
    centers = np.stack([c.center for c in cameras])
    spread = float(np.linalg.norm(centers - centers.mean(0), axis=1).max()) or 1.0
    near = 0.05 * spread if near is None else near
    far = 2.0 * spread if far is None else far
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(50):  # bounded: each round draws 4n candidates
        cand = _sample_rays(cameras, 4 * n, near, far, rng)
        cand = cand[_view_fraction(cameras, cand) >= min_view_fraction]
        kept.append(cand)
        total += len(cand)
        if total >= n:
            break
    points = np.concatenate(kept)[:n]
    if len(points) < n:
        raise GagsError(
            f"random initialisation found only {len(points)} of {n} points seen by "
            f"{min_view_fraction:.0%} of the cameras; check the camera poses"
        )
    colors = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    return from_points(points, colors, sh_degree=sh_degree)


def _sample_rays(
    cameras: list[Camera], count: int, near: float, far: float, rng: np.random.Generator
) -> np.ndarray:
    """(count, 3) world points on random pixel rays of random cameras, depth uniform in [near, far]."""
    which = rng.integers(0, len(cameras), size=count)
    K = np.stack([c.K for c in cameras])[which]  # (count, 3, 3)
    c2w = np.stack([c.cam_to_world for c in cameras])[which]  # (count, 4, 4)
    size = np.array([[c.width, c.height] for c in cameras], dtype=np.float64)[which]
    pix = rng.random((count, 2)) * size
    depth = rng.uniform(near, far, size=count)
    x = (pix[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
    y = (pix[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
    cam_pts = np.stack([x * depth, y * depth, depth], axis=1)
    return np.einsum("nij,nj->ni", c2w[:, :3, :3], cam_pts) + c2w[:, :3, 3]


def _view_fraction(cameras: list[Camera], points: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """(P,) fraction of ``cameras`` in whose image (and in front of which) each point lies.

    Works on ``chunk`` points at a time so memory stays O(C * chunk).
    """
    if len(points) > chunk:
        return np.concatenate(
            [_view_fraction(cameras, points[i : i + chunk], chunk) for i in range(0, len(points), chunk)]
        )
    w2c = np.stack([c.world_to_cam for c in cameras])  # (C, 4, 4)
    K = np.stack([c.K for c in cameras])  # (C, 3, 3)
    size = np.array([[c.width, c.height] for c in cameras], dtype=np.float64)  # (C, 2)
    cam = np.einsum("cij,pj->cpi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]  # (C, P, 3)
    z = cam[..., 2]
    uv = np.einsum("cij,cpj->cpi", K, cam)[..., :2] / np.maximum(z, 1e-9)[..., None]
    inside = (z > 0) & (uv >= 0).all(-1) & (uv[..., 0] < size[:, None, 0]) & (uv[..., 1] < size[:, None, 1])
    return inside.mean(axis=0)
