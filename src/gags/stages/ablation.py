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
from gags.synthetic.granularity import level_floors

#: distillation steps and pixels per view and step of every method on the synthetic scene at its default
#: size (200 x 150, supervised at 100 x 75), shared by ``gags demo`` and ``gags ablation``: where GAGS's and
#: averaged features' metrics stop moving (1000 steps leave both 5.6 mIoU short; README, "GaD convergence
#: on the demo scene"); steps, not pixels, set GaD's progress, so few pixels buy steps
SYNTHETIC_DISTILL_ITERATIONS, SYNTHETIC_DISTILL_PIXELS = 3000, 192


@dataclasses.dataclass(kw_only=True)
class AblationConfig:
    """Run the Table 4 ablation (and LangSplat) on the synthetic scene and print the table."""

    out: Path = Path("runs/ablation")
    """folder that receives one run folder per prompt mode and per method"""
    methods: tuple[str, ...] = tuple(m.name for m in (*TABLE4, LANGSPLAT))
    """methods to run (see gags.baselines.methods): Table 4 models 1-7 and langsplat"""
    seed: int = 0
    """seed of the scene, the oracles and every stage (with ``--seeds``: ignored)"""
    seeds: tuple[int, ...] = ()
    """run the whole ablation once per seed (scene, oracles, every stage) into OUT/seed-N and report
    mean +- std over them; empty: ``--seed`` only"""
    label_sets: tuple[Literal["queries", "hierarchy"], ...] = ("queries", "hierarchy")
    """label sets evaluated: the LERF-OVS-like query set and the all-regions hierarchy stress test"""
    width: int = 200
    """synthetic image width, pixels"""
    height: int = 150
    """synthetic image height, pixels"""
    rgb: Literal["import-gt", "train"] = "import-gt"
    """import the scene's ground-truth splats (fast; the ablation is about language) or train RGB"""
    rgb_iterations: int = 300
    """RGB training steps with ``--rgb train`` (a short CPU run: training starts from the scene's points)"""
    distill_iterations: int = SYNTHETIC_DISTILL_ITERATIONS
    """distillation steps per method (the demo's: where GaD's metrics stop moving on the synthetic scene at
    its default size). DEVIATION: the paper uses 30000 (GPU)"""
    distill_downscale: float = 2.0
    """distillation resolution divisor (reference -r 2)"""
    distill_pixels: int = SYNTHETIC_DISTILL_PIXELS
    """supervise each view at this many random valid pixels per step (0: all; ``gags distill
    --pixels-per-view``; the demo's)"""
    box_size: int = 10
    """evaluation relevance window, pixels (reference 30 at ~1000 px wide; scaled for 200 px views)"""
    backend: Backend = "auto"
    """render backend of the distillation (``dense`` is exact and fastest for tiny views on a CPU)"""
    redo: bool = False
    """redo stages whose outputs exist"""
    device: str = "cpu"
    """torch device of every stage"""
    bed: Literal["v1", "v2"] = "v2"
    """test bed of the oracle segmenter and encoder (gags.synthetic.bed); use one OUT folder per bed"""


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) every file of ``src`` into ``dst``."""

    def link(a: str, b: str) -> None:
        if os.path.exists(b):
            if os.path.samefile(a, b):  # linked by an earlier run of the ablation
                return
            os.unlink(b)
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
            oracle_bed=cfg.bed,
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


def run_method(cfg: AblationConfig, spec: MethodSpec, prep: RunFolder, scene_dir: Path) -> dict[str, Any]:
    """Distil and evaluate one method on every label set; returns its metrics (read back when done)."""
    import json

    from gags.stages.distill import DistillConfig, distill
    from gags.stages.evaluate import EvalConfig, evaluate
    from gags.synthetic.labels import label_folder

    run = method_folder(cfg, spec, prep)
    timing: dict[str, Any] = {}
    if cfg.redo or not run.language.exists():
        stats = distill(
            DistillConfig(
                run=run.root,
                method=spec.method,
                iterations=cfg.distill_iterations,
                downscale=cfg.distill_downscale,
                pixels_per_view=cfg.distill_pixels,
                seed=cfg.seed,
                device=cfg.device,
                progress=False,
                backend=cfg.backend,
            )
        )
        timing = {
            "iterations": cfg.distill_iterations,
            "distill_seconds": stats["seconds"],
            "peak_memory_mb": stats["peak_memory_mb"],
            "plateau": stats["plateau"],
        }
        write_json_atomic(run.eval / "distill_timing.json", timing)
    fresh = bool(timing)
    if not fresh and (run.eval / "distill_timing.json").exists():
        timing = json.loads((run.eval / "distill_timing.json").read_text())
    elif not fresh and (run.root / "distill_curve.json").exists():  # distilled without the timing file
        timing = {"plateau": json.loads((run.root / "distill_curve.json").read_text())["plateau"]["distill"]}
    sets: dict[str, Any] = {}
    for label_set in cfg.label_sets:
        out = run.eval if label_set == "queries" else run.eval / label_set
        path = out / "metrics.json"
        if cfg.redo or fresh or not path.exists():
            labels = label_folder(scene_dir, label_set)
            metrics = evaluate(
                EvalConfig(run=run.root, labels=labels, box_size=cfg.box_size, device=cfg.device, out=out)
            )
        else:
            metrics = json.loads(path.read_text())
        sets[label_set] = {"overall": metrics["overall"], "by_level": metrics.get("by_level", {})}
    first = sets[cfg.label_sets[0]]
    row = {
        "method": spec.name,
        "model": spec.model,
        "prompts": spec.prompts,
        "distill": spec.distill_method,
        "overall": first["overall"],
        "by_level": first["by_level"],
        "label_sets": sets,
        **timing,
    }
    if getattr(spec.method, "alpha", None) == "learned":
        row["alpha"] = _alpha(cfg, run, scene_dir, fresh=fresh)
    return row


def _alpha(cfg: AblationConfig, run: RunFolder, scene_dir: Path, fresh: bool) -> dict[str, Any]:
    """The learnt alpha by view ring and object size (:mod:`gags.synthetic.granularity`), kept in
    ``RUN/eval/alpha.json``."""
    import json

    from gags.synthetic.granularity import alpha_statistics

    path = run.eval / "alpha.json"
    if fresh or cfg.redo or not path.exists():
        write_json_atomic(path, alpha_statistics(run.root, scene_dir, cfg.distill_downscale))
    return json.loads(path.read_text())


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
    from gags.stages.train_rgb import TrainConfig, import_ground_truth, train_rgb
    from gags.synthetic.generate import SyntheticConfig, generate_scene

    given = dict(prepared or {})
    if scene_dir is None:
        scene_dir = generate_scene(SyntheticConfig(seed=cfg.seed, width=cfg.width, height=cfg.height))
    rgb_run = given.get("gas", RunFolder(cfg.out / "prep-gas"))
    if (cfg.redo or not rgb_run.splats.exists()) and cfg.rgb == "import-gt":
        import_ground_truth(scene_dir, rgb_run.root, cfg.seed, cfg.device, overwrite=cfg.redo)
    elif cfg.redo or not rgb_run.splats.exists():
        train_rgb(
            TrainConfig(
                data=scene_dir,
                out=rgb_run.root,
                iterations=cfg.rgb_iterations,
                sh_degree=1,
                seed=cfg.seed,
                device=cfg.device,
                overwrite=cfg.redo,
            )
        )
    missing = sorted(set(prompt_modes) - set(given))
    return scene_dir, given | {p: _prepare_folder(cfg, p, rgb_run) for p in missing}


def run_ablation(
    cfg: AblationConfig,
    scene_dir: Path | None = None,
    prepared: dict[str, RunFolder] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run every method of ``cfg.methods`` (once per seed of ``cfg.seeds``); write and print the tables.

    ``scene_dir`` and ``prepared`` reuse a generated scene and prepared run folders (see
    :func:`prepared_runs`; single seed only). Returns the rows (with ``--seeds``: per seed and the
    mean +- std table).
    """
    unknown = [m for m in cfg.methods if m not in METHOD_SPECS]
    if unknown:
        raise GagsError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_SPECS)}")
    if not cfg.label_sets:
        raise GagsError("--label-sets needs at least one of queries, hierarchy")
    if cfg.seeds:
        per_seed = [
            run_ablation(dataclasses.replace(cfg, seed=s, seeds=(), out=cfg.out / f"seed-{s}"), quiet=True)
            for s in cfg.seeds
        ]
        result = {"config": dataclasses.asdict(cfg), "seeds": list(cfg.seeds), "per_seed": per_seed}
        tables = [
            f"## {label_set} ({len(cfg.seeds)} seeds, mean ± std)\n\n"
            + ablation_markdown(mean_rows([r["rows"] for r in per_seed], label_set), with_std=True)
            for label_set in cfg.label_sets
        ]
        tables.append(convergence_markdown([r["rows"] for r in per_seed], list(cfg.seeds)))
        tables += [
            granularity_markdown(r["rows"], r["level_floors"], f"granularity, seed {s}")
            for s, r in zip(cfg.seeds, per_seed, strict=True)
        ]
        _write_tables(cfg, result, tables)
        return result
    t0 = time.perf_counter()
    specs = [METHOD_SPECS[m] for m in cfg.methods]
    scene_dir, preps = prepared_runs(cfg, {s.prompts for s in specs}, scene_dir, prepared)
    rows = [run_method(cfg, spec, preps[spec.prompts], scene_dir) for spec in specs]
    result = {
        "config": dataclasses.asdict(cfg),
        "scene": str(scene_dir),
        "rows": rows,
        "level_floors": {p: level_floors(r.root, scene_dir, cfg.distill_downscale) for p, r in preps.items()},
        "seconds": time.perf_counter() - t0,
    }
    tables = [
        f"## {label_set}\n\n" + ablation_markdown([{**r, **r["label_sets"][label_set]} for r in rows])
        for label_set in cfg.label_sets
    ]
    tables.append(granularity_markdown(rows, result["level_floors"]))
    _write_tables(cfg, result, tables, quiet)
    return result


