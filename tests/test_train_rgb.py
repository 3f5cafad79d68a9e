"""RGB training: a short real run on fern, resume after an interruption, NaN aborts, import, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import shared_dataset

import gags.stages.train_rgb as train_mod
from gags.errors import GagsError
from gags.runfolder import RunFolder
from gags.scene.load import SceneOptions
from gags.splats.densify import DensifyConfig
from gags.splats.ply import load_ply, save_ply
from gags.stages.train_rgb import ImportConfig, Schedule, TrainConfig, train_rgb


def fern_config(tmp_path, **changes) -> TrainConfig:
    """A small fern run: 126x94 images (images_8 at 1/32 of the 4032-px originals), compressed schedule."""
    data = shared_dataset("fern_llff")
    base = dict(
        data=data,
        out=tmp_path / "run",
        scene=SceneOptions(images="images_8", downscale=32.0),
        iterations=60,
        densify=DensifyConfig(max_gaussians=12000),
        checkpoint_every=30,
        progress=False,
    )
    base.update(changes)
    return TrainConfig(**base)


def test_schedule_scales_the_3dgs_one():
    paper = Schedule.from_config(TrainConfig(data="d", out="o", iterations=30_000))
    assert (paper.densify.start, paper.densify.stop, paper.densify.every) == (500, 15_000, 100)
    assert paper.densify.reset_every == 3000 and paper.sh_up_every == 1000
    quick = Schedule.from_config(
        TrainConfig(data="d", out="o", iterations=3000, densify=DensifyConfig(every=25))
    )
    assert (quick.densify.start, quick.densify.stop, quick.densify.every) == (50, 1500, 25)
    assert quick.densify.reset_every == 300 and quick.sh_up_every == 100


def test_short_fern_run_beats_the_initial_psnr(tmp_path):
    metrics = train_rgb(fern_config(tmp_path))
    run = RunFolder(tmp_path / "run")
    assert metrics["steps"] == 60
    assert (
        metrics["final"]["split"] == "eval" and len(metrics["final"]["per_view"]) == 3
    )  # 20 images, every 8th
    assert metrics["final"]["psnr"] > metrics["initial"]["psnr"] + 3.0
    assert metrics["final"]["ssim"] > metrics["initial"]["ssim"]
    assert 0 < metrics["n_gaussians"] <= 12000
    saved = json.loads((run.eval / "rgb_metrics.json").read_text())
    assert saved["final"]["psnr"] == pytest.approx(metrics["final"]["psnr"])
    config = run.read_config()
    assert config["scene"]["images"] == "images_8" and config["train_rgb"]["iterations"] == 60
    assert len(load_ply(run.splats)) == metrics["n_gaussians"]
    assert len(list((run.eval / "rgb").glob("*.png"))) == 3
    assert (run.checkpoints / "latest.pt").exists()


class Interrupt:
    """Wraps ``render`` to raise KeyboardInterrupt on training call number ``at``."""

    def __init__(self, at: int):
        self.at, self.calls, self.render = at, 0, train_mod.render

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        return self.render(*args, **kwargs)


def test_resume_after_interrupt_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    kwargs = dict(
        iterations=20,
        checkpoint_every=8,
        evaluate=False,
        scene=SceneOptions(images="images_8", downscale=64.0),
    )
    # refine at 6, 12, 18 (statistics cross the resume)
    kwargs.update(densify=DensifyConfig(every=6, stop=20, max_gaussians=12000))
    straight = train_rgb(fern_config(tmp_path / "a", **kwargs))

    cfg = fern_config(tmp_path / "b", **kwargs)
    monkeypatch.setattr(train_mod, "render", Interrupt(at=19))
    with pytest.raises(KeyboardInterrupt):
        train_rgb(cfg)
    monkeypatch.undo()
    run = RunFolder(cfg.out)
    assert not run.splats.exists()
    ckpt = torch.load(run.checkpoints / "latest.pt", weights_only=True)
    assert ckpt["step"] == 16  # the last checkpoint before the interruption is intact

    resumed = train_rgb(fern_config(tmp_path / "b", resume=True, **kwargs))
    assert torch.load(run.checkpoints / "latest.pt", weights_only=True)["step"] == 20
    assert resumed["n_gaussians"] == straight["n_gaussians"] != 10091  # densification happened
    a, b = load_ply(tmp_path / "a" / "run" / "splats.ply"), load_ply(run.splats)
    torch.testing.assert_close(a.means, b.means, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.sh, b.sh, rtol=1e-4, atol=1e-5)


class PoisonRender:
    """Wraps ``render`` to return NaN colours from training call number ``at`` on."""

    def __init__(self, at: int):
        self.at, self.calls, self.render = at, 0, train_mod.render

    def __call__(self, *args, **kwargs):
        out = self.render(*args, **kwargs)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls >= self.at:
                out.rgb = out.rgb * torch.nan
        return out


def test_nan_input_aborts_without_touching_existing_splats(tmp_path, monkeypatch):
    kwargs = dict(
        iterations=10,
        checkpoint_every=5,
        evaluate=False,
        scene=SceneOptions(images="images_8", downscale=64.0),
        densify=DensifyConfig(max_gaussians=12000),
    )
    cfg = fern_config(tmp_path, **kwargs)
    train_rgb(cfg)
    run = RunFolder(cfg.out)
    good_ply, good_ckpt = run.splats.read_bytes(), (run.checkpoints / "latest.pt").read_bytes()

    # a NaN image (training anew over the run): refused with its file name; nothing on disk changes
    real_load = train_mod.load_image
    monkeypatch.setattr(train_mod, "load_image", lambda cam, bg=(0, 0, 0): real_load(cam, bg) * torch.nan)
    with pytest.raises(GagsError, match=r"images_8/image\d+\.png: image holds NaN"):
        train_rgb(fern_config(tmp_path, overwrite=True, **kwargs))
    monkeypatch.undo()
    assert run.splats.read_bytes() == good_ply
    assert (run.checkpoints / "latest.pt").read_bytes() == good_ckpt

    # a NaN render mid-run stops training with a GagsError; the last checkpoint and splats.ply are kept
    monkeypatch.setattr(train_mod, "render", PoisonRender(at=3))
    with pytest.raises(GagsError, match=r"diverged at step 2: the loss.*splats\.ply was not changed"):
        train_rgb(fern_config(tmp_path, overwrite=True, **kwargs))
    monkeypatch.undo()
    assert run.splats.read_bytes() == good_ply
    assert (run.checkpoints / "latest.pt").read_bytes() == good_ckpt

    # a NaN splat PLY given to --import-ply is refused before anything is written
    bad = load_ply(run.splats)
    bad.means[3, 0] = torch.nan
    save_ply(tmp_path / "bad.ply", bad)
    with pytest.raises(GagsError, match=r"bad\.ply.*NaN/inf position"):
        train_rgb(fern_config(tmp_path, import_ply=tmp_path / "bad.ply", overwrite=True, **kwargs))
    assert run.splats.read_bytes() == good_ply


def test_import_keeps_the_splats_and_records_the_scene(tmp_path):
    data = shared_dataset("fern_llff")
    g = load_ply(_tiny_ply(tmp_path))
    out = tmp_path / "imported"
    cfg = ImportConfig(
        ply=tmp_path / "tiny.ply", out=out, data=data, scene=SceneOptions(images="images_8", downscale=64.0)
    )
    metrics = train_rgb(cfg.train_config())
    back = load_ply(out / "splats.ply")
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.sh, g.sh)
    assert metrics["steps"] == 0 and metrics["initial"]["psnr"] == pytest.approx(metrics["final"]["psnr"])
    assert RunFolder(out).read_config()["scene"]["downscale"] == 64.0


def _tiny_ply(tmp_path):
    from gags.splats.init import from_points

    g = from_points(torch.randn(300, 3).numpy(), None, sh_degree=1)
    save_ply(tmp_path / "tiny.ply", g)
    return tmp_path / "tiny.ply"


def test_cli_registers_train_rgb_and_import(tmp_path):
    from gags.cli import COMMANDS

    assert "train-rgb" in COMMANDS and "import" in COMMANDS
    data = shared_dataset("fern_llff")
    from gags.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(tmp_path / "absent.ply"), "--out", str(tmp_path / "r"), "--data", str(data),
              "--images", "images_8", "--downscale", "64"])  # fmt: skip
    assert exit_info.value.code == 2
    assert not (tmp_path / "r" / "splats.ply").exists()


def test_metrics_known_values():
    from gags.splats.metrics import photometric_loss, psnr, ssim

    black, grey = torch.zeros(32, 32, 3), torch.full((32, 32, 3), 0.1)
    assert float(psnr(black, grey)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    image = torch.rand(2, 32, 32, 3)
    assert float(ssim(image, image)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(image, image * 0.5)) < 0.95
    assert float(photometric_loss(black, grey, lambda_dssim=0.0)) == pytest.approx(0.1)
    expected = 0.8 * 0.1 + 0.2 * (1 - float(ssim(black, grey)))
    assert float(photometric_loss(black, grey)) == pytest.approx(expected)
