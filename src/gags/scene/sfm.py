"""Structure from motion with pycolmap: poses and an undistorted PINHOLE COLMAP model from photos.

The steps are COLMAP's own (https://colmap.github.io/tutorial.html), called through pycolmap:
SIFT feature extraction into a database, matching (exhaustive, sequential or spatial pairs, each
geometrically verified), incremental mapping, then undistortion of the largest model's images to
PINHOLE cameras, so that nothing downstream has to handle lens distortion. The library knows
nothing of commands: :mod:`gags.stages.process_data` orchestrates it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from gags.errors import GagsError, file_error

MATCHERS = ("exhaustive", "sequential", "spatial")
#: images whose grey 64x64 thumbnails differ from the first by less than this (mean, 0-255) are "the same"
IDENTICAL_THRESHOLD = 1.0

#: ``phase(name, detail)``: called as each step starts
Phase = Callable[[str, str], None]


@dataclasses.dataclass
class SfmOptions:
    """How pycolmap runs. Defaults are COLMAP's own unless said otherwise."""

    camera_model: str = "SIMPLE_RADIAL"
    """COLMAP camera model fitted during SfM (SIMPLE_RADIAL, OPENCV, OPENCV_FISHEYE, ...); the output
    is undistorted to PINHOLE whatever it is."""
    single_camera: bool = True
    """One set of intrinsics for all images (one phone, one zoom) when they share a size; images of
    different sizes get a camera per size."""
    matcher: str = "exhaustive"
    """exhaustive (all pairs), sequential (neighbours in name order, for videos) or spatial (nearby GPS
    positions from EXIF)."""
    max_image_size: int = 3200
    """Images are shrunk to this longer side for feature extraction only (COLMAP's default); poses and
    outputs stay at full resolution."""
    max_num_features: int = 8192
    """SIFT features kept per image (COLMAP's default)."""
    sequential_overlap: int = 10
    """Sequential matching: each image is matched with this many following ones (COLMAP's default)."""
    num_threads: int = -1
    """CPU threads (-1 = all). With 1 thread and a fixed seed, the output is reproducible."""
    seed: int = 0
    """Seed of COLMAP's random number generators (RANSAC, mapper)."""
    device: str = "auto"
    """auto, cpu or cuda (pycolmap built with CUDA) for SIFT extraction and matching."""
    verbose: bool = False
    """Show COLMAP's own log (otherwise only its errors)."""


@dataclasses.dataclass
class SfmResult:
    """What :func:`run_sfm` produced: ``out/images`` and ``out/sparse/0`` (PINHOLE, undistorted)."""

    out: Path
    num_images: int
    registered: int
    model_sizes: list[int]
    points: int
    verified_pairs: int
    matcher: str
    camera_mode: str
    cameras: list[dict[str, Any]]
    timings: dict[str, float]
    mean_reprojection_error: float
    registered_names: list[str]
    warnings: list[str]


def import_pycolmap():
    """The ``pycolmap`` module, imported so that it cannot corrupt the heap; a :class:`GagsError` if missing.

    pycolmap's wheel (4.2.1) exports its own zlib-ng copies of zlib's functions. If it is the first
    to load the system ``libz.so.1``, that library's internal calls bind to those copies (the dynamic
    linker searches pycolmap first), and Pillow's PNG writer, which uses the same ``libz.so.1``, then
    crashes with "corrupted size vs. prev_size" or hangs. Loading ``libz.so.1`` through Python's zlib
    module and Pillow's core first keeps its calls inside itself. Code that imports pycolmap before
    Pillow elsewhere in the same process is exposed to the same crash.
    """
    import zlib  # noqa: F401  (loads libz.so.1 before pycolmap)

    import PIL._imaging  # noqa: F401

    try:
        import pycolmap
    except ImportError as e:
        raise GagsError("gags process-data needs pycolmap: pip install pycolmap") from e
    return pycolmap


# ------------------------------------------------------------------------------------ input checks


def check_images(image_dir: Path, names: Sequence[str]) -> list[tuple[int, int]]:
    """(width, height) of every image; a :class:`GagsError` when one cannot be read or all are the same.

    Identical photos have no parallax and make SfM fail in ways that are hard to read, so they are
    caught here: every image is compared with the first through a 64x64 grey thumbnail.
    """
    if len(names) < 2:
        raise file_error(image_dir, f"needs at least 2 images for structure from motion, found {len(names)}")
    sizes, thumbs = [], []
    for name in names:
        path = image_dir / name
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
                im.draft("L", (128, 128))  # JPEG: decode at a fraction of the size (fast for big photos)
                thumbs.append(
                    np.asarray(im.convert("L").resize((64, 64), Image.Resampling.BILINEAR), np.float32)
                )
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise file_error(path, f"cannot be read as an image ({e})") from e
    first = thumbs[0]
    if all(t.shape == first.shape and float(np.abs(t - first).mean()) < IDENTICAL_THRESHOLD for t in thumbs):
        raise file_error(
            image_dir, f"all {len(names)} images are identical: structure from motion needs views that differ"
        )
    return sizes


