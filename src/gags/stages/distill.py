"""``gags distill RUN``: distil the language field of a run (paper Section 3.2 for GaD).

Geometry and colour of ``splats.ply`` are frozen; the method (:mod:`gags.distill.methods`: GaD with
learned or fixed alpha, or LangSplat's three fields) trains its per-Gaussian features and decoders
through the shared loop :func:`gags.distill.train.train_field`. Writes ``language.pt`` and
``splats_language.ply``; ``checkpoints/distill.pt`` allows ``--resume``.

The training views' targets are read on demand (:class:`gags.distill.targets.ViewTargetStore`), so
memory does not grow with their targets. Under ``torchrun`` every rank renders
``--views-per-step`` views of each step and the gradients are averaged
(:mod:`gags.distill.parallel`): W ranks follow one process with W x ``--views-per-step`` views
per step. Every rank validates its inputs; rank 0 alone writes checkpoints, outputs and the record.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import tyro

from gags import distributed as dist
from gags.devices import resolve_device
from gags.distill.curve import plateau, steps_per_epoch, summarise_curve, write_curve
from gags.distill.gad import GaD
from gags.distill.langsplat import LangSplat
from gags.distill.methods import DistillContext, DistillMethod, FieldTrainer, TrainedField
from gags.distill.parallel import DataParallel
from gags.distill.render_cache import DEFAULT_CACHE_MB, view_renderers
from gags.distill.schedule import Schedule
from gags.distill.targets import ViewTargetStore
from gags.distill.train import LoopState, train_field
from gags.distill.views import ViewSampler
from gags.errors import GagsError, file_error, suggest
from gags.io import save_torch_atomic
from gags.runfolder import RunFolder, locked
from gags.scene.cameras import Camera, stack_cameras
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend
from gags.stages.tblog import LogConfig, ScalarLog, open_log, optimizer_lrs, validate_log_config

#: ``method:gad`` (default) or ``method:langsplat`` on the command line
MethodChoice = (
    Annotated[GaD, tyro.conf.subcommand("gad", prefix_name=False)]
    | Annotated[LangSplat, tyro.conf.subcommand("langsplat", prefix_name=False)]
)


#: ``--preset``: ``paper`` is the reference's 30k steps at ``-r 2``; ``quick`` the CPU defaults
PRESETS: dict[str, dict[str, object]] = {"paper": {"iterations": 30_000, "downscale": 2.0}, "quick": {}}


@dataclasses.dataclass
class DistillConfig:
    """Settings of ``gags distill``. Defaults follow the paper's equations and the reference's settings
    (spec section 3); deviations say so."""

    run: tyro.conf.Positional[Path]
    """run folder holding splats.ply, segments/ and features/ (from train-rgb and prepare)"""
    method: MethodChoice = dataclasses.field(default_factory=GaD)
    """the distillation method and its own settings: gad (GaD; alpha learned or fixed) or langsplat"""
    iterations: int = 3000
    """training steps, one view each. DEVIATION: the paper/reference use 30000 (GPU); 3000 is a CPU default"""
    downscale: float = 2.0
    """render and supervise at 1/downscale of the training cameras (reference: -r 2)"""
    feature_dim: int = 16
    """per-Gaussian feature size of GaD (reference: 16 = 512 / 32); LangSplat's is fixed at 3 per level"""
    seed: int = 0
    """seeds the view order and the initialisation"""
    resume: bool = False
    """continue from checkpoints/distill.pt if present"""
    checkpoint_every: int = 1000
    """steps between checkpoints (0: only at the end)"""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, ..."""
    backend: Backend = "auto"
    """render backend (auto: gsplat on CUDA, else the portable torch backend)"""
    progress: bool = True
    """show a progress bar"""
    schedule: Schedule = "short"
    """learning-rate schedule, scaled to --iterations, for every method alike. reference: the authors'
    constant rates (features 1e-3, decoders 1e-4, LangSplat 2.5e-3) made for 30k GPU steps; short
    (DEVIATION, default): 5% linear warm-up, cosine decay to 1%, features 3e-2 (30x), decoders and
    LangSplat fields unchanged"""
    views_per_step: int = 1
    """views rendered and averaged per step (reference: 1); under torchrun per rank, so a step averages
    WORLD_SIZE x this many views"""
    pixels_per_view: int = 0
    """supervise each view at this many of its valid pixels, drawn afresh every step (0: all, as the
    reference); the decoders' cost is proportional to the pixels. GaD methods only: LangSplat's loss
    needs no decoder and supervises every masked pixel"""
    cache_render: bool = True
    """precompute each view's compositing weights once (exact: geometry is frozen) instead of
    rasterising at every step (gags.distill.render_cache)"""
    render_cache_mb: float = DEFAULT_CACHE_MB
    """memory budget of --cache-render, MB: views first rendered after it is spent are rasterised at
    every step, so memory stays bounded however many views the scene has"""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """TensorBoard: loss terms, mean alpha per level, learning rates (RUN/tensorboard/distill)"""


def load_frozen_splats(run: RunFolder, device: torch.device) -> Gaussians:
    """The run's RGB Gaussians, detached (geometry and colour stay frozen)."""
    from gags.splats.ply import load_ply

    path = run.require(run.splats, f"gags train-rgb ... --out {run.root}")
    gaussians = load_ply(path).detach().to(device)
    if len(gaussians) == 0:
        raise file_error(path, "holds no Gaussians")
    return gaussians


