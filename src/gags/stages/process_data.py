"""``gags process-data``: a folder of photos or a video -> an undistorted COLMAP data set.

Output (``--out DATA``), the layout COLMAP, 3DGS, nerfstudio and ``gags train-rgb`` read::

    DATA/images/              undistorted images (PINHOLE cameras), full resolution
    DATA/images_N/            the same shrunk by N, for each N of --downscales
    DATA/sparse/0/            cameras.bin, images.bin, points3D.bin (+ COLMAP 4's rigs.bin, frames.bin)
    DATA/process_data.json    what ran and what came out: counts, cameras, timings, warnings

INPUT is only read. DATA is built in a temporary folder next to it and renamed into place at the end,
so an interrupted run leaves no half data set; an existing non-empty DATA is replaced only with
``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from gags.errors import GagsError, file_error
from gags.io import write_json_atomic
from gags.scene.images import IMAGE_EXTENSIONS, list_images
from gags.scene.sfm import SfmOptions, downscale_images, import_pycolmap, run_sfm
from gags.scene.video import VIDEO_EXTENSIONS, extract_frames, is_video

SUMMARY_FILE = "process_data.json"


@dataclasses.dataclass
class ProcessDataConfig:
    """Recover camera poses of photos or video frames with COLMAP (pycolmap) and write a data set."""

    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")]
    """A folder of photos (.jpg, .png, ...; sub-folders are ignored) or a video file (.mp4, .mov, ...)."""
    out: Path
    """Data set folder to write (COLMAP layout: images/, sparse/0/)."""
    num_frames: int = 200
    """Video only: frames kept, spread evenly over the video (the sharpest of each stretch). A shorter
    video gives all its frames."""
    matcher: Literal["auto", "exhaustive", "sequential", "spatial"] = "auto"
    """Image pairs to match: auto = sequential for a video, exhaustive for photos; spatial needs GPS in
    the photos' EXIF."""
    downscales: tuple[int, ...] = ()
    """Also write images_N shrunk by each N, e.g. --downscales 2 4 8 (read by train-rgb --downscale N)."""
    camera_model: str = "SIMPLE_RADIAL"
    """COLMAP camera model fitted during SfM (COLMAP's default; OPENCV for strong distortion,
    OPENCV_FISHEYE for fisheye lenses). Images are undistorted to PINHOLE afterwards whatever it is."""
    single_camera: bool = True
    """All photos share one camera (one phone, one zoom) when they have the same size."""
    max_image_size: int = 3200
    """Longer side that images are shrunk to for feature extraction only (COLMAP's default); smaller is
    faster (e.g. 1600 for phone photos). Poses and written images stay at full resolution."""
    max_num_features: int = 8192
    """SIFT features per image (COLMAP's default)."""
    num_threads: int = -1
    """CPU threads for COLMAP (-1 = all); 1 with a fixed --seed gives reproducible poses."""
    seed: int = 0
    """Seed of COLMAP's random number generators."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where SIFT extraction and matching run: cuda needs a pycolmap built with CUDA
    (``python -c "import pycolmap; print(pycolmap.has_cuda)"``)."""
    overwrite: bool = False
    """Replace an existing, non-empty --out folder."""
    verbose: bool = False
    """Show COLMAP's own log."""

    def sfm_options(self, matcher: str) -> SfmOptions:
        """The :class:`SfmOptions` of this configuration, with ``matcher`` resolved."""
        return SfmOptions(
            camera_model=self.camera_model,
            single_camera=self.single_camera,
            matcher=matcher,
            max_image_size=self.max_image_size,
            max_num_features=self.max_num_features,
            num_threads=self.num_threads,
            seed=self.seed,
            device=self.device,
            verbose=self.verbose,
        )


