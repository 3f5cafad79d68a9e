"""Distillation methods as strategies behind one small protocol (as gsplat's ``Strategy`` makes
densification a policy).

A method is a dataclass of its own settings that builds a :class:`FieldTrainer` for one run. The
one training loop (:func:`gags.distill.train.train_field`) asks the trainer, every step, for the
per-Gaussian channels to render and for the loss of that render against the view's targets; it
never asks which method it is running. Two methods exist:

- :class:`gags.distill.gad.GaD`: one 16-d field and a decoder; alpha learned (GAGS) or fixed
  (averaged features, a single level): paper Section 3.2 and Table 4.
- :class:`gags.distill.langsplat.LangSplat`: three 3-d fields through a scene autoencoder (LangSplat).

What a trained method leaves behind is a :class:`TrainedField`: the per-level per-Gaussian features,
their level names and the query-time decoder, which :class:`gags.distill.field.LanguageField` reads
back without knowing the method either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from gags.distill.views import ViewTargets


@dataclasses.dataclass
class DistillContext:
    """What every method needs to set itself up for one run.

    Attributes:
        num_gaussians: N, the frozen splats' count.
        views: the training views' targets at the supervision resolution (a list, or a
            :class:`~gags.distill.targets.ViewTargetStore` that reads them on demand).
        embed_dim: D, the encoder's dimension.
        feature_dim: F, the per-Gaussian feature size the run asks for.
        iterations: total steps of the run (schedules scale with it).
        seed: seeds initialisation.
        device: where parameters live.
        progress: show progress bars for long setup work.
        schedule: the learning-rate schedule's name (:mod:`gags.distill.schedule`); a method takes its
            peak rates from it unless its own settings give them.
    """

    num_gaussians: int
    views: Sequence[ViewTargets]
    embed_dim: int
    feature_dim: int
    iterations: int
    seed: int
    device: torch.device
    progress: bool = True
    schedule: str = "short"


@dataclasses.dataclass
class TrainedField:
    """The result of a method: what ``language.pt`` stores and queries read.

    Attributes:
        features: one (N, F_l) per-Gaussian feature tensor per level (rendered as they are).
        levels: one name per entry of ``features`` (``("gags",)``, ``("subpart", "part", "whole")``).
        decoder: maps (..., F_l) rendered features to (..., D) unit vectors (shared by the levels).
        decoder_config: the dict :func:`gags.distill.decoders.build_decoder` rebuilds ``decoder`` from.
        extra: method-specific tensors kept in ``language.pt`` (e.g. the granularity decoder).
    """

    features: list[torch.Tensor]
    levels: tuple[str, ...]
    decoder: nn.Module
    decoder_config: dict[str, Any]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class FieldTrainer(Protocol):
    """The per-run state of a method, driven by the shared loop."""

    #: the optimisers the loop steps after every backward pass
    optimizers: list[torch.optim.Optimizer]

    def channels(self) -> torch.Tensor:
        """(N, C) per-Gaussian channels to render this step (differentiable)."""
        ...

    def loss(
        self, rendered: torch.Tensor, view: ViewTargets, view_index: int, progress: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of ``rendered`` (H', W', C) against ``view``, and float statistics.

        ``progress`` = step / iterations in [0, 1) (loss-weight schedules read it).
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tensors, optimiser states, plain values (no objects)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def result(self) -> TrainedField:
        """The trained field (detached copies, on the CPU); the trainer is left as it is, so this may be
        called mid-run (TensorBoard images)."""
        ...


class DistillMethod(Protocol):
    """A distillation method's settings; builds its trainer for a run."""

    @property
    def name(self) -> str:
        """The method's name as reports and ``language.pt["method"]`` show it."""
        ...

    @property
    def level_names(self) -> tuple[str, ...]:
        """Names of the maps the trained field renders, one per level."""
        ...

    def trainer(self, ctx: DistillContext) -> FieldTrainer: ...