# --------------------------------------------------------------------------------------- the steps


@contextlib.contextmanager
def colmap_logging(verbose: bool) -> Iterator[None]:
    """Quiet pycolmap's glog output (errors only) unless ``verbose``; restores the level afterwards."""
    pycolmap = import_pycolmap()

    before = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 0 if verbose else 2
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = before


def _device(name: str):
    pycolmap = import_pycolmap()

    if name not in ("auto", "cpu", "cuda"):
        raise GagsError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not pycolmap.has_cuda:
        raise GagsError("--device cuda: this pycolmap is built without CUDA (use --device cpu or auto)")
    return getattr(pycolmap.Device, name)


def check_camera_model(name: str) -> str:
    """``name`` when it is a COLMAP camera model, else a :class:`GagsError` listing them."""
    pycolmap = import_pycolmap()

    models = [m for m in pycolmap.CameraModelId.__members__ if m != "INVALID"]
    if name not in models:
        raise GagsError(f"unknown camera model {name!r}; COLMAP models are {', '.join(models)}")
    return name


def extract_features(
    database: Path, image_dir: Path, names: Sequence[str], sizes: Sequence[tuple[int, int]], opts: SfmOptions
) -> str:
    """SIFT features of ``names`` into ``database``; returns the camera mode used (``single`` or ``auto``)."""
    pycolmap = import_pycolmap()

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = check_camera_model(opts.camera_model)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = opts.num_threads
    extraction.max_image_size = opts.max_image_size
    extraction.sift.max_num_features = opts.max_num_features
    single = opts.single_camera and len(set(sizes)) == 1
    mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.AUTO
    pycolmap.extract_features(
        database,
        image_dir,
        image_names=list(names),
        camera_mode=mode,
        reader_options=reader,
        extraction_options=extraction,
        device=_device(opts.device),
    )
    with _open_database(database) as db:
        stored = {image.name for image in db.read_all_images()}
    missing = [n for n in names if n not in stored]
    if missing:
        raise file_error(
            image_dir / missing[0], f"COLMAP could not extract features ({len(missing)} images failed)"
        )
    return "single" if single else "auto"


@contextlib.contextmanager
def _open_database(path: Path):
    pycolmap = import_pycolmap()

    db = pycolmap.Database.open(path)
    try:
        yield db
    finally:
        db.close()


def match_features(database: Path, opts: SfmOptions, image_dir: Path | None = None) -> int:
    """Match and geometrically verify image pairs with ``opts.matcher``; returns the verified pairs.

    ``image_dir`` only names the photos in error messages.
    """
    pycolmap = import_pycolmap()

    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = opts.num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = opts.seed
    common = dict(matching_options=matching, verification_options=verification, device=_device(opts.device))
    if opts.matcher == "exhaustive":
        pycolmap.match_exhaustive(database, **common)
    elif opts.matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = opts.sequential_overlap
        pairing.num_threads = opts.num_threads
        pycolmap.match_sequential(database, pairing_options=pairing, **common)
    elif opts.matcher == "spatial":
        with _open_database(database) as db:
            priors, images = db.num_pose_priors(), db.num_images()
        if priors < images:
            raise file_error(
                image_dir or database.parent,
                f"spatial matching needs GPS positions in the photos' EXIF; {priors} of {images} have one "
                "(use --matcher exhaustive or sequential)",
            )
        pairing = pycolmap.SpatialPairingOptions()
        pairing.num_threads = opts.num_threads
        pycolmap.match_spatial(database, pairing_options=pairing, **common)
    else:
        raise GagsError(f"matcher must be one of {', '.join(MATCHERS)}, got {opts.matcher!r}")
    with _open_database(database) as db:
        # (``num_verified_image_pairs`` counts every pair tried, verified or not)
        _, geometries = db.read_two_view_geometries()
    return sum(1 for g in geometries if len(g.inlier_matches) > 0)


def map_incremental(
    database: Path,
    image_dir: Path,
    out_dir: Path,
    opts: SfmOptions,
    on_image: Callable[[], None] | None = None,
) -> list[Any]:
    """Incremental mapping; the models (``pycolmap.Reconstruction``) from largest to smallest, maybe none."""
    pycolmap = import_pycolmap()

    pycolmap.set_random_seed(opts.seed)
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = opts.num_threads
    options.random_seed = opts.seed
    options.mapper.random_seed = opts.seed
    out_dir.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(database, image_dir, out_dir, options, next_image_callback=on_image)
    return sorted(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()), reverse=True)


def undistort(model: Any, image_dir: Path, out: Path, opts: SfmOptions) -> None:
    """Undistort ``model``'s images to PINHOLE cameras: ``out/images`` and ``out/sparse/0`` (binary)."""
    pycolmap = import_pycolmap()

    distorted = out.parent / f"{out.name}.distorted"
    distorted.mkdir(parents=True, exist_ok=True)
    model.write(distorted)
    staging = out.parent / f"{out.name}.undistorting"
    pycolmap.undistort_images(
        staging, distorted, image_dir, output_type="COLMAP", num_threads=opts.num_threads
    )
    (out / "sparse").mkdir(parents=True, exist_ok=True)
    shutil.move(staging / "images", out / "images")
    shutil.move(staging / "sparse", out / "sparse" / "0")
    shutil.rmtree(staging)
    shutil.rmtree(distorted)