def encoder_spec(run: RunFolder) -> dict[str, Any]:
    """``config.json["prepare"]["encoder"]`` (so queries rebuild the same text encoder)."""
    prepare = run.stage_entry("prepare")
    if not isinstance(prepare, dict) or not isinstance(prepare.get("encoder"), dict):
        raise file_error(
            run.config, f"has no prepare.encoder entry: run {suggest('gags', 'prepare', run.root)} first"
        )
    return prepare["encoder"]


def load_training_views(run: RunFolder, downscale: float, device: torch.device) -> ViewTargetStore:
    """The training views' targets at the distillation resolution, on ``device`` (read on demand;
    every view checked once, under torchrun by the ranks in turn)."""
    from gags.scene.load import check_image_sizes, load_run_scene

    scene = load_run_scene(run)
    if not scene.train_cameras:
        raise file_error(run.config, "the scene has no training cameras")
    check_image_sizes([c.scaled(downscale) for c in scene.train_cameras], run.root, "downscale", downscale)
    return ViewTargetStore(run, scene.train_cameras, downscale, device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@locked("distill", lambda cfg: cfg.run)
def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Train the language field of ``cfg.run``; write language.pt and splats_language.ply.

    Returns metrics: iterations, seconds, final loss terms, mean alpha per level, peak memory (MB).
    """
    if cfg.iterations < 1:
        raise GagsError(f"--iterations must be at least 1, got {cfg.iterations}")
    if cfg.views_per_step < 1 or cfg.pixels_per_view < 0:
        raise GagsError("--views-per-step must be at least 1 and --pixels-per-view at least 0")
    if cfg.feature_dim < 1:
        raise GagsError(f"--feature-dim must be at least 1, got {cfg.feature_dim}")
    if not (cfg.downscale > 0 and cfg.downscale < float("inf")):
        raise GagsError(f"--downscale must be a positive number, got {cfg.downscale}")
    if not (0 <= cfg.render_cache_mb < float("inf")):
        raise GagsError(f"--render-cache-mb must be a number of MB >= 0, got {cfg.render_cache_mb}")
    if cfg.checkpoint_every < 0:
        raise GagsError(f"--checkpoint-every must be >= 0 (0: only at the end), got {cfg.checkpoint_every}")
    validate_log_config(cfg.log)
    run = RunFolder(cfg.run)
    device = resolve_device(cfg.device)
    spec = encoder_spec(run)
    run.check_unchanged("prepare", run.splats, f"run {suggest('gags', 'prepare', run.root, '--overwrite')}")
    gaussians = load_frozen_splats(run, device)
    views = load_training_views(run, cfg.downscale, device)
    embed_dim = views.embed_dim
    method: DistillMethod = cfg.method
    progress = cfg.progress and dist.is_main()
    t0 = time.perf_counter()
    ctx = DistillContext(
        len(gaussians), views, embed_dim, cfg.feature_dim, cfg.iterations, cfg.seed, device, progress
    )
    ctx.schedule = cfg.schedule
    trainer = method.trainer(ctx)
    parallel = DataParallel(trainer, cfg.views_per_step, views)  # the identity in a plain process
    state = LoopState(0, parallel.sampler(ViewSampler(len(views), cfg.seed)))

    ckpt_path = run.checkpoints / "distill.pt"
    if cfg.resume and ckpt_path.exists():
        _load_checkpoint(ckpt_path, cfg, trainer, state)
    parallel.start()  # every rank continues from rank 0's state
    start = state.step

    # timed: part of the cost
    renderers = view_renderers(
        gaussians, views.view_cameras, cfg.backend, cfg.cache_render, cfg.render_cache_mb
    )
    curve: list[dict[str, float]] = []
    epoch = steps_per_epoch(len(views), parallel.views_per_step)  # of the whole step, over the ranks
    # one writer of the TensorBoard events (rank 0's own losses; distill_curve.json has the ranks' mean)
    logging = start < cfg.iterations and dist.is_main()
    tb = open_log(cfg.log, run.root, "distill", start) if logging else ScalarLog(None)
    images = (
        field_images_logger(tb, trainer, gaussians, views.view_cameras[0], embed_dim, cfg)
        if tb.enabled
        else None
    )
    try:
        stats = train_field(
            trainer,
            renderers,
            views,
            cfg.iterations,
            state,
            schedule=cfg.schedule,
            views_per_step=cfg.views_per_step,
            pixels_per_view=cfg.pixels_per_view,
            seed=cfg.seed,
            log=curve_logger(curve, tb, trainer, cfg.iterations, images),
            checkpoint=lambda s: _save_checkpoint(ckpt_path, cfg, trainer, s),
            checkpoint_every=cfg.checkpoint_every,
            progress=progress,
            desc=f"distill ({method.name})",
            after_backward=parallel.after_backward,
            first_draw=parallel.first_draw,
        )
        views.close()
        curve = parallel.mean_records(curve)  # the loss of every step's views, over the ranks
        stats = parallel.mean_records([stats])[0]
        seconds = time.perf_counter() - t0
        summary = summarise_curve(curve, epoch, start)
        if dist.is_main():  # one writer; every rank holds the same trained state
            _save_checkpoint(ckpt_path, cfg, trainer, state)
            write_language_outputs(run, gaussians, trainer.result(), method, embed_dim, spec, cfg)
            write_curve(run, curve, summary)
            run.record_stage(
                "distill",
                cfg,
                inputs=[run.splats, run.segments, run.features],
                outputs=[run.language, run.splats_language],
            )
        dist.barrier()  # every rank returns once the outputs are written and recorded
    except Exception:
        tb.discard()  # a failed stage leaves the run folder's logs as they were
        raise
    finally:
        tb.close()
    return {
        "method": method.name,
        "iterations": cfg.iterations,
        "steps_run": cfg.iterations - start,
        "views_per_step": parallel.views_per_step,
        "ranks": dist.world_size(),
        "seconds": seconds,
        "peak_memory_mb": peak_memory_mb(device),
        "views": len(views),
        "gaussians": len(gaussians),
        "embed_dim": embed_dim,
        "curve": curve,
        "plateau": summary["plateau"].get("distill") or plateau([], epoch),
        **stats,
    }


def field_images_logger(
    tb: ScalarLog,
    trainer: FieldTrainer,
    gaussians: Gaussians,
    camera: Camera,
    embed_dim: int,
    cfg: DistillConfig,
) -> Callable[[int], None]:
    """TensorBoard images of the field being trained, in one training view at the supervision
    resolution: ``field/pca`` (the first level's per-Gaussian features in false colour,
    :class:`gags.query.pictures.PCABasis`) and, for a learnt alpha, ``field/alpha_argmax`` (the paper's
    Fig. 6 map, :mod:`gags.distill.alpha`). Built from the trainer's current state through the same
    ``language.pt`` dict the stage writes, rendered on the CPU."""
    from gags.distill.alpha import alpha_argmax_maps, colourise
    from gags.distill.field import LanguageField
    from gags.query.pictures import PCABasis

    cpu_splats = gaussians.to("cpu")
    viewmats, Ks = stack_cameras([camera])

    def log(step: int) -> None:
        payload = language_payload(trainer.result(), cfg.method, embed_dim, {}, cfg)
        field = LanguageField.from_payload(payload, cpu_splats)
        out = field.render_field(0, viewmats, Ks, camera.width, camera.height, cfg.backend)
        pca = PCABasis(field.fields[0].numpy()).colors(out.features[0].numpy(), out.alpha[0].numpy())
        tb.image("field/pca", step, torch.from_numpy(pca).float() / 255)
        if field.method == "gags":
            levels = alpha_argmax_maps(field, viewmats, Ks, camera.width, camera.height, cfg.backend)[0]
            tb.image("field/alpha_argmax", step, colourise(levels))

    return log


def curve_logger(
    curve: list[dict[str, float]],
    tb: ScalarLog,
    trainer: FieldTrainer,
    iterations: int,
    images: Callable[[int], None] | None = None,
) -> Callable[[dict[str, float]], None]:
    """The loop's ``log`` callback: append each step's record to ``curve`` (distill_curve.json) and, every
    ``--log.every`` steps and at the last, write it to TensorBoard: ``loss/*`` (total and each term),
    ``alpha/LEVEL`` (mean alpha per level), ``lr/factor`` (schedule) and ``lr/GROUP`` (current rates);
    every ``--log.images-every`` steps and at the last, call ``images`` with the step."""

    def log(record: dict[str, float]) -> None:
        curve.append(record)
        step = int(record["step"])
        if images is not None and tb.images_due(step, last=step == iterations):
            images(step)
        if not tb.due(step, last=step == iterations):
            return
        values = {"lr/factor": record["lr"]}
        for key, value in record.items():
            if key.startswith("alpha_"):
                values[f"alpha/{key[len('alpha_') :]}"] = value
            elif key not in ("step", "lr"):
                values[f"loss/{key}"] = value
        tb.scalars(step, {**values, **optimizer_lrs(trainer.optimizers)})

    return log


def write_language_outputs(
    run: RunFolder,
    gaussians: Gaussians,
    trained: TrainedField,
    method: DistillMethod,
    embed_dim: int,
    encoder: dict[str, Any],
    cfg: DistillConfig,
) -> None:
    """Write ``language.pt`` (plain tensors and dicts: ``weights_only`` loadable) and
    ``splats_language.ply`` (splats plus ``semantic[_LEVEL]_i`` channels per level)."""
    from gags.splats.ply import save_ply

    save_torch_atomic(run.language, language_payload(trained, method, embed_dim, encoder, cfg))
    prefixes = ["semantic"] if len(trained.features) == 1 else [f"semantic_{n}" for n in trained.levels]
    channels = torch.cat([f.cpu() for f in trained.features], dim=1)
    names = [f"{p}_{i}" for p, f in zip(prefixes, trained.features, strict=True) for i in range(f.shape[1])]
    save_ply(
        run.splats_language, dataclasses.replace(gaussians.to("cpu"), features=channels, feature_names=names)
    )


def language_payload(
    trained: TrainedField, method: DistillMethod, embed_dim: int, encoder: dict[str, Any], cfg: DistillConfig
) -> dict[str, Any]:
    """The ``language.pt`` dict of a trained field: plain tensors and dicts only (``weights_only``)."""
    return {
        "format": 2,
        "features": torch.stack(trained.features) if len(trained.features) > 1 else trained.features[0],
        "levels": list(trained.levels),
        "decoder": {k: v.cpu() for k, v in trained.decoder.state_dict().items()},
        "decoder_config": trained.decoder_config,
        "embed_dim": embed_dim,
        "method": method.name,
        "encoder": encoder,
        "config": _plain(dataclasses.asdict(cfg)),
        **trained.extra,
    }


def _plain(value: Any) -> Any:
    """A config dict with paths as strings and tuples as lists (JSON- and weights_only-safe)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _resume_key(cfg: DistillConfig) -> dict[str, Any]:
    """Settings that must match between a checkpoint and the run that resumes it."""
    return _plain(
        {
            "method": cfg.method.name,
            "method_settings": dataclasses.asdict(cfg.method),
            "feature_dim": cfg.feature_dim,
            "downscale": cfg.downscale,
            "iterations": cfg.iterations,
            "schedule": cfg.schedule,
            "views_per_step": cfg.views_per_step * dist.world_size(),  # of the whole step
            "pixels_per_view": cfg.pixels_per_view,
        }
    )


def _save_checkpoint(path: Path, cfg: DistillConfig, trainer: FieldTrainer, state: LoopState) -> None:
    if not dist.is_main():
        return  # one writer; every rank holds the same state
    save_torch_atomic(
        path, {"config": _resume_key(cfg), "trainer": trainer.state_dict(), **state.state_dict()}
    )


def checkpoint_matches(cfg: DistillConfig) -> bool:
    """Whether ``RUN/checkpoints/distill.pt`` exists and was written with ``cfg``'s settings (so
    ``--resume`` would continue it rather than refuse)."""
    path = RunFolder(cfg.run).checkpoints / "distill.pt"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing or unreadable: nothing to resume
        return False
    return isinstance(saved, dict) and saved.get("config") == _resume_key(cfg)


def _load_checkpoint(path: Path, cfg: DistillConfig, trainer: FieldTrainer, state: LoopState) -> None:
    """Restore a checkpoint into ``trainer`` and ``state``; errors name the file and the mismatch."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise file_error(
            path,
            f"is not a readable distillation checkpoint ({type(e).__name__}); delete it or drop --resume",
        ) from e
    if not isinstance(saved, dict) or not {"config", "trainer", "step", "sampler"} <= saved.keys():
        raise file_error(path, "is not a distillation checkpoint written by gags distill; drop --resume")
    expected = _resume_key(cfg)
    recorded = saved["config"] if isinstance(saved["config"], dict) else {}
    for key, value in expected.items():
        if recorded.get(key) != value:
            raise file_error(
                path,
                f"was written with {key}={recorded.get(key)!r}, not {value!r}; "
                "resume with the same settings or drop --resume",
            )
    try:
        trainer.load_state_dict(saved["trainer"])
        state.sampler.load_state_dict(saved["sampler"])
    except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as e:
        raise file_error(path, f"does not match this run ({type(e).__name__}: {e}); drop --resume") from e
    if not isinstance(saved["step"], int) or saved["step"] < 0:
        raise file_error(path, f"has an invalid step {saved['step']!r}; drop --resume")
    state.step = min(int(saved["step"]), cfg.iterations)


def main(cfg: DistillConfig) -> None:
    """``gags distill``: run and print one summary line."""
    m = distill(cfg)
    print(f"gags distill: {m['method']}, {m['steps_run']} steps in {m['seconds']:.1f}s; wrote {cfg.run}")
