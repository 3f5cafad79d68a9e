"""Broken data sets fail with a GagsError that names the file and the problem; nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset
from PIL import Image

from gags.errors import GagsError
from gags.scene import SceneConfig, load_image, load_scene
from gags.scene.sfm import import_pycolmap


def tiny_colmap(root: Path, n_images: int = 3, size: tuple[int, int] = (32, 24), binary: bool = True) -> Path:
    """A COLMAP scene of ``n_images`` PINHOLE views of a few points, with matching PNGs; returns ``root``.

    The model is built and written by pycolmap (COLMAP's own writer), as ``.bin`` or ``.txt``.
    """
    pycolmap = import_pycolmap()
    model = pycolmap.Reconstruction()
    camera = pycolmap.Camera(
        camera_id=1, model="PINHOLE", width=size[0], height=size[1], params=[30, 30, 16, 12]
    )
    model.add_camera_with_trivial_rig(camera)
    for i in range(n_images):
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(), np.array([0.1 * i, 0, 4.0]))
        model.add_image_with_trivial_frame(
            pycolmap.Image(name=f"im{i}.png", camera_id=1, image_id=i + 1), pose
        )
    for xyz in np.random.default_rng(0).uniform(-1, 1, (10, 3)):
        model.add_point3D(xyz, pycolmap.Track(), np.full(3, 7, np.uint8))
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    (model.write if binary else model.write_text)(root / "sparse" / "0")
    for i in range(n_images):
        Image.new("RGB", size, (10, 20, 30)).save(root / "images" / f"im{i}.png")
    return root


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_tiny_scene_loads_and_loading_writes_nothing(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path)
    before = files_under(root)
    scene = load_scene(SceneConfig(data=root, holdout_every=2))
    assert files_under(root) == before
    assert len(scene.cameras) == 3 and scene.eval_indices == [0, 2] and scene.points.shape == (10, 3)


def test_missing_or_unknown_data_folder(tmp_path: Path) -> None:
    with pytest.raises(GagsError, match="does not exist"):
        load_scene(SceneConfig(data=tmp_path / "nope"))
    with pytest.raises(GagsError, match="COLMAP.*LLFF.*transforms.*npz") as info:
        load_scene(SceneConfig(data=tmp_path))
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("binary", [True, False])
def test_model_naming_an_image_not_on_disk(tmp_path: Path, binary: bool) -> None:
    root = tiny_colmap(tmp_path, binary=binary)
    (root / "images" / "im1.png").unlink()
    with pytest.raises(GagsError, match=r"im1\.png: image file does not exist"):
        load_scene(SceneConfig(data=root))


def test_unreadable_image(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path)
    (root / "images" / "im2.png").write_bytes(b"not a png at all")
    with pytest.raises(GagsError, match=r"im2\.png: cannot be read as an image"):
        load_scene(SceneConfig(data=root))


def test_truncated_image_fails_on_load(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path, size=(320, 240))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(root / "images" / "im0.png")
    data = (root / "images" / "im0.png").read_bytes()
    (root / "images" / "im0.png").write_bytes(data[: len(data) // 2])
    scene = load_scene(SceneConfig(data=root))  # the header is intact
    with pytest.raises(GagsError, match=r"im0\.png: cannot be read"):
        load_image(scene.cameras[0])


def test_image_size_not_matching_its_camera(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path)
    Image.new("RGB", (30, 24)).save(root / "images" / "im1.png")
    with pytest.raises(GagsError, match=r"im1\.png: image is 30x24 but its camera is 32x24"):
        load_scene(SceneConfig(data=root))


def test_images_n_folder_with_a_wrong_size(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path)
    (root / "images_2").mkdir()
    for i, size in enumerate([(16, 12), (16, 12), (16, 10)]):
        Image.new("RGB", size).save(root / "images_2" / f"im{i}.png")
    with pytest.raises(GagsError, match=r"images_2/im2\.png: image is 16x10 .*expected 16x12"):
        load_scene(SceneConfig(data=root, downscale=2))
    Image.new("RGB", (16, 12)).save(root / "images_2" / "im2.png")
    scene = load_scene(SceneConfig(data=root, downscale=2))
    assert scene.cameras[0].image_path.parent.name == "images_2" and scene.cameras[0].width == 16


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_truncated_colmap_binary(tmp_path: Path, name: str) -> None:
    source = shared_dataset("colmap_sample")
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "images").symlink_to(source / "images")
    for file in (source / "sparse" / "0").iterdir():
        shutil.copyfile(file, tmp_path / "sparse" / "0" / file.name)
    broken = tmp_path / "sparse" / "0" / name
    broken.write_bytes(broken.read_bytes()[:-5])
    with pytest.raises(GagsError, match=rf"{name}: is truncated"):
        load_scene(SceneConfig(data=tmp_path))


def test_colmap_record_cut_short_and_inconsistent_files_name_the_file(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path / "bin")
    images_bin = root / "sparse" / "0" / "images.bin"
    data = images_bin.read_bytes()
    images_bin.write_bytes(data[: data.index(b"im0.png") + 3])  # pycolmap alone would never return
    with pytest.raises(GagsError, match=r"images\.bin: is truncated \(unterminated image name"):
        load_scene(SceneConfig(data=root))
    root = tiny_colmap(tmp_path / "text", binary=False)
    (root / "sparse" / "0" / "points3D.txt").write_text("1 0 0 0 1 2 3 0.5 7 0\n")  # image 7 does not exist
    with pytest.raises(GagsError, match=r"points3D\.txt: rejected by pycolmap \(Image with ID 7 "):
        load_scene(SceneConfig(data=root))
    (root / "sparse" / "0" / "cameras.txt").write_text("2 PINHOLE 32 24 30 30 16 12\n")
    with pytest.raises(GagsError, match=r"images\.txt: image 'im0\.png' uses camera 1, not in cameras\.txt"):
        load_scene(SceneConfig(data=root))


def test_non_finite_colmap_pose_in_text_model(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path, binary=False)
    images_txt = root / "sparse" / "0" / "images.txt"
    images_txt.write_text(images_txt.read_text().replace(" 4 1 im1.png", " nan 1 im1.png"))
    with pytest.raises(GagsError, match=r"images\.txt: non-finite or zero poses for images \['im1\.png'\]"):
        load_scene(SceneConfig(data=root))


def test_malformed_colmap_text_and_unsupported_model(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path, binary=False)
    cameras_txt = root / "sparse" / "0" / "cameras.txt"
    cameras_txt.write_text("1 PINHOLE 32 24 30.0 30.0\n")
    with pytest.raises(GagsError, match="cameras.txt: camera 1 .PINHOLE. has 2 parameters, expected 4"):
        load_scene(SceneConfig(data=root))
    cameras_txt.write_text("1 OPENCV_FISHEYE 32 24 30 30 16 12 0 0 0 0\n")
    with pytest.raises(GagsError, match="OPENCV_FISHEYE model; supported"):
        load_scene(SceneConfig(data=root))


def test_distortion_is_ignored_with_a_warning(tmp_path: Path) -> None:
    root = tiny_colmap(tmp_path, binary=False)
    (root / "sparse" / "0" / "cameras.txt").write_text("1 SIMPLE_RADIAL 32 24 30 16 12 0.05\n")
    with pytest.warns(UserWarning, match="distortion"):
        scene = load_scene(SceneConfig(data=root))
    np.testing.assert_allclose(scene.cameras[0].K, [[30, 0, 16], [0, 30, 12], [0, 0, 1]])


def test_malformed_and_non_finite_blender_json(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "r_0.png")
    transforms = tmp_path / "transforms_train.json"
    transforms.write_text('{"camera_angle_x": 0.7, "frames": [')
    with pytest.raises(GagsError, match=r"transforms_train\.json: is not valid JSON"):
        load_scene(SceneConfig(data=tmp_path))
    matrix = np.eye(4).tolist()
    matrix[0][3] = float("nan")
    transforms.write_text(
        json.dumps({"camera_angle_x": 0.7, "frames": [{"file_path": "r_0", "transform_matrix": matrix}]})
    )
    with pytest.raises(GagsError, match="frame 0: transform_matrix contains NaN"):
        load_scene(SceneConfig(data=tmp_path))
    transforms.write_text(
        json.dumps({"camera_angle_x": 0.7, "frames": [{"file_path": "r_9", "transform_matrix": matrix}]})
    )
    with pytest.raises(GagsError, match="frame image 'r_9' not found"):
        load_scene(SceneConfig(data=tmp_path))


def test_llff_non_finite_poses_and_image_count(tmp_path: Path) -> None:
    source = shared_dataset("fern_llff")
    (tmp_path / "images_8").symlink_to(source / "images_8")
    table = np.load(source / "poses_bounds.npy")
    table[3, 5] = np.inf
    np.save(tmp_path / "poses_bounds.npy", table)
    with pytest.raises(GagsError, match=r"poses_bounds\.npy: contains NaN or inf \(rows \[3\]\)"):
        load_scene(SceneConfig(data=tmp_path, downscale=8))
    np.save(tmp_path / "poses_bounds.npy", np.load(source / "poses_bounds.npy")[:5])
    with pytest.raises(GagsError, match="has 20 images but poses_bounds.npy has 5 poses"):
        load_scene(SceneConfig(data=tmp_path, downscale=8))


def test_points_npz_missing_keys_and_bad_config(tmp_path: Path) -> None:
    np.savez(tmp_path / "pts.npz", means3d=np.zeros((4, 3)), colors=np.zeros((4, 3), np.uint8))
    with pytest.raises(GagsError, match=r"pts\.npz: missing keys \['viewmats', 'Ks', 'width', 'height'\]"):
        load_scene(SceneConfig(data=tmp_path / "pts.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(GagsError, match=r"junk\.npz: cannot be read as an \.npz archive"):
        load_scene(SceneConfig(data=tmp_path / "junk.npz"))
    with pytest.raises(GagsError, match="downscale must be a positive number"):
        load_scene(SceneConfig(data=tmp_path, downscale=0))


def test_blender_images_of_different_sizes(tmp_path: Path) -> None:
    frames = []
    for i, size in enumerate([(8, 8), (8, 8), (6, 8)]):
        Image.new("RGBA", size).save(tmp_path / f"r_{i}.png")
        frames.append({"file_path": f"r_{i}", "transform_matrix": np.eye(4).tolist()})
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    with pytest.raises(GagsError, match=r"r_2\.png: image is 6x8 but transforms_train\.json says 8x8"):
        load_scene(SceneConfig(data=tmp_path))
