"""Safe splat import: splats trained in another frame (nerfstudio's dataparser_transforms.json) come back
into the data's frame; a frame mismatch is warned about; malformed files are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gags_cli
from scipy.spatial.transform import Rotation

from gags.errors import GagsError
from gags.splats.frames import Similarity, read_dataparser_transforms, transform_gaussians
from gags.splats.gaussians import Gaussians
from gags.splats.ply import load_ply, save_ply
from gags.splats.projection import quat_to_rotmat
from gags.splats.sh import eval_sh_colors
from gags.stages.train_rgb import ImportConfig, import_splats

#: a normalised frame as nerfstudio makes one: rotated, moved, scaled down
NS_FRAME = Similarity(
    Rotation.from_euler("xyz", [30, -50, 110], degrees=True).as_matrix(), np.array([0.5, -0.2, 1.0]), 0.4
)


def _write_transforms(path: Path, sim: Similarity) -> Path:
    """``sim`` as nerfstudio writes it: x -> scale * (T @ [x, 1])."""
    matrix = np.hstack([sim.rotation, (sim.translation / sim.scale)[:, None]])
    path.write_text(json.dumps({"transform": matrix.tolist(), "scale": sim.scale}))
    return path


def _import(ply: Path, data: Path, out: Path, transforms: Path | None = None) -> dict:
    cfg = ImportConfig(
        ply=ply, out=out, data=data, dataparser_transforms=transforms, device="cpu", evaluate=False
    )
    return import_splats(cfg)


def test_transform_moves_centres_covariances_and_view_dependent_colour():
    n = 6
    g = Gaussians(
        means=torch.randn(n, 3), quats=torch.randn(n, 4), log_scales=0.1 * torch.randn(n, 3),
        opacity_logits=torch.zeros(n), sh=torch.randn(n, 16, 3),
    )  # fmt: skip
    h = transform_gaussians(g, NS_FRAME)
    cams = 5 * torch.randn(4, 3)
    moved_cams = torch.as_tensor(NS_FRAME.apply(cams.double().numpy())).float()
    torch.testing.assert_close(
        eval_sh_colors(h.sh, h.means, moved_cams, 3),
        eval_sh_colors(g.sh, g.means, cams, 3),
        atol=1e-4,
        rtol=0,
    )
    rot, s = torch.tensor(NS_FRAME.rotation).float(), NS_FRAME.scale

    def cov(x: Gaussians) -> torch.Tensor:
        r = quat_to_rotmat(x.quats)
        return r @ torch.diag_embed(x.scales**2) @ r.transpose(1, 2)

    torch.testing.assert_close(cov(h), s * s * rot @ cov(g) @ rot.T, atol=1e-4, rtol=1e-4)
    back = transform_gaussians(h, NS_FRAME.inverse())
    torch.testing.assert_close(back.means, g.means, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.sh, g.sh, atol=1e-4, rtol=0)


def test_a_4x4_similarity_with_the_scale_folded_in_reads_the_same(tmp_path):
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = NS_FRAME.scale * NS_FRAME.rotation, NS_FRAME.translation  # gsplat's layout
    (tmp_path / "t.json").write_text(json.dumps({"transform": m.tolist(), "scale": 1}))
    sim = read_dataparser_transforms(tmp_path / "t.json")
    assert sim.scale == pytest.approx(NS_FRAME.scale)
    np.testing.assert_allclose(sim.rotation, NS_FRAME.rotation, atol=1e-9)
    np.testing.assert_allclose(sim.translation, NS_FRAME.translation, atol=1e-9)


def test_import_with_dataparser_transforms_restores_the_psnr(tiny_run, tmp_path, capsys):
    scene = tiny_run.scene
    reference = _import(scene / "gt_splats.ply", scene, tmp_path / "gt")["import_check"]["psnr"]
    save_ply(tmp_path / "ns.ply", transform_gaussians(load_ply(scene / "gt_splats.ply"), NS_FRAME))
    dp = _write_transforms(tmp_path / "dataparser_transforms.json", NS_FRAME)
    capsys.readouterr()
    check = _import(tmp_path / "ns.ply", scene, tmp_path / "run", dp)["import_check"]
    assert reference > 30 and check["psnr"] == pytest.approx(reference, abs=0.5)
    assert len(check["views"]) == 2 and "WARNING" not in capsys.readouterr().err
    torch.testing.assert_close(
        load_ply(tmp_path / "run" / "splats.ply").means,
        load_ply(scene / "gt_splats.ply").means,
        atol=1e-4,
        rtol=0,
    )


def test_applied_transform_of_transforms_json_is_composed(tiny_run, tmp_path, capsys):
    """nerfstudio folds a transforms file's applied_transform into its dataparser transform."""
    data = Path(shutil.copytree(tiny_run.scene, tmp_path / "data"))
    applied = Similarity(np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]), np.array([0.1, 0.2, -0.3]))
    meta = json.loads((data / "transforms_train.json").read_text())
    meta["applied_transform"] = np.hstack([applied.rotation, applied.translation[:, None]]).tolist()
    (data / "transforms_train.json").write_text(json.dumps(meta))
    # the data's frame is after applied_transform; nerfstudio's transform starts before it
    splat_frame = applied.inverse().then(NS_FRAME)
    save_ply(tmp_path / "ns.ply", transform_gaussians(load_ply(data / "gt_splats.ply"), splat_frame))
    dp = _write_transforms(tmp_path / "dp.json", NS_FRAME)
    check = _import(tmp_path / "ns.ply", data, tmp_path / "run", dp)["import_check"]
    assert check["psnr"] > 30 and "WARNING" not in capsys.readouterr().err


