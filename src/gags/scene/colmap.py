"""COLMAP sparse models (binary and text) -> OpenCV cameras and a coloured point cloud, read by pycolmap.

``cameras``, ``images`` and ``points3D`` (https://colmap.github.io/format.html) as ``.bin`` or ``.txt``,
in ``sparse/0/``, ``sparse/`` or the data set folder, are read by ``pycolmap.Reconstruction``. COLMAP
uses OpenCV camera axes, world-to-camera poses and pixel coordinates in which the centre of the
top-left pixel is (0.5, 0.5), as :class:`~gags.scene.cameras.Camera` does, so nothing is converted.
``rigs`` and ``frames`` (COLMAP >= 3.12) are not read: ``images`` holds every image's own pose.

Still written here, because pycolmap (4.2) cannot do it:

- a walk over the record sizes of each ``.bin`` file before pycolmap sees it. pycolmap does not check
  for the end of a file: a truncated ``images.bin`` or ``points3D.bin`` makes it loop forever (an image
  name or a track read past the end), a truncated ``cameras.bin`` is read with made-up numbers.
- :func:`read_points3d_binary` for LLFF, which ships ``points3D.bin`` without ``images.bin``: pycolmap
  adds each point's track to its images and rejects a track that names an image it has not read.
- when pycolmap rejects a file, it is read again one file more at a time to name the file, and a text
  file's lines are checked to name the line; pycolmap's message names only the C++ check that failed.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gags.errors import GagsError, file_error
from gags.scene.cameras import Camera

#: models read as pinhole cameras; their distortion coefficients, when non-zero, are ignored with a warning
PINHOLE_LIKE = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
MODEL_FILES = ("cameras", "images", "points3D")
#: what pycolmap raises for a file it rejects
_PYCOLMAP_ERRORS = (ValueError, IndexError, RuntimeError)


def _pycolmap() -> Any:
    from gags.scene.sfm import import_pycolmap  # zlib and Pillow load first; its docstring says why

    return import_pycolmap()


@dataclasses.dataclass
class ColmapModel:
    """A sparse model as read by pycolmap, and where it came from (for error messages)."""

    reconstruction: Any  # pycolmap.Reconstruction
    folder: Path
    ext: str  # ".bin" or ".txt"

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


# ----------------------------------------------------------------------------------------- reading


def read_model(folder: Path) -> ColmapModel:
    """Read ``cameras``, ``images`` and (when present) ``points3D`` from ``folder``; binary first."""
    ext = _model_ext(folder)
    if ext is None:
        raise GagsError(
            f"{folder}: no COLMAP model (looked for cameras.bin+images.bin or cameras.txt+images.txt)"
        )
    files = {kind: folder / f"{kind}{ext}" for kind in MODEL_FILES if (folder / f"{kind}{ext}").is_file()}
    if ext == ".bin":
        _check_binary(files)
    try:
        reconstruction = _read(files, ext)
    except _PYCOLMAP_ERRORS as e:
        raise _diagnose(folder, files, ext, e) from e
    return ColmapModel(reconstruction, folder, ext)


def _read(files: dict[str, Path], ext: str) -> Any:
    """``pycolmap.Reconstruction`` of exactly these files; an empty stand-in for each kind not given."""
    reconstruction = _pycolmap().Reconstruction()
    with tempfile.TemporaryDirectory(prefix="gags-colmap-") as tmp:
        for kind in MODEL_FILES:
            target = Path(tmp) / f"{kind}{ext}"
            if kind not in files:
                target.write_bytes(bytes(8) if ext == ".bin" else b"")  # a count of 0 / no lines
                continue
            try:
                target.symlink_to(files[kind].resolve())
            except OSError:  # no symbolic links here
                shutil.copyfile(files[kind], target)
        (reconstruction.read_binary if ext == ".bin" else reconstruction.read_text)(tmp)
    return reconstruction


def _diagnose(folder: Path, files: dict[str, Path], ext: str, error: Exception) -> GagsError:
    """The error for a model pycolmap rejected: the first file whose addition makes it fail, and why."""
    given: dict[str, Path] = {}
    camera_ids: set[int] = set()
    for kind in MODEL_FILES:
        if kind not in files:
            continue
        given[kind] = files[kind]
        try:
            camera_ids = set(_read(given, ext).cameras.keys())
        except _PYCOLMAP_ERRORS as e:
            problem = _text_problem(files[kind], kind, camera_ids) if ext == ".txt" else None
            if problem is None:
                problem = f"rejected by pycolmap ({_one_line(e)})"
                if kind == "points3D":
                    problem += f"; its tracks must match the 2D points of images{ext}"
            return file_error(files[kind], problem)
    return file_error(folder, f"rejected by pycolmap ({_one_line(error)})")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


@functools.lru_cache
def _num_params(model: int | str) -> int | None:
    """Number of parameters of a COLMAP camera model (id or name); None if pycolmap has no such model."""
    pycolmap = _pycolmap()
    try:
        model_id = pycolmap.CameraModelId.__members__[model] if isinstance(model, str) else model
        return len(
            pycolmap.Camera.create_from_model_id(0, pycolmap.CameraModelId(model_id), 1.0, 1, 1).params
        )
    except (KeyError, *_PYCOLMAP_ERRORS):
        return None


# ------------------------------------------------------------------------- checks of binary files


class _Reader:
    """Sequential little-endian reads from a byte buffer; a short read is a truncated-file error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.buf = path.read_bytes()
        except OSError as e:
            raise file_error(path, f"cannot be read ({e.strerror or e})") from e
        self.pos = 0

    def skip(self, size: int) -> None:
        if self.pos + size > len(self.buf):
            raise file_error(
                self.path,
                f"is truncated (needed {size} bytes at offset {self.pos}, file has {len(self.buf)})",
            )
        self.pos += size

    def unpack(self, fmt: str) -> tuple:
        start = self.pos
        self.skip(struct.calcsize("<" + fmt))
        return struct.unpack_from("<" + fmt, self.buf, start)

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


