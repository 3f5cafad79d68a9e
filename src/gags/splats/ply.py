"""Gaussians to and from PLY files in the standard 3DGS layout, plus extra named feature channels.

Per-vertex float32 properties, in this order (the layout of the original 3DGS code, which gsplat's
exporter and common splat viewers also use)::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1} opacity scale_0..2 rot_0..3 <features>

``f_rest`` is channel-major (all K-1 red coefficients, then green, then blue), ``opacity`` is the
logit, ``scale_*`` are log standard deviations and ``rot_*`` an unnormalised (w, x, y, z) quaternion:
exactly the raw parameters of :class:`~gags.splats.gaussians.Gaussians`. Any further property is read
as a feature channel (e.g. ``semantic_0..15``); normals are written as zeros and ignored on load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from gags.errors import file_error
from gags.io import atomic_path
from gags.splats.gaussians import Gaussians

_POSITION = ("x", "y", "z")
_NORMALS = ("nx", "ny", "nz")
_DC = ("f_dc_0", "f_dc_1", "f_dc_2")
_SCALE = ("scale_0", "scale_1", "scale_2")
_ROT = ("rot_0", "rot_1", "rot_2", "rot_3")
_REQUIRED = _POSITION + _DC + ("opacity",) + _SCALE + _ROT


def feature_names_for(gaussians: Gaussians) -> list[str]:
    """PLY property names of the feature channels: ``feature_names`` or ``feature_0..F-1``."""
    if gaussians.features is None:
        return []
    count = gaussians.features.shape[1]
    names = list(gaussians.feature_names)
    if len(names) != count:
        names = [f"feature_{i}" for i in range(count)]
    return names


def save_ply(path: str | Path, gaussians: Gaussians) -> None:
    """Write ``gaussians`` to ``path`` (binary little-endian PLY, atomically).

    Args:
        path: destination; an existing file is replaced only once the new one is complete.
        gaussians: N Gaussians with sh (N, K, 3) and optional features (N, F).
    """
    g = gaussians.detach().to("cpu")
    n, k = len(g), g.sh.shape[1]
    sh_rest = g.sh[:, 1:].transpose(1, 2).reshape(n, 3 * (k - 1))  # (N, 3(K-1)) channel-major
    columns: list[tuple[str, torch.Tensor]] = [(name, g.means[:, i]) for i, name in enumerate(_POSITION)]
    columns += [(name, torch.zeros(n)) for name in _NORMALS]
    columns += [(name, g.sh[:, 0, i]) for i, name in enumerate(_DC)]
    columns += [(f"f_rest_{i}", sh_rest[:, i]) for i in range(sh_rest.shape[1])]
    columns += [("opacity", g.opacity_logits.reshape(n))]
    columns += [(name, g.log_scales[:, i]) for i, name in enumerate(_SCALE)]
    columns += [(name, g.quats[:, i]) for i, name in enumerate(_ROT)]
    if g.features is not None:
        columns += [(name, g.features[:, i]) for i, name in enumerate(feature_names_for(g))]

    vertex = np.empty(n, dtype=[(name, "<f4") for name, _ in columns])
    for name, values in columns:
        vertex[name] = values.float().numpy()
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(tmp))


def load_ply(path: str | Path) -> Gaussians:
    """Read a splat PLY written by :func:`save_ply`, the original 3DGS code or gsplat's exporter.

    Any SH degree 0-3 is accepted (inferred from the number of ``f_rest_*`` properties).

    Returns:
        float32 CPU :class:`Gaussians`; extra properties become ``features`` (N, F) with their names.
    Raises:
        GagsError: the file is missing or unreadable, has no or an empty ``vertex`` element, lacks a
            required property, has an ``f_rest`` count that is no SH degree, holds NaN/inf values or
            all-zero rotations.
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "splat PLY file does not exist")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for corrupt headers and bodies
        raise file_error(path, f"is not a readable PLY file ({type(e).__name__}: {e})") from e
    if "vertex" not in [el.name for el in ply.elements]:
        raise file_error(path, "has no 'vertex' element, so it holds no Gaussians")
    data = ply["vertex"].data
    names = list(data.dtype.names or ())
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise file_error(path, f"is not a 3DGS splat PLY: missing vertex properties {', '.join(missing)}")

    if len(data) == 0:
        raise file_error(path, "holds no Gaussians (its vertex element is empty)")
    rest_names = _sorted_indexed(names, "f_rest_")
    k = len(rest_names) // 3 + 1
    if len(rest_names) % 3 or k not in (1, 4, 9, 16):
        raise file_error(
            path, f"has {len(rest_names)} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0-3)"
        )
    known = set(_REQUIRED) | set(_NORMALS) | set(rest_names)
    feature_names = [name for name in names if name not in known]

    def stack(columns: list[str]) -> torch.Tensor:
        if not columns:
            return torch.zeros(len(data), 0)
        return torch.from_numpy(np.stack([np.asarray(data[c], dtype=np.float32) for c in columns], axis=1))

    n = len(data)
    rest = stack(rest_names).reshape(n, 3, k - 1).transpose(1, 2)  # (N, K-1, 3)
    gaussians = Gaussians(
        means=stack(list(_POSITION)),
        quats=stack(list(_ROT)),
        log_scales=stack(list(_SCALE)),
        opacity_logits=stack(["opacity"])[:, 0].contiguous(),
        sh=torch.cat([stack(list(_DC))[:, None, :], rest], dim=1).contiguous(),
        features=stack(feature_names) if feature_names else None,
        feature_names=feature_names,
    )
    _check_finite(path, gaussians)
    zero = gaussians.quats.norm(dim=1) == 0
    if zero.any():
        first = int(zero.nonzero()[0, 0])
        raise file_error(
            path, f"{int(zero.sum())} Gaussians have an all-zero rotation (first: vertex {first})"
        )
    return gaussians


def _sorted_indexed(names: list[str], prefix: str) -> list[str]:
    """Properties ``prefix0, prefix1, ...`` sorted by their integer index."""
    picked = [n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]
    return sorted(picked, key=lambda n: int(n[len(prefix) :]))


def _check_finite(path: Path, gaussians: Gaussians) -> None:
    """Raise a GagsError naming the first field that holds NaN or inf."""
    fields = {
        "position": gaussians.means,
        "rotation": gaussians.quats,
        "scale": gaussians.log_scales,
        "opacity": gaussians.opacity_logits,
        "SH colour": gaussians.sh,
    }
    if gaussians.features is not None:
        fields["feature"] = gaussians.features
    for label, values in fields.items():
        bad = ~torch.isfinite(values).reshape(len(gaussians), -1).all(dim=1)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise file_error(
                path, f"{int(bad.sum())} Gaussians have NaN/inf {label} values (first: vertex {first})"
            )
