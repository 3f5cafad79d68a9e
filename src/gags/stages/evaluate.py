"""``gags eval RUN --labels DIR``: the LERF-OVS protocol (LangSplat/GAGS ``evaluate_iou_loc.py``).

For every label frame: render the language field in the frame's camera at the label's size, decode
(1 map for GAGS, 3 for LangSplat), compute the relevance of every category of the frame, then the
mask IoU and the localisation hit (:mod:`gags.query.postprocess`, :mod:`gags.evaluate.metrics`).
mIoU is the mean over (frame, query) pairs; mAcc the fraction of pairs localised. Both are also
reported per granularity (``levels.json`` next to the labels, or ``--levels``), per category and
per frame, in ``RUN/eval/metrics.json``, ``metrics.md`` and ``figure.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import tyro
from tqdm import tqdm

from gags.devices import resolve_device
from gags.errors import GagsError
from gags.evaluate.labels import FrameLabels, find_levels, match_cameras, read_labels
from gags.evaluate.metrics import aggregate, localisation_hit, mask_iou, summarise
from gags.evaluate.report import UNASSIGNED, write_report
from gags.query.postprocess import BOX_SIZE, MASK_THRESHOLD, postprocess
from gags.query.relevance import CANONICAL_NEGATIVES, encode_query, relevance
from gags.runfolder import RunFolder
from gags.scene.cameras import Camera, stack_cameras
from gags.stages.query import open_language


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
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ..."""


def camera_at_size(camera: Camera, width: int, height: int) -> Camera:
    """The same view rendered at ``width`` x ``height`` (intrinsics scaled per axis)."""
    if (camera.width, camera.height) == (width, height):
        return camera
    K = camera.K.copy()
    K[0] *= width / camera.width
    K[1] *= height / camera.height
    return dataclasses.replace(camera, K=K, width=width, height=height)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the protocol, write ``RUN/eval/metrics.{json,md}`` and ``figure.png``; return the metrics."""
    from gags.scene.load import load_run_scene

    run = RunFolder(cfg.run)
    frames = read_labels(cfg.labels, cfg.pattern)
    levels = find_levels(cfg.labels, cfg.levels)
    run.require(run.language, "gags distill")
    scene = load_run_scene(run)
    camera_index = match_cameras(frames, [c.name for c in scene.cameras])
    device = resolve_device(cfg.device)
    field, encoder = open_language(run, device)

    categories = sorted({c for f in frames for c in f.categories})
    if not categories:
        raise GagsError(f"{cfg.labels}: the label files name no categories (every 'objects' list is empty)")
    embeddings, negatives = encode_query(encoder, categories)
    text = {c: embeddings[i].to(device) for i, c in enumerate(categories)}
    negatives = negatives.to(device)

    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for frame, index in tqdm(
        list(zip(frames, camera_index, strict=True)), desc="eval", unit="frame", leave=False
    ):
        camera = camera_at_size(scene.cameras[index], frame.width, frame.height)
        records += evaluate_frame(field, frame, camera, text, negatives, levels, cfg.threshold, cfg.box_size)
    seconds = time.perf_counter() - start

    metrics = {
        "method": field.method,
        "labels": str(cfg.labels),
        "threshold": cfg.threshold,
        "box_size": cfg.box_size,
        "negatives": list(CANONICAL_NEGATIVES),
        "frames": len(frames),
        "overall": aggregate(records),
        "by_level": summarise(records, "level"),
        "by_category": _by_category(records),
        "by_frame": summarise(records, "frame"),
        "queries": records,
        "seconds_per_frame": seconds / len(frames),
    }
    write_report(run.eval, metrics)
    run.record_stage("eval", cfg)
    return metrics


def evaluate_frame(
    field,
    frame: FrameLabels,
    camera: Camera,
    text: dict[str, torch.Tensor],
    negatives: torch.Tensor,
    levels: dict[str, str],
    threshold: float = MASK_THRESHOLD,
    box_size: int = BOX_SIZE,
) -> list[dict[str, Any]]:
    """One record per category of ``frame``: IoU, hit, chosen levels, point and score."""
    names = list(frame.categories)
    if not names:
        return []
    queries = torch.stack([text[n] for n in names])  # (Q, D)
    viewmats, Ks = stack_cameras([camera], device=queries.device)
    with torch.no_grad():
        maps = field.render_feature_maps(viewmats, Ks, camera.width, camera.height)  # L x (1, H, W, D)
        rel = torch.stack([relevance(m[0], queries, negatives) for m in maps], dim=1).cpu()  # (Q, L, H, W)
    records = []
    for k, name in enumerate(names):
        gt = frame.categories[name]
        result = postprocess(rel[k], threshold, box_size)
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
