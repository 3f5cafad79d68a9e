"""``gags eval RUN --labels DIR``: the LERF-OVS protocol (LangSplat/GAGS ``evaluate_iou_loc.py``).

For every label frame: render the language field in the frame's camera at the label's size, decode
(1 map for GAGS, 3 for LangSplat), compute the relevance of every category of the frame, then the
mask IoU and the localisation hit (:mod:`gags.query.postprocess`, :mod:`gags.evaluate.metrics`).
mIoU is the mean over (frame, query) pairs; mAcc the fraction of pairs localised. Both are also
reported per granularity (``levels.json`` next to the labels, or ``--levels``), per category and
per frame, in ``RUN/eval/metrics.json``, ``metrics.md`` and ``figure.png``; and, per frame,
``RUN/eval/frames/<frame>.png``: one row per category with the render, the ground-truth mask, the
predicted mask and the localisation point against the ground-truth boxes (where a query failed).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import tyro
from tqdm import tqdm

from gags.devices import resolve_device
from gags.errors import GagsError
from gags.evaluate.labels import FrameLabels, find_levels, match_cameras, read_labels
from gags.evaluate.metrics import aggregate, localisation_hit, mask_iou, summarise
from gags.evaluate.report import UNASSIGNED, write_report
from gags.io import atomic_dir
from gags.query.maps import QueryEngine
from gags.query.postprocess import BOX_SIZE, MASK_THRESHOLD
from gags.runfolder import RunFolder, locked
from gags.scene.cameras import Camera
from gags.stages.query import open_engine


@dataclasses.dataclass(kw_only=True)
class EvalConfig:
    """Evaluate a distilled run on LERF-OVS-format labels: mIoU and localisation accuracy by granularity."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run folder with ``language.pt`` (after ``gags distill``)."""
    labels: Path
    """Folder of LERF-OVS label JSONs (one per frame; ``levels.json`` there is read if present)."""
    levels: Path | None = None
    """Category -> subpart|part|whole JSON (default: ``LABELS/levels.json``)."""
    pattern: str = "*.json"
    """Glob of the label files in the folder (``levels.json`` is always skipped)."""
    threshold: float = MASK_THRESHOLD
    """Mask threshold on the normalised relevance (reference ``--mask_thresh 0.4``)."""
    box_size: int = BOX_SIZE
    """Side in pixels of the relevance averaging window (reference 30, made for ~1000 x 730 LERF frames;
    smaller images may want a proportionally smaller window)."""
    panels: bool = True
    """Write ``RUN/eval/frames/<frame>.png`` (render | ground truth | predicted mask | point vs box per
    category); ``--no-panels`` skips them (one RGB render per frame less)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ..."""
    out: Path | None = None
    """Folder for metrics.json, metrics.md and figure.png (default ``RUN/eval``)."""


