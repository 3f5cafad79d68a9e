"""``gags distill RUN``: GaD training of the 16-d language field (paper Section 3.2).

Geometry and colour of ``splats.ply`` are frozen; only the per-Gaussian feature (init 0) and the
decoders train. Each step renders ``views_per_step`` random training views (one in the reference;
without replacement within an epoch) at ``1 / downscale`` resolution, through cached compositing
weights (:mod:`gags.distill.render_cache`) or :func:`gags.splats.render.render`'s feature channels, and
applies :func:`gags.distill.objective.gad_loss`; learning rates follow ``schedule``
(:mod:`gags.distill.schedule`) and the per-step loss terms go to ``distill_curve.json``
(:mod:`gags.distill.curve`). Writes ``language.pt`` and ``splats_language.ply``;
``checkpoints/distill.pt`` allows ``--resume``.

The same loop trains the fixed-alpha baselines (``--method average`` / ``single-*``); ``langsplat``
is delegated to :mod:`gags.baselines.langsplat`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
import tyro
from tqdm import tqdm

from gags.devices import resolve_device
from gags.distill.curve import plateau, write_curve
from gags.distill.decoders import AlphaInit, DecoderForm, GaDDecoders, decoder_config
from gags.distill.losses import ConsistencyForm, DistillLoss, loss_weights
from gags.distill.objective import LossOptions, Method, fixed_alpha, gad_loss
from gags.distill.render_cache import view_renderers
from gags.distill.schedule import Schedule, learning_rates, lr_factor, set_lr
from gags.distill.views import ViewSampler, ViewTargets, load_all_view_targets
from gags.errors import GagsError, file_error
from gags.io import save_torch_atomic
from gags.run import RunFolder
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend, render


@dataclasses.dataclass
class DistillConfig:
    """Settings of ``gags distill``. Defaults follow the paper's equations and the reference's settings
    (spec section 3); deviations say so."""

    run: tyro.conf.Positional[Path]
    """run folder holding splats.ply, segments/ and features/ (from train-rgb and prepare)"""
    method: Method = "gags"
    """gags (GaD), average (alpha = 1/3), single-subpart / single-part / single-whole, or langsplat"""
    iterations: int = 3000
    """training steps, one view each. DEVIATION: the paper/reference use 30000 (GPU); 3000 is a CPU default"""
    downscale: float = 2.0
    """render and supervise at 1/downscale of the training cameras (reference: -r 2)"""
    feature_dim: int = 16
    """per-Gaussian feature size (reference: 16 = 512 / 32)"""
    decoder_form: DecoderForm = "shared-two-heads"
    """shared-two-heads: paper Eq. 2 (one D, two heads); reference-two-nets: authors' two nets"""
    distill_loss: DistillLoss = "paper-l2"
    """paper-l2: Eq. 3 sum_n alpha_n ||f - f_n||^2; reference-l1: authors' L1 to the alpha-mixed target"""
    consistency: ConsistencyForm = "paper"
    """paper: Eq. 6 on f_clip; reference: |R|-weighted variance of the 16-d render over H'W'"""
    region_aware: bool = True
    """Eq. 5: every region of m_f counts equally (False: plain mean over pixels)"""
    smooth_kernel: int = 5
    """box filter on alpha before the argmax that builds m_f (reference: 5)"""
    feature_lr: float | None = None
    """peak Adam learning rate of the per-Gaussian features (eps 1e-15); None: the schedule's
    (reference 1e-3, short 1e-2; see gags.distill.schedule)"""
    decoder_lr: float | None = None
    """peak Adam learning rate of the decoders; None: the schedule's (reference 1e-4, short 1e-3)"""
    entropy_weights: tuple[float, float] = (0.001, 0.002)
    """lambda_entropy before / after the switch (reference; the paper gives none)"""
    consistency_weight: float = 0.1
    """lambda_consistency after the switch, 0 before (reference)"""
    switch_at: float = 0.5
    """fraction of the iterations where the weights switch (reference: iteration 15001 of 30000)"""
    langsplat_lr: float | None = None
    """langsplat only: peak learning rate of the three 3-d fields; None: the schedule's (reference
    0.0025 = LangSplat, short 1e-2)"""
    autoencoder_epochs: int = 100
    """langsplat only: epochs of the encoder_dim -> 3 autoencoder (LangSplat: 100)"""
    seed: int = 0
    """seeds the view order and the decoders' initialisation"""
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

    # --- convergence at CPU budgets and alpha options (issue 8; gags.distill.schedule / decoders) ---
    schedule: Schedule = "short"
    """learning-rate schedule, scaled to --iterations, for every method alike. reference: the authors'
    constant rates (features 1e-3, decoders 1e-4, LangSplat 2.5e-3) made for 30k GPU steps; short
    (DEVIATION, default): 5% linear warm-up, cosine decay to 1%, peak rates 10x / 10x / 4x higher"""
    views_per_step: int = 1
    """views rendered and averaged per step (reference: 1)"""
    pixels_per_view: int = 0
    """supervise each view at this many of its valid pixels, drawn afresh every step (0: all, as the
    reference); the decoders' cost is proportional to the pixels (ViewTargets.subsample)"""
    cache_render: bool = True
    """precompute each view's compositing weights once (exact: geometry is frozen) instead of
    rasterising at every step (gags.distill.render_cache)"""
    alpha_init: AlphaInit = "default"
    """granularity branch initialisation. default: PyTorch's (paper/reference); uniform: last layer
    zero, so alpha starts at exactly 1/3 everywhere (not in the paper or reference)"""
    alpha_warmup: float = 0.0
    """EXPERIMENTAL (in neither the paper nor the reference): fraction of the run during which gags
    uses alpha = 1/3 (averaged targets) before learning alpha; 0 = off"""


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
    prepare = run.read_config().get("prepare")
    if not isinstance(prepare, dict) or "encoder" not in prepare:
        raise file_error(run.config, f"has no prepare.encoder entry: run `gags prepare {run.root}` first")
    return prepare["encoder"]


