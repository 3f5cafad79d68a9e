"""LangSplat on the same engine (``gags distill RUN --method langsplat``).

Three fields, one per level (subpart, part, whole), each a 3-d per-Gaussian feature L2-normalised
before rasterisation, supervised by the autoencoder's 3-d codes of the level's mask features with a
masked L1 loss (pixels where that level has a mask); geometry frozen (LangSplat train.py).

Same engine, same data, same renderer, same view sampling as GaD. Differences from LangSplat's code:

- the three fields train in one loop with one 9-channel render per step; Adam and the losses are
  separable per level, so this equals three runs with the same view order at a third of the renders;
- DEVIATION: features start as small seeded random vectors (LangSplat: zeros, where the
  normalisation's gradient is singular and Adam's first step dwarfs all later ones);
- iterations are ``--iterations`` (LangSplat: 30000 per level);
- the learning rate follows ``--schedule`` like every other method (``reference``: LangSplat's constant
  0.0025), ``--views-per-step`` views per step, and the cached compositing weights
  (:mod:`gags.distill.render_cache`) unless ``--no-cache-render``.

Queries decode each level separately (:class:`gags.distill.field.LanguageField`, three renders).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gags.baselines.autoencoder import autoencoder_config, train_autoencoder
from gags.distill.views import ViewSampler, ViewTargets
from gags.errors import GagsError
from gags.run import RunFolder
from gags.segment.segmenter import LEVELS

if TYPE_CHECKING:
    from gags.distill.train import DistillConfig

LATENT = 3


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LangSplat's loss: mean over (pixel, channel) of |pred m - target m|; (H, W, C), (H, W, C), (H, W)."""
    m = mask[..., None].to(pred.dtype)
    return (pred * m - target * m).abs().mean()


def level_codes(view: ViewTargets, codes: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(target (H', W', 3), mask (H', W')) of one level: the code of each pixel's mask, 0 where none."""
    ids = view.maps[level]
    mask = ids >= 0
    return torch.where(mask[..., None], codes[ids.clamp(min=0)], torch.zeros((), device=codes.device)), mask


def train_langsplat(cfg: DistillConfig) -> dict[str, Any]:
    """Train the autoencoder and the three 3-d fields; write language.pt and splats_language.ply."""
    from gags.devices import resolve_device
    from gags.distill.curve import plateau, write_curve
    from gags.distill.render_cache import view_renderers
    from gags.distill.schedule import learning_rates, lr_factor, set_lr
    from gags.distill.train import (
        encoder_spec,
        load_frozen_splats,
        load_training_views,
        peak_memory_mb,
        write_language_outputs,
    )

    if cfg.iterations < 1:
        raise GagsError(f"--iterations must be at least 1, got {cfg.iterations}")
    run = RunFolder(cfg.run)
    device = resolve_device(cfg.device)
    spec = encoder_spec(run)
    gaussians = load_frozen_splats(run, device)
    views = load_training_views(run, cfg.downscale, device)
    embed_dim = int(views[0].features.shape[1])
    run.record_stage("distill", cfg)
    t0 = time.perf_counter()

    all_features = torch.cat([v.features for v in views])  # every mask feature of the scene
    autoencoder, ae_loss = train_autoencoder(
        all_features, epochs=cfg.autoencoder_epochs, seed=cfg.seed, progress=cfg.progress
    )
    with torch.no_grad():
        view_codes = [autoencoder.encoder(v.features) for v in views]  # (N_v, 3) each

    g = torch.Generator().manual_seed(cfg.seed)
    init = 0.01 * torch.randn(len(gaussians), len(LEVELS), LATENT, generator=g)
    raw = init.to(device).requires_grad_(True)
    lr = learning_rates(cfg)["langsplat"]
    opt = torch.optim.Adam([raw], lr=lr, eps=1e-15)
    sampler = ViewSampler(len(views), cfg.seed)
    renderers = view_renderers(gaussians, views, cfg.backend, cfg.cache_render)
    loss = torch.zeros(())
    curve: list[dict[str, float]] = []
    for step in tqdm(range(cfg.iterations), desc="distill (langsplat)", disable=not cfg.progress):
        factor = lr_factor(cfg.schedule, step, cfg.iterations)
        set_lr(opt, [lr], factor)
        batch = [sampler.next() for _ in range(cfg.views_per_step)]
        flat = F.normalize(raw, dim=-1).reshape(len(gaussians), -1)
        loss = 0.0
        for i in batch:
            rendered = renderers[i](flat)
            loss = loss + sum(
                masked_l1(
                    rendered[..., LATENT * lv : LATENT * (lv + 1)], *level_codes(views[i], view_codes[i], lv)
                )
                for lv in range(len(LEVELS))
            )
        loss = loss / len(batch)
        curve.append(
            {"step": step + 1, "lr": factor, "loss": float(loss.detach()), "distill": float(loss.detach())}
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0

    fields = F.normalize(raw.detach(), dim=-1).permute(1, 0, 2).contiguous().cpu()  # (3, N, 3) as rasterised
    payload = {
        "features": fields,
        "decoder": {k: v.cpu() for k, v in autoencoder.decoder.state_dict().items()},
        "decoder_config": autoencoder_config(embed_dim, LATENT),
        "encoder_state": {k: v.cpu() for k, v in autoencoder.encoder.state_dict().items()},
        "granularity_decoder": None,
        "embed_dim": embed_dim,
        "method": "langsplat",
        "encoder": spec,
        "config": dataclasses.asdict(cfg),
    }
    write_language_outputs(run, gaussians, payload, list(fields), [f"semantic_{name}" for name in LEVELS])
    write_curve(run, curve)
    return {
        "method": "langsplat",
        "iterations": cfg.iterations,
        "steps_run": cfg.iterations,
        "seconds": seconds,
        "peak_memory_mb": peak_memory_mb(device),
        "views": len(views),
        "gaussians": len(gaussians),
        "embed_dim": embed_dim,
        "autoencoder_loss": ae_loss,
        "distill": float(loss.detach()),
        "curve": curve,
        "plateau": plateau([c["distill"] for c in curve]),
    }
