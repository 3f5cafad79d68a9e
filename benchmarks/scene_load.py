"""Scene loading speed on the shared data sets: ``load_scene`` and ``load_image``; prints JSON.

Usage: python benchmarks/scene_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from gags.scene import SceneConfig, load_image, load_scene

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASES = {
    "colmap_sample": {},
    "colmap_sample_downscale2": {"downscale": 2.0},
    "fern_llff_images_8": {"downscale": 8.0},
    "lego_blender": {"background": (1.0, 1.0, 1.0)},
    "garden_points": {},
}


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for case, options in CASES.items():
        folder = DATA / case.split("_downscale")[0].replace("_images_8", "")
        if not folder.exists():
            results[case] = {"skipped": f"{folder} missing"}
            continue
        cfg = SceneConfig(data=folder, **options)
        scene = load_scene(cfg)
        entry = {
            "cameras": len(scene.cameras),
            "points": 0 if scene.points is None else len(scene.points),
            "load_scene_s": median_seconds(lambda cfg=cfg: load_scene(cfg), args.repeats),
        }
        cam = scene.cameras[0]
        if cam.image_path is not None:
            entry["image_size"] = [cam.width, cam.height]
            background = scene.background
            entry["load_image_s"] = median_seconds(lambda c=cam, b=background: load_image(c, b), args.repeats)
        results[case] = entry
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
