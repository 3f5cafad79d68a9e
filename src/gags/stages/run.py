"""``gags run INPUT --out RUN``: from photos, a video or a posed data set to a queryable run, resumably.

Stages, each skipped when its outputs exist and were made from the same inputs and settings
(the configuration recorded in ``RUN/config.json``), so re-running after a crash continues:

0. ``process-data`` when INPUT has no camera poses (a folder of photos or a video) -> ``RUN/data``;
1. ``train-rgb`` (resumes from its checkpoint when interrupted);
2. ``prepare`` (skips every image whose outputs are already valid);
3. ``distill`` (resumes from its checkpoint);
4. ``eval`` when ``--labels`` is given.

One summary at the end: where everything is, the figures, and the next commands.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from gags.errors import GagsError
from gags.runfolder import RunFolder
from gags.scene.load import SceneOptions, detect_format
from gags.stages.presets import PresetName, apply_preset, resolve_preset
from gags.stages.tblog import LogConfig

__all__ = ["RunConfig", "main", "run_pipeline"]


@dataclasses.dataclass(kw_only=True)
class RunConfig:
    """Photos, a video or a posed data set -> trained splats, masks and features, language field."""

    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")]
    """A folder of photos, a video file, or a data set with poses (COLMAP, Blender/nerfstudio, LLFF)."""
    out: Path
    """Run folder to write (process-data output goes to OUT/data)."""
    labels: Path | None = None
    """LERF-OVS label folder: evaluate at the end (mIoU, localisation accuracy)."""
    preset: PresetName = "auto"
    """paper (the paper's settings; default on CUDA) or quick (minutes on a CPU; default elsewhere)"""
    scene: Annotated[SceneOptions, tyro.conf.arg(name="")] = dataclasses.field(default_factory=SceneOptions)
    """how to read the data set"""
    num_frames: int = 200
    """video input: frames kept for SfM"""
    rgb_iterations: int | None = None
    """RGB training steps (default: the preset's)"""
    distill_iterations: int | None = None
    """distillation steps (default: the preset's)"""
    segmenter: Literal["sam", "oracle"] = "sam"
    """sam, or oracle (synthetic scenes only)"""
    encoder: Literal["openclip", "oracle"] = "openclip"
    """openclip, or oracle (synthetic scenes only)"""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda, ..."""
    progress: bool = True
    """show progress bars"""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """TensorBoard logging of train-rgb and distill (RUN/tensorboard/STAGE)"""


def has_poses(path: Path) -> bool:
    """Whether ``path`` is a data set with camera poses (as opposed to photos or a video)."""
    try:
        detect_format(path)
    except GagsError:
        return False
    return True


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """Run every stage that is not already done; returns the summary that :func:`main` prints."""
    from gags.stages import distill as distill_stage
    from gags.stages import prepare as prepare_stage
    from gags.stages import train_rgb as train_stage

    if not cfg.input.exists():
        raise GagsError(f"{cfg.input}: no such file or folder (give photos, a video or a data set)")
    preset = resolve_preset(cfg.preset, cfg.device)
    print(f"gags run: preset {preset}{' (auto)' if cfg.preset == 'auto' else ''}, device {cfg.device}")
    run = RunFolder(cfg.out)
    started = time.perf_counter()
    done: dict[str, str] = {}

    data = cfg.input
    if not has_poses(data):
        data = run.root / "data"
        done["process-data"] = _process_data(cfg, data)

    train_cfg = train_stage.TrainConfig(
        data=data, out=run.root, scene=cfg.scene, device=cfg.device, progress=cfg.progress, log=cfg.log
    )
    train_cfg = apply_preset(train_cfg, train_stage.PRESETS[preset])
    if cfg.rgb_iterations is not None:
        train_cfg = dataclasses.replace(train_cfg, iterations=cfg.rgb_iterations)
    if _recorded(run, "train_rgb", train_cfg) and run.splats.exists():
        done["train-rgb"] = "skipped (splats.ply is up to date)"
    else:
        if run.splats.exists():  # other settings or data: retrain, later outputs are moved aside
            train_cfg.overwrite = True
        else:  # interrupted: continue from the checkpoint when there is one
            train_cfg.resume = (run.checkpoints / train_stage.CHECKPOINT_NAME).exists()
        metrics = train_stage.train_rgb(train_cfg)
        psnr = metrics.get("final", {}).get("psnr") if isinstance(metrics.get("final"), dict) else None
        done["train-rgb"] = f"done ({train_cfg.iterations} steps" + (
            f", PSNR {psnr:.1f} dB)" if psnr else ")"
        )

    prep_cfg = prepare_stage.PrepareConfig(
        run=run.root, device=cfg.device, segmenter=cfg.segmenter, encoder=cfg.encoder
    )
    prep_cfg = apply_preset(prep_cfg, prepare_stage.PRESETS[preset])
    summary = prepare_stage.prepare(prep_cfg)
    done["prepare"] = f"{summary['done']} images done, {summary['resumed']} already there"

    dist_cfg = distill_stage.DistillConfig(
        run=run.root, device=cfg.device, progress=cfg.progress, log=cfg.log
    )
    dist_cfg = apply_preset(dist_cfg, distill_stage.PRESETS[preset])
    if cfg.distill_iterations is not None:
        dist_cfg = dataclasses.replace(dist_cfg, iterations=cfg.distill_iterations)
    if _recorded(run, "distill", dist_cfg) and run.language.exists() and summary["done"] == 0:
        done["distill"] = "skipped (language.pt is up to date)"
    else:
        dist_cfg.resume = summary["done"] == 0 and distill_stage.checkpoint_matches(dist_cfg)
        stats = distill_stage.distill(dist_cfg)
        done["distill"] = f"done ({stats['method']}, {stats['steps_run']} steps, {stats['seconds']:.0f}s)"

    metrics = None
    if cfg.labels is not None:
        from gags.stages.evaluate import EvalConfig, evaluate

        metrics = evaluate(EvalConfig(run=run.root, labels=cfg.labels, device=cfg.device))["overall"]
        done["eval"] = f"mIoU {100 * metrics['miou']:.1f}%, mAcc {100 * metrics['macc']:.1f}%"
    return {
        "run": str(run.root),
        "data": str(data),
        "preset": preset,
        "stages": done,
        "eval": metrics,
        "seconds": time.perf_counter() - started,
    }


def _process_data(cfg: RunConfig, data: Path) -> str:
    from gags.stages.process_data import ProcessDataConfig, process_data

    marker = data / "process_data.json"
    if marker.exists():
        recorded = json.loads(marker.read_text()).get("config", {})
        if Path(recorded.get("input", "")).resolve() == cfg.input.resolve():
            return "skipped (poses already recovered)"
    summary = process_data(
        ProcessDataConfig(input=cfg.input, out=data, num_frames=cfg.num_frames, overwrite=True)
    )
    return f"{summary['registered']} of {summary['input_images']} images registered"


def _recorded(run: RunFolder, stage: str, cfg: Any) -> bool:
    """Whether ``config.json[stage]`` holds exactly this configuration (what that stage last finished)."""
    recorded = run.read_config().get(stage)
    resumable = {"resume", "progress", "overwrite", "log"}
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    if not isinstance(recorded, dict):
        return False
    return {k: v for k, v in recorded.items() if k not in resumable} == {
        k: v for k, v in now.items() if k not in resumable
    }


def main(cfg: RunConfig) -> None:
    """``gags run``: print one summary with the next commands."""
    result = run_pipeline(cfg)
    run = shlex.quote(result["run"])
    lines = [f"gags run: {result['run']} ready in {result['seconds']:.0f}s (preset {result['preset']})"]
    lines += [f"  {stage:<13} {what}" for stage, what in result["stages"].items()]
    lines += [
        f"  data          {result['data']}",
        f"  splats        {result['run']}/splats.ply",
        f"  language      {result['run']}/language.pt",
        "next:",
        f'  gags query {run} "a thing in the scene" --view all',
        f"  gags view {run}",
    ]
    print("\n".join(lines))
