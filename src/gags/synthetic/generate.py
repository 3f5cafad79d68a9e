"""Generate (and cache) the synthetic table-top scene with its ground truth.

The output folder, keyed by a hash of the configuration, holds::

    transforms_train.json   Blender/nerfstudio layout (OpenGL camera-to-world matrices, intrinsics)
    images/frame_XXXX.png   RGB renders
    gt/frame_XXXX.npz       depth float32 (H, W) metres (0 = background); labels int32 (3, H, W)
                            region ids for subpart / part / whole, -1 = background
    hierarchy.json          regions: id, name, level, parent, object
    views.json              per image: ring (far / mid / near), target, distance
    labels/frame_XXXX.json  LERF-OVS labels of the evaluation frames, the LERF-OVS-like query set
                            (each object once or twice, ``ObjectSpec.queries``); labels/levels.json
    labels_hierarchy/       the same frames with every region of every level labelled (the
                            "hierarchy stress test"); its own levels.json
    gt_splats.ply           the ground-truth Gaussians (standard 3DGS layout)
    points3d.ply            a sparse, noisy point cloud standing in for SfM points (``ply_file_path``)

The folder is written under a temporary name and renamed when complete, so a cached scene is
never half-written, and an existing one is never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from tqdm.auto import tqdm

from gags.io import atomic_path, save_npz_atomic, write_json_atomic
from gags.scene.cameras import Camera
from gags.splats.gaussians import Gaussians
from gags.splats.sh import rgb_to_sh0
from gags.synthetic.groundtruth import Hierarchy, render_view_truth
from gags.synthetic.labels import HIERARCHY_LABELS, QUERY_LABELS, write_frame_labels
from gags.synthetic.primitives import rotation_z_to
from gags.synthetic.scene import LOCAL_FRAMES, ObjectSpec, query_names, table_top_scene

#: bump when the generator's output changes for the same configuration (invalidates caches).
#: 4: labels/ holds the LERF-OVS-like query set, labels_hierarchy/ every region (images and gt unchanged)
GENERATOR_VERSION = 4
#: direction towards the light used to bake diffuse shading into the colours (world, z up)
LIGHT_DIR = np.array([0.3, -0.4, 0.85]) / np.linalg.norm([0.3, -0.4, 0.85])
#: largest standard deviation of a Gaussian across its surface, metres (thin: the place mat lies 4 mm
#: above the table top and must not interleave with it)
THICKNESS = 0.001
#: point the far and middle rings look at (metres, world z up)
SCENE_CENTER = np.array([0.0, 0.05, 0.06])


@dataclasses.dataclass
class SyntheticConfig:
    """Size and randomness of the synthetic scene.

    Attributes:
        seed: seeds the surface sampling, colour jitter and near-view azimuths.
        width, height: image size in pixels.
        fov_x_deg: horizontal field of view in degrees.
        n_far, n_mid: views on the far ring (1.1 m, 30 degrees up) and middle ring (0.6 m, 55 degrees up).
        near_per_object: close-up views of each object (it fills about half the frame).
        density: multiplier on the number of Gaussians (1.0 gives about 4,500).
        n_label_frames: frames that get LERF-OVS label files (spread over the far, middle and near views).
        n_points: size of the SfM-like point cloud (a random subset of the Gaussian centres).
        point_noise: standard deviation of the noise added to those points, metres.
        cache_dir: root of the cache (default ``$GAGS_CACHE/synthetic`` or ``~/.cache/gags/synthetic``).
    """

    seed: int = 0
    width: int = 200
    height: int = 150
    fov_x_deg: float = 60.0
    n_far: int = 16
    n_mid: int = 16
    near_per_object: int = 4
    density: float = 1.0
    n_label_frames: int = 12
    n_points: int = 1500
    point_noise: float = 0.003
    cache_dir: Path | None = None

    def key(self) -> str:
        """Hash of everything that changes the output (the scene catalogue too), not of where it is cached."""
        fields = dataclasses.asdict(self)
        fields.pop("cache_dir")
        fields["version"] = GENERATOR_VERSION
        fields["scene"] = hashlib.sha1(repr(table_top_scene()).encode()).hexdigest()
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def folder(self) -> Path:
        """The cache folder of this configuration."""
        root = self.cache_dir
        if root is None:
            base = os.environ.get("GAGS_CACHE")
            root = Path(base) / "synthetic" if base else Path.home() / ".cache" / "gags" / "synthetic"
        return Path(root).expanduser() / self.key()


def generate_scene(cfg: SyntheticConfig, *, force: bool = False) -> Path:
    """Build the scene folder for ``cfg`` unless it is cached; return its path."""
    final = cfg.folder()
    if final.exists() and not force:
        return final
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _write_scene(cfg, tmp)
        if final.exists():  # ``force``: replace only once the new one is complete
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            try:
                os.replace(tmp, final)
            except OSError:
                if not final.exists():  # not a concurrent generation of the same scene
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


# ----------------------------------------------------------------------------- Gaussians and regions


def build_hierarchy(objects: list[ObjectSpec]) -> tuple[Hierarchy, dict[tuple[int, int, int], int]]:
    """Region ids: wholes, then parts, then subparts -> the tree and (object, part, subpart) -> id."""
    names: list[str] = []
    level: list[int] = []
    parent: list[int] = []
    obj_of: list[int] = []

    def add(name: str, lv: int, par: int, obj: int) -> int:
        names.append(name)
        level.append(lv)
        parent.append(par)
        obj_of.append(obj)
        return len(names) - 1

    whole_ids = [add(o.name, 2, -1, len(names)) for o in objects]  # a whole is its own object
    part_ids = {
        (oi, pi): add(p.name, 1, whole_ids[oi], whole_ids[oi])
        for oi, o in enumerate(objects)
        for pi, p in enumerate(o.parts)
    }
    sub_ids = {
        (oi, pi, si): add(s.name, 0, part_ids[oi, pi], whole_ids[oi])
        for oi, o in enumerate(objects)
        for pi, p in enumerate(o.parts)
        for si, s in enumerate(p.subparts)
    }
    if len(set(names)) != len(names):
        raise ValueError("region names must be distinct")
    hier = Hierarchy(names=names, level=np.array(level), parent=np.array(parent), object=np.array(obj_of))
    return hier, sub_ids


def build_gaussians(
    objects: list[ObjectSpec], cfg: SyntheticConfig
) -> tuple[Gaussians, torch.Tensor, Hierarchy]:
    """Sample every subpart's surface into flat Gaussians.

    Returns the Gaussians (SH degree 0, colours with baked diffuse shading), the (N,) subpart region
    id of each, and the hierarchy.
    """
    rng = np.random.default_rng(cfg.seed)
    hier, sub_ids = build_hierarchy(objects)
    chunks = []
    for oi, obj in enumerate(objects):
        for pi, part in enumerate(obj.parts):
            for si, sub in enumerate(part.subparts):
                spacing = sub.spacing or obj.spacing
                for shape in sub.shapes:
                    n = max(4, int(round(cfg.density * shape.area / spacing**2)))
                    pts, nrm = shape.sample(n, rng)
                    pts, nrm = _to_world(pts, nrm, obj, sub.name)
                    chunks.append((pts, nrm, spacing, sub.color, sub_ids[oi, pi, si]))
    means = np.concatenate([c[0] for c in chunks])
    normals = np.concatenate([c[1] for c in chunks])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    spacing = np.concatenate([np.full(len(c[0]), c[2] / math.sqrt(cfg.density)) for c in chunks])
    base = np.concatenate([np.tile(np.asarray(c[3]), (len(c[0]), 1)) for c in chunks])
    region = np.concatenate([np.full(len(c[0]), c[4]) for c in chunks])

    shade = 0.6 + 0.4 * np.clip(normals @ LIGHT_DIR, 0, 1)
    grain = 1.0 + 0.06 * np.sin(means[:, 0] * 60.0 + 3.0 * np.sin(means[:, 1] * 25.0))  # wood-like stripes
    colors = np.clip(base * (shade * grain)[:, None] + rng.normal(0, 0.02, base.shape), 0, 1)
    scales = np.stack([0.55 * spacing, 0.55 * spacing, np.minimum(0.08 * spacing, THICKNESS)], -1)
    f32 = torch.float32
    gaussians = Gaussians(
        means=torch.tensor(means, dtype=f32),
        quats=torch.tensor(rotation_z_to(normals), dtype=f32),
        log_scales=torch.tensor(np.log(scales), dtype=f32),
        opacity_logits=torch.full((len(means),), 3.0),  # opacity 0.95
        sh=rgb_to_sh0(torch.tensor(colors, dtype=f32))[:, None, :],
    )
    return gaussians, torch.tensor(region, dtype=torch.long), hier


def _to_world(
    pts: np.ndarray, nrm: np.ndarray, obj: ObjectSpec, subpart: str
) -> tuple[np.ndarray, np.ndarray]:
    """Local primitive frame -> object frame (``LOCAL_FRAMES``) -> world (object yaw and position)."""
    if subpart in LOCAL_FRAMES:
        origin, tilt = LOCAL_FRAMES[subpart]
        R = _rot_y(tilt)
        pts, nrm = pts @ R.T + np.asarray(origin), nrm @ R.T
    R = _rot_z(obj.yaw)
    offset = np.array([obj.position[0], obj.position[1], 0.0])
    return pts @ R.T + offset, nrm @ R.T


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


# ----------------------------------------------------------------------------- cameras


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) world-to-camera (OpenCV axes) of a camera at ``eye`` looking at ``target``, world z up."""
    f = target - eye
    f = f / np.linalg.norm(f)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    R = np.stack([right, down, f])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def _orbit(target: np.ndarray, dist: float, elev_deg: float, azim: float) -> np.ndarray:
    e = math.radians(elev_deg)
    return target + dist * np.array([math.cos(e) * math.cos(azim), math.cos(e) * math.sin(azim), math.sin(e)])


