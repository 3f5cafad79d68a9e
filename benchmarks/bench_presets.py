"""What each preset (``--preset paper`` / ``quick``) costs per stage on this machine; prints JSON.

Each stage is timed for a few steps (or one image) with the preset's settings and the figure is
multiplied by the preset's count; the JSON keeps the measured rate, the count and the product apart.

- ``train_rgb``: fern (``../shared/data/fern_llff``, images_8 at 504x378, 20 photos, COLMAP points) with
  each preset's settings (paper: 100k random initial Gaussians besides the points, no cap, 30,000 steps;
  quick: 20k, at most 50k, 2,000 steps). Seconds per step = (time of ``--steps`` steps - time of 1 step)
  / (``--steps`` - 1), so loading and set-up are left out. Densification adds Gaussians later in a run
  (more under the paper preset, which has no cap), so the product is a lower bound.
- ``prepare``: ``gags prepare`` seconds per image with SAM ViT-H and OpenCLIP ViT-B-16 (the models of
  both presets; random weights, the thresholds relaxed so that every prompt's masks go through NMS,
  clean-up and CLIP) on one fern view with the GaS prompts, times the scene's 20 views.
- ``distill``: GaD seconds per step at both presets' settings (every valid pixel of a view per step,
  supervision at half resolution, ``-r 2``) on the synthetic scene at 504x378 (supervision 252x189),
  prepared with the oracle models, times 30,000 (paper) or 3,000 (quick) steps.

    python benchmarks/bench_presets.py [--steps 20] [--stages train_rgb prepare distill] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from gags.segment.prompts import PromptConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FERN = DATA / "fern_llff"
PRESETS = ("quick", "paper")


def _seconds_per_step(run_steps, steps: int) -> float:
    """(time of ``steps`` steps - time of 1 step) / (steps - 1): the set-up cancels."""
    t0 = time.perf_counter()
    run_steps(1)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_steps(steps)
    many = time.perf_counter() - t0
    return max(many - one, 0.0) / (steps - 1)


def train_rgb_cost(preset: str, steps: int, out: Path) -> dict:
    from gags.scene.load import SceneOptions
    from gags.stages.presets import apply_preset
    from gags.stages.tblog import LogConfig
    from gags.stages.train_rgb import PRESETS as RGB_PRESETS
    from gags.stages.train_rgb import TrainConfig, train_rgb

    base = apply_preset(
        TrainConfig(
            data=FERN, out=out, scene=SceneOptions(images="images_8", downscale=8.0), progress=False,
            evaluate=False, overwrite=True, log=LogConfig(tensorboard=False), device="cpu",
        ),
        RGB_PRESETS[preset],
    )  # fmt: skip
    full = base.iterations
    counts: dict[str, int] = {}

    def run_steps(n: int) -> None:
        counts.update(train_rgb(apply_preset(base, {"iterations": n})))

    rate = _seconds_per_step(run_steps, steps)
    return {
        "data": "fern images_8, 504x378, 20 views",
        "steps_timed": steps,
        "s_per_step": round(rate, 3),
        "gaussians_after_steps": counts.get("n_gaussians"),
        "steps": full,
        "total_s_lower_bound": round(rate * full, 1),
    }


def prepare_cost(views: int) -> dict:
    from bench_prepare import time_one_view  # the benchmarks folder is on sys.path

    one = time_one_view("vit_h", PromptConfig().n, 20_000)
    return {
        **one,
        "models": "SAM vit_h + OpenCLIP ViT-B-16 (random weights), both presets",
        "s_per_image": one["wall_s"],
        "images": views,
        "total_s": round(one["wall_s"] * views, 1),
    }


def distill_rate(steps: int, out: Path) -> float:
    from gags.stages.distill import DistillConfig, distill
    from gags.stages.prepare import PrepareConfig, prepare
    from gags.stages.tblog import LogConfig
    from gags.stages.train_rgb import import_ground_truth
    from gags.synthetic.generate import SyntheticConfig, generate_scene

    scene = generate_scene(SyntheticConfig(seed=0, width=504, height=378, cache_dir=out / "cache"))
    run = out / "run"
    import_ground_truth(scene, run)
    prepare(PrepareConfig(run=run, segmenter="oracle", encoder="oracle", device="cpu", seed=0))

    def run_steps(n: int) -> None:
        cfg = DistillConfig(
            run=run,
            iterations=n,
            downscale=2.0,
            device="cpu",
            progress=False,
            log=LogConfig(tensorboard=False),
        )
        distill(cfg)

    return _seconds_per_step(run_steps, steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20, help="steps timed per preset and stage (>= 2)")
    parser.add_argument("--stages", nargs="+", default=["train_rgb", "prepare", "distill"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    torch.set_num_threads(args.threads)
    from gags.stages.distill import PRESETS as DISTILL_PRESETS
    from gags.stages.distill import DistillConfig

    result: dict = {"threads": torch.get_num_threads(), "machine": "this one (see README)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        if "train_rgb" in args.stages:
            result["train_rgb"] = {p: train_rgb_cost(p, args.steps, out / f"rgb-{p}") for p in PRESETS}
        if "prepare" in args.stages:
            result["prepare"] = prepare_cost(views=20)
        if "distill" in args.stages:
            rate = distill_rate(args.steps, out / "distill")
            steps = {p: int(DISTILL_PRESETS[p].get("iterations", DistillConfig.iterations)) for p in PRESETS}
            result["distill"] = {
                "data": "synthetic scene 504x378, supervision 252x189, every pixel",
                "s_per_step": round(rate, 3),
                **{p: {"steps": n, "total_s": round(rate * n, 1)} for p, n in steps.items()},
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
