"""The one distillation loop, shared by every method (:mod:`gags.distill.methods`).

Geometry and colour are frozen; each step renders the trainer's per-Gaussian channels into
``views_per_step`` training views (random, without replacement within an epoch: reference
train.py:134-137; one view in the reference) through a per-view renderer (cached compositing
weights, :mod:`gags.distill.render_cache`, or :func:`gags.splats.render.render`), asks the trainer
for the loss of each, averages, and steps its optimisers with every parameter group's learning rate
set to its peak rate times the schedule's factor (:mod:`gags.distill.schedule`). Checkpoints hold
plain tensors and dicts only (loadable with ``torch.load(weights_only=True)``). Under torchrun the
same loop runs on every rank, with a sharded sampler and a gradient all-reduce plugged in
(:mod:`gags.distill.parallel`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from gags.distill.methods import FieldTrainer
from gags.distill.schedule import SchedulePreset, lr_factor
from gags.distill.views import ViewSampler, ViewTargets
from gags.scene.cameras import Camera, stack_cameras
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend, render


def render_field(
    gaussians: Gaussians, field: torch.Tensor, camera: Camera, backend: Backend = "auto"
) -> torch.Tensor:
    """Render per-Gaussian channels ``field`` (N, C) into ``camera``: (H', W', C), background 0."""
    viewmats, Ks = stack_cameras([camera], field.device)
    out = render(
        dataclasses.replace(gaussians, features=field),
        viewmats,
        Ks,
        camera.width,
        camera.height,
        render_rgb=False,
        render_features=True,
        backend=backend,
    )
    return out.features[0]


@dataclasses.dataclass
class LoopState:
    """Where a run of :func:`train_field` stands: the next step and the view order."""

    step: int
    sampler: ViewSampler  # or a :class:`gags.distill.parallel.ShardedSampler` (same methods)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "sampler": self.sampler.state_dict()}


#: per-view renderer: (N, C) per-Gaussian channels -> (H', W', C) render of that view
Renderer = Callable[[torch.Tensor], torch.Tensor]


def train_field(
    trainer: FieldTrainer,
    renderers: list[Renderer],
    views: Sequence[ViewTargets],
    iterations: int,
    state: LoopState,
    *,
    schedule: str | SchedulePreset = "reference",
    views_per_step: int = 1,
    pixels_per_view: int = 0,
    seed: int = 0,
    checkpoint: Callable[[LoopState], None] | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
    desc: str = "distill",
    log: Callable[[dict[str, float]], None] | None = None,
    after_backward: Callable[[], None] | None = None,
    first_draw: int = 0,
) -> dict[str, float]:
    """Run steps ``state.step .. iterations - 1``; returns the last step's statistics.

    Args:
        trainer: the method's per-run state (channels, loss, optimisers; each parameter group's ``lr``
            at creation is its peak rate, kept as ``peak_lr`` in the group and in checkpoints).
        renderers: one per view (:func:`gags.distill.render_cache.view_renderers`).
        views: training views; ``state.sampler`` picks ``views_per_step`` per step.
        iterations: total steps of the run (the schedule and loss weights read ``step / iterations``).
        pixels_per_view: supervise each view at this many of its valid pixels, drawn afresh each
            step from ``seed`` and the step (0: all, as the reference).
        checkpoint: called with the loop state every ``checkpoint_every`` steps (0: never here).
        log: called with each step's record (step, lr factor, loss terms) for loss curves.
        after_backward: called between the backward pass and the optimiser steps (data-parallel
            gradient averaging: :meth:`gags.distill.parallel.DataParallel.after_backward`).
        first_draw: position of this process's first view among the step's views (data parallel:
            rank x views_per_step), so the pixel draws are those of one process rendering them all.
    """
    groups = [g for opt in trainer.optimizers for g in opt.param_groups]
    for g in groups:
        g.setdefault("peak_lr", g["lr"])
    stats: dict[str, float] = {}
    bar = tqdm(
        range(state.step, iterations), desc=desc, disable=not progress, initial=state.step, total=iterations
    )
    for step in bar:
        factor = lr_factor(schedule, step, iterations)
        for g in groups:
            g["lr"] = g["peak_lr"] * factor
        channels = trainer.channels()
        terms = []
        for k in range(views_per_step):
            index = state.sampler.next()
            draw = (seed * 1_000_003 + step) * 1_009 + first_draw + k
            view = views[index].subsample(pixels_per_view, seed=draw)
            terms.append(trainer.loss(renderers[index](channels), view, index, step / iterations))
        loss = sum(t[0] for t in terms) / len(terms)
        stats = {key: sum(t[1][key] for t in terms) / len(terms) for key in terms[0][1]}
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
            log({"step": state.step, "lr": factor, **stats})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
        if checkpoint is not None and checkpoint_every and state.step % checkpoint_every == 0:
            if state.step < iterations:
                checkpoint(state)
    return stats
