"""PLY round trips, foreign 3DGS layouts, malformed files, initialisation and densification ops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from gags.errors import GagsError
from gags.scene.cameras import Camera
from gags.splats.densify import (
    Densifier,
    DensifyConfig,
    DensifyStats,
    duplicate,
    remove,
    reset_opacity,
    split,
)
from gags.splats.gaussians import Gaussians
from gags.splats.init import _view_fraction, from_points, random_in_frusta
from gags.splats.ply import load_ply, save_ply
from gags.splats.sh import sh0_to_rgb
from gags.stages.train_rgb import params_from


def random_gaussians(n: int, degree: int, n_features: int = 0) -> Gaussians:
    return Gaussians(
        means=torch.randn(n, 3),
        quats=torch.randn(n, 4),
        log_scales=torch.randn(n, 3) - 3,
        opacity_logits=torch.randn(n),
        sh=torch.randn(n, (degree + 1) ** 2, 3),
        features=torch.randn(n, n_features) if n_features else None,
        feature_names=[f"semantic_{i}" for i in range(n_features)],
    )


def assert_same(a: Gaussians, b: Gaussians) -> None:
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    if a.features is None:
        assert b.features is None
    else:
        torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)
        assert a.feature_names == b.feature_names


@pytest.mark.parametrize("degree,n_features", [(0, 0), (3, 0), (3, 16), (1, 2)])
def test_round_trip_keeps_every_field(tmp_path, degree, n_features):
    g = random_gaussians(57, degree, n_features)
    save_ply(tmp_path / "s.ply", g)
    back = load_ply(tmp_path / "s.ply")
    assert back.sh_degree == degree
    assert_same(g, back)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_property_order_is_the_3dgs_layout(tmp_path):
    save_ply(tmp_path / "s.ply", random_gaussians(4, 3, 2))
    names = [p.name for p in PlyData.read(str(tmp_path / "s.ply"))["vertex"].properties]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    expected += ["rot_0", "rot_1", "rot_2", "rot_3", "semantic_0", "semantic_1"]
    assert names == expected


def write_3dgs_layout(
    path, n: int, degree: int, normals: bool = True, drop: str | None = None, nan: bool = False
):
    """A PLY the way the original 3DGS code writes it: f_rest channel-major from (N, 3, K-1)."""
    rng = np.random.default_rng(1)
    k = (degree + 1) ** 2
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    dc = rng.normal(size=(n, 3)).astype(np.float32)
    rest = rng.normal(size=(n, 3, k - 1)).astype(np.float32)  # 3DGS features_rest.transpose(1, 2)
    opacity = rng.normal(size=(n, 1)).astype(np.float32)
    scale = rng.normal(size=(n, 3)).astype(np.float32)
    rot = rng.normal(size=(n, 4)).astype(np.float32)
    if nan:
        scale[2, 1] = np.nan
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else []) + ["f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))] + ["opacity"]
    names += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    parts = [xyz] + ([np.zeros_like(xyz)] if normals else []) + [dc, rest.reshape(n, -1), opacity, scale, rot]
    values = np.concatenate(parts, axis=1)
    keep = [i for i, name in enumerate(names) if name != drop]
    vertex = np.empty(n, dtype=[(names[i], "f4") for i in keep])
    for i in keep:
        vertex[names[i]] = values[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    return xyz, dc, rest, opacity, scale, rot


@pytest.mark.parametrize("degree,normals", [(3, True), (0, False), (2, True)])
def test_original_3dgs_layout_loads(tmp_path, degree, normals):
    xyz, dc, rest, opacity, scale, rot = write_3dgs_layout(tmp_path / "p.ply", 11, degree, normals)
    g = load_ply(tmp_path / "p.ply")
    assert g.sh_degree == degree and g.features is None
    np.testing.assert_array_equal(g.means.numpy(), xyz)
    np.testing.assert_array_equal(g.sh[:, 0].numpy(), dc)
    # coefficient j of colour channel c is f_rest_{c * (K-1) + j}
    np.testing.assert_array_equal(g.sh[:, 1:].numpy(), rest.transpose(0, 2, 1))
    np.testing.assert_array_equal(g.opacity_logits.numpy(), opacity[:, 0])
    np.testing.assert_array_equal(g.log_scales.numpy(), scale)
    np.testing.assert_array_equal(g.quats.numpy(), rot)


def test_malformed_plys_raise_naming_the_file(tmp_path):
    missing = tmp_path / "missing_opacity.ply"
    write_3dgs_layout(missing, 5, 1, drop="opacity")
    with pytest.raises(GagsError, match=r"missing_opacity\.ply.*opacity"):
        load_ply(missing)

    nan = tmp_path / "nan.ply"
    write_3dgs_layout(nan, 5, 1, nan=True)
    with pytest.raises(GagsError, match=r"nan\.ply.*NaN/inf scale.*vertex 2"):
        load_ply(nan)

    bad_rest = tmp_path / "rest.ply"
    write_3dgs_layout(bad_rest, 5, 1, drop="f_rest_4")
    with pytest.raises(GagsError, match=r"rest\.ply.*8 f_rest"):
        load_ply(bad_rest)

    faces_only = tmp_path / "faces.ply"
    face = np.empty(1, dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(face, "face")]).write(str(faces_only))
    with pytest.raises(GagsError, match=r"faces\.ply.*no 'vertex' element"):
        load_ply(faces_only)

    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"this is not a ply file\n")
    with pytest.raises(GagsError, match=r"garbage\.ply.*not a readable PLY"):
        load_ply(garbage)

    with pytest.raises(GagsError, match="does not exist"):
        load_ply(tmp_path / "absent.ply")


def test_save_failure_keeps_existing_file(tmp_path):
    path = tmp_path / "s.ply"
    good = random_gaussians(8, 1)
    save_ply(path, good)
    before = path.read_bytes()
    broken = random_gaussians(8, 1)
    broken.features = torch.randn(9, 2)  # wrong row count: the write fails half-way
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        save_ply(path, broken)
    assert path.read_bytes() == before


def test_from_points_scales_colours_and_opacity():
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]], dtype=np.float32)
    colors = np.array([[255, 0, 0]] * 5, dtype=np.uint8)
    g = from_points(points, colors, sh_degree=2, init_opacity=0.1)
    assert g.sh.shape == (5, 9, 3) and g.quats.shape == (5, 4)
    # point 0: nearest neighbours at 1, 2, 3 -> rms sqrt(14/3)
    torch.testing.assert_close(g.scales[0], torch.full((3,), float(np.sqrt(14 / 3))))
    torch.testing.assert_close(sh0_to_rgb(g.sh[:, 0]), torch.tensor([[1.0, 0.0, 0.0]] * 5))
    assert torch.all(g.sh[:, 1:] == 0)
    torch.testing.assert_close(g.opacities, torch.full((5,), 0.1))
    torch.testing.assert_close(g.quats, torch.tensor([[1.0, 0, 0, 0]] * 5))
    with pytest.raises(GagsError):
        from_points(np.zeros((0, 3)), None)


def look_at_camera(name: str, eye: np.ndarray) -> Camera:
    """OpenCV camera at ``eye`` looking at the origin, 64x48, 60 degree horizontal field of view."""
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ eye
    f = 32 / np.tan(np.radians(30))
    return Camera(name, np.array([[f, 0, 32], [0, f, 24], [0, 0, 1]]), w2c, 64, 48)


def test_random_in_frusta_lies_where_the_cameras_look():
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    cams = [
        look_at_camera(f"{i}.png", 4 * np.array([np.cos(a), np.sin(a), 0.5])) for i, a in enumerate(angles)
    ]
    g = random_in_frusta(cams, 500, sh_degree=1, seed=3)
    assert len(g) == 500 and g.sh.shape == (500, 4, 3)
    # every point is seen by at least 80% of the cameras, which ring the origin at distance 4.5
    assert _view_fraction(cams, g.means.numpy()).min() >= 0.8
    assert g.means.norm(dim=1).median() < 3.0
    again = random_in_frusta(cams, 500, sh_degree=1, seed=3)
    torch.testing.assert_close(g.means, again.means)


# ----- densification -------------------------------------------------------------------------------


def make_params(n: int, degree: int = 1):
    params = params_from(random_gaussians(n, degree))
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    loss = sum((p**2).sum() for p in params.values())
    loss.backward()
    for opt in optimizers.values():
        opt.step()
    return params, optimizers


def assert_optimizer_consistent(params, optimizers):
    n = len(params["means"])
    for name, p in params.items():
        assert p.shape[0] == n
        opt = optimizers[name]
        assert opt.param_groups[0]["params"][0] is p
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape


def test_densify_ops_keep_optimizer_state_in_sync():
    params, optimizers = make_params(10)
    moments = {k: optimizers[k].state[p]["exp_avg"].clone() for k, p in params.items()}
    stats = DensifyStats.zeros(10)
    stats.grad2d += torch.arange(10.0)
    old_means = params["means"].detach().clone()

    clone_mask = torch.zeros(10, dtype=torch.bool)
    clone_mask[[1, 4]] = True
    duplicate(params, optimizers, stats, clone_mask)
    assert len(params["means"]) == 12
    assert_optimizer_consistent(params, optimizers)
    torch.testing.assert_close(params["means"][10:], old_means[[1, 4]])
    assert torch.equal(optimizers["means"].state[params["means"]]["exp_avg"][:10], moments["means"])
    assert torch.all(optimizers["means"].state[params["means"]]["exp_avg"][10:] == 0)
    assert torch.equal(stats.grad2d[10:], torch.tensor([1.0, 4.0]))

    split_mask = torch.zeros(12, dtype=torch.bool)
    split_mask[[0, 11]] = True
    scales_before = params["scales"].detach()[[0, 11]].clone()
    split(params, optimizers, stats, split_mask, torch.Generator().manual_seed(0))
    assert len(params["means"]) == 14
    assert_optimizer_consistent(params, optimizers)
    torch.testing.assert_close(params["scales"][10:], (scales_before - np.log(1.6)).repeat(2, 1))
    assert len(stats.grad2d) == 14

    remove_mask = torch.zeros(14, dtype=torch.bool)
    remove_mask[:3] = True
    remove(params, optimizers, stats, remove_mask)
    assert len(params["means"]) == 11 and len(stats.count) == 11
    assert_optimizer_consistent(params, optimizers)

    reset_opacity(params, optimizers, 0.01)
    assert torch.sigmoid(params["opacities"]).max() <= 0.01 + 1e-6
    assert torch.all(optimizers["opacities"].state[params["opacities"]]["exp_avg"] == 0)
    # the optimiser still steps the new tensors
    before = params["means"].detach().clone()
    params["means"].grad = torch.ones_like(params["means"])
    optimizers["means"].step()
    assert not torch.equal(before, params["means"])


def test_densifier_grows_high_gradient_gaussians_up_to_the_cap():
    params, optimizers = make_params(20)
    with torch.no_grad():
        params["scales"][:10] = -10.0  # small: cloned
        params["scales"][10:] = 0.0  # large: split
        params["opacities"][:] = 2.0
    cfg = DensifyConfig(start=0, every=1, reset_every=1000, max_gaussians=0)
    dens = Densifier(cfg, scene_extent=1.0, n=20)
    grad = torch.zeros(1, 20, 2)
    grad[0, [0, 1, 10], 0] = 1.0  # large pixel gradients for Gaussians 0, 1 and 10
    radii = torch.full((1, 20, 2), 3, dtype=torch.int32)
    dens.accumulate(grad, radii, width=64, height=48)
    torch.testing.assert_close(dens.stats.grad2d[[0, 10]], torch.tensor([32.0, 32.0]))
    done = dens.step(1, params, optimizers)
    assert done == {"cloned": 2, "split": 1, "pruned": 0}
    assert len(params["means"]) == 23  # two clones added, one Gaussian replaced by two
    assert_optimizer_consistent(params, optimizers)
    assert torch.all(dens.stats.grad2d == 0)

    capped = Densifier(dataclasses.replace(cfg, max_gaussians=24), scene_extent=1.0, n=23)
    grad = torch.zeros(1, 23, 2)
    grad[0, :, 0] = torch.linspace(0.1, 1.0, 23)
    capped.accumulate(grad, torch.full((1, 23, 2), 3, dtype=torch.int32), 64, 48)
    done = capped.step(1, params, optimizers)
    assert done["cloned"] + done["split"] == 1 and len(params["means"]) == 24


def test_densifier_prunes_transparent_and_resets_opacity():
    params, optimizers = make_params(6)
    with torch.no_grad():
        params["opacities"][:] = 3.0
        params["opacities"][2] = -8.0  # opacity 3e-4 < 0.005
    dens = Densifier(DensifyConfig(start=0, every=5, reset_every=10), scene_extent=1.0, n=6)
    assert dens.step(5, params, optimizers) == {"cloned": 0, "split": 0, "pruned": 1}
    assert len(params["means"]) == 5
    assert dens.step(10, params, optimizers)["reset"] == 1
    assert torch.sigmoid(params["opacities"]).max() <= 0.01 + 1e-6
