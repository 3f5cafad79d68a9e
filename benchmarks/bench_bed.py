"""Statistics of the synthetic test beds (v1, v2): what the oracle SAM and CLIP hand to distillation.

No distillation runs here. For each bed, ``gags prepare`` (ground-truth splats, oracle models, GaS
prompts) then:

- ``support``: for every far / mid / near view and every object but the table that covers at least
  ``MIN_OBJECT_PX`` pixels, whether the whole-level segment painted over most of the object takes in
  at least 25 % of pixels of other objects (its support or neighbours), and whether it is the object
  (IoU >= 0.5): shares of (view, object) pairs by ring and by apparent size, in the painted maps; and
  the first share in the proposals (any whole-level mask over most of the object, 32 x 32 grid);
- ``cosines``: every prepared feature whose mask matches a ground-truth region of its level with
  IoU >= 0.5: median cosine with that region's name, median cosine between two views' features of
  the same region (same level), median cosine between features of different regions;
- ``density``: on the near views, uniform prompt grids of 8, 16, 32 and 64 per side through the
  segmenter, the clean-up and the painting: level-0 masks kept, and the share of the target
  object's pixels whose painted level-0 segment is a fragment (IoU < 0.5 with every region).

    python benchmarks/bench_bed.py [--width 200 --height 150] [--beds v1 v2] [--views 16 16 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from gags.runfolder import RunFolder
from gags.segment.cleanup import mask_nms, paint_index_maps
from gags.segment.prompts import uniform_points
from gags.stages.prepare import PrepareConfig, prepare
from gags.synthetic import SyntheticConfig, generate_scene
from gags.synthetic.groundtruth import GroundTruthStore
from gags.synthetic.oracle_encoder import OracleEncoder
from gags.synthetic.oracle_segmenter import OracleSegmenter

MIN_OBJECT_PX = 20
SUPPORT_SHARE = 0.25


def best_match(masks: np.ndarray, labels: np.ndarray, n_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, H, W) bool masks -> best IoU with any region, and that region, (M,) each."""
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    ids = labels.reshape(3, -1)
    inter = np.zeros((len(masks), n_regions))
    for level in range(3):
        fg = ids[level] >= 0
        inter += flat[:, fg] @ np.eye(n_regions)[ids[level][fg]]
    area_r = np.bincount(labels[labels >= 0].ravel(), minlength=n_regions)
    iou = inter / np.maximum(flat.sum(1, keepdims=True) + area_r[None] - inter, 1)
    return iou.max(1), iou.argmax(1)


def takes_support(mask: np.ndarray, own: np.ndarray, wholes: np.ndarray) -> bool:
    """Does ``mask`` cover most of ``own`` and take in >= SUPPORT_SHARE pixels of other objects?"""
    if (mask & own).sum() < 0.5 * own.sum():
        return False
    other = mask & ~own & (wholes >= 0)
    return other.sum() >= SUPPORT_SHARE * mask.sum()


def _size_bin(pixels: int, width: int) -> str:
    size = np.sqrt(pixels) * 1024 / width  # SAM pixels
    return "<80" if size < 80 else "80-160" if size < 160 else ">=160"


def support_stats(run: RunFolder, store: GroundTruthStore, rings: dict[str, str]) -> dict:
    """Painted whole-level maps: by ring and by apparent size (SAM px), the share of (view, object)
    pairs whose segment over most of the object takes in its support, and whose segment is the object
    itself (IoU >= 0.5)."""
    hier = store.hierarchy
    table = hier.names.index("table")
    support: dict[str, list[bool]] = {}
    is_object: dict[str, list[bool]] = {}
    for seg_file in sorted(run.segments.glob("*.npz")):
        maps = np.load(seg_file)["maps"]
        name = f"{seg_file.stem}.png"
        wholes = store.labels_at(name, *maps.shape[1:])[2]
        for w in np.unique(wholes[wholes >= 0]):
            own = wholes == w
            if w == table or own.sum() < MIN_OBJECT_PX:
                continue
            ids, counts = np.unique(maps[2][own], return_counts=True)
            seg = ids[counts.argmax()]
            mask = maps[2] == seg
            hit = bool(seg >= 0 and takes_support(mask, own, wholes))
            same = bool(seg >= 0 and (mask & own).sum() >= 0.5 * (mask | own).sum())
            for key in (rings[name], "size " + _size_bin(int(own.sum()), maps.shape[2])):
                support.setdefault(key, []).append(hit)
                is_object.setdefault(key, []).append(same)
    return {
        key: {
            "pairs": len(v),
            "takes_support": round(float(np.mean(v)), 3),
            "is_the_object": round(float(np.mean(is_object[key])), 3),
        }
        for key, v in sorted(support.items())
    }


def proposal_support(segmenter, store: GroundTruthStore, rings: dict[str, str], points_per_side: int) -> dict:
    """Same share as :func:`support_stats`, in the segmenter's whole-level proposals (uniform grid)."""
    hier = store.hierarchy
    table = hier.names.index("table")
    out: dict[str, list[bool]] = {}
    for name, ring in rings.items():
        labels = store.view(name)[0]
        H, W = labels.shape[1:]
        pts = uniform_points(H, W, points_per_side).numpy()
        masks = segmenter.segment(np.zeros((H, W, 3), np.uint8), pts, image_name=name).masks[2].numpy()
        wholes = labels[2]
        for w in np.unique(wholes[wholes >= 0]):
            own = wholes == w
            if w == table or own.sum() < MIN_OBJECT_PX:
                continue
            out.setdefault(ring, []).append(any(takes_support(m, own, wholes) for m in masks))
    return {ring: {"pairs": len(v), "share": round(float(np.mean(v)), 3)} for ring, v in out.items()}


