"""``load_scene``: detect the data set format, read cameras and points, downscale, split train/eval."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from gags.errors import GagsError, file_error, suggest
from gags.runfolder import RunFolder
from gags.scene import blender, colmap, llff, points_npz
from gags.scene.cameras import Camera
from gags.scene.scene import Scene

FORMATS = ("colmap", "llff", "blender", "points_npz")

#: the smallest image side (pixels) a stage accepts after downscaling: fewer pixels make no useful field
MIN_IMAGE_SIDE = 8


@dataclasses.dataclass
class SceneOptions:
    """How to read a data set (everything but where it is)."""

    downscale: float = 1.0
    """Divide image sizes and intrinsics by this; COLMAP/LLFF read ``images_N`` if it exists for N = this."""
    images: str | None = None
    """Image subfolder to read instead of ``images``/``images_N`` (e.g. ``images_8``), resized as needed."""
    holdout_every: int = 8
    """Hold out images 0, N, 2N, ... (sorted by name) for evaluation, as Mip-NeRF 360 and 3DGS do; 0 = none.
    Ignored when a Blender ``transforms_test.json`` gives the eval views."""
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """RGB in [0, 1] that transparent (RGBA) images are composited on; white is usual for Blender scenes."""

    def at(self, data: Path) -> SceneConfig:
        """These options for the data set at ``data`` (made absolute: later stages may run elsewhere)."""
        return SceneConfig(data=Path(data).resolve(), **dataclasses.asdict(self))


@dataclasses.dataclass(kw_only=True)
class SceneConfig(SceneOptions):
    """Where the data set is and how to read it."""

    data: Path
    """Data set folder (COLMAP, LLFF, Blender/nerfstudio) or a points ``.npz`` file."""


def detect_format(data: Path) -> str:
    """The format of ``data``: one of :data:`FORMATS`; a :class:`GagsError` lists what was looked for."""
    if not data.exists():
        raise file_error(data, "data set path does not exist")
    if data.is_dir():
        if colmap.find_model_dir(data) is not None:
            return "colmap"
        if (data / llff.POSES_FILE).is_file():
            return "llff"
        if blender.find_transforms(data) is not None:
            return "blender"
    if points_npz.find_npz(data) is not None:
        return "points_npz"
    raise file_error(
        data,
        "no known data set format; looked for a COLMAP model (sparse/0/, sparse/ or ./ with cameras+images "
        f".bin/.txt), LLFF {llff.POSES_FILE}, Blender/nerfstudio {' or '.join(blender.TRAIN_FILES)}, "
        "or a points .npz",
    )


def load_scene(cfg: SceneConfig) -> Scene:
    """Read the data set of ``cfg``: cameras sorted by name at ``1 / cfg.downscale`` size, points, split."""
    data = Path(cfg.data)
    if not (math.isfinite(cfg.downscale) and cfg.downscale > 0):
        raise GagsError(f"downscale must be a positive number, got {cfg.downscale}")
    if cfg.holdout_every < 0:
        raise GagsError(f"holdout_every must be >= 0, got {cfg.holdout_every}")
    fmt = detect_format(data)
    eval_names: list[str] | None = None
    if fmt == "colmap":
        cameras, points, colors = colmap.load_colmap(data, cfg.downscale, cfg.images)
    elif fmt == "llff":
        cameras, points, colors = llff.load_llff(data, cfg.downscale, cfg.images)
    elif fmt == "blender":
        cameras, eval_names, points, colors = blender.load_blender(data)
    else:
        cameras, points, colors = points_npz.load_points_npz(points_npz.find_npz(data))
    cameras = sorted(cameras, key=lambda c: c.name)
    _check_unique_names(cameras, data)
    if cfg.downscale != 1:
        cameras = [c.scaled(cfg.downscale) for c in cameras]
        check_image_sizes(cameras, data, "downscale", cfg.downscale)
    train, held_out = split_indices([c.name for c in cameras], cfg.holdout_every, eval_names)
    return Scene(
        cameras=cameras,
        train_indices=train,
        eval_indices=held_out,
        points=None if points is None else points.astype(np.float32),
        point_colors=None if colors is None else colors.astype(np.uint8),
        background=tuple(float(v) for v in cfg.background),
        source=str(data),
        format=fmt,
    )


def check_image_sizes(cameras: list[Camera], source: Path, option: str, factor: float) -> None:
    """Raise unless every camera, downscaled by ``--option factor``, is at least :data:`MIN_IMAGE_SIDE`
    pixels on each side."""
    small = [c for c in cameras if min(c.width, c.height) < MIN_IMAGE_SIDE]
    if small:
        c = small[0]
        raise file_error(
            source,
            f"--{option} {factor:g} leaves images of {c.width}x{c.height} pixels ({c.name}); each side "
            f"needs at least {MIN_IMAGE_SIDE}: use a smaller --{option}",
        )


def split_indices(
    names: list[str], holdout_every: int, eval_names: list[str] | None = None
) -> tuple[list[int], list[int]]:
    """(train, eval) indices: ``eval_names`` when given, else every ``holdout_every``-th index from 0."""
    if eval_names is not None:
        wanted = set(eval_names)
        held_out = [i for i, name in enumerate(names) if name in wanted]
    elif holdout_every > 0 and len(names) > 1:
        held_out = list(range(0, len(names), holdout_every))
    else:
        held_out = []
    excluded = set(held_out)
    train = [i for i in range(len(names)) if i not in excluded]
    if not train:
        raise GagsError(f"holdout_every={holdout_every} leaves no training views out of {len(names)}")
    return train, held_out


def _check_unique_names(cameras: list[Camera], data: Path) -> None:
    names = [c.name for c in cameras]
    duplicates = sorted({n for n, m in zip(names, names[1:], strict=False) if n == m})
    if duplicates:
        raise file_error(data, f"image names are not unique: {duplicates[:5]}")


def scene_config_from_dict(values: dict[str, Any], source: Path) -> SceneConfig:
    """A :class:`SceneConfig` from its ``dataclasses.asdict`` form (as stored in ``config.json``)."""
    if not isinstance(values, dict):
        raise file_error(source, f"'scene' entry must be a JSON object, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(SceneConfig)}
    unknown = sorted(set(values) - known)
    if unknown or "data" not in values:
        raise file_error(source, f"'scene' entry has unknown keys {unknown} or lacks 'data'")
    values = dict(values)
    expected = {
        "data": (str,),
        "downscale": (int, float),
        "images": (str, type(None)),
        "holdout_every": (int,),
        "background": (list,),
    }
    for key, types in expected.items():
        if key in values and (not isinstance(values[key], types) or isinstance(values[key], bool)):
            raise file_error(
                source, f"'scene.{key}' has the wrong type ({type(values[key]).__name__}: {values[key]!r})"
            )
    background = values.get("background", [0.0, 0.0, 0.0])
    if len(background) != 3 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in background
    ):
        raise file_error(source, f"'scene.background' must be three numbers, got {background!r}")
    values["data"] = Path(values["data"])
    values["background"] = tuple(float(v) for v in background)
    return SceneConfig(**values)


def load_run_scene(run: RunFolder) -> Scene:
    """The scene a run was trained on, rebuilt from ``config.json["scene"]`` (written by ``train-rgb``)."""
    config = run.read_config()
    if "scene" not in config:
        raise GagsError(
            f"{run.config} has no 'scene' entry: run "
            f"{suggest('gags', 'train-rgb', 'DATA', '--out', run.root)} first"
        )
    return load_scene(scene_config_from_dict(config["scene"], run.config))


def scene_summary(scene: Scene) -> dict[str, Any]:
    """A JSON-able description: format, counts, image sizes, focal lengths, extent."""
    sizes = sorted({(c.width, c.height) for c in scene.cameras})
    focals = np.array([[c.K[0, 0], c.K[1, 1]] for c in scene.cameras])
    return {
        "source": scene.source,
        "format": scene.format,
        "cameras": len(scene.cameras),
        "train": len(scene.train_indices),
        "eval": len(scene.eval_indices),
        "points": 0 if scene.points is None else len(scene.points),
        "image_sizes": [list(s) for s in sizes],
        "focal_px": [float(focals.min()), float(focals.max())],
        "extent": scene.scene_extent(),
        "has_images": all(c.image_path is not None for c in scene.cameras),
    }
