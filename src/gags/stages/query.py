"""``gags query RUN "text"``: relevance heatmap, localisation point and mask in views; 3D selection.

Outputs go to ``RUN/queries/<slug>/`` (or ``--out``):

- ``<view>_heatmap.png``: the normalised relevance ``o`` (turbo colormap) with the point marked;
- ``<view>_mask.png``: the predicted mask (white = match);
- ``<view>_overlay.png``: the relevance composited over the rendered RGB, with the point;
- ``query.json``: the text, the method, per view the point(s), score and chosen levels, and for 3D
  queries the number of selected Gaussians and the PLY written;
- ``extract.ply`` (``--extract``: only the matching Gaussians) or ``delete.ply`` (``--delete``: the
  scene without them), written with :func:`gags.splats.ply.save_ply`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import tyro

from gags.devices import resolve_device
from gags.errors import GagsError, file_error, suggest
from gags.io import atomic_path, write_json_atomic
from gags.query import maps
from gags.query.live import render_rgb
from gags.query.maps import QueryEngine
from gags.query.postprocess import BOX_SIZE, MASK_THRESHOLD, QueryMaps
from gags.query.select3d import Selection3D, apply_selection
from gags.runfolder import RunFolder, locked
from gags.scene.cameras import Camera


@dataclasses.dataclass(kw_only=True)
class QueryConfig:
    """Query a distilled run with free text: 2D relevance in views and/or a 3D selection of Gaussians."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run folder with ``language.pt`` (after ``gags distill``)."""
    texts: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="TEXT")]
    """One or more query phrases, e.g. "ramen bowl" "chopsticks" (the field is loaded once for all)."""
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
    """Output folder (default ``RUN/queries/<slug of the text>``; with several texts, one sub-folder each)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ..."""


def slugify(text: str, max_len: int = 60) -> str:
    """A folder-safe name for a query, distinct for texts that embed differently.

    Lower case, runs of other characters become ``-``. Case never changes an embedding (CLIP's and the
    oracle's tokenisers lower-case), so "Cup" and "cup" share ``cup``; when anything else is lost
    ("cup!", non-ASCII text) a short hash of the text is appended, so "cup!" and "cup" never collide.
    """
    cleaned = text.strip().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", cleaned).strip("-")[:max_len].strip("-") or "query"
    if re.sub(r"\s+", "-", cleaned) != slug:
        slug += "-" + hashlib.sha1(text.strip().encode()).hexdigest()[:8]
    return slug


def open_engine(run: RunFolder, device: torch.device) -> QueryEngine:
    """The run's query engine (field + text encoder); errors name the missing file and stage, or the
    file that changed since ``gags distill`` made ``language.pt`` from it."""
    if run.language.exists():
        fix = f"re-run {suggest('gags', 'distill', run.root)}"
        run.check_unchanged("distill", run.splats, fix)
        run.check_unchanged("distill", run.language, fix)
    return maps.open_engine(run.root, device)


def _writes_into_run(cfg: QueryConfig) -> Path | None:
    """The run folder when the query writes into it (its lock is then taken), else None."""
    if cfg.out is None:
        return cfg.run
    out, run = Path(cfg.out).resolve(), Path(cfg.run).resolve()
    return cfg.run if out == run or run in out.parents else None


