"""Image files: choosing the image folder, checking sizes against cameras, loading as float tensors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gags.errors import GagsError, file_error
from gags.scene.cameras import Camera

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".JPG",
    ".JPEG",
    ".PNG",
    ".exr",
    ".tif",
    ".tiff",
    ".webp",
    ".bmp",
)

#: images may differ from their camera's (rounded) size by this many pixels
SIZE_TOLERANCE_PX = 1.0


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_EXTENSIONS)


def folder_factor(folder: Path) -> int | None:
    """The downscale factor in a folder name such as ``images_8`` (None for other names)."""
    match = re.fullmatch(r".*_(\d+)", folder.name)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def expected_factor(folder: Path) -> float | None:
    """Camera size / image size implied by a folder name: 1 for ``images``, N for ``images_N``, else None."""
    return 1.0 if folder.name == "images" else folder_factor(folder)


def choose_image_dir(root: Path, downscale: float, override: str | None) -> Path:
    """The folder to read images from, as the 3DGS and gsplat loaders choose it.

    ``override`` (e.g. ``images_8``) wins; otherwise ``images_N`` when ``downscale`` is the whole number
    N and that folder exists (pre-shrunk copies), else the full-resolution ``images``, else the
    smallest pre-shrunk copy still at least as large as the target (``images_N`` with N <= downscale).
    """
    if override is not None:
        folder = root / override
        if not folder.is_dir():
            raise file_error(folder, "image folder given with --images does not exist")
        return folder
    if downscale > 1 and float(downscale).is_integer() and (root / f"images_{int(downscale)}").is_dir():
        return root / f"images_{int(downscale)}"
    if (root / "images").is_dir():
        return root / "images"
    shrunk = {folder_factor(p): p for p in root.glob("images_*") if p.is_dir() and folder_factor(p)}
    usable = [n for n in shrunk if n <= downscale]
    if usable:
        return shrunk[max(usable)]
    others = sorted(p.name for p in shrunk.values())
    hint = (
        f"; found {', '.join(others)}: pass --downscale N to use images_N, or --images NAME" if others else ""
    )
    raise file_error(root / "images", f"image folder does not exist{hint}")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels."""
    if not path.is_file():
        raise file_error(path, "image file does not exist")
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as e:
        raise file_error(path, f"cannot be read as an image ({e})") from e


def check_image_sizes(cameras: Sequence[Camera], factor: float | None = None) -> float:
    """Check that every camera's image is the camera's size divided by one common factor.

    Args:
        cameras: cameras with ``image_path`` set, at the size of the camera model (full resolution).
        factor: the expected camera-size / image-size ratio (e.g. 8 for ``images_8``); None measures
            it from the first image.

    Returns:
        The factor. Raises :class:`GagsError` naming the first image whose size does not match.
    """
    sizes = np.array([image_size(c.image_path) for c in cameras], dtype=np.float64)  # (C, 2)
    cam_sizes = np.array([(c.width, c.height) for c in cameras], dtype=np.float64)  # (C, 2)
    if factor is None:
        factor = float(cam_sizes[0, 0] / sizes[0, 0])
    expected = cam_sizes / factor
    bad = np.abs(sizes - expected).max(axis=1) > SIZE_TOLERANCE_PX
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        w, h = sizes[i].astype(int)
        raise file_error(
            cameras[i].image_path,
            f"image is {w}x{h} but its camera is {cameras[i].width}x{cameras[i].height}"
            + (
                f" (expected {expected[i, 0]:.0f}x{expected[i, 1]:.0f} at downscale {factor:g})"
                if factor != 1
                else ""
            ),
        )
    return factor


def load_image(camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """The camera's image as a (H, W, 3) float32 tensor in [0, 1], at the camera's size.

    Files of another size are resized with Pillow (bicubic, alpha-premultiplied); RGBA and LA images
    are composited on ``background`` (RGB in [0, 1]); grayscale and 16-bit images become RGB.
    """
    if camera.image_path is None:
        raise GagsError(f"camera {camera.name!r} has no image (this scene has cameras only)")
    path = Path(camera.image_path)
    if not path.is_file():
        raise file_error(path, "image file does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            rgb, alpha = _decode(im, (camera.width, camera.height))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise file_error(path, f"cannot be read as an image ({e})") from e
    if alpha is not None:
        bg = np.asarray(background, dtype=np.float32)
        rgb = np.clip(rgb * alpha + bg * (1.0 - alpha), 0.0, 1.0, dtype=np.float32)
    return torch.from_numpy(rgb)


def _decode(im: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded Pillow image -> RGB (H, W, 3) and alpha (H, W, 1) or None, float32 in [0, 1], at ``size``."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        scale = 65535.0 if im.mode.startswith("I;16") else float(max(np.asarray(im).max(), 1))
        gray = Image.fromarray(np.asarray(im, dtype=np.float32) / scale, mode="F")
        if gray.size != size:
            gray = gray.resize(size, Image.Resampling.BICUBIC)
        g = np.asarray(gray, dtype=np.float32).clip(0, 1)
        return np.repeat(g[..., None], 3, axis=-1), None
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    im = im.convert("RGBA" if has_alpha else "RGB")
    if im.size != size:
        im = im.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(im, dtype=np.float32) * np.float32(1.0 / 255.0)
    return (pixels[..., :3].copy(), pixels[..., 3:].copy()) if has_alpha else (pixels, None)
