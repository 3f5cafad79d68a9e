"""``gags ablation``: the paper's Table 4 (prompts x distillation) on the synthetic scene, printed as a table.

Steps, all in ``OUT/``:

1. generate the synthetic scene (cached); import its ground-truth splats (or train RGB) into ``OUT/prep-gas``;
2. ``prepare`` with the oracle segmenter and encoder, GaS prompts into ``prep-gas`` and uniform grid
   prompts into ``prep-uniform`` (which shares the same ``splats.ply``);
3. for each method (:mod:`gags.baselines.methods`), a run folder ``OUT/<method>`` that links the
   splats, segments and features of its prepare folder; ``distill`` then ``evaluate`` there;
4. ``OUT/ablation.json`` and ``OUT/ablation.md``: mIoU and localisation accuracy, overall and per level.

Finished stages are kept: re-running skips every folder whose outputs exist (``--redo`` to redo).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from gags.baselines.methods import LANGSPLAT, METHOD_SPECS, TABLE4, MethodSpec
from gags.errors import GagsError
from gags.io import write_json_atomic, write_text_atomic
from gags.models.segmenter import LEVELS
from gags.runfolder import RunFolder
from gags.splats.render import Backend


@dataclasses.dataclass(kw_only=True)
class AblationConfig:
    """Run the Table 4 ablation (and LangSplat) on the synthetic scene and print the table."""

    out: Path = Path("runs/ablation")
    """folder that receives one run folder per prompt mode and per method"""
    methods: tuple[str, ...] = tuple(m.name for m in (*TABLE4, LANGSPLAT))
    """methods to run (see gags.baselines.methods): Table 4 models 1-7 and langsplat"""
    seed: int = 0
    """seed of the scene, the oracles and every stage"""
    width: int = 200
    """synthetic image width, pixels"""
    height: int = 150
    """synthetic image height, pixels"""
    rgb: Literal["import-gt", "train"] = "import-gt"
    """import the scene's ground-truth splats (fast; the ablation is about language) or train RGB"""
    rgb_iterations: int = 300
    """RGB training steps with ``--rgb train`` (a short CPU run: training starts from the scene's points)"""
    distill_iterations: int = 1500
    """distillation steps per method. DEVIATION: the paper uses 30000 (GPU)"""
    distill_downscale: float = 2.0
    """distillation resolution divisor (reference -r 2)"""
    box_size: int = 10
    """evaluation relevance window, pixels (reference 30 at ~1000 px wide; scaled for 200 px views)"""
    backend: Backend = "auto"
    """render backend of the distillation (``dense`` is exact and fastest for tiny views on a CPU)"""
    redo: bool = False
    """redo stages whose outputs exist"""
    device: str = "cpu"
    """torch device of every stage"""


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) every file of ``src`` into ``dst``."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)


def _prepare_folder(cfg: AblationConfig, prompts: str, rgb_run: RunFolder) -> RunFolder:
    """``OUT/prep-<prompts>``: splats and config of ``rgb_run`` plus this prompt mode's segments/features."""
    from gags.segment.prompts import PromptConfig
    from gags.stages.prepare import PrepareConfig, prepare

    run = RunFolder(cfg.out / f"prep-{prompts}")
    if run.root != rgb_run.root and (cfg.redo or not run.splats.exists()):
        run.root.mkdir(parents=True, exist_ok=True)
        for path in (rgb_run.splats, rgb_run.config):
            shutil.copy2(path, run.root / path.name)
    if cfg.redo or not run.features.exists() or "prepare" not in run.read_config():
        prep = PrepareConfig(
            run=run.root,
            segmenter="oracle",
            encoder="oracle",
            prompts=PromptConfig(mode=prompts),
            device=cfg.device,
            seed=cfg.seed,
            overwrite=cfg.redo,
        )
        prepare(prep)  # the oracles of the run's scene, seeded with cfg.seed
    return run


def method_folder(cfg: AblationConfig, spec: MethodSpec, prep: RunFolder) -> RunFolder:
    """``OUT/<method>``: the prepare folder's splats, config, segments and features, linked."""
    run = RunFolder(cfg.out / spec.name)
    run.root.mkdir(parents=True, exist_ok=True)
    for path in (prep.splats, prep.config):
        target = run.root / path.name
        if cfg.redo or not target.exists():
            shutil.copy2(path, target)
    for folder in (prep.segments, prep.features):
        _link_tree(folder, run.root / folder.name)
    return run


