"""Scene loaders on the shared data sets and on small scenes written here: counts, sizes, splits, axes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset
from PIL import Image

from gags.errors import GagsError
from gags.runfolder import RunFolder
from gags.scene import SceneConfig, load_image, load_run_scene, load_scene
from gags.scene.load import scene_config_from_dict
from gags.scene.scene import Scene
from gags.scene.sfm import import_pycolmap


def visible_fraction(scene: Scene) -> np.ndarray:
    """(C,) fraction of the scene's points in front of each camera and inside its image."""
    points = np.c_[scene.points.astype(np.float64), np.ones(len(scene.points))]  # (P, 4)
    fractions = []
    for cam in scene.cameras:
        xyz = (cam.world_to_cam @ points.T)[:3]  # (3, P)
        uv = (cam.K @ xyz)[:2] / xyz[2]
        inside = (xyz[2] > 0) & (uv[0] >= 0) & (uv[0] < cam.width) & (uv[1] >= 0) & (uv[1] < cam.height)
        fractions.append(inside.mean())
    return np.array(fractions)


def assert_sane_intrinsics(scene: Scene) -> None:
    for cam in scene.cameras:
        assert cam.K[0, 0] > 0 and cam.K[1, 1] > 0
        assert 0.3 * cam.width < cam.K[0, 2] < 0.7 * cam.width
        assert 0.3 * cam.height < cam.K[1, 2] < 0.7 * cam.height
        np.testing.assert_allclose(
            cam.world_to_cam[:3, :3] @ cam.world_to_cam[:3, :3].T, np.eye(3), atol=1e-6
        )


# ------------------------------------------------------------------------------------ shared data


def test_colmap_sample_loads_with_points_that_reproject() -> None:
    scene = load_scene(SceneConfig(data=shared_dataset("colmap_sample")))
    assert scene.format == "colmap"
    assert len(scene.cameras) == 23 and scene.points.shape == (1443, 3)
    assert scene.point_colors.dtype == np.uint8 and scene.point_colors.shape == (1443, 3)
    names = [c.name for c in scene.cameras]
    assert names == sorted(names) and names[0] == "DSC_5283.jpg"
    assert scene.eval_indices == [0, 8, 16] and len(scene.train_indices) == 20
    assert all(c.width == 1000 and 650 <= c.height <= 670 for c in scene.cameras)
    assert_sane_intrinsics(scene)
    assert visible_fraction(scene).min() > 0.9


def test_colmap_downscale_resizes_cameras_and_images() -> None:
    full = load_scene(SceneConfig(data=shared_dataset("colmap_sample"), holdout_every=0))
    half = load_scene(SceneConfig(data=shared_dataset("colmap_sample"), downscale=2, holdout_every=0))
    assert full.eval_indices == [] and len(full.train_indices) == 23
    cam, cam2 = full.cameras[0], half.cameras[0]
    assert (cam2.width, cam2.height) == (round(cam.width / 2), round(cam.height / 2))
    np.testing.assert_allclose(cam2.K[0, 0], cam.K[0, 0] * cam2.width / cam.width)
    np.testing.assert_allclose(cam2.world_to_cam, cam.world_to_cam)
    assert cam2.image_path == cam.image_path  # no images_2 folder: resized on load
    image = load_image(cam2)
    assert image.shape == (cam2.height, cam2.width, 3) and image.dtype.is_floating_point
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.05


def test_fern_llff_uses_images_8_and_points_reproject() -> None:
    """LLFF poses converted to OpenCV axes put the COLMAP points in front of every camera."""
    scene = load_scene(SceneConfig(data=shared_dataset("fern_llff"), downscale=8))
    assert scene.format == "llff"
    assert len(scene.cameras) == 20 and scene.points.shape == (10091, 3)
    assert {(c.width, c.height) for c in scene.cameras} == {(504, 378)}
    assert all(c.image_path.parent.name == "images_8" for c in scene.cameras)
    assert scene.eval_indices == [0, 8, 16] and len(scene.train_indices) == 17
    np.testing.assert_allclose(scene.cameras[0].K[0, 0], 3260.5 / 8, rtol=1e-3)
    assert_sane_intrinsics(scene)
    assert visible_fraction(scene).min() > 0.9
    assert load_image(scene.cameras[3]).shape == (378, 504, 3)


