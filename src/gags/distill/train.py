"""The one distillation loop, shared by every method (:mod:`gags.distill.methods`).

Geometry and colour are frozen; each step renders the trainer's per-Gaussian channels into one
training view (random, without replacement within an epoch: reference train.py:134-137) through
:func:`gags.splats.render.render`, asks the trainer for the loss, and steps its optimisers.
Checkpoints hold plain tensors and dicts only (loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from gags.distill.methods import FieldTrainer
from gags.distill.views import ViewSampler, ViewTargets
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend, render


def render_field(
    gaussians: Gaussians, field: torch.Tensor, view: ViewTargets, backend: Backend = "auto"
) -> torch.Tensor:
    """Render per-Gaussian channels ``field`` (N, C) into ``view``: (H', W', C), background 0."""
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


@dataclasses.dataclass
class LoopState:
    """Where a run of :func:`train_field` stands: the next step and the view order."""

    step: int
    sampler: ViewSampler

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "sampler": self.sampler.state_dict()}


def train_field(
    trainer: FieldTrainer,
    gaussians: Gaussians,
    views: list[ViewTargets],
    iterations: int,
    state: LoopState,
    *,
    backend: Backend = "auto",
    checkpoint: Callable[[LoopState], None] | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
    desc: str = "distill",
    log: Callable[[int, dict[str, float]], None] | None = None,
    after_backward: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Run steps ``state.step .. iterations - 1``; returns the last step's statistics.

    Args:
        trainer: the method's per-run state (channels, loss, optimisers).
        gaussians: frozen splats (geometry and opacity are only read).
        views: training views; ``state.sampler`` picks one per step.
        iterations: total steps of the run (the loss schedules read ``step / iterations``).
        checkpoint: called with the loop state every ``checkpoint_every`` steps (0: never here).
        log: called with (step, statistics) after every step (loss curves, TensorBoard).
        after_backward: called between the backward pass and the optimiser steps (data-parallel
            gradient averaging: :class:`gags.distill.parallel.DataParallel`).
    """
    stats: dict[str, float] = {}
    bar = tqdm(
        range(state.step, iterations), desc=desc, disable=not progress, initial=state.step, total=iterations
    )
    for step in bar:
        index = state.sampler.next()
        view = views[index]
        rendered = render_field(gaussians, trainer.channels(), view, backend)
        loss, stats = trainer.loss(rendered, view, index, step / iterations)
        for opt in trainer.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        for opt in trainer.optimizers:
            opt.step()
        state.step = step + 1
        stats = {"loss": float(loss.detach()), **stats}
        if log is not None:
            log(step, stats)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
        if checkpoint is not None and checkpoint_every and state.step % checkpoint_every == 0:
            if state.step < iterations:
                checkpoint(state)
    return stats
