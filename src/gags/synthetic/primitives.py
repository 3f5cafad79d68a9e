"""Surface primitives that the synthetic objects are built from, sampled as oriented points.

Every primitive lives in its object's local frame (metres, z up, the object standing on z = 0) and
returns ``n`` points on its surface with unit outward normals. The generator turns each point
into a flat Gaussian disc lying in the surface.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def jittered_grid(n: int, width: float, height: float, rng: np.random.Generator) -> np.ndarray:
    """About ``n`` points (M, 2) covering [0, width] x [0, height] evenly: one random point per cell of a
    grid of square-ish cells. Flat surfaces sampled this way have no holes, unlike uniform sampling."""
    step = math.sqrt(width * height / max(n, 1))
    nx, ny = max(1, round(width / step)), max(1, round(height / step))
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="xy")
    cells = np.stack([gx.ravel(), gy.ravel()], -1) + rng.uniform(0, 1, (nx * ny, 2))
    return cells * np.array([width / nx, height / ny])


@dataclasses.dataclass(frozen=True)
class Frustum:
    """Side of a truncated cone around the z axis: radius ``r0`` at ``z0`` to ``r1`` at ``z1``.

    ``a0, a1`` limit the azimuth (radians), so a part of the side can be its own region.
    """

    r0: float
    r1: float
    z0: float
    z1: float
    a0: float = 0.0
    a1: float = 2 * math.pi

    @property
    def area(self) -> float:
        slant = math.hypot(self.r1 - self.r0, self.z1 - self.z0)
        return 0.5 * (self.r0 + self.r1) * slant * (self.a1 - self.a0)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        a = rng.uniform(self.a0, self.a1, n)
        # area-uniform along the slant: radius grows linearly, so sample t with density ~ r(t)
        u = rng.uniform(0, 1, n)
        if abs(self.r1 - self.r0) < 1e-9:
            t = u
        else:
            r0, r1 = self.r0, self.r1
            t = (np.sqrt(r0**2 + u * (r1**2 - r0**2)) - r0) / (r1 - r0)
        r = self.r0 + t * (self.r1 - self.r0)
        z = self.z0 + t * (self.z1 - self.z0)
        pts = np.stack([r * np.cos(a), r * np.sin(a), z], -1)
        slope = (self.r0 - self.r1) / max(abs(self.z1 - self.z0), 1e-9) * np.sign(self.z1 - self.z0)
        nrm = np.stack([np.cos(a), np.sin(a), np.full(n, slope)], -1)
        return pts, nrm


@dataclasses.dataclass(frozen=True)
class Disk:
    """Flat annulus at height ``z`` (normal +z, or -z when ``down``), radii ``r_in`` to ``r_out``."""

    r_out: float
    z: float
    r_in: float = 0.0
    down: bool = False

    @property
    def area(self) -> float:
        return math.pi * (self.r_out**2 - self.r_in**2)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        side = 2 * self.r_out
        xy = jittered_grid(int(round(n * side**2 / self.area)), side, side, rng) - self.r_out
        r = np.linalg.norm(xy, axis=-1)
        xy = xy[(r <= self.r_out) & (r >= self.r_in)]
        n = len(xy)
        pts = np.concatenate([xy, np.full((n, 1), self.z)], -1)
        nrm = np.zeros((n, 3))
        nrm[:, 2] = -1.0 if self.down else 1.0
        return pts, nrm


@dataclasses.dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid centred at ``center`` with semi-axes ``radii``, kept where ``zmin <= z_local <= zmax``.

    ``z_local`` is measured from the centre in units of the z semi-axis (-1 bottom, +1 top), so a
    cap or a band of the ellipsoid can be its own region.
    """

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    zmin: float = -1.0
    zmax: float = 1.0

    @property
    def area(self) -> float:
        a, b, c = self.radii
        p = 1.6075
        full = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
        return full * (self.zmax - self.zmin) / 2  # a sphere's band area is linear in its height

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        zl = rng.uniform(self.zmin, self.zmax, n)  # Archimedes: uniform in z is area-uniform on a sphere
        a = rng.uniform(0, 2 * math.pi, n)
        s = np.sqrt(np.clip(1 - zl**2, 0, None))
        unit = np.stack([s * np.cos(a), s * np.sin(a), zl], -1)
        radii = np.asarray(self.radii)
        pts = unit * radii + np.asarray(self.center)
        nrm = unit / radii
        return pts, nrm / np.linalg.norm(nrm, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Box:
    """Axis-aligned box surface with centre ``center`` and full side lengths ``size``.

    ``faces`` selects which of the six faces belong to this region: a string of ``+x -x +y -y +z -z``
    tokens separated by spaces. ``hole`` = (x, y, r) leaves out the points within r of (x, y) (a part
    of the surface that something else covers, such as the table top under the place mat).
    """

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    faces: str = "+x -x +y -y +z -z"
    hole: tuple[float, float, float] | None = None

    def _faces(self) -> list[tuple[int, float]]:
        return [(("xyz").index(f[1]), 1.0 if f[0] == "+" else -1.0) for f in self.faces.split()]

    def _face_area(self, axis: int) -> float:
        s = list(self.size)
        s.pop(axis)
        return s[0] * s[1]

    @property
    def area(self) -> float:
        return sum(self._face_area(ax) for ax, _ in self._faces())

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        size = np.asarray(self.size, dtype=np.float64)
        all_pts, all_nrm = [], []
        for axis, sign in self._faces():
            u, v = [a for a in range(3) if a != axis]
            uv = jittered_grid(int(round(n * self._face_area(axis) / self.area)), size[u], size[v], rng)
            pts = np.zeros((len(uv), 3))
            pts[:, u], pts[:, v] = uv[:, 0] - size[u] / 2, uv[:, 1] - size[v] / 2
            pts[:, axis] = sign * size[axis] / 2
            nrm = np.zeros_like(pts)
            nrm[:, axis] = sign
            all_pts.append(pts)
            all_nrm.append(nrm)
        pts, nrm = np.concatenate(all_pts) + np.asarray(self.center), np.concatenate(all_nrm)
        if self.hole is not None:
            keep = np.hypot(pts[:, 0] - self.hole[0], pts[:, 1] - self.hole[1]) >= self.hole[2]
            pts, nrm = pts[keep], nrm[keep]
        return pts, nrm


@dataclasses.dataclass(frozen=True)
class TorusArc:
    """Part of a torus in the x-z plane (a mug handle): tube radius ``r`` around a circle of radius ``R``
    centred at ``center``, for angles ``a0..a1`` (radians, 0 = +x, pi/2 = +z)."""

    center: tuple[float, float, float]
    R: float
    r: float
    a0: float
    a1: float

    @property
    def area(self) -> float:
        return 2 * math.pi * self.r * self.R * (self.a1 - self.a0)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        u = rng.uniform(self.a0, self.a1, n)
        v = rng.uniform(0, 2 * math.pi, n)
        ring = np.stack([np.cos(u), np.zeros(n), np.sin(u)], -1)
        nrm = np.cos(v)[:, None] * ring + np.sin(v)[:, None] * np.array([0.0, 1.0, 0.0])
        pts = np.asarray(self.center) + self.R * ring + self.r * nrm
        return pts, nrm


Primitive = Frustum | Disk | Ellipsoid | Box | TorusArc


def rotation_z_to(normals: np.ndarray) -> np.ndarray:
    """(N, 4) unit quaternions (w, x, y, z) rotating +z onto each of ``normals`` (N, 3) (unit)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(np.broadcast_to(z, normals.shape), normals)
    w = 1.0 + normals[:, 2]
    q = np.concatenate([w[:, None], axis], -1)
    flipped = w < 1e-6  # normal = -z: rotate 180 degrees about x
    q[flipped] = np.array([0.0, 1.0, 0.0, 0.0])
    return q / np.linalg.norm(q, axis=-1, keepdims=True)