@locked("query", _writes_into_run)
def query(cfg: QueryConfig) -> dict[str, Any]:
    """Run the text queries; returns what ``query.json`` holds (a list of them for several texts)."""
    texts = [t.strip() for t in cfg.texts]
    if not texts or not all(texts):
        raise GagsError('empty query text: give a phrase, e.g. gags query RUN "mug"')
    if not 0.0 <= cfg.threshold < 1.0:
        raise GagsError(f"--threshold must be in [0, 1), got {cfg.threshold}")
    if cfg.box_size < 1:
        raise GagsError(f"--box-size must be at least 1 pixel, got {cfg.box_size}")
    if cfg.out is not None and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise file_error(cfg.out, "is a file, not a folder: pass another --out")
    run = RunFolder(cfg.run)
    device = resolve_device(cfg.device)
    engine = open_engine(run, device)
    queries = engine.embed(texts)
    do_3d = cfg.extract or cfg.delete
    cameras = _query_cameras(run, cfg, default_view=not do_3d)
    for camera in cameras:
        if camera.width < cfg.box_size or camera.height < cfg.box_size:
            raise GagsError(
                f"--box-size {cfg.box_size} is larger than view {camera.name} "
                f"({camera.width}x{camera.height})"
            )
    if len(texts) == 1:
        outs = [Path(cfg.out) if cfg.out is not None else run.root / "queries" / slugify(texts[0])]
    else:
        base = Path(cfg.out) if cfg.out is not None else run.root / "queries"
        outs = [base / slugify(t) for t in texts]
    results = [_new_result(t, engine, cfg) for t in texts]
    for camera in cameras:
        answer = engine.query_view(camera, queries, cfg.threshold, cfg.box_size)
        rgb = render_rgb(engine.field.gaussians, camera) if answer.maps else None
        for out, result, view_maps in zip(outs, results, answer.maps, strict=True):
            result["views"].append(save_view(out, camera, view_maps, rgb))
    for text, out, result in zip(texts, outs, results, strict=True):
        if do_3d:
            result["gaussians"] = _query_3d(run, engine, cfg, text, out)
        _forget_previous(out, result)
        write_json_atomic(out / "query.json", result)
        result["out"] = str(out)
    return results[0] if len(results) == 1 else {"queries": results, "out": str(outs[0].parent)}


def _new_result(text: str, engine: QueryEngine, cfg: QueryConfig) -> dict[str, Any]:
    return {
        "text": text,
        "negatives": list(engine.negative_texts),
        "method": engine.field.method,
        "threshold": cfg.threshold,
        "box_size": cfg.box_size,
        "views": [],
    }


def _forget_previous(out: Path, result: dict[str, Any]) -> None:
    """Remove the files of an earlier query in ``out`` that this one did not rewrite (so the folder
    holds only the latest query's outputs)."""
    import json

    old = out / "query.json"
    if not old.exists():
        return
    try:
        previous = json.loads(old.read_text())
    except (OSError, ValueError):
        return
    keep = {v[k] for v in result["views"] for k in ("heatmap", "mask", "overlay") if k in v}
    keep |= {result.get("gaussians", {}).get(m) for m in ("extract", "delete")}
    for view in previous.get("views", []) if isinstance(previous, dict) else []:
        for key in ("heatmap", "mask", "overlay"):
            name = view.get(key) if isinstance(view, dict) else None
            if isinstance(name, str) and name not in keep and Path(name).name == name:
                (out / name).unlink(missing_ok=True)
    old_3d = previous.get("gaussians", {}) if isinstance(previous, dict) else {}
    for mode in ("extract", "delete"):
        name = old_3d.get(mode) if isinstance(old_3d, dict) else None
        if isinstance(name, str) and name not in keep and Path(name).name == name:
            (out / name).unlink(missing_ok=True)


def save_view(out: Path, camera: Camera, maps: QueryMaps, rgb: np.ndarray | None = None) -> dict[str, Any]:
    """Write the heatmap, mask (and, given the (H, W, 3) render, overlay) PNGs of one view; return
    its JSON record."""
    stem = Path(camera.name).stem
    heatmap, mask = out / f"{stem}_heatmap.png", out / f"{stem}_mask.png"
    save_heatmap_png(heatmap, maps.normalised, maps.point)
    save_mask_png(mask, maps.mask)
    extra = {}
    if rgb is not None:
        overlay = out / f"{stem}_overlay.png"
        save_overlay_png(overlay, rgb, maps.normalised, maps.point)
        extra["overlay"] = overlay.name
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
        **extra,
    }


