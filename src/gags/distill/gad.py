"""GaD as a distillation method: one 16-d field, a feature decoder and (when learned) alpha.

``alpha`` names what is distilled into the field:

- ``learned``: alpha = softmax(eta) from the granularity decoder (GAGS, paper Section 3.2);
- ``average``: alpha fixed to 1/3 each, i.e. (f_s + f_p + f_w) / 3 (paper Table 4, models 1 and 7);
- ``subpart`` / ``part`` / ``whole``: alpha one-hot on that level (Table 4, models 4-6).

The fixed-alpha variants match the reference's ``--single_scale {s,m,l,mix}``: alpha is swapped for
a constant and everything else (region-aware weighting, consistency) stays, with the regions m_f
taken from the argmax of that constant (the first level on ties, as ``torch.argmax``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import torch

from gags.distill.decoders import AlphaInit, DecoderForm, GaDDecoders, decoder_config
from gags.distill.losses import ConsistencyForm, DistillLoss, loss_weights
from gags.distill.methods import DistillContext, TrainedField
from gags.distill.objective import LossOptions, gad_loss
from gags.distill.schedule import peak_lr
from gags.distill.views import ViewTargets
from gags.models.segmenter import LEVELS

Alpha = Literal["learned", "average", "subpart", "part", "whole"]


@dataclasses.dataclass(frozen=True)
class GaD:
    """Granularity-aware distillation (paper Section 3.2). Defaults follow the paper's equations
    and the reference's settings (spec section 3); deviations say so."""

    alpha: Alpha = "learned"
    """learned (GaD), average (alpha = 1/3), or one level (subpart, part, whole) held fixed"""
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
    (reference 1e-3, short 3e-2; gags.distill.schedule)"""
    decoder_lr: float | None = None
    """peak Adam learning rate of the decoders; None: the schedule's (1e-4 in both)"""
    entropy_weights: tuple[float, float] = (0.001, 0.002)
    """lambda_entropy before / after the switch (reference; the paper gives none)"""
    consistency_weight: float = 0.1
    """lambda_consistency after the switch, 0 before (reference)"""
    switch_at: float = 0.5
    """fraction of the iterations where the weights switch (reference: iteration 15001 of 30000)"""
    alpha_init: AlphaInit = "default"
    """granularity branch initialisation. default: PyTorch's (paper/reference); uniform: last layer zero,
    so alpha starts at exactly 1/3 everywhere (not in the paper or the reference)"""
    alpha_warmup: float = 0.0
    """EXPERIMENTAL (in neither the paper nor the reference): fraction of the run during which learned
    alpha is replaced by 1/3 (averaged targets) before it is learned; 0 = off"""

    @property
    def name(self) -> str:
        """``gags``, ``average`` or ``single-LEVEL`` (the names of the paper's Table 4 rows)."""
        if self.alpha == "learned":
            return "gags"
        return self.alpha if self.alpha == "average" else f"single-{self.alpha}"

    @property
    def level_names(self) -> tuple[str, ...]:
        return (self.alpha if self.alpha in LEVELS else self.name,)

    def fixed_alpha(self) -> torch.Tensor | None:
        """(L,) constant alpha, or None when alpha is learned."""
        if self.alpha == "learned":
            return None
        if self.alpha == "average":
            return torch.full((len(LEVELS),), 1.0 / len(LEVELS))
        if self.alpha not in LEVELS:
            raise ValueError(f"alpha {self.alpha!r}: choose learned, average, {', '.join(LEVELS)}")
        return torch.nn.functional.one_hot(torch.tensor(LEVELS.index(self.alpha)), len(LEVELS)).float()

    def trainer(self, ctx: DistillContext) -> GaDTrainer:
        return GaDTrainer(self, ctx)


class GaDTrainer:
    """Per-run state of :class:`GaD`: the (N, F) field (init 0) and the decoders, with Adam each."""

    def __init__(self, method: GaD, ctx: DistillContext) -> None:
        torch.manual_seed(ctx.seed)  # the decoders' initialisation
        self.method = method
        self.alpha_const = method.fixed_alpha()
        self.decoders = GaDDecoders(
            method.decoder_form,
            ctx.embed_dim,
            ctx.feature_dim,
            learn_alpha=self.alpha_const is None,
            alpha_init=method.alpha_init,
        ).to(ctx.device)
        self.field = torch.zeros(ctx.num_gaussians, ctx.feature_dim, device=ctx.device, requires_grad=True)
        self.optimizers = [
            torch.optim.Adam([self.field], lr=peak_lr(ctx.schedule, "feature", method.feature_lr), eps=1e-15),
            torch.optim.Adam(
                self.decoders.parameters(), lr=peak_lr(ctx.schedule, "decoder", method.decoder_lr)
            ),
        ]
        self.warmup_alpha = GaD(alpha="average").fixed_alpha() if method.alpha_warmup > 0 else None
        self.options = LossOptions(
            method.distill_loss, method.consistency, method.region_aware, method.smooth_kernel
        )
        self.embed_dim, self.feature_dim = ctx.embed_dim, ctx.feature_dim

    def channels(self) -> torch.Tensor:
        return self.field

    def loss(
        self, rendered: torch.Tensor, view: ViewTargets, view_index: int, progress: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.method
        lam_ent, lam_cons = loss_weights(progress, m.entropy_weights, m.consistency_weight, m.switch_at)
        alpha = (
            self.warmup_alpha if progress < m.alpha_warmup and self.alpha_const is None else self.alpha_const
        )
        return gad_loss(rendered, view, self.decoders, alpha, self.options, lam_ent, lam_cons)

    def state_dict(self) -> dict[str, Any]:
        return {
            "field": self.field.detach().cpu(),
            "decoders": self.decoders.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["field"].shape != self.field.shape:
            raise ValueError(
                f"holds features of shape {tuple(state['field'].shape)}, "
                f"the run needs {tuple(self.field.shape)}"
            )
        with torch.no_grad():
            self.field.copy_(state["field"].to(self.field.device))
        self.decoders.load_state_dict(state["decoders"])
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)

    def result(self) -> TrainedField:
        granularity = self.decoders.granularity
        return TrainedField(
            features=[self.field.detach().cpu()],
            levels=self.method.level_names,
            decoder=copy.deepcopy(self.decoders.feature).cpu(),  # the trainer's stays where it is
            decoder_config=decoder_config(self.method.decoder_form, self.embed_dim, self.feature_dim),
            extra={
                "granularity_decoder": None
                if granularity is None
                else {k: v.cpu() for k, v in granularity.state_dict().items()}
            },
        )