class _Progress:
    """Numbered phase lines (``[2/5] matching: exhaustive``) with the time each phase took."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.log, self.count = total, log, 0
        self.started = time.perf_counter()

    def phase(self, name: str, detail: str) -> None:
        self.count += 1
        elapsed = time.perf_counter() - self.started
        self.log(f"gags process-data [{self.count}/{self.total}] {name}: {detail} (t={elapsed:.0f}s)")

    def warn(self, message: str) -> None:
        self.log(f"gags process-data: warning: {message}")


def resolve_matcher(matcher: str, kind: str) -> str:
    """``auto`` -> sequential for video frames (they are in time order), exhaustive for photos."""
    if matcher != "auto":
        return matcher
    return "sequential" if kind == "video" else "exhaustive"


def check_paths(cfg: ProcessDataConfig) -> tuple[Path, Path, str]:
    """(input, out, kind) resolved and checked; ``kind`` is ``images`` or ``video``.

    Refuses an output that is, or lies inside, the input folder (nothing is written into INPUT) or that
    contains the input (``--overwrite`` would delete it), and a non-empty output without ``--overwrite``.
    """
    inp = Path(cfg.input).expanduser().resolve()
    out = Path(cfg.out).expanduser().resolve()
    if not inp.exists():
        raise file_error(inp, "input does not exist (expected a folder of photos or a video file)")
    if inp.is_dir():
        kind = "images"
    elif is_video(inp):
        kind = "video"
    else:
        raise file_error(
            inp, f"is neither a folder of photos nor a video ({', '.join(VIDEO_EXTENSIONS[:6])}, ...)"
        )
    if out == inp or (kind == "images" and inp in out.parents):
        raise file_error(out, f"output must not be inside the input folder {inp} (INPUT is only read)")
    if out in inp.parents:
        raise file_error(out, f"output folder contains the input {inp}; choose another --out")
    if out.exists():
        if not out.is_dir():
            raise file_error(out, "output exists and is not a folder")
        if any(out.iterdir()) and not cfg.overwrite:
            raise file_error(out, "output folder is not empty; pass --overwrite to replace it")
    if cfg.num_frames <= 0:
        raise GagsError(f"--num-frames must be positive, got {cfg.num_frames}")
    bad = [n for n in cfg.downscales if n < 2]
    if bad:
        raise GagsError(f"--downscales must be whole numbers >= 2, got {list(cfg.downscales)}")
    return inp, out, kind


def process_data(cfg: ProcessDataConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``gags process-data``: frames (video), SfM, undistortion, downscaled copies; returns the summary.

    The summary (also written to ``DATA/process_data.json``) holds the input and registered image
    counts, the sizes of all models COLMAP built (the largest is kept), the cameras, points, warnings
    and the seconds each phase took. Raises :class:`GagsError` for bad input or a failed SfM.
    """
    from tqdm.auto import tqdm

    pycolmap = import_pycolmap()

    started = time.perf_counter()
    inp, out, kind = check_paths(cfg)
    downscales = sorted(set(cfg.downscales))
    progress = _Progress(5 + (kind == "video") + bool(downscales), log)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        staging, work = tmp / "data", tmp / "work"
        timings: dict[str, float] = {}
        video_info = None
        if kind == "video":
            start = time.perf_counter()
            progress.phase(
                "frames", f"{cfg.num_frames} frames spread over {inp.name}, the sharpest of each stretch"
            )
            with tqdm(desc="decoding", unit="frame", leave=False, file=sys.stderr) as bar:

                def advance(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                frames = extract_frames(inp, work / "frames", cfg.num_frames, progress=advance)
            image_dir, names = work / "frames", [p.name for p in frames.paths]
            video_info = {
                "file": str(inp),
                "total_frames": frames.total_frames,
                "fps": frames.fps,
                "frames_kept": len(frames.paths),
                "frame_indices": frames.indices,
            }
            timings["frames"] = time.perf_counter() - start
        else:
            image_dir, names = inp, [p.name for p in list_images(inp)]
            if not names:
                videos = sorted(p.name for p in inp.iterdir() if is_video(p))
                heic = sorted(p.name for p in inp.iterdir() if p.suffix.lower() in (".heic", ".heif"))
                hint = f"; found the video {videos[0]}: pass it as INPUT" if videos else ""
                if heic:
                    hint += f"; {len(heic)} HEIC photos (e.g. {heic[0]}) are not read: export them as JPEG"
                wanted = ", ".join(sorted({e.lower() for e in IMAGE_EXTENSIONS}))
                raise file_error(inp, f"no images found (looked for {wanted}){hint}")

        matcher = resolve_matcher(cfg.matcher, kind)
        with tqdm(total=len(names), desc="registering", unit="image", leave=False, file=sys.stderr) as bar:

            def registered(k: int = 1) -> None:
                bar.update(min(k, bar.total - bar.n))

            result = run_sfm(
                image_dir,
                names,
                work,
                staging,
                cfg.sfm_options(matcher),
                phase=progress.phase,
                warn=progress.warn,
                on_image=registered,
            )
        timings.update(result.timings)

        if downscales:
            start = time.perf_counter()
            progress.phase("downscaling", ", ".join(f"images_{n}" for n in downscales))
            for n in downscales:
                downscale_images(staging / "images", staging / f"images_{n}", n)
            timings["downscaling"] = time.perf_counter() - start

        progress.phase("writing", str(out))
        timings["total"] = time.perf_counter() - started
        summary = {
            "input": str(inp),
            "out": str(out),
            "kind": kind,
            "input_images": result.num_images,
            "registered": result.registered,
            "models": result.model_sizes,
            "points": result.points,
            "verified_pairs": result.verified_pairs,
            "matcher": matcher,
            "camera_model": cfg.camera_model,
            "camera_mode": result.camera_mode,
            "cameras": result.cameras,
            "mean_reprojection_error_px": result.mean_reprojection_error,
            "downscales": downscales,
            "unregistered": sorted(set(names) - set(result.registered_names)),
            "video": video_info,
            "warnings": result.warnings,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "pycolmap": pycolmap.__version__,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        }
        write_json_atomic(staging / SUMMARY_FILE, summary)
        shutil.rmtree(work, ignore_errors=True)
        if out.exists():
            os.replace(out, tmp / "replaced")
        try:
            os.replace(staging, out)
        except OSError:
            if (tmp / "replaced").exists():
                os.replace(tmp / "replaced", out)  # put the previous data set back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(
        f"gags process-data: {summary['registered']} of {summary['input_images']} images registered, "
        f"{summary['points']} points, {timings['total']:.0f}s; wrote {out} "
        f"(next: gags train-rgb {out} --out runs/NAME)"
    )
    return summary


def main(cfg: ProcessDataConfig) -> None:
    """``gags process-data``."""
    process_data(cfg)