def test_import_without_the_transforms_warns_of_a_frame_mismatch(tiny_run, tmp_path, capsys):
    save_ply(tmp_path / "ns.ply", transform_gaussians(load_ply(tiny_run.scene / "gt_splats.ply"), NS_FRAME))
    capsys.readouterr()
    check = _import(tmp_path / "ns.ply", tiny_run.scene, tmp_path / "run")["import_check"]
    err = capsys.readouterr().err
    assert check["psnr"] < 15
    warning = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warning) == 1 and "same frame" in warning[0] and "dataparser_transforms.json" in warning[0]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not readable JSON"),
        ('{"scale": 1.0}', '"transform"'),
        ('{"transform": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "scale": -2}', '"scale"'),
        ('{"transform": [[1, 0, 0, 0], [0, 1, 0, 0]], "scale": 1}', "3x4"),
        ('{"transform": [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "scale": 1}', "not a rotation"),
        ('{"transform": [[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "scale": 1}', "not a rotation"),
    ],
)
def test_malformed_transforms_is_a_one_line_error(tiny_run, tmp_path, capsys, content, says):
    bad = tmp_path / "dataparser_transforms.json"
    bad.write_text(content)
    args = ["import", tiny_run.scene / "gt_splats.ply", "--data", tiny_run.scene, "--out", tmp_path / "run"]
    code, err = gags_cli([*args, "--dataparser-transforms", bad, "--device", "cpu"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(bad) in lines[0] and says in lines[0], err
    assert not (tmp_path / "run").exists()


def _ply_with(tmp_path: Path, change) -> Path:
    from plyfile import PlyData, PlyElement

    n = 4
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    vertex = np.zeros(n, dtype=[(name, "<f4") for name in names])
    vertex["rot_0"] = 1.0
    vertex = change(vertex)
    path = tmp_path / "bad.ply"
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    return path


def _drop_opacity(v):
    from numpy.lib import recfunctions

    return recfunctions.drop_fields(v, "opacity", usemask=False)


def _nan_position(v):
    v["x"][1] = np.nan
    return v


def _zero_rotation(v):
    v["rot_0"][2] = 0.0
    return v


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_drop_opacity, "missing vertex properties opacity"),
        (_nan_position, "NaN/inf position"),
        (_zero_rotation, "all-zero rotation"),
        (lambda v: v[:0], "holds no Gaussians"),
    ],
)
def test_malformed_ply_is_a_one_line_error(tiny_run, tmp_path, capsys, change, says):
    bad = _ply_with(tmp_path, change)
    args = ["import", bad, "--data", tiny_run.scene, "--out", tmp_path / "run", "--device", "cpu"]
    code, err = gags_cli(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(bad) in lines[0] and says in lines[0], err
    with pytest.raises(GagsError):
        load_ply(bad)