def save_heatmap_png(path: Path, normalised: torch.Tensor, point: tuple[int, int] | None = None) -> None:
    """(H, W) values in [0, 1] as a turbo-coloured PNG (atomic), with a white cross at ``point`` (x, y)."""
    import imageio.v3 as iio
    from matplotlib import colormaps

    rgb = (colormaps["turbo"](normalised.clamp(0, 1).numpy())[..., :3] * 255).astype(np.uint8)
    if point is not None:
        _draw_cross(rgb, point)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb, extension=".png")


def save_overlay_png(
    path: Path, rgb: np.ndarray, normalised: torch.Tensor, point: tuple[int, int] | None = None
) -> None:
    """The relevance composited over the (H, W, 3) render with the point, as the viewer and
    ``gags render`` show it (:func:`gags.query.pictures.query_picture`; atomic PNG)."""
    from gags.query.pictures import query_picture, save_png

    save_png(path, query_picture(rgb, normalised.numpy(), point))


def _draw_cross(rgb: np.ndarray, point: tuple[int, int]) -> None:
    x, y = point
    rgb[max(0, y - 4) : y + 5, x] = 255
    rgb[y, max(0, x - 4) : x + 5] = 255


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
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:  # also invalid UTF-8
        raise file_error(path, f"cannot read the camera JSON ({type(e).__name__}: {e})") from e
    entries = data if isinstance(data, list) else [data]
    if not entries:
        raise file_error(path, "holds an empty list: give at least one camera")
    cameras = []
    for k, entry in enumerate(entries):
        try:
            camera = Camera(
                name=str(entry.get("name", f"camera_{k:03d}")),
                K=np.asarray(entry["K"], dtype=np.float64).reshape(3, 3),
                world_to_cam=np.asarray(entry["world_to_cam"], dtype=np.float64).reshape(4, 4),
                width=_pixels(entry["width"]),
                height=_pixels(entry["height"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise file_error(
                path, f"camera {k} needs K (3x3), world_to_cam (4x4), width, height ({e})"
            ) from e
        problem = _camera_problem(camera)
        if problem:
            raise file_error(path, f"camera {k} ({camera.name}): {problem}")
        cameras.append(camera)
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise file_error(path, "camera names repeat (each names its output files)")
    return cameras


#: the largest image side a query camera may ask for (pixels)
MAX_SIDE = 16384


def _pixels(value: Any) -> int:
    """A whole, positive pixel count (``640`` or ``640.0``; not ``0``, ``-3``, ``10.5``, ``"640"``, true)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not np.isfinite(value) or value != int(value):
        raise ValueError(f"sizes must be whole numbers of pixels, got {value!r}")
    if not 1 <= value <= MAX_SIDE:
        raise ValueError(f"sizes must lie in [1, {MAX_SIDE}] pixels, got {value!r}")
    return int(value)


def _camera_problem(camera: Camera) -> str | None:
    """Why a camera cannot be rendered (NaN, a singular or non-rigid pose, bad intrinsics), or None."""
    K, w2c = camera.K, camera.world_to_cam
    if not (np.isfinite(K).all() and np.isfinite(w2c).all()):
        return "K and world_to_cam must be finite (no NaN or infinity)"
    if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
        return "K must have positive focal lengths and a last row [0, 0, 1]"
    R = w2c[:3, :3]
    if not (np.allclose(w2c[3], [0, 0, 0, 1]) and np.allclose(R @ R.T, np.eye(3), atol=1e-4)):
        return "world_to_cam must be a rigid transform (rotation + translation, last row [0, 0, 0, 1])"
    return None


def _query_3d(run: RunFolder, engine: QueryEngine, cfg: QueryConfig, text: str, out: Path) -> dict[str, Any]:
    """Select the Gaussians that match and write ``extract.ply`` and/or ``delete.ply``."""
    from gags.splats.ply import load_ply, save_ply

    selection: Selection3D = engine.select(text, cfg.threshold)
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