def cosine_stats(run: RunFolder, store: GroundTruthStore, encoder: OracleEncoder) -> dict:
    """Medians of image-text and image-image cosines of the prepared features of clean masks."""
    hier = store.hierarchy
    texts = encoder.encode_texts(hier.names)
    by_region: dict[int, list[tuple[str, torch.Tensor]]] = {}
    own = []
    for seg_file in sorted(run.segments.glob("*.npz")):
        name = f"{seg_file.stem}.png"
        maps = np.load(seg_file)["maps"]
        feats = torch.from_numpy(np.load(run.feature_file(name))["features"]).float()
        labels = store.labels_at(name, *maps.shape[1:])
        for level in range(3):
            ids = np.unique(maps[level][maps[level] >= 0])
            if len(ids) == 0:
                continue
            masks = maps[level][None] == ids[:, None, None]
            iou, region = best_match(masks, labels, len(hier))
            for i, q, r in zip(ids, iou, region, strict=True):
                if q >= 0.5 and hier.level[r] == level:
                    f = torch.nn.functional.normalize(feats[i], dim=0)
                    own.append(float(f @ texts[r]))
                    by_region.setdefault(int(r), []).append((name, f))
    same = [
        float(a @ b)
        for views in by_region.values()
        for i, (na, a) in enumerate(views)
        for nb, b in views[:i]
        if na != nb
    ]
    firsts = [views[0][1] for views in by_region.values()]
    cross = [float(a @ b) for i, a in enumerate(firsts) for b in firsts[:i]]
    med = lambda v: round(float(np.median(v)), 3) if v else None  # noqa: E731
    return {
        "image_text_own": med(own),
        "image_image_same_region": med(same),
        "image_image_other_region": med(cross),
        "features": len(own),
    }


def density_stats(segmenter, store: GroundTruthStore, views: list[dict]) -> dict:
    hier = store.hierarchy
    out = {}
    for side in (8, 16, 32, 64):
        kept, frag_share = [], []
        for v in (v for v in views if v["ring"] == "near"):
            labels = store.view(v["name"])[0]
            H, W = labels.shape[1:]
            pts = uniform_points(H, W, side).numpy()
            prop = segmenter.segment(np.zeros((H, W, 3), np.uint8), pts, image_name=v["name"])
            masks = prop.masks[0]
            keep = mask_nms(masks, prop.pred_iou[0] * prop.stability[0])
            kept.append(len(keep))
            seg = paint_index_maps([masks[keep]])[0].numpy()
            own = labels[2] == hier.names.index(v["target"])
            ids = np.unique(seg[own & (seg >= 0)])
            if len(ids) == 0:
                continue
            iou, _ = best_match(seg[None] == ids[:, None, None], labels, len(hier))
            fragment = dict(zip(ids.tolist(), (iou < 0.5).tolist(), strict=True))
            painted = seg[own & (seg >= 0)]
            frag_share.append(float(np.mean([fragment[s] for s in painted.tolist()])))
        out[side] = {
            "level0_kept": round(float(np.mean(kept)), 1),
            "fragment_px": round(float(np.mean(frag_share)), 3),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--beds", nargs="+", default=["v1", "v2"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, nargs=3, default=[16, 16, 4], help="far, mid, near per object")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n_far, n_mid, near = args.views
        scene_cfg = SyntheticConfig(
            width=args.width,
            height=args.height,
            n_far=n_far,
            n_mid=n_mid,
            near_per_object=near,
            cache_dir=Path(tmp),
        )
        scene_dir = generate_scene(scene_cfg)
        views = json.loads((scene_dir / "views.json").read_text())["views"]
        rings = {v["name"]: v["ring"] for v in views}
        store = GroundTruthStore(scene_dir)
        out: dict = {"scene": {"views": len(views), "size": [args.width, args.height]}}
        for bed in args.beds:
            spec = {"kind": "oracle", "bed": bed, "scene": str(scene_dir), "seed": args.seed}
            segmenter, encoder = OracleSegmenter.from_spec(spec), OracleEncoder.from_spec(spec)
            run = RunFolder(Path(tmp) / f"run-{bed}")
            run.root.mkdir()
            shutil.copy(scene_dir / "gt_splats.ply", run.splats)
            run.record_stage("scene", {"data": str(scene_dir), "holdout_every": 0})
            cfg = PrepareConfig(
                run=run.root,
                device="cpu",
                backend="torch",
                segmenter="oracle",
                encoder="oracle",
                seed=args.seed,
            )
            prepare(cfg, segmenter=segmenter, encoder=encoder)
            out[bed] = {
                "support_painted_gas": support_stats(run, store, rings),
                "support_proposals_grid32": proposal_support(segmenter, store, rings, 32),
                "cosines": cosine_stats(run, store, encoder),
                "density_near": density_stats(segmenter, store, views),
            }
            print(json.dumps({bed: out[bed]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
