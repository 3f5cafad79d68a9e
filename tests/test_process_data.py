"""``gags process-data``: SfM on real photo sets against their shipped poses, the video path, bad input.

The photo sets' shipped models are ignored: only their images go in, and the recovered cameras are
aligned to the shipped ones by a similarity (Umeyama) before the errors are measured. Every run is
single-threaded with a fixed seed (reproducible, and gentle on shared CI machines).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset
from PIL import Image

import gags.scene.sfm  # noqa: E402,F401  (before pycolmap: see gags.scene.sfm.import_pycolmap)

pytest.importorskip("pycolmap", reason="process-data needs pycolmap")
pytest.importorskip("cv2", reason="video frame selection needs opencv-python-headless")
pytest.importorskip("imageio_ffmpeg", reason="video decoding needs imageio-ffmpeg")

from gags.errors import GagsError  # noqa: E402
from gags.scene.align import compare_cameras, umeyama  # noqa: E402
from gags.scene.cameras import Camera  # noqa: E402
from gags.scene.load import SceneConfig, load_scene  # noqa: E402
from gags.stages.process_data import SUMMARY_FILE, ProcessDataConfig, process_data  # noqa: E402

#: the accuracy the issue asks for, after a similarity alignment
MAX_MEDIAN_ROTATION_DEG = 2.0
MAX_CENTER_ERROR = 0.05  # of the reference cameras' extent (radius of their centres around their mean)


def run(input: Path, out: Path, **overrides) -> dict:
    cfg = ProcessDataConfig(input=input, out=out, num_threads=1, seed=0, **overrides)
    return process_data(cfg, log=lambda message: None)


def assert_poses_match(estimated: list[Camera], reference: list[Camera], min_common: int) -> dict:
    errors = compare_cameras(estimated, reference)
    assert len(errors.names) >= min_common
    rot, center = float(np.median(errors.rotation_deg)), float(np.median(errors.center)) / errors.extent
    assert rot < MAX_MEDIAN_ROTATION_DEG, f"median rotation error {rot:.2f} deg"
    assert center < MAX_CENTER_ERROR, f"median centre error {100 * center:.2f}% of the extent"
    assert errors.center.max() / errors.extent < 2 * MAX_CENTER_ERROR
    return {"rotation_deg": rot, "center_fraction": center}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------ real photos


def test_colmap_sample_photos_recover_the_shipped_poses(tmp_path: Path) -> None:
    data = shared_dataset("colmap_sample")
    before = snapshot(data)
    out = tmp_path / "data"
    summary = run(data / "images", out, max_image_size=640)
    assert summary["registered"] == summary["input_images"] == 23
    assert summary["camera_mode"] == "auto"  # the photos differ in height by a few pixels: a camera each
    assert all(c["model"] == "PINHOLE" for c in summary["cameras"])
    scene = load_scene(SceneConfig(data=out, holdout_every=0))
    assert scene.format == "colmap" and len(scene.cameras) == 23 and len(scene.points) > 500
    reference = load_scene(SceneConfig(data=data, holdout_every=0)).cameras
    assert_poses_match(scene.cameras, reference, min_common=23)
    assert snapshot(data) == before  # nothing written into INPUT


def test_fern_photos_recover_the_llff_poses_and_write_downscaled_copies(tmp_path: Path) -> None:
    data = shared_dataset("fern_llff")
    out = tmp_path / "fern"
    summary = run(data / "images_8", out, downscales=(2,))
    assert summary["registered"] == 20 and summary["models"] == [20] and summary["camera_mode"] == "single"
    assert sorted(p.name for p in out.iterdir()) == ["images", "images_2", SUMMARY_FILE, "sparse"]
    assert {p.name for p in (out / "sparse" / "0").iterdir()} >= {"cameras.bin", "images.bin", "points3D.bin"}
    assert json.loads((out / SUMMARY_FILE).read_text())["registered"] == 20
    scene = load_scene(SceneConfig(data=out, holdout_every=0))
    reference = load_scene(SceneConfig(data=data, images="images_8", holdout_every=0)).cameras
    assert_poses_match(scene.cameras, reference, min_common=20)
    half = load_scene(SceneConfig(data=out, downscale=2, holdout_every=0))
    assert half.cameras[0].image_path.parent.name == "images_2"
    with Image.open(half.cameras[0].image_path) as im:
        assert abs(im.width - half.cameras[0].width) <= 1


# ------------------------------------------------------------------------------------------ video


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory) -> tuple[Path, list[Camera]]:
    """A 48-frame mp4 of the synthetic scene along an arc: each rendered view, then a blurred copy of it."""
    from gags.synthetic.video import OrbitVideoConfig, write_orbit_video

    root = tmp_path_factory.mktemp("video")
    video = root / "orbit.mp4"
    return video, write_orbit_video(video, OrbitVideoConfig(views=24), cache_dir=root / "cache")


def test_video_keeps_the_sharp_frames_and_registers_them(tmp_path: Path, synthetic_video) -> None:
    video, truth = synthetic_video
    out = tmp_path / "from_video"
    summary = run(video, out, num_frames=24)
    assert summary["kind"] == "video" and summary["matcher"] == "sequential"
    assert summary["video"]["total_frames"] == 48
    assert summary["video"]["frame_indices"] == list(range(0, 48, 2))  # never the blurred copy
    assert summary["registered"] >= 0.8 * 24
    scene = load_scene(SceneConfig(data=out, holdout_every=0))
    assert_poses_match(scene.cameras, truth, min_common=20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from_video"]  # no temporary folder left


# ------------------------------------------------------------------------------------- bad input


def test_empty_folder_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    with pytest.raises(GagsError, match=r"empty: no images found"):
        run(empty, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temporary folder left behind


def test_unreadable_video_is_refused(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"this is not a video\n" * 50)
    with pytest.raises(GagsError, match=r"clip\.mp4: cannot be read as a video \(.+\)"):
        run(video, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_identical_images_are_refused(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    for i in range(4):
        image.save(photos / f"img{i}.png")
    with pytest.raises(GagsError, match=r"photos: all 4 images are identical"):
        run(photos, tmp_path / "out")


def test_unrelated_images_fail_sfm_with_a_clear_message(tmp_path: Path) -> None:
    photos = tmp_path / "noise"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(photos / f"n{i}.png")
    with pytest.raises(GagsError, match=r"noise: structure from motion failed"):
        run(photos, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_folder_rules(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    with pytest.raises(GagsError, match="must not be inside the input folder"):
        run(photos, photos / "data")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(GagsError, match="busy: output folder is not empty; pass --overwrite"):
        run(photos, busy)
    with pytest.raises(GagsError, match="contains the input"):
        run(photos, tmp_path, overwrite=True)
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(GagsError, match="downscales"):
        run(photos, tmp_path / "out", downscales=(1,))


def test_overwrite_replaces_a_previous_data_set_and_one_thread_is_reproducible(tmp_path: Path) -> None:
    data = shared_dataset("fern_llff")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ["image000.png", "image001.png", "image002.png", "image003.png", "image004.png"]:
        shutil.copy(data / "images_8" / name, photos / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    summary = run(photos, out, overwrite=True, max_num_features=2048)
    assert summary["registered"] >= 3
    assert not (out / "stale.txt").exists() and (out / "sparse" / "0" / "images.bin").is_file()
    model = {p.name: p.read_bytes() for p in (out / "sparse" / "0").iterdir()}
    run(photos, out, overwrite=True, max_num_features=2048)
    assert {p.name: p.read_bytes() for p in (out / "sparse" / "0").iterdir()} == model  # same seed, 1 thread
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


def test_two_unrelated_sets_keep_the_larger_model_and_warn(tmp_path: Path) -> None:
    """8 fern photos + 10 colmap_sample photos + 3 of noise: two models, fewer than half registered."""
    photos = tmp_path / "mixed"
    photos.mkdir()
    for path in sorted((shared_dataset("fern_llff") / "images_8").iterdir())[:8]:
        shutil.copy(path, photos / f"a_{path.name}")
    for path in sorted((shared_dataset("colmap_sample") / "images").iterdir())[:10]:
        with Image.open(path) as im:
            im.resize((500, 330)).save(photos / f"b_{path.stem}.png")
    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (330, 500, 3), dtype=np.uint8)).save(photos / f"c_{i}.png")
    messages: list[str] = []
    cfg = ProcessDataConfig(input=photos, out=tmp_path / "out", num_threads=1, max_image_size=400)
    summary = process_data(cfg, log=messages.append)
    assert summary["input_images"] == 21 and len(summary["models"]) >= 2
    assert summary["registered"] == summary["models"][0] == max(summary["models"]) < 21 / 2
    kept = {c.name[0] for c in load_scene(SceneConfig(data=tmp_path / "out", holdout_every=0)).cameras}
    assert len(kept) == 1  # one of the two sets, never a mix
    warnings = [m for m in messages if "warning:" in m]
    assert any(f"keeping the largest ({summary['registered']} images)" in m for m in warnings)
    assert any(f"only {summary['registered']} of 21 images registered" in m for m in warnings)
    assert summary["warnings"] and len(summary["unregistered"]) == 21 - summary["registered"]


def test_spatial_matching_uses_gps_from_exif_and_needs_it(tmp_path: Path) -> None:
    photos = tmp_path / "gps"
    photos.mkdir()
    for i, path in enumerate(sorted((shared_dataset("colmap_sample") / "images").iterdir())[:6]):
        exif = Image.Exif()
        exif[0x8825] = {1: "N", 2: (47.0, 22.0, 10.0 + 0.05 * i), 3: "E", 4: (8.0, 33.0, 5.0), 5: 0, 6: 400.0}
        with Image.open(path) as im:
            im.save(photos / path.name, exif=exif)
    summary = run(photos, tmp_path / "out", matcher="spatial", max_image_size=400)
    assert summary["matcher"] == "spatial" and summary["registered"] >= 5
    with pytest.raises(GagsError, match=r"images_8: spatial matching needs GPS .* 0 of 20 have one"):
        run(shared_dataset("fern_llff") / "images_8", tmp_path / "out2", matcher="spatial", max_image_size=64)


# ---------------------------------------------------------------------------------------- helpers


def test_umeyama_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    dst = 2.5 * src @ R.T + np.array([1.0, -2.0, 0.5])
    s, R_est, t = umeyama(src, dst)
    assert s == pytest.approx(2.5) and np.allclose(R_est, R) and np.allclose(t, [1.0, -2.0, 0.5])