def _write_tables(
    cfg: AblationConfig, result: dict[str, Any], tables: list[str], quiet: bool = False
) -> None:
    text = "\n".join(tables)
    write_json_atomic(cfg.out / "ablation.json", result)
    write_text_atomic(cfg.out / "ablation.md", text)
    if not quiet:
        print(text)


def mean_rows(per_seed: list[list[dict[str, Any]]], label_set: str) -> list[dict[str, Any]]:
    """One row per method with each metric's mean and std over the seeds (``label_set``'s figures)."""
    import numpy as np

    def stat(blocks: list[dict[str, Any] | None], metric: str) -> tuple[float, float] | None:
        values = [b[metric] for b in blocks if b]
        return (float(np.mean(values)), float(np.std(values))) if values else None

    out = []
    for rows in zip(*per_seed, strict=True):
        sets = [r["label_sets"][label_set] for r in rows]
        row = {k: rows[0][k] for k in ("method", "model", "prompts", "distill")}
        row["overall"] = {m: stat([s["overall"] for s in sets], m) for m in ("miou", "macc")}
        row["by_level"] = {
            lv: {m: stat([s["by_level"].get(lv) for s in sets], m) for m in ("miou", "macc")} for lv in LEVELS
        }
        out.append(row)
    return out


def ablation_markdown(rows: list[dict[str, Any]], with_std: bool = False) -> str:
    """The table: one row per method, mIoU and mAcc (%) overall and per level (``mean ± std`` cells
    when the rows hold (mean, std) pairs, see :func:`mean_rows`)."""
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
            value = None if not block else block.get(metric)
            if value is None:
                cells.append("-")
            elif with_std:
                cells.append(f"{100 * value[0]:.1f} ± {100 * value[1]:.1f}")
            else:
                cells.append(f"{100 * value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def granularity_markdown(
    rows: list[dict[str, Any]], floors: dict[str, dict[str, Any]], title: str = "granularity"
) -> str:
    """Where the learnt alpha went (mean subpart / part / whole per view ring, for each learnt-alpha
    row) and which level Eq. 3 rewards (the levels' consistency floors over the objects' subparts)."""
    from gags.synthetic.granularity import alpha_line

    lines = [f"## {title}", ""]
    lines += [f"- alpha, {r['method']}: {alpha_line(r['alpha'])}" for r in rows if r.get("alpha")]
    for prompts, f in floors.items():
        scene = f["scene"]
        floor = " / ".join(f"{v:.3f}" for v in scene["floor"].values())
        lowest = ", ".join(f"{lv} {n}" for lv, n in scene["lowest_for_subparts"].items())
        lines.append(f"- Eq. 3 floor ({prompts} prompts), s / p / w: {floor}; lowest for {lowest} subparts")
    return "\n".join(lines) + "\n"


