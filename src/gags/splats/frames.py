"""Bring splats trained elsewhere into the data set's world frame: similarity transforms of Gaussians.

nerfstudio (splatfacto) trains and exports in a normalised frame: its dataparser maps a world point ``x``
of the data set to ``scale * (T @ [x, 1])`` with ``T`` the 3x4 rigid ``transform`` of the run's
``dataparser_transforms.json`` (``{"transform": 3x4, "scale": s}``; nerfstudio's own
``transform_poses_to_original_space`` inverts it the same way). Since nerfstudio folds a
``transforms.json``'s ``applied_transform`` (COLMAP -> nerfstudio axes) into ``T``, ``T`` starts from the
frame *before* that transform: :func:`nerfstudio_data_frame` supplies it for such data sets.

gsplat's ``simple_trainer`` with ``normalize_world_space`` applies one 4x4 similarity (scale folded into
the rotation block, ``parser.transform``): save it as ``{"transform": that 4x4, "scale": 1}`` and pass it the
same way; :meth:`Similarity.from_matrix` accepts both.

Moving a Gaussian by ``x -> s R x + t``: its centre moves, its log scales grow by ``log s``, its rotation
becomes ``R`` times its own, and its view-dependent colour turns with it (SH coefficients of each degree
multiplied by the rotation's matrix for that degree, fitted exactly on sample directions).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from gags.errors import file_error
from gags.splats.gaussians import Gaussians
from gags.splats.sh import sh_basis

#: how far from orthonormal (after removing the scale) a rotation block may be
_ORTHO_TOL = 1e-3


@dataclasses.dataclass(frozen=True)
class Similarity:
    """``x -> scale * rotation @ x + translation``: rotation (3, 3) proper, translation (3,), scale > 0."""

    rotation: np.ndarray
    translation: np.ndarray
    scale: float = 1.0

    @classmethod
    def identity(cls) -> Similarity:
        return cls(np.eye(3), np.zeros(3), 1.0)

    @classmethod
    def from_matrix(cls, matrix: Any, scale: float = 1.0, source: Path | None = None) -> Similarity:
        """``x -> scale * (A x + b)`` from a 3x4 or 4x4 ``[A | b]`` where ``A`` is a rotation times a
        positive factor (folded into the scale). Raises a GagsError naming ``source`` otherwise."""
        where = source if source is not None else Path("transform")
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape == (4, 4):
            if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
                raise file_error(where, f"transform's last row is {m[3].tolist()}, not [0, 0, 0, 1]")
            m = m[:3]
        if m.shape != (3, 4) or not np.isfinite(m).all():
            raise file_error(where, f"transform must be a finite 3x4 or 4x4 matrix, got shape {m.shape}")
        a, b = m[:, :3], m[:, 3]
        det = float(np.linalg.det(a))
        if det <= 0:
            raise file_error(where, f"transform's 3x3 block has determinant {det:.3g}: not a rotation")
        factor = det ** (1.0 / 3.0)
        rot = a / factor
        if np.abs(rot @ rot.T - np.eye(3)).max() > _ORTHO_TOL:
            raise file_error(where, "transform's 3x3 block is not a rotation times a uniform scale")
        return cls(rot, scale * b, scale * factor)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points mapped by this similarity."""
        return self.scale * points @ self.rotation.T + self.translation

    def inverse(self) -> Similarity:
        rot_t = self.rotation.T
        return Similarity(rot_t, -(rot_t @ self.translation) / self.scale, 1.0 / self.scale)

    def then(self, other: Similarity) -> Similarity:
        """``other`` after ``self``: ``x -> other(self(x))``."""
        rot = other.rotation @ self.rotation
        return Similarity(
            rot, other.scale * other.rotation @ self.translation + other.translation, other.scale * self.scale
        )