def build_cameras(
    objects: list[ObjectSpec],
    gaussians: Gaussians,
    region: torch.Tensor,
    hier: Hierarchy,
    cfg: SyntheticConfig,
) -> tuple[list[Camera], list[dict]]:
    """Far ring, middle ring and close-ups of every object but the table -> cameras, view records."""
    rng = np.random.default_rng(cfg.seed + 1)
    fx = cfg.width / 2 / math.tan(math.radians(cfg.fov_x_deg) / 2)
    K = np.array([[fx, 0, cfg.width / 2], [0, fx, cfg.height / 2], [0, 0, 1.0]])
    tan_half_v = (cfg.height / 2) / fx
    poses: list[tuple[np.ndarray, dict]] = []
    for ring, n, dist, elev in (("far", cfg.n_far, 1.1, 30.0), ("mid", cfg.n_mid, 0.6, 55.0)):
        for k in range(n):
            azim = 2 * math.pi * k / max(n, 1) + (0.3 if ring == "mid" else 0.0)
            eye = _orbit(SCENE_CENTER, dist, elev, azim)
            poses.append((look_at(eye, SCENE_CENTER), {"ring": ring, "target": "scene", "distance": dist}))
    whole_of = hier.ancestors(region.numpy())[2]
    means = gaussians.means.numpy()
    table = hier.names.index("table")
    for obj_name in [o.name for o in objects if o.name != "table"]:
        own = whole_of == hier.names.index(obj_name)
        others = means[~own & (whole_of != table)]
        pts = means[own]
        center = (pts.min(0) + pts.max(0)) / 2
        radius = float(np.linalg.norm(pts.max(0) - pts.min(0)) / 2)
        dist = 1.25 * radius / tan_half_v
        for eye in _unoccluded_eyes(center, dist, others, cfg.near_per_object, tan_half_v, rng):
            record = {"ring": "near", "target": obj_name, "distance": round(dist, 4)}
            poses.append((look_at(eye, center), record))
    cameras, records = [], []
    for i, (w2c, rec) in enumerate(poses):
        name = f"frame_{i + 1:04d}.png"
        cameras.append(Camera(name=name, K=K, world_to_cam=w2c, width=cfg.width, height=cfg.height))
        records.append({"name": name, **rec})
    return cameras, records