def _check_binary(files: dict[str, Path]) -> None:
    """Every record of the ``.bin`` files is whole, camera models are known, image cameras exist."""
    r = _Reader(files["cameras"])
    camera_ids = set()
    for _ in range(r.unpack("Q")[0]):  # per camera: int32 id, int32 model, uint64 width, height, params
        camera_id, model_id, _, _ = r.unpack("iiQQ")
        n_params = _num_params(model_id)
        if n_params is None:
            raise file_error(
                r.path, f"camera {camera_id} has unknown COLMAP model id {model_id} (corrupt file?)"
            )
        r.skip(8 * n_params)
        camera_ids.add(camera_id)
    r.finish()
    r = _Reader(files["images"])
    for _ in range(r.unpack("Q")[0]):  # per image: id, qvec, tvec, camera id, name, 2D points
        camera_id = r.unpack("i4d3di")[-1]
        name = r.cstring()
        r.skip(24 * r.unpack("Q")[0])  # x, y float64 and point3D id int64 per observation
        if camera_id not in camera_ids:
            raise file_error(r.path, f"image {name!r} uses camera {camera_id}, not in cameras.bin")
    r.finish()
    if "points3D" in files:
        read_points3d_binary(files["points3D"])


_POINT_HEADER = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length: 51 bytes


def read_points3d_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``points3D.bin`` -> points (P, 3) float64, colours (P, 3) uint8, without the model's images.

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


# -------------------------------------------------------------------- diagnosis of text files


