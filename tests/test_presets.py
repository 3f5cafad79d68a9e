"""Presets: paper/quick values applied before the user's flags; the user's flags win; one first line."""

from __future__ import annotations

import dataclasses

import pytest

import gags.stages.distill as distill_stage
import gags.stages.train_rgb as train_stage
from gags.cli import main
from gags.distill.gad import GaD
from gags.stages.presets import apply_preset, preset_flags, resolve_preset


def _parsed(monkeypatch, module, args: list[str]):
    seen = {}
    monkeypatch.setattr(module, "main", lambda cfg: seen.setdefault("cfg", cfg))
    main(args)
    return seen["cfg"]


def test_paper_preset_sets_values_and_user_flags_win(monkeypatch, capsys):
    cfg = _parsed(monkeypatch, train_stage, ["train-rgb", "DATA", "--out", "R", "--preset", "paper"])
    assert (cfg.iterations, cfg.densify.max_gaussians, cfg.init_random) == (30_000, 0, 100_000)
    assert capsys.readouterr().out.startswith("gags train-rgb: preset paper, device auto")
    cfg = _parsed(
        monkeypatch,
        train_stage,
        ["train-rgb", "DATA", "--out", "R", "--preset", "paper", "--iterations", "7"],
    )
    assert cfg.iterations == 7 and cfg.densify.max_gaussians == 0


def test_auto_preset_follows_the_device(monkeypatch, capsys):
    cfg = _parsed(monkeypatch, train_stage, ["train-rgb", "DATA", "--out", "R", "--device", "cpu"])
    assert cfg.iterations == 2000 and cfg.densify.max_gaussians == 50_000
    assert "preset quick (auto), device cpu" in capsys.readouterr().out
    assert resolve_preset("auto", "cuda:1") == "paper" and resolve_preset("quick", "cuda") == "quick"
    cfg = _parsed(monkeypatch, distill_stage, ["distill", "RUN", "--device", "cuda", "langsplat"])
    assert cfg.iterations == 30_000 and cfg.method.name == "langsplat"


def test_unknown_preset_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.setattr(train_stage, "main", lambda cfg: None)
    with pytest.raises(SystemExit) as e:
        main(["train-rgb", "DATA", "--out", "R", "--preset", "fast"])
    assert e.value.code == 2 and "unknown preset 'fast'" in capsys.readouterr().err


def test_flags_and_apply_preset_agree_on_nested_and_frozen_configs():
    assert preset_flags({"densify.max_gaussians": 0, "resume": True, "progress": False}) == [
        "--densify.max-gaussians",
        "0",
        "--resume",
        "--no-progress",
    ]
    cfg = train_stage.TrainConfig(data="d", out="o")
    changed = apply_preset(cfg, train_stage.PRESETS["paper"])
    assert changed.densify.max_gaussians == 0 and cfg.densify.max_gaussians == 50_000  # a copy
    frozen = apply_preset(distill_stage.DistillConfig(run="r"), {"method.alpha": "average"})
    assert frozen.method == dataclasses.replace(GaD(), alpha="average")
    with pytest.raises(AttributeError, match="nope"):
        apply_preset(cfg, {"densify.nope": 1})
