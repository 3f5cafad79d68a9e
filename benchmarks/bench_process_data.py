"""``gags process-data`` wall time, registered images and pose accuracy; prints JSON.

Cases: the 23 colmap_sample photos (1000x658), the 20 fern photos (images_8, 504x378) and a
48-frame synthetic video (24 views along an arc, each followed by a blurred copy; 24 frames kept).
Their shipped models are ignored; the recovered cameras are aligned to the shipped ones (and to the
rendered ones for the video) with a similarity, and the median rotation and centre errors reported
(centre errors as a fraction of the reference cameras' extent).

Usage: python benchmarks/bench_process_data.py [--threads 1] [--max-image-size 3200] [--cases ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from gags.scene.align import compare_cameras
from gags.scene.load import SceneConfig, load_scene
from gags.scene.sfm import import_pycolmap
from gags.stages.process_data import ProcessDataConfig, process_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASES = ("colmap_sample", "fern_llff", "synthetic_video")


def inputs(case: str, work: Path):
    """(input, reference cameras, extra config) of a case, or None when its data is missing."""
    if case == "colmap_sample":
        folder = DATA / "colmap_sample"
        if not folder.exists():
            return None
        return folder / "images", load_scene(SceneConfig(data=folder, holdout_every=0)).cameras, {}
    if case == "fern_llff":
        folder = DATA / "fern_llff"
        if not folder.exists():
            return None
        reference = load_scene(SceneConfig(data=folder, images="images_8", holdout_every=0)).cameras
        return folder / "images_8", reference, {}
    from gags.synthetic.video import OrbitVideoConfig, write_orbit_video

    video = work / "orbit.mp4"
    cameras = write_orbit_video(video, OrbitVideoConfig(views=24), cache_dir=work / "cache")
    return video, cameras, {"num_frames": 24}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="COLMAP threads (-1 = all)")
    parser.add_argument("--max-image-size", type=int, default=3200, help="feature extraction size")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    args = parser.parse_args()
    pycolmap = import_pycolmap()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "pycolmap": pycolmap.__version__,
        "threads": args.threads,
        "max_image_size": args.max_image_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in args.cases:
            found = inputs(case, work)
            if found is None:
                results[case] = {"skipped": f"{DATA / case} missing"}
                continue
            source, reference, extra = found
            out = work / f"{case}_out"
            cfg = ProcessDataConfig(
                input=source,
                out=out,
                num_threads=args.threads,
                max_image_size=args.max_image_size,
                **extra,
            )
            start = time.perf_counter()
            summary = process_data(cfg, log=lambda message: None)
            wall = time.perf_counter() - start
            errors = compare_cameras(load_scene(SceneConfig(data=out, holdout_every=0)).cameras, reference)
            results[case] = {
                "input_images": summary["input_images"],
                "registered": summary["registered"],
                "models": summary["models"],
                "points": summary["points"],
                "wall_s": round(wall, 2),
                "phases_s": summary["timings_s"],
                "median_rotation_deg": round(float(np.median(errors.rotation_deg)), 4),
                "median_center_error_fraction": round(float(np.median(errors.center)) / errors.extent, 5),
                "max_center_error_fraction": round(float(errors.center.max()) / errors.extent, 5),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
