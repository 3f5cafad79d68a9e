"""``gags query RUN "text"``: relevance heatmap, localisation point and mask in views; 3D selection.

Outputs go to ``RUN/queries/<slug>/`` (or ``--out``):

- ``<view>_heatmap.png``: the normalised relevance ``o`` (turbo colormap) with the point marked;
- ``<view>_mask.png``: the predicted mask (white = match);
- ``query.json``: the text, the method, per view the point(s), score and chosen levels, and for 3D
  queries the number of selected Gaussians and the PLY written;
- ``extract.ply`` (``--extract``: only the matching Gaussians) or ``delete.ply`` (``--delete``: the
  scene without them), written with :func:`gags.splats.ply.save_ply`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import tyro

from gags.devices import resolve_device
from gags.errors import GagsError, file_error
from gags.io import atomic_path, write_json_atomic
from gags.models.registry import build_encoder
from gags.query.postprocess import BOX_SIZE, MASK_THRESHOLD, QueryMaps, postprocess
from gags.query.relevance import CANONICAL_NEGATIVES, encode_query, relevance
from gags.query.select3d import Selection3D, apply_selection, select_gaussians
from gags.runfolder import RunFolder
from gags.scene.cameras import Camera, stack_cameras


@dataclasses.dataclass(kw_only=True)
class QueryConfig:
    """Query a distilled run with free text: 2D relevance in views and/or a 3D selection of Gaussians."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run folder with ``language.pt`` (after ``gags distill``)."""
    text: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="TEXT")]
    """The query phrase, e.g. "ramen bowl"."""
    view: tuple[str, ...] = ()
    """Scene image names to query (with or without extension), or ``all``. Default: the first held-out
    view (or the first view) when no 3D operation is asked for."""
    camera: Path | None = None
    """JSON file with extra cameras: one object or a list, each {"name", "K" (3x3), "world_to_cam"
    (4x4, OpenCV), "width", "height"}."""
    threshold: float = MASK_THRESHOLD
    """Mask threshold on the normalised relevance (reference 0.4); also used for the 3D selection."""
    box_size: int = BOX_SIZE
    """Side in pixels of the relevance averaging window (reference 30, made for ~1000 x 730 LERF frames;
    smaller images may want a proportionally smaller window)."""
    extract: bool = False
    """Write ``extract.ply`` with only the Gaussians that match the query."""
    delete: bool = False
    """Write ``delete.ply``: the scene without the Gaussians that match the query."""
    out: Path | None = None
    """Output folder (default ``RUN/queries/<slug of the text>``)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ..."""


def slugify(text: str, max_len: int = 60) -> str:
    """A folder-safe name for a query: lower case, runs of other characters become ``-``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "query"


def load_field(run: RunFolder, device: torch.device):
    """The run's :class:`~gags.distill.field.LanguageField`; errors name the missing file and stage."""
    run.require(run.language, "gags distill")
    run.require(run.splats, "gags train-rgb")
    from gags.distill.field import LanguageField

    return LanguageField.load(run.language, run.splats, device=device)


def open_language(run: RunFolder, device: torch.device):
    """Load the language field of a run and rebuild its text encoder.

    Returns ``(field, encoder)``. Raises :class:`GagsError` naming what is missing: ``language.pt``
    (run ``gags distill``), ``splats.ply`` (``gags train-rgb``), or the encoder spec (``gags prepare``).
    The spec comes from ``language.pt["encoder"]`` (``field.encoder``), else from
    ``config.json["prepare"]["encoder"]``.
    """
    field = load_field(run, device)
    spec = field.encoder or run.read_config().get("prepare", {}).get("encoder")
    if not spec:
        raise GagsError(
            f"{run.language} and {run.config} name no text encoder: run `gags prepare` on {run.root} first"
        )
    return field, build_encoder(spec, str(device))


def query(cfg: QueryConfig) -> dict[str, Any]:
    """Run one text query; returns what ``query.json`` holds."""
    text = cfg.text.strip()
    if not text:
        raise GagsError('empty query text: give a phrase, e.g. gags query RUN "mug"')
    if not 0.0 <= cfg.threshold < 1.0:
        raise GagsError(f"--threshold must be in [0, 1), got {cfg.threshold}")
    run = RunFolder(cfg.run)
    device = resolve_device(cfg.device)
    field, encoder = open_language(run, device)
    queries, negatives = encode_query(encoder, [text])
    q, negatives = queries[0].to(device), negatives.to(device)
    out = Path(cfg.out) if cfg.out is not None else run.root / "queries" / slugify(text)

    do_3d = cfg.extract or cfg.delete
    cameras = _query_cameras(run, cfg, default_view=not do_3d)
    result: dict[str, Any] = {
        "text": text,
        "negatives": list(CANONICAL_NEGATIVES),
        "method": field.method,
        "threshold": cfg.threshold,
        "box_size": cfg.box_size,
        "views": [],
    }
    for camera in cameras:
        maps = query_view(field, camera, q, negatives, cfg.threshold, cfg.box_size)
        result["views"].append(save_view(out, camera, maps))
    if do_3d:
        result["gaussians"] = _query_3d(run, field, cfg, q, negatives, out)
    write_json_atomic(out / "query.json", result)
    result["out"] = str(out)
    return result