def run_sfm(
    image_dir: Path,
    names: Sequence[str],
    work: Path,
    out: Path,
    opts: SfmOptions,
    *,
    phase: Phase | None = None,
    warn: Callable[[str], None] | None = None,
    on_image: Callable[[], None] | None = None,
) -> SfmResult:
    """Photos in ``image_dir`` (``names``) -> an undistorted COLMAP layout in ``out``.

    ``work`` holds the database and intermediate models (the caller removes it). ``image_dir`` is
    only read. Raises :class:`GagsError` when no model can be built; fewer than half the images
    registered or several models are reported through ``warn`` (the largest model is kept) and listed
    in the result. ``on_image`` is called each time the mapper registers an image.
    """
    pycolmap = import_pycolmap()

    if opts.matcher not in MATCHERS:
        raise GagsError(f"matcher must be one of {', '.join(MATCHERS)}, got {opts.matcher!r}")
    timings: dict[str, float] = {}
    phase = phase or (lambda name, detail: None)
    warn = warn or (lambda message: None)
    work.mkdir(parents=True, exist_ok=True)
    database = work / "database.db"
    if database.exists():
        database.unlink()
    with colmap_logging(opts.verbose):
        start = time.perf_counter()
        sizes = check_images(image_dir, names)
        pycolmap.set_random_seed(opts.seed)
        phase(
            "features",
            f"SIFT on {len(names)} images ({opts.camera_model}, longer side <= {opts.max_image_size})",
        )
        mode = extract_features(database, image_dir, names, sizes, opts)
        timings["features"] = time.perf_counter() - start

        start = time.perf_counter()
        phase("matching", f"{opts.matcher}")
        pairs = match_features(database, opts, image_dir)
        timings["matching"] = time.perf_counter() - start
        if pairs == 0:
            raise file_error(
                image_dir,
                f"structure from motion failed: no pair of the {len(names)} images matched "
                "(too little overlap or texture?)",
            )

        start = time.perf_counter()
        phase("mapping", f"incremental, {pairs} verified pairs")
        models = map_incremental(database, image_dir, work / "sparse", opts, on_image)
        timings["mapping"] = time.perf_counter() - start
        if not models:
            raise file_error(
                image_dir,
                f"structure from motion failed: COLMAP built no model from {len(names)} images "
                f"({pairs} verified pairs); try more overlap between photos or --matcher exhaustive",
            )
        sizes_reg = [m.num_reg_images() for m in models]
        best, registered = models[0], sizes_reg[0]
        warnings = []
        kept = {best.image(i).name for i in best.reg_image_ids()}
        lost = {m.image(i).name for m in models[1:] for i in m.reg_image_ids()} - kept
        if lost:  # models may share images; only those outside the largest are lost
            warnings.append(
                f"COLMAP built {len(models)} separate models of {sizes_reg} images; keeping the largest "
                f"({registered} images): {len(lost)} images of the others (e.g. {min(lost)}) did not "
                "overlap enough with it"
            )
        if registered < len(names) / 2:
            warnings.append(
                f"only {registered} of {len(names)} images registered in {image_dir}; the scene will be "
                "incomplete (more overlap between views helps)"
            )
        for message in warnings:
            warn(message)

        start = time.perf_counter()
        which = f", the largest of {len(models)} models" if len(models) > 1 else ""
        phase("undistorting", f"{registered} images to PINHOLE{which}")
        undistort(best, image_dir, out, opts)
        timings["undistortion"] = time.perf_counter() - start

    final = pycolmap.Reconstruction(out / "sparse" / "0")
    cameras = [
        {"model": c.model.name, "width": c.width, "height": c.height, "params": [float(p) for p in c.params]}
        for c in final.cameras.values()
    ]
    return SfmResult(
        out=out,
        num_images=len(names),
        registered=registered,
        model_sizes=sizes_reg,
        points=final.num_points3D(),
        verified_pairs=pairs,
        matcher=opts.matcher,
        camera_mode=mode,
        cameras=cameras,
        timings=timings,
        mean_reprojection_error=float(best.compute_mean_reprojection_error()),
        registered_names=sorted(im.name for im in final.images.values()),
        warnings=warnings,
    )


# ------------------------------------------------------------------------------------- downscaling


def downscale_images(src: Path, dst: Path, factor: int) -> int:
    """Write every image of ``src`` into ``dst`` shrunk by ``factor`` (size rounded, as ``images_N``).

    Returns the number of images written. Sizes are ``round(size / factor)``, within the pixel that
    :func:`gags.scene.images.check_image_sizes` allows.
    """
    if factor < 1:
        raise GagsError(f"downscale factors must be >= 1, got {factor}")
    dst.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        with Image.open(path) as im:
            size = (max(1, round(im.width / factor)), max(1, round(im.height / factor)))
            small = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            extra = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
            small.save(dst / path.name, **extra)
        count += 1
    return count
