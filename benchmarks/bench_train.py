"""RGB training figures: held-out PSNR / SSIM, Gaussian count and wall time with the quick defaults.

Scenes (from ``../shared/data``):
- ``fern``: fern_llff, images_8 at 252x189 (1/16 of the 4032-px originals), every 8th image held out.
- ``lego``: lego_blender at 200x200 (downscale 4), white background, every 8th image held out.

Prints one JSON object. Goal on 2 CPU cores: fern >= 20 dB and lego >= 24 dB within 15 minutes each.

    python benchmarks/bench_train.py                      # both scenes, default settings
    python benchmarks/bench_train.py --scenes fern --iterations 300 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from gags.scene.load import SceneOptions
from gags.stages.train_rgb import TrainConfig, train_rgb

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCENES = {
    "fern": dict(data=DATA / "fern_llff", scene=SceneOptions(images="images_8", downscale=16.0)),
    "lego": dict(data=DATA / "lego_blender", scene=SceneOptions(downscale=4.0, background=(1.0, 1.0, 1.0))),
}


def run_scene(name: str, out: Path, iterations: int | None, max_gaussians: int | None) -> dict:
    cfg = TrainConfig(out=out / name, progress=False, **SCENES[name])
    if iterations is not None:
        cfg.iterations = iterations
    if max_gaussians is not None:
        cfg.densify.max_gaussians = max_gaussians
    start = time.perf_counter()
    metrics = train_rgb(cfg)
    return {
        "iterations": cfg.iterations,
        "max_gaussians": cfg.densify.max_gaussians,
        "image_size": metrics["image_size"],
        "initial_psnr": round(metrics["initial"]["psnr"], 3),
        "psnr": round(metrics["final"]["psnr"], 3),
        "ssim": round(metrics["final"]["ssim"], 4),
        "n_eval_views": len(metrics["final"]["per_view"]),
        "n_gaussians": metrics["n_gaussians"],
        "train_wall_s": metrics["wall_time_s"],
        "total_wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--iterations", type=int, default=None, help="override the default iterations")
    parser.add_argument("--max-gaussians", type=int, default=None, help="override the default cap")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for name in args.scenes:
            result[name] = run_scene(name, out, args.iterations, args.max_gaussians)
            print(json.dumps({name: result[name]}), flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