def _text_problem(path: Path, kind: str, camera_ids: set[int]) -> str | None:
    """What is wrong with a text file pycolmap rejected, naming the line; None when nothing is found."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot be read as text ({e})"
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    if kind == "cameras":
        for line in filter(None, lines):  # CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]
            parts = line.split()
            try:
                camera_id, model, _, _ = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
                n_params = len([float(p) for p in parts[4:]])
            except (IndexError, ValueError):
                return f"malformed camera line {line!r}"
            expected = _num_params(model)
            if expected is None:
                return f"camera {camera_id} has unknown COLMAP model {model!r}"
            if n_params != expected:
                return f"camera {camera_id} ({model}) has {n_params} parameters, expected {expected}"
    elif kind == "images":  # two lines per image: IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, 2D points
        bad, i = [], 0
        while i < len(lines):
            if not lines[i]:
                i += 1
                continue
            parts = lines[i].split()
            try:
                pose, camera_id, name = [float(p) for p in parts[1:8]], int(parts[8]), parts[9]
                int(parts[0])
            except (IndexError, ValueError):
                return f"malformed image line {lines[i]!r}"
            if not np.isfinite(pose).all():
                bad.append(name)
            elif camera_id not in camera_ids:
                return f"image {name!r} uses camera {camera_id}, not in cameras.txt"
            i += 2
        if bad:
            return f"non-finite or zero poses for images {bad[:5]}"
    return None


# ------------------------------------------------------------------------------------- conversion


def intrinsics(camera: Any, source: Path) -> np.ndarray:
    """(3, 3) pinhole K of a ``pycolmap.Camera`` from ``source``; non-zero distortion is ignored, warned."""
    model = camera.model.name
    if model not in PINHOLE_LIKE:
        raise file_error(
            source,
            f"camera {camera.camera_id} uses the {model} model; supported: {', '.join(PINHOLE_LIKE)} "
            "(undistort the images first, e.g. `colmap image_undistorter`)",
        )
    distortion = np.asarray(camera.params)[camera.extra_params_idxs()]
    if np.any(distortion != 0):
        warnings.warn(
            f"{source}: camera {camera.camera_id} ({model}) has distortion {distortion.tolist()}; "
            "it is ignored (images are treated as undistorted)",
            stacklevel=3,
        )
    return np.array(camera.calibration_matrix(), dtype=np.float64)


def model_cameras(model: ColmapModel, image_dir: Path) -> list[Camera]:
    """One :class:`Camera` per registered image (image paths under ``image_dir``), at the model's size."""
    pycolmap = _pycolmap()
    images = sorted(
        (im for im in model.reconstruction.images.values() if im.has_pose), key=lambda im: im.image_id
    )
    if not images:
        raise file_error(model.file("images"), "the COLMAP model has no registered images")
    viewmats, bad = [], []
    for im in images:
        pose = im.cam_from_world()
        quat, t = np.asarray(pose.rotation.quat), np.asarray(pose.translation)  # quat: x, y, z, w
        norm = np.linalg.norm(quat)
        if not (np.isfinite(quat).all() and np.isfinite(t).all() and norm > 0):
            bad.append(im.name)
            continue
        viewmat = np.eye(4)
        viewmat[:3, :3] = pycolmap.Rotation3d(quat / norm).matrix()
        viewmat[:3, 3] = t
        viewmats.append(viewmat)
    if bad:
        raise file_error(model.file("images"), f"non-finite or zero poses for images {bad[:5]}")
    cameras = model.reconstruction.cameras
    Ks = {cid: intrinsics(cam, model.file("cameras")) for cid, cam in cameras.items()}
    for cid, K in Ks.items():
        if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise file_error(
                model.file("cameras"),
                f"camera {cid} has invalid intrinsics {np.asarray(cameras[cid].params).tolist()}",
            )
    return [
        Camera(
            name=im.name,
            K=Ks[im.camera_id],
            world_to_cam=viewmat,
            width=cameras[im.camera_id].width,
            height=cameras[im.camera_id].height,
            image_path=image_dir / im.name,
        )
        for im, viewmat in zip(images, viewmats, strict=True)
    ]


def model_points(model: ColmapModel) -> tuple[np.ndarray, np.ndarray]:
    """Points (P, 3) float64 and colours (P, 3) uint8, in point id order (as COLMAP writes them)."""
    points = sorted(model.reconstruction.points3D.items(), key=lambda item: item[0])
    xyz = np.array([p.xyz for _, p in points], dtype=np.float64).reshape(-1, 3)
    rgb = np.array([p.color for _, p in points], dtype=np.uint8).reshape(-1, 3)
    return xyz, rgb


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
    points, colors = model_points(model)
    if len(points) == 0:
        return cameras, None, None
    return cameras, points, colors