def query_view(
    field,
    camera: Camera,
    q: torch.Tensor,
    negatives: torch.Tensor,
    threshold: float = MASK_THRESHOLD,
    box_size: int = BOX_SIZE,
) -> QueryMaps:
    """Render the field in one camera, decode, score against the query and post-process."""
    viewmats, Ks = stack_cameras([camera], device=q.device)
    with torch.no_grad():
        maps = field.render_feature_maps(viewmats, Ks, camera.width, camera.height)  # L x (1, H, W, D)
        rel = torch.stack([relevance(m[0], q, negatives) for m in maps])  # (L, H, W)
    return postprocess(rel.cpu(), threshold, box_size)


def save_view(out: Path, camera: Camera, maps: QueryMaps) -> dict[str, Any]:
    """Write the heatmap and mask PNGs of one view; return its JSON record."""
    stem = Path(camera.name).stem
    heatmap, mask = out / f"{stem}_heatmap.png", out / f"{stem}_mask.png"
    save_heatmap_png(heatmap, maps.normalised, maps.point)
    save_mask_png(mask, maps.mask)
    return {
        "view": camera.name,
        "width": camera.width,
        "height": camera.height,
        "point": list(maps.point),
        "tied_points": int(maps.points.shape[0]),
        "score": maps.score,
        "mask_fraction": float(maps.mask.float().mean()),
        "mask_level": maps.mask_level,
        "point_level": maps.point_level,
        "heatmap": heatmap.name,
        "mask": mask.name,
    }


def save_heatmap_png(path: Path, normalised: torch.Tensor, point: tuple[int, int] | None = None) -> None:
    """(H, W) values in [0, 1] as a turbo-coloured PNG (atomic), with a white cross at ``point`` (x, y)."""
    import imageio.v3 as iio
    from matplotlib import colormaps

    rgb = (colormaps["turbo"](normalised.clamp(0, 1).numpy())[..., :3] * 255).astype(np.uint8)
    if point is not None:
        x, y = point
        rgb[max(0, y - 4) : y + 5, x] = 255
        rgb[y, max(0, x - 4) : x + 5] = 255
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb, extension=".png")


def save_mask_png(path: Path, mask: torch.Tensor) -> None:
    """(H, W) bool mask as an 8-bit PNG, 255 = match (atomic)."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, mask.numpy().astype(np.uint8) * 255, extension=".png")


def _query_cameras(run: RunFolder, cfg: QueryConfig, default_view: bool) -> list[Camera]:
    """The cameras named by ``--view`` and those in ``--camera``; a default view if none and wanted."""
    cameras = read_camera_file(cfg.camera) if cfg.camera is not None else []
    if cfg.view or (default_view and not cameras):
        from gags.scene.load import load_run_scene

        scene = load_run_scene(run)
        cameras = _scene_views(scene, cfg.view) + cameras
    return cameras


def _scene_views(scene, names: tuple[str, ...]) -> list[Camera]:
    if not names:
        return [(scene.eval_cameras or scene.cameras)[0]]
    if names == ("all",):
        return list(scene.cameras)
    by_stem = {Path(c.name).stem: c for c in scene.cameras}
    by_name = {c.name: c for c in scene.cameras}
    picked = []
    for name in names:
        camera = by_name.get(name) or by_stem.get(Path(name).stem)
        if camera is None:
            sample = ", ".join(c.name for c in scene.cameras[:5])
            raise GagsError(f'--view "{name}" is not an image of the scene ({sample}, ...)')
        picked.append(camera)
    return picked


def read_camera_file(path: Path) -> list[Camera]:
    """Cameras from a JSON file (see ``QueryConfig.camera``); errors name the file and the entry."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise file_error(path, f"cannot read the camera JSON ({e})") from e
    entries = data if isinstance(data, list) else [data]
    cameras = []
    for k, entry in enumerate(entries):
        try:
            cameras.append(
                Camera(
                    name=str(entry.get("name", f"camera_{k:03d}")),
                    K=np.asarray(entry["K"], dtype=np.float64).reshape(3, 3),
                    world_to_cam=np.asarray(entry["world_to_cam"], dtype=np.float64).reshape(4, 4),
                    width=int(entry["width"]),
                    height=int(entry["height"]),
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise file_error(
                path, f"camera {k} needs K (3x3), world_to_cam (4x4), width, height ({e})"
            ) from e
    return cameras


def _query_3d(run: RunFolder, field, cfg: QueryConfig, q, negatives, out: Path) -> dict[str, Any]:
    """Select the Gaussians that match and write ``extract.ply`` and/or ``delete.ply``."""
    from gags.splats.ply import load_ply, save_ply

    with torch.no_grad():
        selection: Selection3D = select_gaussians(field.gaussian_features(), q, negatives, cfg.threshold)
    gaussians = load_ply(run.splats)
    mask = selection.mask.cpu()
    if mask.shape[0] != len(gaussians):
        raise file_error(
            run.language,
            f"has {mask.shape[0]} Gaussian features but {run.splats} has {len(gaussians)} Gaussians",
        )
    record: dict[str, Any] = {"total": len(gaussians), "selected": selection.count, "level": selection.level}
    for flag, mode in ((cfg.extract, "extract"), (cfg.delete, "delete")):
        if flag:
            path = out / f"{mode}.ply"
            save_ply(path, apply_selection(gaussians, mask, mode))
            record[mode] = path.name
    return record


def main(cfg: QueryConfig) -> None:
    """``gags query``: run and print where the outputs went."""
    result = query(cfg)
    print(f"gags query: wrote {result['out']}")
