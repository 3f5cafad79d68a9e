"""``gags demo``: the whole pipeline on the built-in synthetic scene, offline, on a CPU.

Steps: generate (or reuse) the scene -> ``train_rgb`` (short) -> ``prepare`` with the oracle
segmenter and encoder of test bed ``--bed`` (default v2, :mod:`gags.synthetic.bed`) -> ``distill``
-> ``evaluate`` on the scene's LERF-OVS-like query set (``labels/``; the all-regions hierarchy stress
test in ``labels_hierarchy/``, :func:`gags.synthetic.labels.label_folder`, is not evaluated here) ->
the comparison methods of ``--baselines`` (default: averaged features and LangSplat's three fields) through
:func:`gags.stages.ablation.run_ablation`, on this run's own splats and segments, into
``OUT/baselines``. The report goes into ``OUT/eval/``:

- ``metrics.json`` / ``metrics.md`` / ``figure.png``: the evaluation (by granularity);
- ``demo.json``: timings, RGB quality, the granularity agreement of the prepared segments with the
  ground truth (by view distance), and the evaluation summary;
- ``demo.md``: the same as tables; ``demo_figure.png``: RGB, ground truth and relevance heatmaps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from gags.distill.field import LanguageField
    from gags.query.maps import QueryEngine
    from gags.scene.cameras import Camera

from gags.io import atomic_path, write_json_atomic, write_text_atomic
from gags.runfolder import RunFolder
from gags.stages.ablation import SYNTHETIC_DISTILL_ITERATIONS, SYNTHETIC_DISTILL_PIXELS
from gags.synthetic.generate import SyntheticConfig, generate_scene
from gags.synthetic.granularity import alpha_statistics
from gags.synthetic.groundtruth import LEVELS, GroundTruthStore
from gags.synthetic.labels import label_folder


@dataclasses.dataclass(kw_only=True)
class DemoConfig:
    """Run every stage on the built-in synthetic table-top scene and write a report."""

    out: Path = Path("runs/demo")
    """Run folder to write."""
    seed: int = 0
    """Seed of the scene, the oracles and every stage."""
    width: int = 200
    """Image width of the synthetic views, pixels."""
    height: int = 150
    """Image height of the synthetic views, pixels."""
    n_far: int = 16
    """Views on the far ring (1.1 m)."""
    n_mid: int = 16
    """Views on the middle ring (0.6 m)."""
    near_per_object: int = 4
    """Close-ups of each of the 7 objects."""
    density: float = 1.0
    """Multiplier on the number of ground-truth Gaussians (1.0: about 4,500)."""
    n_label_frames: int = 12
    """Frames with LERF-OVS labels used by the evaluation."""
    rgb: Literal["train", "import-gt"] = "train"
    """Train RGB splats from the images (the real pipeline), or import the scene's ground-truth splats
    (fast; isolates the language stages from RGB quality), as ``gags ablation`` does."""
    rgb_iterations: int = 300
    """RGB training steps. Deviation: 3DGS uses 30000; enough here because training starts from the
    scene's point cloud and the views are small."""
    rgb_max_gaussians: int = 8000
    """Cap on the RGB Gaussians (the ground truth has about 4,700); bounds the CPU time of training."""
    distill_iterations: int = SYNTHETIC_DISTILL_ITERATIONS
    """Feature distillation steps of GAGS and of each baseline: where GAGS's and averaged features'
    metrics stop moving on this scene with the ``short`` schedule (1000 steps leave both 5.6 mIoU
    short; README, "GaD convergence on the demo scene"). Deviation: the paper uses 30000 (GPU)."""
    distill_downscale: float = 2.0
    """Distillation resolution divisor (reference ``-r 2``)."""
    distill_pixels: int = SYNTHETIC_DISTILL_PIXELS
    """Pixels supervised per view and step, drawn afresh each step (of about 7,500 at the default size;
    0: all). Deviation (the reference uses every pixel): GaD's progress is set by the number of steps,
    not by the pixels per step (1000 steps reach the same loss with 1024 pixels as with all of them,
    3000 steps the same metrics with 192 as with 384 or 1024: README), so few pixels buy steps; the
    losses are unbiased estimates of the full-view ones."""
    queries: tuple[str, ...] = ("cup", "teapot spout", "rubber duck", "pencil")
    """Free-text queries drawn in the figure (paraphrases welcome: "cup" finds the mug)."""
    cache_dir: Path | None = None
    """Where generated scenes are cached (default ``~/.cache/gags/synthetic``)."""
    baselines: tuple[str, ...] = ("average", "langsplat")
    """Comparison methods distilled on this run's splats (names from gags.baselines.methods: average,
    langsplat, uniform-average, uniform-gad, single-subpart, single-part, single-whole), in OUT/baselines;
    pass none (``--baselines``) to skip them."""
    device: str = "cpu"
    """Torch device of every stage."""
    bed: Literal["v1", "v2"] = "v2"
    """Test bed of the oracle segmenter and encoder (gags.synthetic.bed): v2 has SAM's and CLIP's failure
    modes, v1 is the original bed."""
    parallel_baselines: bool = True
    """Distil and evaluate the baselines in a second process while GAGS distils and is evaluated in this
    one, each with half the CPU threads (distillation gains almost nothing from a second thread on
    these sizes: the same steps per second with 1 and 2 on 2 cores, README). Same seeds; the thread
    count changes float rounding, which moves LangSplat's figures by several points (README), GaD's
    by none measured. The report's baseline time then overlaps GAGS's. ``--no-parallel-baselines``
    runs them after."""

    @classmethod
    def reduced(cls, out: Path, **overrides: Any) -> DemoConfig:
        """A tiny demo (64 x 48, 11 views, 5 + 5 steps) that runs every stage in about a minute (tests)."""
        small: dict[str, Any] = dict(
            width=64,
            height=48,
            n_far=2,
            n_mid=2,
            near_per_object=1,
            density=0.3,
            n_label_frames=3,
            rgb_iterations=5,
            distill_iterations=5,
            distill_pixels=0,  # every pixel of its 32 x 24 views
        )
        return cls(out=out, **(small | overrides))

    def synthetic(self) -> SyntheticConfig:
        return SyntheticConfig(
            seed=self.seed,
            width=self.width,
            height=self.height,
            n_far=self.n_far,
            n_mid=self.n_mid,
            near_per_object=self.near_per_object,
            density=self.density,
            n_label_frames=self.n_label_frames,
            cache_dir=self.cache_dir,
        )


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the content of ``eval/demo.json`` plus ``report`` (the markdown path)."""
    run = RunFolder(cfg.out)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"config": dataclasses.asdict(cfg), "timings": timings}
    start = time.perf_counter()

    t = time.perf_counter()
    scene_dir = generate_scene(cfg.synthetic())
    timings["scene"] = time.perf_counter() - t
    result["scene"] = str(scene_dir)
    print(f"scene: {scene_dir}")

    t = time.perf_counter()
    result["rgb"] = _train_rgb(cfg, scene_dir)
    timings["train_rgb"] = time.perf_counter() - t

    t = time.perf_counter()
    _prepare(cfg)
    timings["prepare"] = time.perf_counter() - t
    result["segments"] = segment_granularity(run, scene_dir)

    side = _SideJob.start(cfg, scene_dir) if cfg.baselines and cfg.parallel_baselines else None
    try:
        with _threads(side is not None):
            t = time.perf_counter()
            _distill(cfg)
            timings["distill"] = time.perf_counter() - t

            t = time.perf_counter()
            result["eval"] = _evaluate(cfg, scene_dir)
            result["alpha"] = alpha_statistics(run.root, scene_dir, cfg.distill_downscale)
            timings["eval"] = time.perf_counter() - t
    except BaseException:
        if side is not None:
            side.kill()  # an error or Ctrl-C here does not wait for the baselines
        raise

    if cfg.baselines:
        t = side.started if side is not None else time.perf_counter()
        result["baselines"] = side.result() if side is not None else _baselines(cfg, scene_dir)
        timings["baselines"] = time.perf_counter() - t

    t = time.perf_counter()
    figure = save_demo_figure(run, scene_dir, cfg.queries, cfg.device)
    curves = read_curves({"GAGS": run.root} | {m: run.root / "baselines" / m for m in cfg.baselines})
    result["curve_figure"] = str(save_curve_figure(run.eval / "distill_curves.png", curves))
    result["plateau"] = {
        name: c["plateau"]["distill"] for name, c in curves.items() if "distill" in c["plateau"]
    }
    timings["figure"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    result["figure"] = str(figure)

    markdown = demo_markdown(result)
    write_json_atomic(run.eval / "demo.json", result)
    write_text_atomic(run.eval / "demo.md", markdown)
    print(markdown)
    print(f"report: {run.eval / 'demo.md'} (figure {figure})")
    result["report"] = str(run.eval / "demo.md")
    return result


# ----------------------------------------------------------------------------- stages


def _train_rgb(cfg: DemoConfig, scene_dir: Path) -> dict[str, Any]:
    from gags.splats.densify import DensifyConfig
    from gags.stages.train_rgb import TrainConfig, train_rgb

    gt = scene_dir / "gt_splats.ply" if cfg.rgb == "import-gt" else None
    metrics = train_rgb(
        TrainConfig(
            data=scene_dir,
            out=cfg.out,
            import_ply=gt,
            evaluate=gt is None,
            iterations=0 if gt is not None else cfg.rgb_iterations,
            densify=DensifyConfig(max_gaussians=cfg.rgb_max_gaussians),
            sh_degree=1,
            seed=cfg.seed,
            device=cfg.device,
            overwrite=True,  # the demo redoes every stage; changed splats move the old outputs aside
        )
    )
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _prepare(cfg: DemoConfig) -> dict[str, Any]:
    from gags.stages.prepare import PrepareConfig, prepare

    # the oracle segmenter and encoder of the run's (synthetic) scene, seeded with cfg.seed
    return prepare(
        PrepareConfig(
            run=cfg.out,
            segmenter="oracle",
            encoder="oracle",
            oracle_bed=cfg.bed,
            device=cfg.device,
            seed=cfg.seed,
        )
    )


def _distill(cfg: DemoConfig) -> dict[str, Any]:
    from gags.stages.distill import DistillConfig, distill

    return distill(
        DistillConfig(
            run=cfg.out,
            iterations=cfg.distill_iterations,
            downscale=cfg.distill_downscale,
            pixels_per_view=cfg.distill_pixels,
            seed=cfg.seed,
            device=cfg.device,
        )
    )


def eval_box_size(width: int) -> int:
    """Relevance smoothing window for ``width``-pixel views: 10 at 200 px, as ``gags ablation`` uses
    (the reference's 30 is for ~1000 px LERF frames), at least 3."""
    return max(3, round(10 * width / 200))


def _evaluate(cfg: DemoConfig, scene_dir: Path) -> dict[str, Any]:
    from gags.stages.evaluate import EvalConfig, evaluate

    metrics = evaluate(
        EvalConfig(
            run=cfg.out, labels=label_folder(scene_dir), box_size=eval_box_size(cfg.width), device=cfg.device
        )
    )
    return {k: metrics[k] for k in ("method", "frames", "overall", "by_level") if k in metrics}


def _baselines(cfg: DemoConfig, scene_dir: Path) -> list[dict[str, Any]]:
    """Each baseline distilled and evaluated on this run's own splats and prepared segments.

    Methods with GaS prompts reuse ``OUT/segments`` and ``OUT/features``; uniform-prompt methods get one
    extra ``prepare`` into ``OUT/baselines/prep-uniform`` from the same splats.
    """
    from gags.stages.ablation import AblationConfig, run_ablation

    ablation = AblationConfig(
        out=cfg.out / "baselines",
        methods=tuple(cfg.baselines),
        label_sets=("queries",),
        seed=cfg.seed,
        width=cfg.width,
        height=cfg.height,
        distill_iterations=cfg.distill_iterations,
        distill_downscale=cfg.distill_downscale,
        distill_pixels=cfg.distill_pixels,
        box_size=eval_box_size(cfg.width),
        device=cfg.device,
        bed=cfg.bed,
    )
    return run_ablation(ablation, scene_dir=scene_dir, prepared={"gas": RunFolder(cfg.out)})["rows"]


def _half_threads() -> int:
    import torch

    return max(1, torch.get_num_threads() // 2)


@contextlib.contextmanager
def _threads(halve: bool) -> Iterator[None]:
    """This process's torch CPU threads halved inside the block (the other half is the baselines')."""
    import torch

    before = torch.get_num_threads()
    if halve:
        torch.set_num_threads(_half_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _baselines_job(cfg: DemoConfig, scene_dir: Path, threads: int) -> list[dict[str, Any]]:
    """:func:`_baselines` in the second process, with ``threads`` torch CPU threads."""
    import torch

    torch.set_num_threads(threads)
    return _baselines(cfg, scene_dir)


@dataclasses.dataclass
class _SideJob:
    """:func:`_baselines` in a spawned process (``--parallel-baselines``). The baselines only read this
    run's splats and prepared files, which no later stage changes, and write under ``OUT/baselines``."""

    pool: ProcessPoolExecutor
    future: Future
    started: float

    @classmethod
    def start(cls, cfg: DemoConfig, scene_dir: Path) -> _SideJob:
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        started = time.perf_counter()
        return cls(pool, pool.submit(_baselines_job, cfg, scene_dir, _half_threads()), started)

    def result(self) -> list[dict[str, Any]]:
        """The job's rows; its error is re-raised, a dead process reported in one line."""
        from concurrent.futures.process import BrokenProcessPool

        from gags.errors import GagsError

        try:
            return self.future.result()
        except BrokenProcessPool as e:
            raise GagsError(
                "the baselines' process died (out of memory?); re-run with --no-parallel-baselines"
            ) from e
        finally:
            self.pool.shutdown(wait=False)

    def kill(self) -> None:
        """Stop the job now (the executor has no public call for a running job: 3.14 adds one)."""
        processes = list(getattr(self.pool, "_processes", {}).values())
        for process in processes:
            process.terminate()
        for process in processes:  # reaped here, SIGKILL when SIGTERM did not end it in 5 s
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------- segment statistics


def segment_granularity(run: RunFolder, scene_dir: Path) -> dict[str, Any]:
    """How often the prepared segments of each level match a ground-truth region *of that level*.

    For every prepared view and level, each segment is matched to the ground-truth region (any
    level) with the highest IoU; a pixel counts as "at its level" when its segment's match is a
    region of the same level with IoU >= 0.5. Reported per view ring (far / mid / near), so the
    effect of apparent size on SAM-style granularity, and what GaS does about it, can be read off.

    Returns ``{ring: {level: fraction of segmented pixels at their level}, "coverage": ...}``.
    """
    store = GroundTruthStore(scene_dir)
    rings = {v["name"]: v["ring"] for v in json.loads((scene_dir / "views.json").read_text())["views"]}
    hits: dict[str, np.ndarray] = {}
    totals: dict[str, np.ndarray] = {}
    for path in sorted(run.segments.glob("*.npz")):
        name = f"{path.stem}.png"
        if name not in rings:
            continue
        with np.load(path) as data:
            maps = data["maps"]
        gt = store.labels_at(name, *maps.shape[1:])
        ring = rings[name]
        hits.setdefault(ring, np.zeros(3))
        totals.setdefault(ring, np.zeros(3))
        for level in range(3):
            hit, total = _level_agreement(maps[level], gt, store.hierarchy.level, level)
            hits[ring][level] += hit
            totals[ring][level] += total
    return {
        ring: {LEVELS[lv]: float(hits[ring][lv] / max(totals[ring][lv], 1)) for lv in range(3)}
        for ring in sorted(hits)
    }


def _level_agreement(
    seg: np.ndarray, gt: np.ndarray, region_level: np.ndarray, level: int
) -> tuple[int, int]:
    """(pixels whose segment best matches a region of level ``level`` with IoU >= 0.5, segmented pixels).

    Ties between levels (a part made of a single subpart) count for every tied level.
    """
    valid = seg >= 0
    if not valid.any():
        return 0, 0
    seg_ids, seg_idx = np.unique(seg[valid], return_inverse=True)
    seg_area = np.bincount(seg_idx)
    best = np.zeros((3, len(seg_ids)))  # best IoU with a region of each level
    for gl in range(3):  # ground-truth maps of every level
        g = gt[gl][valid]
        fg = g >= 0
        ids, pair = np.unique(np.stack([seg_idx[fg], g[fg]]), axis=1, return_inverse=True)
        inter = np.bincount(pair.ravel(), minlength=ids.shape[1])
        region_area = np.bincount(gt[gl][gt[gl] >= 0].ravel(), minlength=len(region_level))
        iou = inter / (seg_area[ids[0]] + region_area[ids[1]] - inter)
        np.maximum.at(best[gl], ids[0], iou)
    ok = (best[level] >= 0.5) & (best[level] >= best.max(0) - 1e-9)
    return int(seg_area[ok].sum()), int(seg_area.sum())


# ----------------------------------------------------------------------------- report


def demo_markdown(result: dict[str, Any]) -> str:
    """The demo report as markdown tables."""
    lines = ["# gags demo (synthetic table-top scene)", "", f"scene: `{result['scene']}`", ""]
    lines += ["| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["timings"].items()]
    rgb = result.get("rgb", {})
    if rgb:
        shown = {k: v for k, v in rgb.items() if isinstance(v, (int, float))}
        lines += ["", "| RGB | value |", "|---|---:|"] + [f"| {k} | {v:.4g} |" for k, v in shown.items()]
    if result.get("segments"):
        lines += [
            "",
            "Prepared segments that match a ground-truth region of their own level (pixel fraction):",
            "",
        ]
        lines += ["| views | subpart | part | whole |", "|---|---:|---:|---:|"]
        for ring, row in result["segments"].items():
            lines.append(f"| {ring} | " + " | ".join(f"{100 * row[lv]:.1f}%" for lv in LEVELS) + " |")
    ev = result.get("eval")
    if ev:
        lines += [
            "",
            f"Open-vocabulary evaluation ({ev.get('method', '?')}, {ev.get('frames', '?')} frames):",
            "",
        ]
        lines += ["| granularity | pairs | mIoU (%) | mAcc (%) |", "|---|---:|---:|---:|"]
        rows = list(ev.get("by_level", {}).items()) + [("**overall**", ev.get("overall", {}))]
        for name, row in rows:
            lines.append(
                f"| {name} | {row.get('pairs', 0)} | {_pct(row.get('miou'))} | {_pct(row.get('macc'))} |"
            )
    if result.get("baselines") and ev:
        from gags.stages.ablation import ablation_markdown

        this_run = {**ev, "model": "3", "method": "gags (this run)", "prompts": "gas", "distill": "gags"}
        lines += ["", "GAGS against the baselines on the same splats (mIoU / mAcc, %):", ""]
        lines += [ablation_markdown([this_run, *result["baselines"]]).rstrip("\n")]
        lines += ["", winner_line(result)]
    if result.get("plateau"):
        tails = [
            f"{name} {100 * p['tail_change']:.2f}% ({'plateaued' if p['plateaued'] else 'still moving'})"
            for name, p in result["plateau"].items()
            if p.get("tail_change") is not None
        ]
        head = "Distillation loss, change over the last 20% of the run (epoch means): "
        lines += ["", head + (", ".join(tails) if tails else "runs too short to tell")]
    if result.get("alpha"):
        from gags.synthetic.granularity import alpha_line

        lines += [
            "",
            f"Learnt alpha, mean subpart/part/whole on object pixels: {alpha_line(result['alpha'])}",
        ]
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"


def save_demo_figure(run: RunFolder, scene_dir: Path, queries: tuple[str, ...], device: str) -> Path:
    """Rows: a far, a middle and a near labelled view. Columns: RGB, ground-truth wholes, then the
    normalised relevance of each query (when the run has a language field)."""
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = GroundTruthStore(scene_dir)
    views = json.loads((scene_dir / "views.json").read_text())["views"]
    labelled = {p.stem for p in label_folder(scene_dir).glob("frame_*.json")}
    rows = []
    for ring in ("far", "mid", "near"):
        names = [v["name"] for v in views if v["ring"] == ring and Path(v["name"]).stem in labelled]
        if names:
            rows.append(names[len(names) // 2])
    heatmaps: dict[str, list[np.ndarray]] = {}
    alpha_maps: dict[str, np.ndarray] = {}
    if run.language.exists():  # one engine (field and text encoder) and one scene for both
        import torch

        from gags.scene.load import load_run_scene
        from gags.stages.query import open_engine

        engine = open_engine(run, torch.device(device))
        cameras = [load_run_scene(run).camera_by_name(name) for name in rows]
        heatmaps = _relevance_maps(engine, cameras, queries)
        alpha_maps = _alpha_maps(engine.field, cameras)
    cols = 2 + (len(queries) if heatmaps else 0) + (1 if alpha_maps else 0)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.4 * cols, 2.0 * len(rows)), dpi=100, squeeze=False)
    try:
        for r, name in enumerate(rows):
            axes[r, 0].imshow(iio.imread(scene_dir / "images" / name))
            axes[r, 0].set_title(name, fontsize=7)
            wholes = store.view(name)[0][2].astype(float)
            axes[r, 1].imshow(np.ma.masked_less(wholes, 0), cmap="tab20", interpolation="nearest")
            axes[r, 1].set_title("ground truth (wholes)", fontsize=7)
            for q, text in enumerate(queries if heatmaps else ()):
                axes[r, 2 + q].imshow(heatmaps[name][q], cmap="turbo", vmin=0, vmax=1)
                axes[r, 2 + q].set_title(f'"{text}"', fontsize=7)
            if alpha_maps:
                axes[r, -1].imshow(alpha_maps[name], interpolation="nearest")
                axes[r, -1].set_title("alpha argmax (s/p/w)", fontsize=7)
        for ax in axes.ravel():
            ax.axis("off")
        fig.tight_layout()
        path = run.eval / "demo_figure.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def read_curves(runs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """name -> the run's ``distill_curve.json`` (:func:`gags.distill.curve.summarise_curve` plus the steps);
    runs without one are skipped."""
    paths = {name: Path(root) / "distill_curve.json" for name, root in runs.items()}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}


def save_curve_figure(path: Path, curves: dict[str, dict[str, Any]]) -> Path:
    """Plot each run's distillation loss per epoch (the mean over each complete pass over the views, as
    :func:`read_curves` returns them) relative to its first epoch (the methods' losses live in different
    spaces) against the step, one line per run, so the plateau can be seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    try:
        for name, curve in curves.items():
            epochs = curve.get("epoch_means", {}).get("distill")
            if epochs and epochs["means"]:
                means = np.asarray(epochs["means"])
                ax.plot(epochs["end_steps"], means / max(means[0], 1e-12), marker=".", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("distillation loss per epoch / first epoch's", fontsize=7)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def _alpha_maps(field: LanguageField, cameras: list[Camera]) -> dict[str, np.ndarray]:
    """camera name -> (H, W, 3) Fig. 6-style colour map of the learnt alpha's argmax (red subpart, blue
    part, green whole, white background; :data:`gags.distill.alpha.LEVEL_COLOURS`); empty when the
    field has no learnt alpha."""
    from gags.distill.alpha import alpha_argmax_maps, colourise
    from gags.scene.cameras import stack_cameras

    if field.method != "gags":
        return {}
    out = {}
    for cam in cameras:
        viewmats, Ks = stack_cameras([cam])
        levels = alpha_argmax_maps(field, viewmats, Ks, cam.width, cam.height)[0]
        out[cam.name] = colourise(levels).numpy()
    return out


def winner_line(result: dict[str, Any]) -> str:
    """One line: which method has the best mIoU on each granularity and overall (GAGS = this run)."""
    ev = result.get("eval")
    if not ev or not result.get("baselines"):
        return ""
    methods = {"GAGS": ev} | {r["method"]: r for r in result["baselines"]}
    parts = []
    for level in (*LEVELS, "overall"):
        scores = {
            name: (m["overall"] if level == "overall" else m.get("by_level", {}).get(level, {})).get("miou")
            for name, m in methods.items()
        }
        scores = {k: v for k, v in scores.items() if v is not None and v == v}
        if scores:
            best = max(scores, key=scores.get)
            parts.append(f"{level} {best} ({100 * scores[best]:.1f})")
    return "Best mIoU: " + ", ".join(parts) + "."


def _relevance_maps(
    engine: QueryEngine, cameras: list[Camera], queries: tuple[str, ...]
) -> dict[str, list[np.ndarray]]:
    """camera name -> one (H, W) normalised relevance per query (one render per view, shared by every
    query); empty without queries."""
    if not queries:
        return {}
    embedded = engine.embed(list(queries))
    out: dict[str, list[np.ndarray]] = {}
    for cam in cameras:
        answer = engine.query_view(cam, embedded, box_size=eval_box_size(cam.width))
        out[cam.name] = [m.normalised.numpy() for m in answer.maps]
    return out


def main(cfg: DemoConfig) -> None:
    """``gags demo``: run it; the report is printed by :func:`run_demo`."""
    run_demo(cfg)
