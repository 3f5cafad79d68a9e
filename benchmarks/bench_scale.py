"""How time and memory grow with the number of views, the resolution and the Gaussian count; JSON.

Sections (``--sections``, all by default):

- ``views``: the synthetic scene regenerated with 20, 100, 500 views (``--views``) at ``--view-size``;
  per point, ``gags prepare`` (oracle segmenter and encoder) and ``gags distill`` (GaD, ``--steps``
  steps or one epoch, whichever is more, so that every view is rendered and the render cache holds
  what a long run's holds) each in their own subprocess, so that each peak RSS (``ru_maxrss``) is its
  own: prepare seconds per image and peak RSS, distill seconds per step, seconds to open the views
  (the check pass), render-cache size and peak RSS, with the defaults (targets streamed, render cache
  within its 512 MB budget) and, for comparison, with every view's targets and compositing weights
  held in memory (``GAGS_VIEW_CACHE`` = the number of views and no budget: the previous behaviour).
- ``resolution``: the same (streaming only) at ``--size-views`` views for each of ``--sizes``.
- ``gaussians``: render time (forward; forward + backward of a 16-channel feature render, as
  distillation does) and peak RSS of ``--gaussians`` random Gaussians at 512x384 on the portable
  backend, one subprocess each.
- ``parity``: ``torchrun --nproc-per-node 2`` distillation (one view per rank and step) against one
  process rendering two views per step, ``--parity-steps`` steps on the ``--size-views`` scene at
  ``--view-size``: the largest difference of the per-step loss (mean over the step's views) and of
  the final per-Gaussian features.

Scenes and prepared runs are cached under ``--out`` (the scene generator's own cache, keyed by its
configuration), so a second run only measures. Each figure comes from one run on a possibly shared
machine; ratios between points are the result.

    python benchmarks/bench_scale.py [--out runs/bench_scale] [--sections views resolution gaussians parity]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
#: a render-cache budget no scene here reaches: every view's weights kept (the previous behaviour)
UNBOUNDED_MB = 1e9


# ----------------------------------------------------------------------------- children (one point each)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scene_config(views: int, width: int, height: int, cache: Path):
    from gags.synthetic.generate import SyntheticConfig

    near = 1  # one close-up per object (7), the rest on the two rings
    rings = views - 7 * near
    return SyntheticConfig(
        seed=0,
        width=width,
        height=height,
        n_far=rings - rings // 2,
        n_mid=rings // 2,
        near_per_object=near,
        density=0.3,
        n_label_frames=3,
        cache_dir=cache,
    )


def child_setup(run: Path, views: int, width: int, height: int, cache: Path) -> dict:
    """Generate the scene (cached) and import its ground-truth splats into ``run``."""
    from gags.stages.train_rgb import import_ground_truth
    from gags.synthetic.generate import generate_scene

    t = time.perf_counter()
    scene = generate_scene(_scene_config(views, width, height, cache))
    generated = time.perf_counter() - t
    if not (run / "splats.ply").exists():
        import_ground_truth(scene, run)
    return {"scene_s": round(generated, 2), "scene": str(scene)}


def child_prepare(run: Path, scene: Path) -> dict:
    """``gags prepare`` with the oracles on every view of ``run`` (redone from scratch).

    The oracle encoder's sentence model is loaded first and timed apart (``model_load_s``).
    """
    from gags.stages.prepare import PrepareConfig, prepare
    from gags.synthetic.oracle_encoder import OracleEncoder
    from gags.synthetic.oracle_segmenter import OracleSegmenter

    for sub in ("segments", "features"):
        shutil.rmtree(run / sub, ignore_errors=True)
    base = _rss_mb()
    t = time.perf_counter()
    cfg = PrepareConfig(run=run, segmenter="oracle", encoder="oracle", device="cpu", seed=0)
    # the oracles `gags prepare --segmenter oracle --encoder oracle` builds (its test bed, its seed)
    spec = {"kind": "oracle", "bed": cfg.oracle_bed, "scene": str(scene), "seed": cfg.seed}
    segmenter, encoder = OracleSegmenter.from_spec(spec), OracleEncoder.from_spec(spec)
    encoder.region_embeddings()
    model_load = time.perf_counter() - t
    t, cpu = time.perf_counter(), time.process_time()
    summary = prepare(cfg, segmenter=segmenter, encoder=encoder)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    per_image = summary.get("per_image", {})
    return {
        "images": summary["done"],
        "seconds": round(seconds, 2),
        "s_per_image": round(seconds / summary["done"], 4),
        "cpu_s_per_image": round(cpu / summary["done"], 4),
        "s_per_image_by_stage": {k: round(v, 4) for k, v in per_image.items()},
        "model_load_s": round(model_load, 2),
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_before_mb": round(base, 1),
    }


def child_distill(run: Path, steps: int, backend: str, budget_mb: float | None) -> dict:
    """``gags distill`` (GaD) for at least ``steps`` steps and at least one epoch (every view rendered
    once, so the render cache holds what it holds in a long run); the view cache comes from
    ``GAGS_VIEW_CACHE``, the render cache's budget is ``budget_mb`` (None: ``gags distill``'s default).

    The loop itself is timed (wall and process CPU, first epoch's compositing weights included),
    apart from opening the views.
    """
    import gags.stages.distill as stage
    from gags.distill.targets import default_cache_views

    loop: dict[str, float] = {}
    real_train, real_renderers = stage.train_field, stage.view_renderers
    made: list = []

    def timed_train(*a, **k):
        t, cpu = time.perf_counter(), time.process_time()
        try:
            return real_train(*a, **k)
        finally:
            loop["wall"], loop["cpu"] = time.perf_counter() - t, time.process_time() - cpu

    def kept_renderers(*a, **k):
        made.append(real_renderers(*a, **k))
        return made[-1]

    stage.train_field, stage.view_renderers = timed_train, kept_renderers
    if budget_mb is None:
        budget_mb = stage.DistillConfig.render_cache_mb
    base = _rss_mb()
    t = time.perf_counter()
    steps = max(steps, _train_views(run))
    stats = stage.distill(
        stage.DistillConfig(
            run=run,
            iterations=steps,
            progress=False,
            device="cpu",
            backend=backend,
            render_cache_mb=budget_mb,
        )
    )
    total = time.perf_counter() - t
    return {
        "steps": steps,
        "s_per_step": round(loop["wall"] / steps, 4),
        "cpu_s_per_step": round(loop["cpu"] / steps, 4),
        "open_views_s": round(total - stats["seconds"], 2),
        "view_cache": default_cache_views(),
        "render_cache_budget_mb": budget_mb,
        "render_cache_mb": round(made[-1].cached_bytes / 2**20, 1),
        "views_render_cached": len(made[-1].cached),
        "views": stats["views"],
        "gaussians": stats["gaussians"],
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_before_mb": round(base, 1),
    }


def _train_views(run: Path) -> int:
    """The number of training views of ``run`` (its prepared segment files)."""
    return len(list((run / "segments").glob("*.npz")))


def child_render(n: int, width: int, height: int, repeats: int) -> dict:
    """Random Gaussians in front of one camera: forward RGB, forward + backward of 16 feature channels."""
    import dataclasses
    import statistics

    import torch

    from gags.splats.gaussians import Gaussians
    from gags.splats.render import render

    g = torch.Generator().manual_seed(0)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([0, 0, 4.0])
    # scales shrink with the count so that the screen coverage (and the tile pairs) stay comparable
    scale = 0.04 * (20_000 / n) ** 0.5
    gs = Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * scale + scale / 8),
        opacity_logits=torch.randn(n, generator=g),
        sh=torch.rand(n, 1, 3, generator=g),
    )
    f = 440.0 * width / 512
    Ks = torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]])
    viewmats = torch.eye(4)[None]
    field = torch.zeros(n, 16, requires_grad=True)
    base = _rss_mb()

    def forward():
        with torch.no_grad():
            render(gs, viewmats, Ks, width, height, backend="torch")

    def feature_step():
        out = render(
            dataclasses.replace(gs, features=field),
            viewmats,
            Ks,
            width,
            height,
            render_rgb=False,
            render_features=True,
            backend="torch",
        )
        out.features.square().mean().backward()

    warmup = n < 500_000  # the largest case is timed on its first call (minutes otherwise)

    def timed(fn) -> float:
        if warmup:
            fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    fwd = timed(forward)
    rss_forward = _rss_mb()
    step = timed(feature_step)
    return {
        "gaussians": n,
        "width": width,
        "height": height,
        "forward_s": round(fwd, 4),
        "feature_forward_backward_s": round(step, 4),
        "peak_rss_forward_mb": round(rss_forward, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_before_mb": round(base, 1),
        "repeats": repeats,
        "warmup": warmup,
    }


def child_parity(run: Path, steps: int, out: Path, views_per_rank: int) -> dict:
    """Distil ``steps`` steps recording the loss (mean over the step's views) at every step.

    ``views_per_rank`` views per step on each rank (``--views-per-step``): under torchrun one view
    per rank, in a plain process as many as the ranks it stands in for.
    """
    import torch

    import gags.stages.distill as stage
    from gags import distributed as dist

    stats = stage.distill(
        stage.DistillConfig(
            run=run,
            iterations=steps,
            views_per_step=views_per_rank,
            progress=False,
            device="cpu",
            backend="torch",
        )
    )
    if dist.is_main():
        features = torch.load(run / "language.pt", weights_only=True)["features"]
        torch.save({"curve": [r["loss"] for r in stats["curve"]], "features": features}, out)
    return {"views_per_step": stats["views_per_step"], "seconds": round(stats["seconds"], 2)}


# ----------------------------------------------------------------------------- parent


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(SRC), os.environ.get("PYTHONPATH", "")] if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return {**env, **extra}


def _child(args: list[str], env: dict[str, str] | None = None, launcher: list[str] | None = None) -> dict:
    cmd = (launcher or [sys.executable]) + [str(HERE), "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env or _env())
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    return json.loads(lines[-1])


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


_POINTS: dict[tuple[int, str], dict] = {}


def _point(
    out: Path, views: int, size: str, steps: int, backend: str, cache: Path, held: bool, budget_mb: str
) -> dict:
    """One (views, size) point (measured once per run of this script); ``held``: also distil with
    every view in memory."""
    if (views, size) not in _POINTS:
        _POINTS[views, size] = _measure_point(out, views, size, steps, backend, cache, held, budget_mb)
    return _POINTS[views, size]


def _measure_point(
    out: Path, views: int, size: str, steps: int, backend: str, cache: Path, held: bool, budget_mb: str
) -> dict:
    width, height = _size(size)
    run = out / f"run_{views}v_{width}x{height}"
    setup = _child(["setup", str(run), str(views), str(width), str(height), str(cache)])
    prep = _child(["prepare", str(run), setup["scene"]])
    stream = _child(["distill", str(run), str(steps), backend, budget_mb])
    point = {
        "views": views,
        "size": f"{width}x{height}",
        "scene_s": setup["scene_s"],
        "prepare": prep,
        "distill_streaming": stream,
    }
    if held:
        env = _env(GAGS_VIEW_CACHE=str(views + 1))  # every target and every view's weights held
        unbounded = ["distill", str(run), str(steps), backend, str(UNBOUNDED_MB)]
        point["distill_all_in_memory"] = _child(unbounded, env=env)
    return point


def _growth(points: list[dict], key: str, get) -> dict:
    """Ratio of the last point's figure to the first's, against the ratio of ``key``."""
    a, b = points[0], points[-1]
    return {
        f"{key}_ratio": round(_num(b[key]) / _num(a[key]), 2),
        "figure_ratio": round(get(b) / max(get(a), 1e-9), 3),
    }


def _num(value) -> float:
    if isinstance(value, str) and "x" in value:
        w, h = _size(value)
        return w * h
    return float(value)


def _torchrun() -> list[str] | None:
    exe = Path(sys.executable).with_name("torchrun")
    found = str(exe) if exe.exists() else shutil.which("torchrun")
    return [found, "--standalone", "--nproc-per-node", "2"] if found else None


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_scale"))
    parser.add_argument("--sections", nargs="+", default=["views", "resolution", "gaussians", "parity"])
    parser.add_argument("--views", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--view-size", default="128x96")
    parser.add_argument("--sizes", nargs="+", default=["64x48", "128x96", "256x192", "512x384"])
    parser.add_argument("--size-views", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--gaussians", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--render-size", default="512x384")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parity-steps", type=int, default=100)
    parser.add_argument("--backend", default="torch", help="render backend of the distill points")
    parser.add_argument(
        "--render-cache-mb", default="default", help="gags distill --render-cache-mb (default: its default)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "setup":
            result = child_setup(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]), Path(rest[4]))
        elif kind == "prepare":
            result = child_prepare(Path(rest[0]), Path(rest[1]))
        elif kind == "distill":
            budget = None if rest[3] == "default" else float(rest[3])
            result = child_distill(Path(rest[0]), int(rest[1]), rest[2], budget)
        elif kind == "render":
            result = child_render(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "parity":
            result = child_parity(Path(rest[0]), int(rest[1]), Path(rest[2]), int(rest[3]))
        else:
            raise SystemExit(f"unknown child {kind}")
        print(json.dumps(result))
        return

    out = args.out.resolve()
    cache = out / "scenes"
    report: dict = {"threads": int(os.environ.get("OMP_NUM_THREADS", "1")), "steps": args.steps}
    started = time.perf_counter()

    stage_figures = {
        "prepare_s_per_image": lambda p: p["prepare"]["s_per_image"],
        "prepare_cpu_s_per_image": lambda p: p["prepare"]["cpu_s_per_image"],
        "prepare_peak_rss": lambda p: p["prepare"]["peak_rss_mb"],
        "distill_s_per_step": lambda p: p["distill_streaming"]["s_per_step"],
        "distill_cpu_s_per_step": lambda p: p["distill_streaming"]["cpu_s_per_step"],
        "distill_peak_rss": lambda p: p["distill_streaming"]["peak_rss_mb"],
        "distill_all_in_memory_peak_rss": lambda p: p["distill_all_in_memory"]["peak_rss_mb"],
    }
    sweeps = {
        "views": ("views", [(n, args.view_size) for n in args.views]),
        "resolution": ("size", [(args.size_views, size) for size in args.sizes]),
    }
    for section, (key, where) in sweeps.items():
        if section not in args.sections:
            continue
        held = section == "views"  # the in-memory comparison is about the number of views
        points = [
            _point(out, n, size, args.steps, args.backend, cache, held, args.render_cache_mb)
            for n, size in where
        ]
        growth = {
            name: _growth(points, key, get)
            for name, get in stage_figures.items()
            if held or "all_in_memory" not in name
        }
        report[section] = {"points": points, "growth_first_to_last": growth}
        print(json.dumps({section: points}), file=sys.stderr)

    if "gaussians" in args.sections:
        w, h = _size(args.render_size)
        points = [_child(["render", str(n), str(w), str(h), str(args.repeats)]) for n in args.gaussians]
        figures = ("forward_s", "feature_forward_backward_s", "peak_rss_mb")
        growth = {name: _growth(points, "gaussians", lambda p, k=name: p[k]) for name in figures}
        report["gaussians"] = {"points": points, "growth_first_to_last": growth}
        print(json.dumps({"gaussians": points}), file=sys.stderr)

    if "parity" in args.sections:
        report["parity"] = _parity(out, args, cache)

    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


def _parity(out: Path, args, cache: Path) -> dict:
    """Two ranks x one view against one process x two views per step (see the module docstring)."""
    import torch

    launcher = _torchrun()
    if launcher is None:
        return {"skipped": "torchrun not found"}
    width, height = _size(args.view_size)
    source = out / f"run_{args.size_views}v_{width}x{height}"
    setup = _child(["setup", str(source), str(args.size_views), str(width), str(height), str(cache)])
    if not any((source / "features").glob("*.npz")):
        _child(["prepare", str(source), setup["scene"]])
    results = {}
    for name, launch, per_rank in (("two_ranks", launcher, 1), ("one_process", None, 2)):
        run = out / f"parity_{name}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("checkpoints", "language.pt"))
        t = time.perf_counter()
        info = _child(
            ["parity", str(run), str(args.parity_steps), str(run / "parity.pt"), str(per_rank)],
            launcher=launch,
        )
        results[name] = {**torch.load(run / "parity.pt"), **info, "wall_s": round(time.perf_counter() - t, 1)}
    prepare = _prepare_two_ranks(out, source, launcher)
    a, b = results["two_ranks"], results["one_process"]
    curve_a, curve_b = torch.tensor(a["curve"]), torch.tensor(b["curve"])
    diff = (curve_a - curve_b).abs()
    return {
        "steps": args.parity_steps,
        "views_per_step": [a["views_per_step"], b["views_per_step"]],
        "loss_first_last": [round(float(curve_b[0]), 6), round(float(curve_b[-1]), 6)],
        "loss_max_abs_diff": float(diff.max()),
        "loss_max_rel_diff": float((diff / curve_b.abs().clamp(min=1e-12)).max()),
        "features_max_abs_diff": float((a["features"] - b["features"]).abs().max()),
        "features_max_abs": float(b["features"].abs().max()),
        "distill_seconds": {"two_ranks": a["seconds"], "one_process": b["seconds"]},
        "prepare_two_ranks": prepare,
    }


def _hashes(run: Path) -> dict[str, str]:
    import hashlib

    files = sorted((run / "segments").glob("[!.]*.npz")) + sorted((run / "features").glob("[!.]*.npz"))
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _prepare_two_ranks(out: Path, source: Path, launcher: list[str]) -> dict:
    """``torchrun ... -m gags prepare`` on a copy of ``source``: seconds, and byte-identical files?"""
    run = out / "parity_prepare"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("segments", "features", "checkpoints"))
    cmd = [*launcher, "-m", "gags", "prepare", str(run), "--segmenter", "oracle", "--encoder", "oracle"]
    cmd += ["--seed", "0", "--device", "cpu"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        return {"failed": done.stderr[-2000:]}
    reference, got = _hashes(source), _hashes(run)
    return {
        "wall_s_incl_start_and_model_load": round(time.perf_counter() - t, 1),
        "files": len(got),
        "byte_identical_to_one_process": got == reference,
    }


if __name__ == "__main__":
    main()
