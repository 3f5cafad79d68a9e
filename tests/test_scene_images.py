"""load_image: modes (RGB, RGBA, grayscale, palette, 16-bit), compositing, resizing; image folder choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gags.errors import GagsError
from gags.scene import Camera, load_image
from gags.scene.images import check_image_sizes, choose_image_dir


def camera_for(path: Path, width: int, height: int) -> Camera:
    K = np.array([[10.0, 0, width / 2], [0, 10.0, height / 2], [0, 0, 1]])
    return Camera(name=path.name, K=K, world_to_cam=np.eye(4), width=width, height=height, image_path=path)


def test_rgb_image_is_float_in_unit_range(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(camera_for(tmp_path / "a.png", 8, 6))
    assert image.shape == (6, 8, 3) and str(image.dtype) == "torch.float32"
    np.testing.assert_allclose(image.numpy(), pixels / 255.0, atol=1e-6)


def test_rgba_is_composited_on_the_background(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "a.png")
    cam = camera_for(tmp_path / "a.png", 4, 4)
    on_blue = load_image(cam, (0.0, 0.0, 1.0)).numpy()
    np.testing.assert_allclose(on_blue[0, 0], [1, 0, 0])
    np.testing.assert_allclose(on_blue[3, 3], [0, 0, 1])
    np.testing.assert_allclose(load_image(cam).numpy()[3, 3], [0, 0, 0])


def test_grayscale_palette_and_16_bit_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (5, 3), 51).save(tmp_path / "gray.png")
    np.testing.assert_allclose(load_image(camera_for(tmp_path / "gray.png", 5, 3)).numpy(), 0.2, atol=1e-6)
    Image.new("LA", (5, 3), (255, 0)).save(tmp_path / "la.png")
    np.testing.assert_allclose(
        load_image(camera_for(tmp_path / "la.png", 5, 3), (0.5, 0.5, 0.5)).numpy(), 0.5
    )
    palette = Image.new("P", (5, 3), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "p.png")
    np.testing.assert_allclose(load_image(camera_for(tmp_path / "p.png", 5, 3)).numpy()[1, 1], [0, 1, 0])
    Image.fromarray(np.full((3, 5), 65535 // 4, dtype=np.uint16)).save(tmp_path / "deep.png")
    np.testing.assert_allclose(load_image(camera_for(tmp_path / "deep.png", 5, 3)).numpy(), 0.25, atol=1e-4)


def test_image_is_resized_to_the_camera(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 255, 40).astype(np.uint8)[None, :, None], (20, 1, 3))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    image = load_image(camera_for(tmp_path / "ramp.png", 10, 5)).numpy()
    assert image.shape == (5, 10, 3)
    assert np.all(np.diff(image[2, :, 0]) > 0)  # still increasing left to right
    np.testing.assert_allclose(image.mean(), ramp.mean() / 255.0, atol=0.01)


def test_missing_image_and_size_check_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(GagsError, match=r"gone\.png: image file does not exist"):
        load_image(camera_for(tmp_path / "gone.png", 4, 4))
    Image.new("RGB", (10, 5)).save(tmp_path / "a.png")
    Image.new("RGB", (10, 7)).save(tmp_path / "b.png")
    cams = [camera_for(tmp_path / "a.png", 20, 10), camera_for(tmp_path / "b.png", 20, 10)]
    with pytest.raises(GagsError, match=r"b\.png: image is 10x7 but its camera is 20x10"):
        check_image_sizes(cams)  # factor measured from the first image: 2
    assert check_image_sizes(cams[:1]) == 2.0


def test_image_folder_choice(tmp_path: Path) -> None:
    for name in ("images", "images_2", "images_4"):
        (tmp_path / name).mkdir()
    assert choose_image_dir(tmp_path, 1.0, None).name == "images"
    assert choose_image_dir(tmp_path, 4.0, None).name == "images_4"
    assert choose_image_dir(tmp_path, 3.0, None).name == "images"
    assert choose_image_dir(tmp_path, 1.0, "images_2").name == "images_2"
    (tmp_path / "images").rmdir()
    assert choose_image_dir(tmp_path, 3.0, None).name == "images_2"
    with pytest.raises(GagsError, match="found images_2, images_4"):
        choose_image_dir(tmp_path, 1.0, None)
    with pytest.raises(GagsError, match="images_9: image folder given with --images does not exist"):
        choose_image_dir(tmp_path, 1.0, "images_9")