def convergence_markdown(per_seed: list[list[dict[str, Any]]], seeds: list[int]) -> str:
    """Per method: whether the distillation loss plateaued (:func:`gags.distill.curve.plateau`) in how
    many seeds, the mean change of its epoch-block mean over the last 20% of the run, the mean steps to
    plateau and the mean seconds per step (from each run's ``eval/distill_timing.json``)."""
    import numpy as np

    lines = [f"## convergence ({len(seeds)} seeds)", ""]
    lines += [
        "| method | plateaued | tail change | steps to plateau | s / step |",
        "|---|---:|---:|---:|---:|",
    ]
    for rows in zip(*per_seed, strict=True):
        runs = [r for r in rows if r.get("plateau")]
        if not runs:
            continue
        stats = [r["plateau"] for r in runs]
        steps = [s["steps_to_plateau"] for s in stats if s["steps_to_plateau"] is not None]
        tails = [s["tail_change"] for s in stats if s["tail_change"] is not None]
        per_step = [r["distill_seconds"] / r["iterations"] for r in runs if r.get("iterations")]
        tail = 100 * np.mean(tails) if tails else float("nan")
        step = np.mean(steps) if steps else float("nan")
        rate = np.mean(per_step) if per_step else float("nan")
        lines.append(
            f"| {rows[0]['method']} | {sum(s['plateaued'] for s in stats)}/{len(stats)} "
            f"| {tail:.2f}% | {step:.0f} | {rate:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(cfg: AblationConfig) -> None:
    """``gags ablation``."""
    run_ablation(cfg)