def test_fern_downscale_without_matching_folder_resizes_from_images_8() -> None:
    scene = load_scene(SceneConfig(data=shared_dataset("fern_llff"), downscale=16))
    assert {(c.width, c.height) for c in scene.cameras} == {(252, 189)}
    assert load_image(scene.cameras[0]).shape == (189, 252, 3)
    with pytest.raises(GagsError, match="images_8"):
        load_scene(SceneConfig(data=shared_dataset("fern_llff")))  # full size: no images/ folder


def test_lego_cameras_on_a_sphere_looking_at_the_origin() -> None:
    scene = load_scene(SceneConfig(data=shared_dataset("lego_blender"), background=(1.0, 1.0, 1.0)))
    assert scene.format == "blender" and len(scene.cameras) == 100 and scene.points is None
    assert len(scene.eval_indices) == 13 and scene.eval_indices[:2] == [0, 8]
    assert {(c.width, c.height) for c in scene.cameras} == {(800, 800)}
    np.testing.assert_allclose(scene.cameras[0].K[0, 0], 400 / np.tan(0.6911112070083618 / 2))
    centers = np.stack([c.center for c in scene.cameras])
    radii = np.linalg.norm(centers, axis=1)
    assert np.all(np.abs(radii - 4.03) < 0.1)
    forward = np.stack([c.world_to_cam[2, :3] for c in scene.cameras])  # camera +z in world
    assert np.all(np.einsum("ij,ij->i", forward, -centers / radii[:, None]) > 0.99)
    image = load_image(scene.camera_by_name("r_0"), scene.background)
    assert image.shape == (800, 800, 3)
    assert float(image[0, 0].min()) == 1.0  # transparent corner composited on white


def test_garden_points_npz_has_cameras_without_images() -> None:
    scene = load_scene(SceneConfig(data=shared_dataset("garden_points") / "test_garden.npz"))
    assert scene.format == "points_npz" and scene.points.shape == (138766, 3)
    assert len(scene.cameras) == 3 and all(c.image_path is None for c in scene.cameras)
    assert {(c.width, c.height) for c in scene.cameras} == {(648, 420)}
    assert scene.eval_indices == [0] and scene.train_indices == [1, 2]
    assert_sane_intrinsics(scene)
    assert visible_fraction(scene).min() > 0.3
    with pytest.raises(GagsError, match="no image"):
        load_image(scene.cameras[0])


def test_colmap_text_model_round_trips_to_the_binary_cameras(tmp_path: Path) -> None:
    source = shared_dataset("colmap_sample")
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "images").symlink_to(source / "images")
    import_pycolmap().Reconstruction(source / "sparse" / "0").write_text(tmp_path / "sparse" / "0")
    binary = load_scene(SceneConfig(data=source))
    text = load_scene(SceneConfig(data=tmp_path))
    assert [c.name for c in text.cameras] == [c.name for c in binary.cameras]
    for a, b in zip(text.cameras, binary.cameras, strict=True):
        np.testing.assert_allclose(a.K, b.K)
        np.testing.assert_allclose(a.world_to_cam, b.world_to_cam, atol=1e-12)
        assert (a.width, a.height) == (b.width, b.height)
    np.testing.assert_array_equal(text.points, binary.points)
    np.testing.assert_array_equal(text.point_colors, binary.point_colors)


