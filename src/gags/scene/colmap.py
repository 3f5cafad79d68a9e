"""COLMAP sparse models (binary and text) -> OpenCV cameras and a coloured point cloud.

A small numpy reader of the formats documented at https://colmap.github.io/format.html:
``cameras``, ``images`` and ``points3D`` as ``.bin`` or ``.txt``, in ``sparse/0/`` or ``sparse/``.
COLMAP already uses OpenCV camera axes, world-to-camera poses and pixel centres at +0.5, so the
conversion is a quaternion to a rotation matrix and nothing else.
"""

from __future__ import annotations

import dataclasses
import struct
import warnings
from pathlib import Path

import numpy as np

from gags.errors import GagsError, file_error
from gags.io import atomic_path, write_text_atomic
from gags.scene.cameras import Camera

#: model id -> (name, number of parameters), from colmap/src/colmap/sensor/models.h
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
_MODEL_IDS = {name: (model_id, n) for model_id, (name, n) in CAMERA_MODELS.items()}

#: models read as pinhole cameras; the slice of their parameters that holds distortion coefficients
PINHOLE_LIKE: dict[str, slice] = {
    "SIMPLE_PINHOLE": slice(3, 3),
    "PINHOLE": slice(4, 4),
    "SIMPLE_RADIAL": slice(3, 4),
    "RADIAL": slice(3, 5),
    "OPENCV": slice(4, 8),
}

MODEL_FILES = ("cameras", "images", "points3D")


