"""The ``gags`` command: one thin function per subcommand; the work lives in the stage modules.

Each subcommand takes its stage's configuration dataclass, flattened into ``--option`` flags by
tyro. Errors meant for users (:class:`gags.errors.GagsError`) are printed without a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import tyro

from gags.baselines.ablation import AblationConfig
from gags.distill.train import DistillConfig
from gags.errors import GagsError
from gags.evaluate.run import EvalConfig
from gags.query.run import QueryConfig
from gags.scene.load import SceneConfig
from gags.segment.prepare import PrepareConfig
from gags.splats import train as splats_train
from gags.splats.train import ImportConfig, TrainConfig
from gags.synthetic.demo import DemoConfig


def Flat(cls):  # noqa: N802 - reads as a type annotation at the call sites
    """Annotate a config dataclass so its fields become top-level flags (no ``--cfg.`` prefix)."""
    return Annotated[cls, tyro.conf.arg(name="")]


def _commands() -> dict[str, Callable[..., object]]:
    """Name -> function for every subcommand, in pipeline order."""
    commands: dict[str, Callable[..., object]] = {}
    # Each stage registers its subcommand here (see the functions below).
    commands["train-rgb"] = train_rgb
    commands["import"] = import_splats
    commands["prepare"] = prepare_run
    commands["distill"] = distill_run
    commands["scene"] = scene_info
    commands["query"] = query_text
    commands["eval"] = eval_labels
    commands["demo"] = demo
    commands["ablation"] = ablation
    return commands


def scene_info(cfg: Flat(SceneConfig)) -> None:
    """Load a data set and print a JSON summary: format, cameras, split, points, image sizes."""
    import json

    from gags.scene.load import load_scene, scene_summary

    print(json.dumps(scene_summary(load_scene(cfg)), indent=2))


def train_rgb(cfg: Flat(TrainConfig)) -> None:
    """Train RGB 3D Gaussian splatting from posed images (stage 1)."""
    splats_train.train_rgb(cfg)


def import_splats(cfg: Flat(ImportConfig)) -> None:
    """Import an existing splat PLY (3DGS / gsplat) into a run folder instead of training."""
    splats_train.train_rgb(cfg.train_config())


def prepare_run(cfg: Flat(PrepareConfig)) -> None:
    """GaS: depth-aware SAM prompts, masks at three granularities, CLIP features per image (stage 2)."""
    from gags.segment.prepare import prepare

    summary = prepare(cfg)
    per = " ".join(f"{k} {v:.2f}s" for k, v in summary.get("per_image", {}).items() if v > 0)
    print(
        f"gags prepare: {summary['done']} done, {summary['resumed']} already there, "
        f"{len(summary['skipped'])} skipped; per image: {per}"
    )


def query_text(cfg: Flat(QueryConfig)) -> None:
    """Query a run with text: relevance heatmap, point and mask per view; --extract/--delete Gaussians."""
    from gags.query.run import query

    result = query(cfg)
    print(f"gags query: wrote {result['out']}")


def eval_labels(cfg: Flat(EvalConfig)) -> None:
    """Evaluate on LERF-OVS labels: mIoU and localisation accuracy per granularity (eval/metrics.*)."""
    from gags.evaluate.run import evaluate

    metrics = evaluate(cfg)
    o = metrics["overall"]
    print(f"gags eval: mIoU {100 * o['miou']:.1f}%, mAcc {100 * o['macc']:.1f}% over {o['pairs']} pairs")


def demo(cfg: Flat(DemoConfig)) -> None:
    """Run every stage on the built-in synthetic scene (offline, CPU) and write a report."""
    from gags.synthetic.demo import run_demo

    run_demo(cfg)


def distill_run(cfg: Flat(DistillConfig)) -> None:
    """GaD: distil the 16-d language field and its decoders (stage 3); --method picks a baseline."""
    from gags.distill.train import distill

    m = distill(cfg)
    print(f"gags distill: {m['method']}, {m['steps_run']} steps in {m['seconds']:.1f}s; wrote {cfg.run}")


def ablation(cfg: Flat(AblationConfig)) -> None:
    """The paper's Table 4 ablation (+ LangSplat) on the synthetic scene; prints the table."""
    from gags.baselines.ablation import run_ablation

    run_ablation(cfg)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``gags`` console script."""
    try:
        tyro.extras.subcommand_cli_from_dict(_commands(), args=argv, prog="gags")
    except GagsError as e:
        print(f"gags: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("gags: interrupted; finished outputs are kept and the stage can be resumed", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
