"""TensorBoard logging of train-rgb and distill: event files under RUN/tensorboard/STAGE, readable back."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from gags.stages.distill import DistillConfig, distill
from gags.stages.tblog import LogConfig, open_log
from gags.stages.train_rgb import TrainConfig, train_rgb
from tests.conftest import TINY_SCENE

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _read(folder: Path) -> EventAccumulator:
    assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _values(acc: EventAccumulator, tag: str) -> list[float]:
    return [e.value for e in acc.Scalars(tag)]


def test_train_rgb_writes_loss_psnr_count_and_rates(tiny_run, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(
        data=tiny_run.scene, out=out, iterations=4, eval_every=2, device="cpu", progress=False,
        sh_degree=0, log=LogConfig(every=2, images_every=3),
    )  # fmt: skip
    train_rgb(cfg)
    acc = _read(out / "tensorboard" / "train_rgb")
    tags = set(acc.Tags()["scalars"])
    want = {"train/loss", "train/batch_psnr", "gaussians/count", "eval/psnr", "eval/ssim", "lr/means"}
    assert want <= tags, tags
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4]
    assert [e.step for e in acc.Scalars("eval/psnr")] == [0, 2, 4]  # before, every 2 steps, final
    for tag in want:
        assert all(math.isfinite(v) for v in _values(acc, tag)), tag
    assert _values(acc, "gaussians/count")[-1] > 0
    # render | target at every evaluation (0, 2, 4) and every --log.images-every steps (3)
    previews = acc.Images("eval/render_vs_target")
    assert [e.step for e in previews] == [0, 2, 3, 4]
    assert (previews[0].width, previews[0].height) == (2 * TINY_SCENE["width"], TINY_SCENE["height"])


def test_distill_writes_loss_terms_alpha_and_rates(run_copy):
    assert (run_copy / "tensorboard" / "distill").is_dir()  # the fixture's 5-step run logged too
    log = LogConfig(every=1, images_every=3)
    distill(DistillConfig(run=run_copy, iterations=4, device="cpu", progress=False, log=log))
    acc = _read(run_copy / "tensorboard" / "distill")  # the re-run from step 0 hides the earlier curve
    tags = set(acc.Tags()["scalars"])
    alpha = {f"alpha/{level}" for level in ("subpart", "part", "whole")}
    want = {"loss/loss", "loss/distill", "lr/factor"} | alpha
    assert want <= tags, tags
    assert any(t.startswith("lr/") and t != "lr/factor" for t in tags)
    assert [e.step for e in acc.Scalars("loss/loss")] == [1, 2, 3, 4]
    for tag in tags:
        assert all(math.isfinite(v) for v in _values(acc, tag)), tag
    assert all(0 <= v <= 1 for tag in alpha for v in _values(acc, tag))
    # the trained field in one view: PCA false colour and the alpha-argmax map (paper Fig. 6)
    assert {"field/pca", "field/alpha_argmax"} <= set(acc.Tags()["images"])
    assert [e.step for e in acc.Images("field/pca")] == [3, 4]  # every 3 steps and the last
    assert [e.step for e in acc.Images("field/alpha_argmax")] == [3, 4]


def test_no_tensorboard_writes_nothing(run_copy):
    shutil.rmtree(run_copy / "tensorboard")
    off = LogConfig(tensorboard=False)
    distill(DistillConfig(run=run_copy, iterations=2, device="cpu", progress=False, log=off))
    assert not (run_copy / "tensorboard").exists()


def test_missing_tensorboard_is_one_line_note(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    log = open_log(LogConfig(), tmp_path, "distill")
    assert not log.enabled
    log.scalars(1, {"x": 1.0})  # a no-op
    err = capsys.readouterr()
    lines = [line for line in (err.out + err.err).splitlines() if line]
    assert len(lines) == 1 and "pip install tensorboard" in lines[0]
    assert not (tmp_path / "tensorboard").exists()


def test_cli_flag_turns_it_off():
    import tyro

    cfg = tyro.cli(DistillConfig, args=["run", "--log.no-tensorboard", "--log.every", "5"])
    assert cfg.log == LogConfig(tensorboard=False, every=5)