def run_method(cfg: AblationConfig, spec: MethodSpec, prep: RunFolder, labels: Path) -> dict[str, Any]:
    """Distil and evaluate one method; returns its metrics (read back when already done)."""
    import json

    from gags.stages.distill import DistillConfig, distill
    from gags.stages.evaluate import EvalConfig, evaluate

    run = method_folder(cfg, spec, prep)
    metrics_path = run.eval / "metrics.json"
    timing: dict[str, Any] = {}
    if cfg.redo or not run.language.exists():
        stats = distill(
            DistillConfig(
                run=run.root,
                method=spec.method,
                iterations=cfg.distill_iterations,
                downscale=cfg.distill_downscale,
                seed=cfg.seed,
                device=cfg.device,
                progress=False,
                backend=cfg.backend,
            )
        )
        timing = {"distill_seconds": stats["seconds"], "peak_memory_mb": stats["peak_memory_mb"]}
    if cfg.redo or timing or not metrics_path.exists():
        metrics = evaluate(EvalConfig(run=run.root, labels=labels, box_size=cfg.box_size, device=cfg.device))
    else:
        metrics = json.loads(metrics_path.read_text())
    return {
        "method": spec.name,
        "model": spec.model,
        "prompts": spec.prompts,
        "distill": spec.distill_method,
        "overall": metrics["overall"],
        "by_level": metrics.get("by_level", {}),
        **timing,
    }


def prepared_runs(
    cfg: AblationConfig,
    prompt_modes: set[str],
    scene_dir: Path | None = None,
    prepared: dict[str, RunFolder] | None = None,
) -> tuple[Path, dict[str, RunFolder]]:
    """Generate the scene, get its splats, and prepare one run folder per prompt mode (kept when done).

    ``scene_dir`` reuses an already generated scene; ``prepared`` maps prompt modes to run folders that
    were already prepared (``gags demo`` passes its own run as ``"gas"``): their splats are shared and
    only the missing modes are prepared.

    Returns the scene folder and prompt mode -> run folder (``OUT/prep-<mode>`` unless given).
    """
    from gags.stages.train_rgb import TrainConfig, train_rgb
    from gags.synthetic.generate import SyntheticConfig, generate_scene

    given = dict(prepared or {})
    if scene_dir is None:
        scene_dir = generate_scene(SyntheticConfig(seed=cfg.seed, width=cfg.width, height=cfg.height))
    rgb_run = given.get("gas", RunFolder(cfg.out / "prep-gas"))
    if cfg.redo or not rgb_run.splats.exists():
        gt = scene_dir / "gt_splats.ply" if cfg.rgb == "import-gt" else None
        train_rgb(
            TrainConfig(
                data=scene_dir,
                out=rgb_run.root,
                import_ply=gt,
                iterations=0 if gt is not None else cfg.rgb_iterations,
                evaluate=gt is None,
                sh_degree=1,
                seed=cfg.seed,
                device=cfg.device,
                overwrite=cfg.redo,
            )
        )
    missing = sorted(set(prompt_modes) - set(given))
    return scene_dir, given | {p: _prepare_folder(cfg, p, rgb_run) for p in missing}


def run_ablation(
    cfg: AblationConfig, scene_dir: Path | None = None, prepared: dict[str, RunFolder] | None = None
) -> dict[str, Any]:
    """Run every method of ``cfg.methods``; write and print the table. Returns the rows.

    ``scene_dir`` and ``prepared`` reuse a generated scene and prepared run folders (see
    :func:`prepared_runs`).
    """
    unknown = [m for m in cfg.methods if m not in METHOD_SPECS]
    if unknown:
        raise GagsError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_SPECS)}")
    t0 = time.perf_counter()
    specs = [METHOD_SPECS[m] for m in cfg.methods]
    scene_dir, preps = prepared_runs(cfg, {s.prompts for s in specs}, scene_dir, prepared)
    rows = [run_method(cfg, spec, preps[spec.prompts], scene_dir / "labels") for spec in specs]
    result = {
        "config": dataclasses.asdict(cfg),
        "scene": str(scene_dir),
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    table = ablation_markdown(rows)
    write_json_atomic(cfg.out / "ablation.json", result)
    write_text_atomic(cfg.out / "ablation.md", table)
    print(table)
    return result


def ablation_markdown(rows: list[dict[str, Any]]) -> str:
    """The table: one row per method, mIoU and mAcc (%) overall and per level."""
    head = ["model", "method", "prompts", "distill"]
    cols = [
        ("miou", "overall"),
        *(("miou", lv) for lv in LEVELS),
        ("macc", "overall"),
        *(("macc", lv) for lv in LEVELS),
    ]
    names = head + [f"{'mIoU' if m == 'miou' else 'mAcc'} {lv}" for m, lv in cols]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = [row["model"], row["method"], row["prompts"], row["distill"]]
        for metric, level in cols:
            block = row["overall"] if level == "overall" else row["by_level"].get(level)
            cells.append("-" if not block else f"{100 * block[metric]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(cfg: AblationConfig) -> None:
    """``gags ablation``."""
    run_ablation(cfg)
