"""Data-parallel distillation: every rank renders its own views, gradients are averaged.

Plugged into the one loop (:func:`gags.distill.train.train_field`) through its sampler and its
``after_backward`` hook, so the loop itself does not change:

- :class:`ShardedSampler` draws ``world x views_per_rank`` views from the run's
  :class:`~gags.distill.views.ViewSampler` per step (every rank holds the same sampler, seeded
  alike, so every rank draws the same indices) and hands rank ``r`` draws
  ``r * views_per_rank ...``; its state is the inner sampler's, so checkpoints and ``--resume``
  are those of a single process. It also asks a :class:`~gags.distill.targets.ViewTargetStore`
  to read the next step's view in the background.
- :meth:`DataParallel.after_backward` renders the rank's further views (``views_per_rank > 1``:
  gradient accumulation), scales the gradients to the mean over its views, and averages them
  over the ranks with one all-reduce (:func:`gags.distributed.average_gradients`) of every
  parameter the trainer's optimisers hold: the per-Gaussian field and the decoders.

The optimiser step then sees the gradient of the mean loss over all ``world x views_per_rank``
views of the step, exactly as one process rendering those views would (``views_per_rank = W`` in
one process reproduces ``W`` ranks: the tests compare the two). Rank 0's trainer state is
broadcast once before the first step (:meth:`DataParallel.start`), so every rank starts from the
same parameters whatever its own initialisation or checkpoint read did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from gags import distributed as dist
from gags.distill.methods import FieldTrainer
from gags.distill.views import ViewSampler, ViewTargets
from gags.errors import GagsError
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend


def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (what is pickled to other ranks)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu(v) for v in obj)
    return obj


class ShardedSampler:
    """This rank's views of each step, drawn from a sampler that every rank holds alike."""

    def __init__(
        self, inner: ViewSampler, rank: int = 0, world: int = 1, views_per_rank: int = 1, store: Any = None
    ) -> None:
        if not 0 <= rank < world or views_per_rank < 1:
            raise ValueError(f"rank {rank} of {world} with {views_per_rank} views per rank")
        self.inner, self.rank, self.world, self.views_per_rank = inner, rank, world, views_per_rank
        self.store = store
        self.extra: list[int] = []  # this step's further views (views_per_rank > 1)

    @property
    def num_views(self) -> int:
        return self.inner.num_views

    def next(self) -> int:
        """Index of this rank's first view of the step; the others are in :attr:`extra`."""
        draws = [self.inner.next() for _ in range(self.world * self.views_per_rank)]
        mine = draws[self.rank * self.views_per_rank : (self.rank + 1) * self.views_per_rank]
        self.extra = mine[1:]
        prefetch = getattr(self.store, "prefetch", None)
        ahead = self.rank * self.views_per_rank  # where the next step's first view sits in the order
        if prefetch is not None and len(self.inner.order) > ahead:
            prefetch(self.inner.order[-1 - ahead])
        return mine[0]

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
        self.extra = []


class DataParallel:
    """The data-parallel parts of a distillation run (single-rank identity in a plain process).

    Args:
        trainer: the method's trainer (its optimisers' parameters are the ones averaged).
        gaussians: the frozen splats (for the further views' renders).
        views: the training views (a list or a :class:`~gags.distill.targets.ViewTargetStore`).
        iterations: total steps (the further views' loss schedules read ``step / iterations``).
        backend: render backend.
        views_per_rank: views each rank renders per step (1: one each, ``world`` views per step).
    """

    def __init__(
        self,
        trainer: FieldTrainer,
        gaussians: Gaussians,
        views: Sequence[ViewTargets],
        iterations: int,
        *,
        backend: Backend = "auto",
        views_per_rank: int = 1,
    ) -> None:
        self.trainer, self.gaussians, self.views = trainer, gaussians, views
        self.iterations, self.backend, self.views_per_rank = iterations, backend, views_per_rank
        self.rank, self.world = dist.rank(), dist.world_size()
        device = trainer.channels().device
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if self.world > 1 and device.type == "cuda" and per_node > torch.cuda.device_count():
            raise GagsError(
                f"{per_node} ranks on this node but {torch.cuda.device_count()} GPU(s): data-parallel "
                "distillation needs one GPU per rank (torchrun --nproc-per-node <= the GPUs, or --device cpu)"
            )
        self._sampler: ShardedSampler | None = None
        self._state: Any = None
        self.extra_losses: list[float] = []

    @property
    def views_per_step(self) -> int:
        """Views that make up one optimiser step, over all ranks."""
        return self.world * self.views_per_rank

    def sampler(self, inner: ViewSampler) -> ShardedSampler:
        """Wrap the run's view sampler (put the result in the :class:`~gags.distill.train.LoopState`)."""
        self._sampler = ShardedSampler(inner, self.rank, self.world, self.views_per_rank, self.views)
        return self._sampler

    def start(self, state: Any) -> None:
        """Before the first step (after any resume): remember the loop state; give every rank rank
        0's trainer state."""
        self._state = state
        if self.world > 1:
            saved = dist.broadcast_object(_cpu(self.trainer.state_dict()) if dist.is_main() else None)
            if not dist.is_main():
                self.trainer.load_state_dict(saved)

    def _params(self) -> list[torch.Tensor]:
        return [p for opt in self.trainer.optimizers for group in opt.param_groups for p in group["params"]]

    def after_backward(self) -> None:
        """The ``after_backward`` hook of :func:`~gags.distill.train.train_field`."""
        from gags.distill.train import render_field

        self.extra_losses = []
        extra = self._sampler.extra if self._sampler is not None else []
        if extra:
            step = self._state.step if self._state is not None else 0
            for index in extra:
                view = self.views[index]
                rendered = render_field(self.gaussians, self.trainer.channels(), view, self.backend)
                loss, _ = self.trainer.loss(rendered, view, index, step / self.iterations)
                loss.backward()
                self.extra_losses.append(float(loss.detach()))
            for p in self._params():
                if p.grad is not None:
                    p.grad /= len(extra) + 1
        dist.average_gradients(self._params())

    def step_loss(self, first_loss: float) -> float:
        """Mean loss over all the step's views, given this rank's first view's loss (collective)."""
        local = torch.tensor([first_loss + sum(self.extra_losses)], dtype=torch.float64)
        return float(dist.all_reduce(local)) / self.views_per_step

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """``stats`` (floats) averaged over the ranks (collective; identity in a plain process)."""
        if self.world == 1 or not stats:
            return stats
        keys = sorted(k for k, v in stats.items() if isinstance(v, int | float))
        values = dist.all_reduce(torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64), "mean")
        return {**stats, **dict(zip(keys, values.tolist(), strict=True))}
