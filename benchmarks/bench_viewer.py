"""The web viewer's render-and-query path per frame, and the per-Gaussian preview's accuracy; prints JSON.

    python benchmarks/bench_viewer.py --run runs/demo      # a distilled run (the demo scene)
    python benchmarks/bench_viewer.py                       # builds the demo run first (cached)

Speed: for ``--frames`` cameras on an orbit of the scene, the time of one viewer frame
(:meth:`gags.query.live.LiveRenderer.frame` plus the JPEG encoding viser does) at the preview and full
sizes (longer side ``--preview`` / ``--full`` pixels), for RGB only and for a relevance query from the
pixel-space decoder and from the per-Gaussian preview. Median seconds per frame and frames per second;
the once-per-query cost of the preview (decoding every Gaussian) is reported apart. ``--threads``
sets torch's CPU threads (2: the target machine); ``--device cuda`` measures a GPU.

On a shared machine the wall-clock figures depend on the other load (``load_average`` is recorded);
``cpu_seconds_per_frame`` is the process's CPU time per frame, all threads together, and
``fps_cpu_bound = 1 / cpu_seconds_per_frame`` the frame rate the path would reach with its cores to
itself without any gain from a second thread (a lower bound for 2 idle cores).

Accuracy: the LERF-OVS protocol (the run's labels, ``gags eval``'s post-processing and metrics, the
demo's box size) with relevance from each source: mIoU and localisation accuracy of the pixel-space
decoder (the paper's protocol) and of the per-Gaussian preview, and the IoU between their masks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_demo_run(out: Path) -> Path:
    """The demo scene (200 x 150, ~60 views) with its ground-truth splats imported, distilled as the
    demo does; reused when ``out/language.pt`` exists."""
    from gags.stages.demo import DemoConfig, run_demo

    if not (out / "language.pt").exists():
        with contextlib.redirect_stdout(sys.stderr):
            run_demo(DemoConfig(out=out, rgb="import-gt", baselines=(), queries=()))
    return out


def time_frames(renderer, cameras, settings, repeat: int = 1) -> dict[str, float]:
    """Median seconds of frame + JPEG encoding over ``cameras`` (after one warm-up frame)."""
    import cv2

    renderer.frame(cameras[0], settings)
    frame_s, encode_s, cpu_s = [], [], []
    for _ in range(repeat):
        for camera in cameras:
            t, c = time.perf_counter(), time.process_time()
            frame = renderer.frame(camera, settings)
            t1 = time.perf_counter()
            cv2.imencode(".jpg", frame.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            t2 = time.perf_counter()
            frame_s.append(t1 - t)
            encode_s.append(t2 - t1)
            cpu_s.append(time.process_time() - c)
    total = statistics.median(f + e for f, e in zip(frame_s, encode_s, strict=True))
    cpu = statistics.median(cpu_s)
    return {
        "seconds_per_frame": total,
        "fps": 1.0 / total,
        "cpu_seconds_per_frame": cpu,
        "fps_cpu_bound": 1.0 / cpu,
        "render_and_query_s": statistics.median(frame_s),
        "jpeg_s": statistics.median(encode_s),
        "width": cameras[0].width,
        "height": cameras[0].height,
    }


def accuracy(renderer, run: Path, scene, box_size: int) -> dict:
    """mIoU / mAcc of both relevance sources on the run's synthetic labels (LERF-OVS protocol)."""
    import torch

    from gags.evaluate.labels import match_cameras, read_labels
    from gags.evaluate.metrics import aggregate, localisation_hit, mask_iou
    from gags.query.postprocess import postprocess

    labels = Path(json.loads((run / "config.json").read_text())["scene"]["data"]) / "labels"
    frames = read_labels(labels)
    index = match_cameras(frames, [c.name for c in scene.cameras])
    records: dict[str, list[dict]] = {"pixel": [], "gaussian": []}
    agreement = []
    for frame, i in zip(frames, index, strict=True):
        camera = scene.cameras[i].resized(frame.width, frame.height)
        names = list(frame.categories)
        queries = renderer.embed(names)
        masks = {}
        for source in records:
            rel = renderer.relevance(camera, queries, source)  # (Q, L, H, W)
            for k, name in enumerate(names):
                result = postprocess(rel[k], box_size=box_size)
                gt = frame.categories[name]
                masks[source, name] = result.mask
                records[source].append(
                    {"iou": mask_iou(result.mask, gt.mask), "hit": localisation_hit(result.points, gt.boxes)}
                )
        for name in names:
            a, b = masks["pixel", name], masks["gaussian", name]
            union = int((a | b).sum())
            agreement.append(float((a & b).sum()) / union if union else 1.0)
    out = {source: aggregate(rows) for source, rows in records.items()}
    out["mask_agreement_iou"] = float(torch.tensor(agreement).mean())
    out["frames"] = len(frames)
    out["box_size"] = box_size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="distilled run (default: build the demo run)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "gags" / "bench-viewer-run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preview", type=int, default=256, help="longer side of preview frames")
    parser.add_argument("--full", type=int, default=640, help="longer side of full frames")
    parser.add_argument("--frames", type=int, default=8, help="orbit cameras timed per setting")
    parser.add_argument("--query", default="mug")
    parser.add_argument("--no-accuracy", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import gags.stages  # noqa: F401 - registers the synthetic oracles
    from gags.query.live import FrameSettings, LiveRenderer
    from gags.query.maps import open_engine
    from gags.runfolder import RunFolder
    from gags.scene.load import load_run_scene
    from gags.scene.paths import orbit_path
    from gags.stages.demo import eval_box_size

    run = args.run or build_demo_run(args.cache)
    scene = load_run_scene(RunFolder(run))
    engine = open_engine(run, args.device)
    renderer = LiveRenderer(engine, scene.background)
    base = scene.train_cameras or scene.cameras
    aspect = base[0].height / base[0].width

    t = time.perf_counter()
    queries = renderer.embed([args.query])
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    renderer.gaussian_relevance(queries)
    preview_setup_s = time.perf_counter() - t

    speed: dict = {}
    for size_name, side in (("preview", args.preview), ("full", args.full)):
        w, h = (side, round(side * aspect)) if aspect <= 1 else (round(side / aspect), side)
        cameras = orbit_path(base, args.frames, w, h)
        speed[size_name] = {
            "rgb": time_frames(renderer, cameras, FrameSettings(mode="rgb")),
            "relevance_pixel": time_frames(
                renderer, cameras, FrameSettings(mode="relevance", texts=(args.query,), source="pixel")
            ),
            "relevance_gaussian": time_frames(
                renderer, cameras, FrameSettings(mode="relevance", texts=(args.query,), source="gaussian")
            ),
        }
    result = {
        "load_average": os.getloadavg(),
        "run": str(run),
        "gaussians": len(engine.field.gaussians),
        "method": engine.field.method,
        "device": str(engine.device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "query": args.query,
        "embed_query_s": embed_s,
        "preview_setup_per_query_s": preview_setup_s,
        "speed": speed,
        "preview_goal_fps": 5.0,
        "preview_fps_gaussian": speed["preview"]["relevance_gaussian"]["fps"],
        "preview_fps_pixel": speed["preview"]["relevance_pixel"]["fps"],
        "preview_fps_cpu_bound_gaussian": speed["preview"]["relevance_gaussian"]["fps_cpu_bound"],
        "preview_fps_cpu_bound_pixel": speed["preview"]["relevance_pixel"]["fps_cpu_bound"],
    }
    if not args.no_accuracy:
        box = eval_box_size(base[0].width)
        result["accuracy"] = accuracy(renderer, run, scene, box)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