@locked("eval", lambda cfg: cfg.run)
def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the protocol, write ``RUN/eval/metrics.{json,md}`` and ``figure.png``; return the metrics."""
    from gags.scene.load import load_run_scene

    if not 0.0 <= cfg.threshold < 1.0:
        raise GagsError(f"--threshold must be in [0, 1), got {cfg.threshold}")
    if cfg.box_size < 1:
        raise GagsError(f"--box-size must be at least 1 pixel, got {cfg.box_size}")
    run = RunFolder(cfg.run)
    frames = read_labels(cfg.labels, cfg.pattern)
    small = [f for f in frames if min(f.width, f.height) < cfg.box_size]
    if small:
        raise GagsError(
            f"--box-size {cfg.box_size} is larger than label frame {small[0].name} "
            f"({small[0].width}x{small[0].height}, {small[0].path})"
        )
    levels = find_levels(cfg.labels, cfg.levels)
    run.require(run.language, "gags distill")
    scene = load_run_scene(run)
    camera_index = match_cameras(frames, [c.name for c in scene.cameras])
    device = resolve_device(cfg.device)
    engine = open_engine(run, device)

    categories = sorted({c for f in frames for c in f.categories})
    if not categories:
        raise GagsError(f"{cfg.labels}: the label files name no categories (every 'objects' list is empty)")
    engine.embed(categories)  # one text-encoder call for every category of every frame

    out = cfg.out if cfg.out is not None else run.eval
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    # the pictures are staged and replace out/frames only together with the metrics
    with atomic_dir(out / "frames") as staged:
        for frame, index in tqdm(
            list(zip(frames, camera_index, strict=True)), desc="eval", unit="frame", leave=False
        ):
            camera = scene.cameras[index].resized(frame.width, frame.height)
            panel = staged / f"{Path(frame.name).stem}.png" if cfg.panels else None
            records += evaluate_frame(engine, frame, camera, levels, cfg.threshold, cfg.box_size, panel)
        seconds = time.perf_counter() - start
        metrics = _metrics(cfg, engine, frames, records, seconds)
        write_report(out, metrics)
    run.record_stage("eval", cfg, inputs=[run.splats, run.language])
    return metrics


def _metrics(
    cfg: EvalConfig,
    engine: QueryEngine,
    frames: list[FrameLabels],
    records: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """The ``metrics.json`` document: settings, aggregates overall / by level / category / frame, records."""
    return {
        "method": engine.field.method,
        "labels": str(cfg.labels),
        "threshold": cfg.threshold,
        "box_size": cfg.box_size,
        "negatives": list(engine.negative_texts),
        "frames": len(frames),
        "overall": aggregate(records),
        "by_level": summarise(records, "level"),
        "by_category": _by_category(records),
        "by_frame": summarise(records, "frame"),
        "queries": records,
        "seconds_per_frame": seconds / len(frames),
        "panels": "frames" if cfg.panels else None,
    }


def evaluate_frame(
    engine: QueryEngine,
    frame: FrameLabels,
    camera: Camera,
    levels: dict[str, str],
    threshold: float = MASK_THRESHOLD,
    box_size: int = BOX_SIZE,
    panel: Path | None = None,
) -> list[dict[str, Any]]:
    """One record per category of ``frame``: IoU, hit, chosen levels, point and score; with ``panel``,
    the frame's picture (:func:`gags.query.pictures.eval_frame_picture`) is written there."""
    names = list(frame.categories)
    if not names:
        return []
    answer = engine.query_view(camera, engine.embed(names), threshold, box_size)
    records, rows = [], []
    for name, result in zip(names, answer.maps, strict=True):
        gt = frame.categories[name]
        rows.append(
            {"category": name, "gt_mask": gt.mask, "boxes": gt.boxes, "mask": result.mask}
            | {"points": result.points, "normalised": result.normalised}
        )
        records.append(
            {
                "frame": frame.name,
                "category": name,
                "level": levels.get(name, UNASSIGNED),
                "iou": mask_iou(result.mask, gt.mask),
                "hit": localisation_hit(result.points, gt.boxes),
                "point": list(result.point),
                "score": result.score,
                "mask_level": result.mask_level,
                "point_level": result.point_level,
            }
        )
        rows[-1] |= {"iou": records[-1]["iou"], "hit": records[-1]["hit"]}
    if panel is not None:
        from gags.query.live import render_rgb
        from gags.query.pictures import eval_frame_picture, save_png

        save_png(panel, eval_frame_picture(render_rgb(engine.field.gaussians, camera), rows))
    return records


def _by_category(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category: its granularity and the aggregates over the frames it is labelled in."""
    out = summarise(records, "category")
    level_of = {r["category"]: r["level"] for r in records}
    return {name: {"level": level_of[name], **row} for name, row in out.items()}


def main(cfg: EvalConfig) -> None:
    """``gags eval``: run and print the overall figures."""
    metrics = evaluate(cfg)
    o = metrics["overall"]
    print(f"gags eval: mIoU {100 * o['miou']:.1f}%, mAcc {100 * o['macc']:.1f}% over {o['pairs']} pairs")