def test_colmap_cameras_and_points_equal_pycolmaps_own_numbers() -> None:
    """K, pose, size and points of every image are pycolmap's; projections agree with its own."""
    source = shared_dataset("colmap_sample")
    model = import_pycolmap().Reconstruction(source / "sparse" / "0")
    scene = load_scene(SceneConfig(data=source, holdout_every=0))
    assert len(scene.cameras) == model.num_reg_images()
    xyz = np.array([p.xyz for _, p in sorted(model.points3D.items())])
    for cam in scene.cameras:
        image = model.find_image_with_name(cam.name)
        np.testing.assert_array_equal(cam.K, image.camera.calibration_matrix())
        np.testing.assert_allclose(cam.world_to_cam[:3], image.cam_from_world().matrix(), rtol=0, atol=1e-15)
        np.testing.assert_array_equal(cam.world_to_cam[3], [0, 0, 0, 1])
        assert (cam.width, cam.height) == (image.camera.width, image.camera.height)
        assert cam.image_path == source / "images" / image.name
        in_cam = cam.world_to_cam[:3, :3] @ xyz[:50].T + cam.world_to_cam[:3, 3:]
        uv = (cam.K @ in_cam)[:2] / in_cam[2]
        theirs = np.stack([image.project_point(p) for p in xyz[:50]], axis=1)
        np.testing.assert_allclose(uv, theirs, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(scene.points, xyz.astype(np.float32))


def test_load_run_scene_rebuilds_the_recorded_scene(tmp_path: Path) -> None:
    data = shared_dataset("fern_llff")
    cfg = SceneConfig(data=data, downscale=8, holdout_every=4, background=(1.0, 0.5, 0.0))
    run = RunFolder(tmp_path / "run")
    run.record_stage("scene", cfg)
    assert scene_config_from_dict(json.loads(run.config.read_text())["scene"], run.config) == cfg
    scene = load_run_scene(run)
    assert scene.eval_indices == [0, 4, 8, 12, 16] and scene.background == (1.0, 0.5, 0.0)
    with pytest.raises(GagsError, match="train-rgb"):
        load_run_scene(RunFolder(tmp_path / "empty"))


# ----------------------------------------------------------------------- Blender / nerfstudio


def _write_frames(root: Path, name: str, folder: str, n: int, size: tuple[int, int], **meta) -> None:
    """A transforms file with ``n`` cameras on a circle of radius 3 looking at the origin (OpenGL axes)."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n):
        angle = 2 * np.pi * i / n
        center = np.array([3 * np.cos(angle), 3 * np.sin(angle), 0.0])
        back = center / 3  # OpenGL +z points away from the look direction
        right = np.cross([0.0, 0.0, 1.0], back)
        up = np.cross(back, right)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, up, back], axis=1)
        c2w[:3, 3] = center
        Image.new("RGBA", size, (200, 100, 50, 128)).save(root / folder / f"r_{i}.png")
        frames.append({"file_path": f"./{folder}/r_{i}", "transform_matrix": c2w.tolist()})
    (root / name).write_text(json.dumps({**meta, "frames": frames}))


def test_blender_test_file_gives_the_eval_split_and_unique_names(tmp_path: Path) -> None:
    _write_frames(tmp_path, "transforms_train.json", "train", 4, (32, 24), camera_angle_x=1.0)
    _write_frames(tmp_path, "transforms_test.json", "test", 2, (32, 24), camera_angle_x=1.0)
    scene = load_scene(SceneConfig(data=tmp_path, downscale=2))
    names = [c.name for c in scene.cameras]
    assert names == sorted(names) and "test_r_0.png" in names and "train_r_0.png" in names
    assert [names[i] for i in scene.eval_indices] == ["test_r_0.png", "test_r_1.png"]
    assert len(scene.train_indices) == 4
    cam = scene.cameras[0]
    assert (cam.width, cam.height) == (16, 12)
    np.testing.assert_allclose(cam.K[0, 0], 0.5 * 16 / np.tan(0.5))
    # OpenCV forward axis points at the origin
    np.testing.assert_allclose(cam.world_to_cam[2, :3], -cam.center / np.linalg.norm(cam.center), atol=1e-9)
    gray = load_image(cam, (0.0, 0.0, 0.0))
    np.testing.assert_allclose(gray[0, 0].numpy(), np.array([200, 100, 50]) / 255 * 128 / 255, atol=0.01)


def test_nerfstudio_transforms_with_focal_lengths_and_points(tmp_path: Path) -> None:
    from plyfile import PlyData, PlyElement

    meta = dict(fl_x=20.0, fl_y=21.0, cx=7.5, cy=6.0, w=16, h=12, k1=0.01, ply_file_path="points.ply")
    _write_frames(tmp_path, "transforms.json", "images", 8, (16, 12), **meta)
    vertex = np.zeros(
        5, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    vertex["x"] = np.arange(5)
    vertex["red"] = 255
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "points.ply"))
    with pytest.warns(UserWarning, match="distortion"):
        scene = load_scene(SceneConfig(data=tmp_path, holdout_every=4))
    assert scene.eval_indices == [0, 4] and len(scene.train_indices) == 6
    np.testing.assert_allclose(scene.cameras[0].K, [[20.0, 0, 7.5], [0, 21.0, 6.0], [0, 0, 1]])
    assert (
        scene.points.shape == (5, 3) and scene.points[4, 0] == 4.0 and (scene.point_colors[:, 0] == 255).all()
    )