def _unoccluded_eyes(
    center: np.ndarray, dist: float, others: np.ndarray, n: int, tan_half: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """``n`` camera centres around ``center`` from which few of ``others`` (M, 3) (points of other
    objects) lie between the camera and the target, at azimuths at least 180/n degrees apart."""
    n_candidates = max(24, 2 * n)
    azims = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(n_candidates) / n_candidates
    eyes = [_orbit(center, dist, rng.uniform(30, 50), a) for a in azims]
    scores = np.array([_occluders(look_at(eye, center), others, dist, tan_half) for eye in eyes])
    chosen: list[int] = []
    for i in np.argsort(scores, kind="stable"):
        gap = [abs((azims[i] - azims[j] + math.pi) % (2 * math.pi) - math.pi) for j in chosen]
        if all(g >= math.pi / n - 1e-9 for g in gap):
            chosen.append(int(i))
        if len(chosen) == n:
            break
    return [eyes[i] for i in sorted(chosen)]


def _occluders(w2c: np.ndarray, points: np.ndarray, dist: float, tan_half: float) -> int:
    """How many ``points`` (M, 3) sit in front of the target (closer than ``dist``) in the central
    part of the view of ``w2c``."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    central = (np.abs(cam[:, 0]) < 0.6 * tan_half * z) & (np.abs(cam[:, 1]) < 0.6 * tan_half * z)
    return int(((z > 0) & (z < dist) & central).sum())


def transforms_json(cameras: list[Camera], cfg: SyntheticConfig) -> dict:
    """nerfstudio/Blender ``transforms_train.json``: OpenGL camera-to-world matrices, shared intrinsics."""
    K = cameras[0].K
    flip = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> OpenGL camera axes
    return {
        "camera_angle_x": math.radians(cfg.fov_x_deg),
        "fl_x": K[0, 0],
        "fl_y": K[1, 1],
        "cx": K[0, 2],
        "cy": K[1, 2],
        "w": cfg.width,
        "h": cfg.height,
        "frames": [
            {"file_path": f"images/{cam.name}", "transform_matrix": (cam.cam_to_world @ flip).tolist()}
            for cam in cameras
        ],
    }


def label_frames(records: list[dict], n: int) -> list[str]:
    """``n`` image names spread evenly over the far, middle and near views."""
    rings = [[r["name"] for r in records if r["ring"] == ring] for ring in ("far", "mid", "near")]
    rings = [r for r in rings if r]
    picked: list[str] = []
    for i, names in enumerate(rings):
        k = n // len(rings) + (1 if i < n % len(rings) else 0)
        idx = np.linspace(0, len(names) - 1, k).round().astype(int) if k else []
        picked += [names[j] for j in sorted(set(idx))]
    return sorted(picked)


# ----------------------------------------------------------------------------- writing


def _write_scene(cfg: SyntheticConfig, out: Path) -> None:
    from gags.splats.ply import save_ply

    objects = table_top_scene()
    gaussians, region, hier = build_gaussians(objects, cfg)
    cameras, records = build_cameras(objects, gaussians, region, hier, cfg)
    labelled = set(label_frames(records, cfg.n_label_frames))
    queries = set(query_names(objects))
    unknown = sorted(queries - set(hier.names))
    if unknown:
        raise ValueError(f"queries name no region of the scene: {', '.join(unknown)}")
    for cam in tqdm(cameras, desc="synthetic scene", unit="view", leave=False):
        truth = render_view_truth(gaussians, region, len(hier), cam)
        labels = hier.ancestors(truth.subpart).astype(np.int32)
        with atomic_path(out / "images" / cam.name) as tmp:
            iio.imwrite(tmp, (truth.rgb * 255 + 0.5).astype(np.uint8))
        save_npz_atomic(out / "gt" / f"{Path(cam.name).stem}.npz", depth=truth.depth, labels=labels)
        if cam.name in labelled:
            stem = f"{Path(cam.name).stem}.json"
            write_frame_labels(out / QUERY_LABELS / stem, cam.name, labels, hier, categories=queries)
            write_frame_labels(out / HIERARCHY_LABELS / stem, cam.name, labels, hier)
    levels = hier.levels_of_names()
    write_json_atomic(out / QUERY_LABELS / "levels.json", {n: lv for n, lv in levels.items() if n in queries})
    write_json_atomic(out / HIERARCHY_LABELS / "levels.json", levels)
    write_json_atomic(out / "hierarchy.json", hier.to_json())
    write_json_atomic(
        out / "views.json", {"views": records, "config": {**dataclasses.asdict(cfg), "cache_dir": None}}
    )
    save_ply(out / "gt_splats.ply", gaussians)
    write_points_ply(out / "points3d.ply", *sfm_like_points(gaussians, cfg))
    write_json_atomic(
        out / "transforms_train.json", {**transforms_json(cameras, cfg), "ply_file_path": "points3d.ply"}
    )


def sfm_like_points(gaussians: Gaussians, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) noisy subset of the Gaussian centres and their (P, 3) uint8 colours: a stand-in for SfM."""
    from gags.splats.sh import sh0_to_rgb

    rng = np.random.default_rng(cfg.seed + 2)
    idx = rng.choice(len(gaussians), size=min(cfg.n_points, len(gaussians)), replace=False)
    points = gaussians.means[idx].numpy() + rng.normal(0, cfg.point_noise, (len(idx), 3))
    colors = (sh0_to_rgb(gaussians.sh[idx, 0]).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return points, colors


def write_points_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """A binary PLY point cloud with x, y, z (float32) and red, green, blue (uint8), written atomically."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(
        len(points), dtype=[(k, "f4") for k in "xyz"] + [(k, "u1") for k in ("red", "green", "blue")]
    )
    for i, k in enumerate("xyz"):
        vertex[k] = points[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        vertex[k] = colors[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