@dataclasses.dataclass
class ColmapCamera:
    """One COLMAP camera (intrinsics shared by one or more images)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # (n_params,) float64


@dataclasses.dataclass
class ColmapImage:
    """One registered image: its pose (world-to-camera) and its camera."""

    image_id: int
    qvec: np.ndarray  # (4,) w, x, y, z
    tvec: np.ndarray  # (3,)
    camera_id: int
    name: str


@dataclasses.dataclass
class ColmapModel:
    """A whole sparse model; ``points`` (P, 3) float64 and ``colors`` (P, 3) uint8.

    ``folder`` and ``ext`` (``.bin``/``.txt``) say where it was read from, for error messages.
    """

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray
    colors: np.ndarray
    folder: Path = Path(".")
    ext: str = ".bin"

    def file(self, kind: str) -> Path:
        """The file a part of the model came from: ``kind`` is ``cameras``, ``images`` or ``points3D``."""
        return self.folder / f"{kind}{self.ext}"


# ----------------------------------------------------------------------------------------- finding


def find_model_dir(root: Path) -> Path | None:
    """The folder holding ``cameras`` and ``images`` (``.bin`` or ``.txt``), or None.

    Looks in ``root/sparse/0``, ``root/sparse`` and ``root`` itself, in that order.
    """
    for folder in (root / "sparse" / "0", root / "sparse", root):
        if _model_ext(folder) is not None:
            return folder
    return None


def _model_ext(folder: Path) -> str | None:
    for ext in (".bin", ".txt"):
        if (folder / f"cameras{ext}").is_file() and (folder / f"images{ext}").is_file():
            return ext
    return None


def read_model(folder: Path) -> ColmapModel:
    """Read ``cameras``, ``images`` and (when present) ``points3D`` from ``folder``; binary first."""
    ext = _model_ext(folder)
    if ext is None:
        raise GagsError(
            f"{folder}: no COLMAP model (looked for cameras.bin+images.bin or cameras.txt+images.txt)"
        )
    binary = ext == ".bin"
    cameras = (read_cameras_binary if binary else read_cameras_text)(folder / f"cameras{ext}")
    images = (read_images_binary if binary else read_images_text)(folder / f"images{ext}")
    points_file = folder / f"points3D{ext}"
    if points_file.is_file():
        points, colors = (read_points3d_binary if binary else read_points3d_text)(points_file)
    else:
        points, colors = np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    for image in images.values():
        if image.camera_id not in cameras:
            raise file_error(
                folder / f"images{ext}",
                f"image {image.name!r} uses camera {image.camera_id}, not in cameras{ext}",
            )
    return ColmapModel(cameras, images, points, colors, folder, ext)


# ------------------------------------------------------------------------------------------ binary


class _Reader:
    """Sequential little-endian reads from a byte buffer; a short read is a truncated-file error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.buf = path.read_bytes()
        except OSError as e:
            raise file_error(path, f"cannot be read ({e.strerror or e})") from e
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise file_error(
                self.path,
                f"is truncated (needed {size} bytes at offset {self.pos}, file has {len(self.buf)})",
            )
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return values

    def skip(self, size: int) -> None:
        if self.pos + size > len(self.buf):
            raise file_error(
                self.path,
                f"is truncated (needed {size} bytes at offset {self.pos}, file has {len(self.buf)})",
            )
        self.pos += size

    def cstring(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise file_error(self.path, f"is truncated (unterminated image name at offset {self.pos})")
        raw = self.buf[self.pos : end]
        self.pos = end + 1
        return raw.decode("utf-8", errors="replace")

    def finish(self) -> None:
        if self.pos != len(self.buf):
            raise file_error(
                self.path, f"has {len(self.buf) - self.pos} unexpected trailing bytes (corrupt file?)"
            )


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    """``cameras.bin``: uint64 count; per camera int32 id, int32 model, uint64 width, height, params."""
    r = _Reader(path)
    (count,) = r.unpack("Q")
    cameras = {}
    for _ in range(count):
        camera_id, model_id, width, height = r.unpack("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise file_error(
                path, f"camera {camera_id} has unknown COLMAP model id {model_id} (corrupt file?)"
            )
        name, n_params = CAMERA_MODELS[model_id]
        params = np.array(r.unpack(f"{n_params}d"))
        cameras[camera_id] = ColmapCamera(camera_id, name, width, height, params)
    r.finish()
    return cameras


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    """``images.bin``: per image id, qvec (w,x,y,z), tvec, camera id, name, 2D points (skipped)."""
    r = _Reader(path)
    (count,) = r.unpack("Q")
    images = {}
    for _ in range(count):
        values = r.unpack("i4d3di")
        name = r.cstring()
        (n_points2d,) = r.unpack("Q")
        r.skip(24 * n_points2d)  # x, y float64 and point3D id int64 per observation
        images[values[0]] = ColmapImage(
            values[0], np.array(values[1:5]), np.array(values[5:8]), values[8], name
        )
    r.finish()
    return images


_POINT_HEADER = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length: 43 bytes


def read_points3d_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``points3D.bin`` -> points (P, 3) float64, colours (P, 3) uint8.

    Records have variable length (a track of 8 bytes per observation), so one pass finds where each
    starts; the fields are then gathered for all points at once.
    """
    r = _Reader(path)
    (count,) = r.unpack("Q")
    buf, size = r.buf, len(r.buf)
    starts = np.empty(count, dtype=np.int64)
    pos = r.pos
    track_offset = _POINT_HEADER.size - 8
    for i in range(count):
        if pos + _POINT_HEADER.size > size:
            raise file_error(
                path, f"is truncated (point {i} of {count} starts at offset {pos}, file has {size} bytes)"
            )
        starts[i] = pos
        (track_length,) = struct.unpack_from("<Q", buf, pos + track_offset)
        pos += _POINT_HEADER.size + 8 * track_length
    if pos > size:
        raise file_error(path, f"is truncated (the last track ends at offset {pos}, file has {size} bytes)")
    if pos < size:
        raise file_error(path, f"has {size - pos} unexpected trailing bytes (corrupt file?)")
    data = np.frombuffer(buf, dtype=np.uint8)
    xyz = data[starts[:, None] + np.arange(8, 32)].copy().view("<f8").reshape(count, 3)
    rgb = data[starts[:, None] + np.arange(32, 35)].reshape(count, 3)
    return xyz.astype(np.float64), rgb.astype(np.uint8)


# -------------------------------------------------------------------------------------------- text


def _text_lines(path: Path) -> list[str]:
    """The lines of a COLMAP text file with comments removed (empty lines kept)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise file_error(path, f"cannot be read as text ({e})") from e
    return [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    """``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`` per line."""
    cameras = {}
    for line in _text_lines(path):
        if not line:
            continue
        parts = line.split()
        try:
            camera_id, model, width, height = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
            params = np.array([float(p) for p in parts[4:]])
        except (IndexError, ValueError) as e:
            raise file_error(path, f"malformed camera line {line!r} ({e})") from e
        if model not in _MODEL_IDS:
            raise file_error(path, f"camera {camera_id} has unknown COLMAP model {model!r}")
        if len(params) != _MODEL_IDS[model][1]:
            raise file_error(
                path,
                f"camera {camera_id} ({model}) has {len(params)} parameters, expected {_MODEL_IDS[model][1]}",
            )
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, params)
    return cameras


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    """``images.txt``: two lines per image: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``, 2D points."""
    lines = _text_lines(path)
    images = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        parts = line.split(maxsplit=9)
        try:
            values = [float(p) for p in parts[1:8]]
            image = ColmapImage(
                int(parts[0]), np.array(values[:4]), np.array(values[4:]), int(parts[8]), parts[9]
            )
        except (IndexError, ValueError) as e:
            raise file_error(path, f"malformed image line {line!r} ({e})") from e
        images[image.image_id] = image
        i += 2  # skip the POINTS2D line (possibly empty)
    return images


def read_points3d_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[]`` -> points (P, 3), colours (P, 3) uint8."""
    rows = [line.split()[:7] for line in _text_lines(path) if line]
    if not rows:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise file_error(path, f"malformed point line ({e})") from e
    if table.ndim != 2 or table.shape[1] != 7:
        raise file_error(path, "malformed point lines (each needs at least ID X Y Z R G B)")
    return table[:, 1:4], table[:, 4:7].clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------- conversion


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions w, x, y, z (normalised here) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(qvec, dtype=np.float64)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def intrinsics(camera: ColmapCamera, source: Path) -> np.ndarray:
    """(3, 3) pinhole K of a COLMAP camera from ``source``; non-zero distortion is ignored with a warning."""
    if camera.model not in PINHOLE_LIKE:
        raise file_error(
            source,
            f"camera {camera.camera_id} uses the {camera.model} model; supported: {', '.join(PINHOLE_LIKE)} "
            "(undistort the images first, e.g. `colmap image_undistorter`)",
        )
    p = camera.params
    if camera.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    else:
        fx, fy, cx, cy = p[:4]
    distortion = p[PINHOLE_LIKE[camera.model]]
    if np.any(distortion != 0):
        warnings.warn(
            f"{source}: camera {camera.camera_id} ({camera.model}) has distortion {distortion.tolist()}; "
            "it is ignored (images are treated as undistorted)",
            stacklevel=3,
        )
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def model_cameras(model: ColmapModel, image_dir: Path) -> list[Camera]:
    """One :class:`Camera` per registered image (image paths under ``image_dir``), at the model's size."""
    images = list(model.images.values())
    if not images:
        raise file_error(model.file("images"), "the COLMAP model has no registered images")
    qvecs = np.stack([im.qvec for im in images])
    tvecs = np.stack([im.tvec for im in images])
    bad = ~(np.isfinite(qvecs).all(1) & np.isfinite(tvecs).all(1) & (np.linalg.norm(qvecs, axis=1) > 0))
    if bad.any():
        names = [images[i].name for i in np.flatnonzero(bad)[:5]]
        raise file_error(model.file("images"), f"non-finite or zero poses for images {names}")
    viewmats = np.tile(np.eye(4), (len(images), 1, 1))
    viewmats[:, :3, :3] = qvec_to_rotmat(qvecs)
    viewmats[:, :3, 3] = tvecs
    Ks = {cid: intrinsics(cam, model.file("cameras")) for cid, cam in model.cameras.items()}
    for cid, K in Ks.items():
        if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise file_error(
                model.file("cameras"),
                f"camera {cid} has invalid intrinsics {model.cameras[cid].params.tolist()}",
            )
    return [
        Camera(
            name=im.name,
            K=Ks[im.camera_id],
            world_to_cam=viewmat,
            width=model.cameras[im.camera_id].width,
            height=model.cameras[im.camera_id].height,
            image_path=image_dir / im.name,
        )
        for im, viewmat in zip(images, viewmats, strict=True)
    ]


# ----------------------------------------------------------------------------------------- writing


def write_model_text(folder: Path, model: ColmapModel) -> None:
    """Write ``cameras.txt``, ``images.txt`` and ``points3D.txt`` (no 2D points or tracks), atomically."""
    cams = [
        " ".join([str(c.camera_id), c.model, str(c.width), str(c.height), *map(repr, c.params.tolist())])
        for c in model.cameras.values()
    ]
    ims = [
        " ".join(
            [
                str(im.image_id),
                *map(repr, im.qvec.tolist()),
                *map(repr, im.tvec.tolist()),
                str(im.camera_id),
                im.name,
            ]
        )
        + "\n"
        for im in model.images.values()
    ]
    pts = [
        f"{i + 1} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0.0"
        for i, (p, c) in enumerate(zip(model.points.tolist(), model.colors.tolist(), strict=True))
    ]
    write_text_atomic(folder / "cameras.txt", "# Camera list\n" + "\n".join(cams) + "\n")
    write_text_atomic(folder / "images.txt", "# Image list\n" + "\n".join(ims) + "\n")
    write_text_atomic(folder / "points3D.txt", "# 3D point list\n" + "\n".join(pts) + "\n")


def write_model_binary(folder: Path, model: ColmapModel) -> None:
    """Write ``cameras.bin``, ``images.bin`` and ``points3D.bin`` (no 2D points or tracks), atomically."""
    cams = [struct.pack("<Q", len(model.cameras))]
    for c in model.cameras.values():
        cams.append(struct.pack("<iiQQ", c.camera_id, _MODEL_IDS[c.model][0], c.width, c.height))
        cams.append(np.asarray(c.params, dtype="<f8").tobytes())
    ims = [struct.pack("<Q", len(model.images))]
    for im in model.images.values():
        ims.append(struct.pack("<i4d3di", im.image_id, *im.qvec.tolist(), *im.tvec.tolist(), im.camera_id))
        ims.append(im.name.encode("utf-8") + b"\0" + struct.pack("<Q", 0))
    pts = [struct.pack("<Q", len(model.points))]
    pts += [
        _POINT_HEADER.pack(i + 1, *p, *c, 0.0, 0)
        for i, (p, c) in enumerate(zip(model.points.tolist(), model.colors.tolist(), strict=True))
    ]
    for name, chunks in (("cameras.bin", cams), ("images.bin", ims), ("points3D.bin", pts)):
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(b"".join(chunks))


# ---------------------------------------------------------------------------------------- loading


def load_colmap(
    root: Path, downscale: float, images: str | None
) -> tuple[list[Camera], np.ndarray | None, np.ndarray | None]:
    """Cameras at the model's size (images from ``images_N`` or ``images``), points (P, 3), colours (P, 3)."""
    from gags.scene.images import check_image_sizes, choose_image_dir, expected_factor

    folder = find_model_dir(root)
    if folder is None:
        raise GagsError(f"{root}: no COLMAP model in sparse/0, sparse or the folder itself")
    model = read_model(folder)
    image_dir = choose_image_dir(root, downscale, images)
    cameras = model_cameras(model, image_dir)
    check_image_sizes(cameras, expected_factor(image_dir))
    if len(model.points) == 0:
        return cameras, None, None
    return cameras, model.points, model.colors
