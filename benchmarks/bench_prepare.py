"""Per-image time of ``gags prepare`` by stage, with SAM ViT-B and OpenCLIP ViT-B-16 (random weights).

One 504x378 view (the fern photo when ../shared/data is present, else a synthetic image), 20k
Gaussians in front of the camera, GaS prompts with the reference settings. Stages: depth (the
minimum-depth pass plus the view's depth), prompts, SAM image encoder, SAM decoder (prompt
decoding, thresholds, NMS, small regions), clean-up, CLIP, write. Prints JSON.

    python benchmarks/bench_prepare.py [--gaussians 20000] [--n-per-patch 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gags.models.openclip import OpenClipEncoder
from gags.models.sam import SamConfig, SamSegmenter, build_sam
from gags.runfolder import RunFolder
from gags.scene.cameras import Camera
from gags.segment.cleanup import CleanupConfig
from gags.segment.prompts import PromptConfig
from gags.splats.gaussians import Gaussians
from gags.stages.prepare import PrepareConfig, prepare_views

W, H = 504, 378
FERN = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fern_llff" / "images_8" / "image000.png"
)


def view_image() -> tuple[np.ndarray, str]:
    if FERN.is_file():
        from PIL import Image

        return np.asarray(Image.open(FERN).convert("RGB").resize((W, H))), str(FERN)
    rng = np.random.default_rng(0)
    return (rng.random((H, W, 3)) * 255).astype(np.uint8), "random"


def gaussians_in_view(n: int) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    z = 2 + 3 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([1.0, 0.75]) * z[:, None]
    return Gaussians(
        means=torch.cat([xy, z[:, None]], 1),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), float(np.log(0.02))),
        opacity_logits=torch.full((n,), 2.0),
        sh=torch.rand(n, 1, 3, generator=g),
    )


def time_one_view(model: str, n_per_patch: int, gaussians: int) -> dict:
    """``gags prepare`` on the benchmark view with SAM ``model`` + OpenCLIP ViT-B-16 (random weights,
    thresholds relaxed so that every prompt's masks go through NMS, clean-up and CLIP).

    Returns the image source, model build time, wall time of the view, per-stage times, prompt and
    mask counts.
    """
    torch.manual_seed(0)
    image, source = view_image()
    K = np.array([[407.0, 0, W / 2], [0, 407.0, H / 2], [0, 0, 1]])
    cam = Camera("view.png", K, np.eye(4), W, H)

    t0 = time.perf_counter()
    sam_cfg = SamConfig(model=model, random_weights=True, pred_iou_thresh=-1e9, stability_thresh=0.0)
    segmenter = SamSegmenter(build_sam(sam_cfg), sam_cfg)
    encoder = OpenClipEncoder("ViT-B-16", pretrained=None)
    build_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        cfg = PrepareConfig(
            run=Path(tmp),
            device="cpu",
            backend="torch",
            prompts=PromptConfig(n=n_per_patch),
            cleanup=CleanupConfig(score_thr=0.0),
        )
        t0 = time.perf_counter()
        summary = prepare_views(
            RunFolder(Path(tmp)),
            [cam],
            gaussians_in_view(gaussians),
            lambda c: image,
            segmenter,
            encoder,
            cfg,
        )
        wall_s = time.perf_counter() - t0
        feats = np.load(RunFolder(Path(tmp)).feature_file("view.png"))
        seg = np.load(RunFolder(Path(tmp)).segment_file("view.png"))
        masks_per_level = [int((feats["levels"] == i).sum()) for i in range(3)]
        prompts = int(seg["points"].shape[0])
    return {
        "image": [W, H],
        "image_source": source,
        "models": f"SAM {model} + OpenCLIP ViT-B-16, random weights (thresholds relaxed)",
        "model_build_s": round(build_s, 2),
        "wall_s": round(wall_s, 2),
        "prompts": prompts,
        "masks_per_level": masks_per_level,
        "stage_s": {k: round(v, 3) for k, v in summary["timings"].items()},
        "total_s": round(sum(summary["timings"].values()), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gaussians", type=int, default=20000)
    p.add_argument("--n-per-patch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = time_one_view("vit_b", args.n_per_patch, args.gaussians)
    print(json.dumps({"gaussians": args.gaussians, "threads": torch.get_num_threads(), **result}, indent=2))


if __name__ == "__main__":
    main()
