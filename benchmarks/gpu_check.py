"""The GPU check behind ``benchmarks/gpu_check.sh``: one JSON with every figure; see that script.

Parts (``--parts``), each in its own subprocess with its own time limit, so one failure or hang
costs only its part:

- ``parity``: ``tests/test_render.py::test_torch_backend_matches_gsplat_on_cuda`` (gsplat against the
  portable backend: images, features, depth, alpha and gradients);
- ``train_rgb``: RGB 3DGS training steps per second on the synthetic scene (densification on);
- ``query``: query latency and frames per second at 988x731 for GAGS (one 16-d field, one decode)
  and LangSplat-style (three 3-d fields, three decodes) on ``--query-gaussians`` random Gaussians
  (``benchmarks/bench_query.py``); query = render + decode + relevance; target GAGS >= 400 FPS
  (LangSplatV2's record: 384.6 FPS on an A100);
- ``prepare``: ``gags prepare`` seconds per image with the SAM ``--sam-model`` architecture (ViT-H
  by default) and OpenCLIP ViT-B-16, random weights (thresholds relaxed so that masks survive);
- ``distill``: ``gags distill`` (GaD) steps per second on the synthetic scene prepared with the
  oracle models.

``--cpu-smoke``: every part at toy sizes on the CPU (portable backend, SAM ViT-B), to check that the
script runs where no GPU is; its figures are not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
PARTS = ("parity", "train_rgb", "query", "prepare", "distill")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(args):
    import torch

    if args.cpu_smoke:
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _synthetic(args, width: int, height: int, views: int):
    from gags.synthetic.generate import SyntheticConfig, generate_scene

    rings = views - 7
    return generate_scene(
        SyntheticConfig(
            seed=0,
            width=width,
            height=height,
            n_far=rings - rings // 2,
            n_mid=rings // 2,
            near_per_object=1,
            density=args.density,
            n_label_frames=3,
            cache_dir=args.out / "scenes",
        )
    )


# ----------------------------------------------------------------------------- parts (in a child)


def part_parity(args) -> dict:
    junit = args.out / "parity.xml"
    test = "tests/test_render.py::test_torch_backend_matches_gsplat_on_cuda"
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test, f"--junitxml={junit}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    case = suite.find("testcase")
    skipped = case is not None and case.find("skipped") is not None
    failed = case is not None and (case.find("failure") is not None or case.find("error") is not None)
    result = {
        "test": test,
        "passed": done.returncode == 0 and not skipped and not failed,
        "skipped": skipped,
        "seconds_incl_gsplat_load": round(time.perf_counter() - t, 1),
    }
    if skipped:
        result["reason"] = case.find("skipped").get("message", "")
    if failed or done.returncode not in (0, 5):
        result["output_tail"] = (done.stdout + done.stderr)[-3000:]
    return result


def part_train_rgb(args) -> dict:
    from gags.stages.train_rgb import TrainConfig, train_rgb

    device = _device(args)
    width, height = _size(args.train_size)
    scene = _synthetic(args, width, height, args.train_views)
    out = args.out / "train_rgb"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    metrics = train_rgb(
        TrainConfig(
            data=scene,
            out=out,
            iterations=args.train_steps,
            evaluate=True,
            progress=False,
            checkpoint_every=args.train_steps,  # one checkpoint, at the end
            device=str(device),
            backend="torch" if args.cpu_smoke else "auto",
        )
    )
    wall = float(metrics.get("wall_time_s", time.perf_counter() - t))  # the loop alone when reported
    return {
        "device": str(device),
        "image": [width, height],
        "views": args.train_views,
        "steps": args.train_steps,
        "gaussians_end": metrics.get("n_gaussians"),
        "heldout_psnr": round(metrics["final"]["psnr"], 2) if "final" in metrics else None,
        "wall_s": wall,
        "steps_per_s": round(args.train_steps / wall, 2) if wall > 0 else None,
    }


def part_query(args) -> dict:
    width, height = _size(args.query_size)
    cmd = [sys.executable, str(HERE.with_name("bench_query.py")), "--gaussians", str(args.query_gaussians)]
    cmd += ["--width", str(width), "--height", str(height), "--views", str(args.query_views)]
    cmd += ["--device", str(_device(args)), "--backend", "torch" if args.cpu_smoke else "auto"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    report = json.loads(done.stdout[done.stdout.index("{") :])
    median = report["median_seconds"]
    fps = {name: round(1.0 / m["query"], 1) for name, m in median.items()}
    render_fps = {name: round(1.0 / m["render"], 1) for name, m in median.items()}
    return {
        "device": report["device"],
        "image": [width, height],
        "gaussians": args.query_gaussians,
        "views": args.query_views,
        "latency_ms": {n: {k: round(1000 * v, 3) for k, v in m.items()} for n, m in median.items()},
        "fps_query": fps,
        "fps_render_only": render_fps,
        "ratio_langsplat_over_gags": round(report["ratio_langsplat_over_gags"], 3),
        "gags_fps_target": 400,
        "gags_meets_target": fps["gags"] >= 400,
        "note": report["note"],
    }


def part_prepare(args) -> dict:
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

    device = _device(args)
    width, height = _size(args.prepare_size)
    model = "vit_b" if args.cpu_smoke else args.sam_model
    t = time.perf_counter()
    sam_cfg = SamConfig(model=model, random_weights=True, pred_iou_thresh=-1e9, stability_thresh=0.0)
    segmenter = SamSegmenter(build_sam(sam_cfg, device), sam_cfg)
    encoder = OpenClipEncoder("ViT-B-16", pretrained=None, device=str(device))
    _sync(device)
    build_s = time.perf_counter() - t

    g = torch.Generator().manual_seed(0)
    n = 20_000
    z = 2 + 3 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([1.0, 0.75]) * z[:, None]
    gaussians = Gaussians(
        means=torch.cat([xy, z[:, None]], 1),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), float(np.log(0.02))),
        opacity_logits=torch.full((n,), 2.0),
        sh=torch.rand(n, 1, 3, generator=g),
    )
    f = 0.8 * width
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    warm = 0 if args.cpu_smoke else 1  # on the GPU the first image warms up (kernels, allocator)
    names = [f"view{i:02d}.png" for i in range(args.prepare_images + warm)]
    cams = [Camera(name, K, np.eye(4), width, height) for name in names]
    rng = np.random.default_rng(0)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(Path(tmp))
        cfg = PrepareConfig(
            run=Path(tmp),
            device=str(device),
            backend="torch" if args.cpu_smoke else "auto",
            prompts=PromptConfig(n=args.prompts_per_patch),
        )
        cfg.cleanup = CleanupConfig(score_thr=0.0)  # the lowest accepted: random weights score low
        if warm:
            prepare_views(run, cams[:1], gaussians, lambda c: image, segmenter, encoder, cfg)
        _sync(device)
        t = time.perf_counter()
        summary = prepare_views(run, cams, gaussians, lambda c: image, segmenter, encoder, cfg)
        _sync(device)
        seconds = time.perf_counter() - t
    done = max(summary["done"], 1)
    return {
        "device": str(device),
        "sam_model": model,
        "weights": "random (timing only; thresholds relaxed)",
        "image": [width, height],
        "images_timed": summary["done"],
        "prompts_per_patch_nearest": args.prompts_per_patch,
        "model_build_s": round(build_s, 2),
        "s_per_image": round(seconds / done, 3),
        "s_per_image_by_stage": {k: round(v, 3) for k, v in summary.get("per_image", {}).items()},
    }


def part_distill(args) -> dict:
    from gags.stages.distill import DistillConfig, distill
    from gags.stages.prepare import PrepareConfig, prepare
    from gags.stages.train_rgb import import_ground_truth

    device = _device(args)
    width, height = _size(args.distill_size)
    scene = _synthetic(args, width, height, args.distill_views)
    run = args.out / f"distill_{width}x{height}"
    if not (run / "splats.ply").exists():
        import_ground_truth(scene, run)
    t = time.perf_counter()
    prepare(PrepareConfig(run=run, segmenter="oracle", encoder="oracle", device="cpu", seed=0))
    prepare_s = time.perf_counter() - t
    backend = "torch" if args.cpu_smoke else "auto"
    cfg = DistillConfig(
        run=run,
        iterations=args.distill_steps,
        downscale=args.distill_downscale,
        progress=False,
        device=str(device),
        backend=backend,
        checkpoint_every=0,
    )
    stats = distill(cfg)
    return {
        "device": str(device),
        "image": [width, height],
        "downscale": args.distill_downscale,
        "views": stats["views"],
        "gaussians": stats["gaussians"],
        "steps": args.distill_steps,
        "seconds": round(stats["seconds"], 2),
        "steps_per_s": round(args.distill_steps / stats["seconds"], 2),
        "peak_memory_mb": round(stats["peak_memory_mb"], 1),
        "oracle_prepare_s": round(prepare_s, 1),
    }


# ----------------------------------------------------------------------------- parent


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    try:
        import gsplat

        info["gsplat"] = gsplat.__version__
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        info["gsplat"] = f"unavailable ({type(e).__name__}: {e})"
    return info


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU (no GPU needed)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--part-timeout", type=float, default=150, help="seconds per part at most")
    parser.add_argument("--budget", type=float, default=450, help="seconds for all parts together")
    parser.add_argument("--density", type=float, default=1.0, help="synthetic scene Gaussian density")
    parser.add_argument("--train-size", default="988x731")
    parser.add_argument("--train-views", type=int, default=12)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--query-size", default="988x731")
    parser.add_argument("--query-gaussians", type=int, default=1_000_000)
    parser.add_argument("--query-views", type=int, default=30)
    parser.add_argument("--prepare-size", default="988x731")
    parser.add_argument("--prepare-images", type=int, default=3)
    parser.add_argument("--sam-model", default="vit_h", choices=["vit_h", "vit_l", "vit_b"])
    parser.add_argument("--prompts-per-patch", type=int, default=16, help="GaS n (Eq. 1; reference 16)")
    parser.add_argument("--distill-size", default="494x366")
    parser.add_argument("--distill-views", type=int, default=12)
    parser.add_argument("--distill-downscale", type=float, default=1.0)
    parser.add_argument("--distill-steps", type=int, default=1000)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_smoke:
        smoke = dict(
            train_size="64x48",
            train_views=9,
            train_steps=20,
            query_size="247x183",
            query_gaussians=20_000,
            query_views=2,
            prepare_size="128x96",
            prepare_images=1,
            prompts_per_patch=1,
            distill_size="64x48",
            distill_views=9,
            distill_steps=10,
            distill_downscale=2.0,
            density=0.3,
            part_timeout=600,
            budget=1500,
        )
        defaults = {a.dest: a.default for a in parser._actions}
        for key, value in smoke.items():
            if getattr(args, key) == defaults[key]:  # flags given on the command line win
                setattr(args, key, value)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.child:
        result = globals()[f"part_{args.child}"](args)
        print("GPU_CHECK_RESULT " + json.dumps(result))
        return

    report: dict = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "environment": _environment()}
    started = time.perf_counter()
    for part in args.parts:
        t = time.perf_counter()
        limit = min(args.part_timeout, args.budget - (t - started))
        if limit < 10:
            report[part] = {"error": f"not run: the {args.budget:.0f} s budget is spent"}
            continue
        cmd = [sys.executable, str(HERE), "--child", part, *sys.argv[1:]]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=limit, env=os.environ.copy(), cwd=ROOT
            )
            line = [x for x in done.stdout.splitlines() if x.startswith("GPU_CHECK_RESULT ")]
            if done.returncode == 0 and line:
                result = json.loads(line[-1].split(" ", 1)[1])
            else:
                tail = (done.stdout + done.stderr)[-3000:]
                result = {"error": f"exit {done.returncode}", "output_tail": tail}
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {limit:.0f} s"}
        result["part_wall_s"] = round(time.perf_counter() - t, 1)
        report[part] = result
        print(f"gpu_check: {part} done in {result['part_wall_s']} s", file=sys.stderr)
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
