"""Multi-view segmentation consistency on the synthetic scene: GaS prompts against uniform prompts.

For every view, every level (subpart / part / whole) and every object, the masks that cover the
object are matched to the ground truth: each mask gets the granularity (subpart 0, part 1, whole 2)
of the ground-truth region it overlaps best (IoU >= 0.5), else 3 (fragment or mixture); pixels
without a mask get 4. The object's label in that view is the pixel-weighted mode. Consistency of
(object, level) = the share of (near, far) view pairs where both labels agree, and the share of
all views that agree with the most common label. Uses the oracle segmenter, whose granularity
follows apparent size like SAM's. Prints JSON.

    python benchmarks/bench_consistency.py [--width 200 --height 150] [--bed v2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gags.runfolder import RunFolder
from gags.segment.prompts import PromptConfig
from gags.stages.prepare import PrepareConfig, prepare
from gags.synthetic import SyntheticConfig, generate_scene
from gags.synthetic.groundtruth import GroundTruthStore

MIN_OBJECT_PX = 50


def mask_labels(maps: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Granularity label per mask index of one level map -> (max index + 1,) int (see module docstring)."""
    n_masks = int(maps.max()) + 1
    if n_masks == 0:
        return np.zeros(0, dtype=np.int64)
    n_regions = int(gt.max()) + 1
    level_of = np.full(n_regions, -1)
    for g in range(3):
        level_of[gt[g][gt[g] >= 0]] = g
    best_iou = np.zeros(n_masks)
    best_level = np.full(n_masks, 3)
    mask_area = np.bincount(maps[maps >= 0], minlength=n_masks)
    for g in range(3):  # three levels, vectorised over masks and regions
        valid = (maps >= 0) & (gt[g] >= 0)
        overlap = np.bincount(maps[valid] * n_regions + gt[g][valid], minlength=n_masks * n_regions)
        overlap = overlap.reshape(n_masks, n_regions)
        region_area = np.bincount(gt[g][gt[g] >= 0], minlength=n_regions)
        iou = overlap / np.maximum(mask_area[:, None] + region_area[None, :] - overlap, 1)
        top = iou.max(1)
        better = (top > best_iou) & (top >= 0.5)
        best_iou = np.where(better, top, best_iou)
        best_level = np.where(better, g, best_level)
    return best_level


def object_labels(maps: np.ndarray, gt: np.ndarray) -> dict[tuple[int, int], int]:
    """(object id, level) -> the pixel-weighted mode label of the masks over that object in one view."""
    out = {}
    for level in range(3):
        labels = mask_labels(maps[level], gt)
        pixel_label = np.where(maps[level] >= 0, labels[np.maximum(maps[level], 0)] if labels.size else 4, 4)
        objects = gt[2]
        for obj in np.unique(objects[objects >= 0]):
            sel = objects == obj
            if sel.sum() < MIN_OBJECT_PX:
                continue
            out[(int(obj), level)] = int(np.bincount(pixel_label[sel], minlength=5).argmax())
    return out


def consistency(run: RunFolder, store: GroundTruthStore, rings: dict[str, str]) -> dict:
    per_view = {}
    for seg_file in sorted(run.segments.glob("*.npz")):
        maps = np.load(seg_file)["maps"]
        name = next(n for n in rings if Path(n).stem == seg_file.stem)
        gt = store.labels_at(name, maps.shape[1], maps.shape[2]).astype(np.int64)
        per_view[name] = object_labels(maps, gt)
    keys = sorted({k for v in per_view.values() for k in v})
    result = {}
    for level, level_name in enumerate(("subpart", "part", "whole")):
        pair_scores, mode_scores = [], []
        for key in (k for k in keys if k[1] == level):
            near = [v[key] for n, v in per_view.items() if key in v and rings[n] == "near"]
            far = [v[key] for n, v in per_view.items() if key in v and rings[n] != "near"]
            every = near + far
            if len(every) >= 2:
                mode_scores.append(np.mean(np.array(every) == np.bincount(every).argmax()))
            if near and far:
                pair_scores.append(np.mean(np.array(near)[:, None] == np.array(far)[None, :]))
        result[level_name] = {
            "near_far_agreement": round(float(np.mean(pair_scores)), 3) if pair_scores else None,
            "agreement_with_mode": round(float(np.mean(mode_scores)), 3) if mode_scores else None,
            "objects": len(mode_scores),
        }
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--backend", default="torch")
    p.add_argument("--bed", default="v2", choices=["v1", "v2"], help="oracle test bed (gags.synthetic.bed)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = generate_scene(SyntheticConfig(width=args.width, height=args.height, cache_dir=Path(tmp)))
        views = json.loads((scene_dir / "views.json").read_text())["views"]
        rings = {v["name"]: v["ring"] for v in views}
        store = GroundTruthStore(scene_dir)
        out = {"scene": {"views": len(views), "size": [args.width, args.height]}, "bed": args.bed}
        for mode in ("gas", "uniform"):
            run = RunFolder(Path(tmp) / f"run-{mode}")
            run.root.mkdir()
            shutil.copy(scene_dir / "gt_splats.ply", run.splats)
            run.record_stage("scene", {"data": str(scene_dir), "holdout_every": 0})
            cfg = PrepareConfig(
                run=run.root,
                device="cpu",
                backend=args.backend,
                segmenter="oracle",
                encoder="oracle",
                oracle_bed=args.bed,
                prompts=PromptConfig(mode=mode),
            )
            summary = prepare(cfg)
            out[mode] = {"consistency": consistency(run, store, rings), "images": summary["done"]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
