"""LangSplat as a distillation method on the same engine (``gags distill RUN method:langsplat``).

Three fields, one per level (subpart, part, whole), each a 3-d per-Gaussian feature L2-normalised
before rasterisation, supervised by the autoencoder's 3-d codes of the level's mask features with a
masked L1 loss (pixels where that level has a mask); geometry frozen (LangSplat train.py).

Same engine, same data, same renderer, same view sampling as GaD. Differences from LangSplat's code:

- the three fields train in one loop with one 9-channel render per step; Adam and the losses are
  separable per level, so this equals three runs with the same view order at a third of the renders;
- DEVIATION: features start as small seeded random vectors (LangSplat: zeros, where the
  normalisation's gradient is singular and Adam's first step dwarfs all later ones);
- iterations are ``--iterations`` (LangSplat: 30000 per level).

Queries decode each level separately (:class:`gags.distill.field.LanguageField`, three renders).
The learning rate and the autoencoder's epochs are this method's own settings (:class:`LangSplat`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from gags.distill.autoencoder import Autoencoder, autoencoder_config, train_autoencoder
from gags.distill.methods import DistillContext, TrainedField
from gags.distill.schedule import peak_lr
from gags.distill.targets import mask_features
from gags.distill.views import ViewTargets
from gags.models.segmenter import LEVELS

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


@dataclasses.dataclass(frozen=True)
class LangSplat:
    """LangSplat's three 3-d fields, one per level, through a scene autoencoder."""

    lr: float | None = None
    """peak Adam learning rate of the three 3-d fields; None: the schedule's (reference 0.0025 =
    LangSplat's rate, in both schedules; gags.distill.schedule)"""
    autoencoder_epochs: int = 100
    """epochs of the encoder_dim -> 3 autoencoder, trained before the fields (LangSplat: 100)"""
    autoencoder_max_features: int = 262_144
    """DEVIATION: the autoencoder trains on at most this many mask features (a seeded uniform subset
    beyond it; LangSplat: all of them) so its memory is bounded in the number of views; 0 = no cap"""

    @property
    def name(self) -> str:
        return "langsplat"

    @property
    def level_names(self) -> tuple[str, ...]:
        return LEVELS

    def trainer(self, ctx: DistillContext) -> LangSplatTrainer:
        return LangSplatTrainer(self, ctx)


class LangSplatTrainer:
    """Per-run state of :class:`LangSplat`: the fitted autoencoder, every view's 3-d codes, and the
    (N, 3, 3) raw fields (L2-normalised per level before rasterisation)."""

    def __init__(self, method: LangSplat, ctx: DistillContext) -> None:
        self.method = method
        self.embed_dim = ctx.embed_dim
        # every mask feature of the scene (up to the cap), read one view at a time
        all_features = mask_features(ctx.views, method.autoencoder_max_features, ctx.seed)
        self.autoencoder, self.autoencoder_loss = train_autoencoder(
            all_features, epochs=method.autoencoder_epochs, seed=ctx.seed, progress=ctx.progress
        )
        self.views = ctx.views
        self._encode_views()
        g = torch.Generator().manual_seed(ctx.seed)
        init = 0.01 * torch.randn(ctx.num_gaussians, len(LEVELS), LATENT, generator=g)
        self.raw = init.to(ctx.device).requires_grad_(True)
        lr = peak_lr(ctx.schedule, "langsplat", method.lr)
        self.optimizers = [torch.optim.Adam([self.raw], lr=lr, eps=1e-15)]

    def _encode_views(self) -> None:
        with torch.no_grad():
            self.view_codes = [self.autoencoder.encoder(v.features) for v in self.views]  # (N_v, 3) each

    def channels(self) -> torch.Tensor:
        return F.normalize(self.raw, dim=-1).reshape(self.raw.shape[0], -1)

    def loss(
        self, rendered: torch.Tensor, view: ViewTargets, view_index: int, progress: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        codes = self.view_codes[view_index]
        loss = sum(
            masked_l1(rendered[..., LATENT * lv : LATENT * (lv + 1)], *level_codes(view, codes, lv))
            for lv in range(len(LEVELS))
        )
        return loss, {"distill": float(loss.detach()), "autoencoder_loss": self.autoencoder_loss}

    def state_dict(self) -> dict[str, Any]:
        return {
            "raw": self.raw.detach().cpu(),
            "autoencoder": self.autoencoder.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["raw"].shape != self.raw.shape:
            raise ValueError(
                f"holds fields of shape {tuple(state['raw'].shape)}, the run needs {tuple(self.raw.shape)}"
            )
        with torch.no_grad():
            self.raw.copy_(state["raw"].to(self.raw.device))
        self.autoencoder.load_state_dict(state["autoencoder"])
        self._encode_views()
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)

    def result(self) -> TrainedField:
        fields = F.normalize(self.raw.detach(), dim=-1).permute(1, 0, 2).contiguous().cpu()  # (3, N, 3)
        autoencoder: Autoencoder = copy.deepcopy(self.autoencoder).cpu()  # the trainer's stays put
        return TrainedField(
            features=list(fields),
            levels=LEVELS,
            decoder=autoencoder.decoder,
            decoder_config=autoencoder_config(self.embed_dim, LATENT),
            extra={"encoder_state": {k: v for k, v in autoencoder.encoder.state_dict().items()}},
        )