def _positive(value: Any) -> bool:
    """Whether a JSON value is a finite number > 0 (booleans are not numbers here)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def read_dataparser_transforms(path: Path) -> Similarity:
    """nerfstudio's ``dataparser_transforms.json`` (or the same layout for gsplat) as the similarity
    from the data's original frame to the splats' frame. Raises a one-line GagsError naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "dataparser transforms file does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise file_error(path, f"is not readable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or "transform" not in data:
        raise file_error(path, 'needs a "transform" (3x4 matrix) and a "scale", as nerfstudio writes it')
    scale = data.get("scale", 1.0)
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not (math.isfinite(scale) and scale > 0)
    ):
        raise file_error(path, f'"scale" must be a positive number, got {scale!r}')
    try:
        matrix = np.asarray(data["transform"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise file_error(path, f'"transform" is not a numeric matrix ({e})') from e
    return Similarity.from_matrix(matrix, float(scale), source=path)


def nerfstudio_data_frame(transforms_json: Path) -> Similarity:
    """The similarity from the frame nerfstudio's ``dataparser_transforms.json`` starts from to the frame
    of ``transforms_json``'s poses: its ``applied_transform`` (and ``applied_scale``), else identity."""
    try:
        data = json.loads(Path(transforms_json).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise file_error(transforms_json, f"is not readable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or "applied_transform" not in data:
        return Similarity.identity()
    scale = data.get("applied_scale", 1.0)
    if not _positive(scale):
        raise file_error(transforms_json, f'"applied_scale" must be a positive number, got {scale!r}')
    return Similarity.from_matrix(data["applied_transform"], float(scale), source=transforms_json)


def sh_rotation(rotation: np.ndarray, degree: int) -> list[torch.Tensor]:
    """Per SH degree l = 1..``degree``, the (2l+1, 2l+1) matrix ``M`` that turns a colour function with
    the Gaussians: coefficients ``c`` of ``f`` become ``M c``, those of ``d -> f(R^T d)``.

    Fitted by least squares on 64 fixed directions: exact, as each degree's basis is closed under rotation.
    """
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen, dtype=torch.float64), dim=-1)
    rot = torch.as_tensor(rotation, dtype=torch.float64)
    turned = dirs @ rot  # rows R^T d
    before, after = sh_basis(dirs, degree), sh_basis(turned, degree)  # (64, K)
    out = []
    for level in range(1, degree + 1):
        lo, hi = level * level, (level + 1) * (level + 1)
        m = torch.linalg.lstsq(before[:, lo:hi], after[:, lo:hi]).solution  # basis(R^T d) = basis(d) @ m
        out.append(m.contiguous())
    return out


def _quat_multiply(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (w, x, y, z) quaternions: ``q`` (4,) times each of ``r`` (N, 4)."""
    w1, x1, y1, z1 = q.unbind(-1)
    w2, x2, y2, z2 = r.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=-1,
    )


def transform_gaussians(gaussians: Gaussians, sim: Similarity) -> Gaussians:
    """``gaussians`` moved by ``sim``: means (N, 3), log scales (+ log s), rotations and SH colours.

    Opacities and feature channels are unchanged; the result is float32 on the input's device.
    """
    g = gaussians.detach()
    dev = g.means.device
    rot = torch.as_tensor(sim.rotation, dtype=torch.float64, device=dev)
    means = sim.scale * g.means.double() @ rot.T + torch.as_tensor(sim.translation, device=dev)
    x, y, z, w = Rotation.from_matrix(sim.rotation).as_quat()
    q_rot = torch.tensor([w, x, y, z], dtype=torch.float64, device=dev)
    quats = _quat_multiply(q_rot, g.quats.double())
    sh = g.sh.clone()
    for level, m in enumerate(sh_rotation(sim.rotation, g.sh_degree), start=1):
        lo, hi = level * level, (level + 1) * (level + 1)
        sh[:, lo:hi] = torch.einsum("ij,njc->nic", m.to(dev, sh.dtype), g.sh[:, lo:hi])
    return dataclasses.replace(
        g,
        means=means.float(),
        quats=quats.float(),
        log_scales=g.log_scales + math.log(sim.scale),
        sh=sh,
    )