def load_training_views(run: RunFolder, downscale: float, device: torch.device) -> list[ViewTargets]:
    """The training views' targets at the distillation resolution, on ``device``."""
    from gags.scene.load import load_run_scene

    scene = load_run_scene(run)
    if not scene.train_cameras:
        raise file_error(run.config, "the scene has no training cameras")
    views = load_all_view_targets(run, scene.train_cameras, downscale)
    return [
        dataclasses.replace(
            v, maps=v.maps.to(device), features=v.features.to(device), valid=v.valid.to(device)
        )
        for v in views
    ]


def render_field(
    gaussians: Gaussians, field: torch.Tensor, view: ViewTargets, backend: Backend
) -> torch.Tensor:
    """Render per-Gaussian ``field`` (N, F) into ``view``: (H', W', F), background 0."""
    viewmats, Ks = view.camera_tensors(field.device)
    out = render(
        dataclasses.replace(gaussians, features=field),
        viewmats,
        Ks,
        view.camera.width,
        view.camera.height,
        render_rgb=False,
        render_features=True,
        backend=backend,
    )
    return out.features[0]


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Train the language field of ``cfg.run``; write language.pt and splats_language.ply.

    Returns metrics: iterations, seconds, final loss terms, mean alpha per level, peak memory (MB).
    """
    if cfg.method == "langsplat":
        from gags.baselines.langsplat import train_langsplat

        return train_langsplat(cfg)
    if cfg.iterations < 1:
        raise GagsError(f"--iterations must be at least 1, got {cfg.iterations}")
    run = RunFolder(cfg.run)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    spec = encoder_spec(run)
    gaussians = load_frozen_splats(run, device)
    views = load_training_views(run, cfg.downscale, device)
    embed_dim = int(views[0].features.shape[1])

    alpha_const = fixed_alpha(cfg.method)
    decoders = GaDDecoders(
        cfg.decoder_form,
        embed_dim,
        cfg.feature_dim,
        learn_alpha=alpha_const is None,
        alpha_init=cfg.alpha_init,
    ).to(device)
    field = torch.zeros(len(gaussians), cfg.feature_dim, device=device, requires_grad=True)
    lrs = learning_rates(cfg)
    opt_field = torch.optim.Adam([field], lr=lrs["feature"], eps=1e-15)
    opt_dec = torch.optim.Adam(decoders.parameters(), lr=lrs["decoder"])
    alpha_warm_steps = int(round(cfg.alpha_warmup * cfg.iterations)) if alpha_const is None else 0
    sampler = ViewSampler(len(views), cfg.seed)
    options = LossOptions(cfg.distill_loss, cfg.consistency, cfg.region_aware, cfg.smooth_kernel)

    ckpt_path = run.checkpoints / "distill.pt"
    start = 0
    if cfg.resume and ckpt_path.exists():
        start = _load_checkpoint(ckpt_path, cfg, field, decoders, opt_field, opt_dec, sampler)
    run.record_stage("distill", cfg)

    t0 = time.perf_counter()
    renderers = view_renderers(gaussians, views, cfg.backend, cfg.cache_render)  # timed: part of the cost
    stats: dict[str, float] = {}
    bar = tqdm(
        range(start, cfg.iterations),
        desc=f"distill ({cfg.method})",
        disable=not cfg.progress,
        initial=start,
        total=cfg.iterations,
    )
    curve: list[dict[str, float]] = []
    for step in bar:
        factor = lr_factor(cfg.schedule, step, cfg.iterations)
        set_lr(opt_field, [lrs["feature"]], factor)
        set_lr(opt_dec, [lrs["decoder"]], factor)
        lam_ent, lam_cons = loss_weights(
            step / cfg.iterations, cfg.entropy_weights, cfg.consistency_weight, cfg.switch_at
        )
        alpha_now = fixed_alpha("average") if step < alpha_warm_steps else alpha_const
        batch = [sampler.next() for _ in range(cfg.views_per_step)]
        terms = [
            gad_loss(
                renderers[i](field),
                views[i].subsample(cfg.pixels_per_view, seed=(cfg.seed * 1_000_003 + step) * 1_009 + k),
                decoders,
                alpha_now,
                options,
                lam_ent,
                lam_cons,
            )
            for k, i in enumerate(batch)
        ]
        loss = sum(t[0] for t in terms) / len(terms)
        stats = {k: sum(t[1][k] for t in terms) / len(terms) for k in terms[0][1]}
        curve.append({"step": step + 1, "lr": factor, "loss": float(loss.detach()), **stats})
        opt_field.zero_grad(set_to_none=True)
        opt_dec.zero_grad(set_to_none=True)
        loss.backward()
        opt_field.step()
        opt_dec.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            _save_checkpoint(ckpt_path, cfg, done, field, decoders, opt_field, opt_dec, sampler)
    seconds = time.perf_counter() - t0

    _save_checkpoint(ckpt_path, cfg, cfg.iterations, field, decoders, opt_field, opt_dec, sampler)
    payload = {
        "features": field.detach().cpu(),
        "decoder": {k: v.cpu() for k, v in decoders.feature.state_dict().items()},
        "decoder_config": decoder_config(cfg.decoder_form, embed_dim, cfg.feature_dim),
        "granularity_decoder": None
        if decoders.granularity is None
        else {k: v.cpu() for k, v in decoders.granularity.state_dict().items()},
        "embed_dim": embed_dim,
        "method": cfg.method,
        "encoder": spec,
        "config": dataclasses.asdict(cfg),
    }
    write_language_outputs(run, gaussians, payload, [field.detach()], ["semantic"])
    write_curve(run, curve, start)
    return {
        "method": cfg.method,
        "iterations": cfg.iterations,
        "steps_run": cfg.iterations - start,
        "seconds": seconds,
        "curve": curve,
        "plateau": plateau([c["distill"] for c in curve]),
        "peak_memory_mb": peak_memory_mb(device),
        "views": len(views),
        "gaussians": len(gaussians),
        "embed_dim": embed_dim,
        **stats,
    }


def write_language_outputs(
    run: RunFolder, gaussians: Gaussians, payload: dict, fields: list[torch.Tensor], prefixes: list[str]
) -> None:
    """Write ``language.pt`` and ``splats_language.ply`` (splats plus ``PREFIX_i`` channels per field)."""
    from gags.splats.ply import save_ply

    payload["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in payload["config"].items()}
    save_torch_atomic(run.language, payload)
    channels = torch.cat([f.cpu() for f in fields], dim=1)
    names = [f"{p}_{i}" for p, f in zip(prefixes, fields, strict=True) for i in range(f.shape[1])]
    save_ply(
        run.splats_language, dataclasses.replace(gaussians.to("cpu"), features=channels, feature_names=names)
    )


#: settings that must match between a checkpoint and the run that resumes it
_RESUME_KEYS = ("method", "feature_dim", "decoder_form", "downscale")


def _save_checkpoint(path: Path, cfg, step: int, field, decoders, opt_field, opt_dec, sampler) -> None:
    save_torch_atomic(
        path,
        {
            "step": step,
            "config": {k: getattr(cfg, k) for k in _RESUME_KEYS},
            "field": field.detach().cpu(),
            "decoders": decoders.state_dict(),
            "opt_field": opt_field.state_dict(),
            "opt_dec": opt_dec.state_dict(),
            "sampler": sampler.state_dict(),
        },
    )


def _load_checkpoint(path: Path, cfg, field, decoders, opt_field, opt_dec, sampler) -> int:
    """Restore a checkpoint into the given objects; returns the step to continue from."""
    try:
        state = torch.load(path, map_location=field.device, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise file_error(path, f"is not a readable distillation checkpoint ({e})") from e
    saved = state.get("config", {})
    for key in _RESUME_KEYS:
        if saved.get(key) != getattr(cfg, key):
            raise file_error(
                path,
                f"was written with {key}={saved.get(key)!r}, not {getattr(cfg, key)!r}; "
                "resume with the same settings or drop --resume",
            )
    if state["field"].shape != field.shape:
        raise file_error(
            path, f"holds {state['field'].shape[0]} Gaussians but splats.ply has {field.shape[0]}"
        )
    with torch.no_grad():
        field.copy_(state["field"].to(field.device))
    decoders.load_state_dict(state["decoders"])
    opt_field.load_state_dict(state["opt_field"])
    opt_dec.load_state_dict(state["opt_dec"])
    sampler.load_state_dict(state["sampler"])
    return min(int(state["step"]), cfg.iterations)
