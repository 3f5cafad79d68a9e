"""Data-parallel distillation: every rank renders its own views, gradients are averaged.

Plugged into the one loop (:func:`gags.distill.train.train_field`) through its sampler and its
``after_backward`` hook, so the loop itself does not change:

- :class:`ShardedSampler` draws ``world x views_per_rank`` views from the run's
  :class:`~gags.distill.views.ViewSampler` per step (every rank holds the same sampler, seeded
  alike, so every rank draws the same indices) and hands rank ``r`` draws
  ``r * views_per_rank ...`` (the loop asks for ``views_per_rank`` a step); its state is the inner
  sampler's, so checkpoints and ``--resume`` are those of one process rendering all the step's
  views. It also asks a :class:`~gags.distill.targets.ViewTargetStore` to read the rank's next
  view in the background.
- :meth:`DataParallel.after_backward` averages the gradients over the ranks with one all-reduce
  (:func:`gags.distributed.average_gradients`) of every parameter the trainer's optimisers hold:
  the per-Gaussian field and the decoders.

The loop averages the loss over the rank's views, so the optimiser step then sees the gradient of
the mean loss over all ``world x views_per_rank`` views of the step, exactly as one process
rendering those views would (``--views-per-step 2`` in one process reproduces two ranks with one
view each: the tests compare the two). Rank 0's trainer state is broadcast once before the first
step (:meth:`DataParallel.start`), so every rank starts from the same parameters whatever its own
initialisation or checkpoint read did.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from gags import distributed as dist
from gags.distill.methods import FieldTrainer
from gags.distill.views import ViewSampler
from gags.errors import GagsError


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
        self.pending: list[int] = []  # this rank's views of the current step not yet handed out

    @property
    def num_views(self) -> int:
        return self.inner.num_views

    def next(self) -> int:
        """Index of this rank's next view (a new step's draws once the last step's are handed out)."""
        if not self.pending:
            draws = [self.inner.next() for _ in range(self.world * self.views_per_rank)]
            self.pending = draws[self.rank * self.views_per_rank : (self.rank + 1) * self.views_per_rank]
        index = self.pending.pop(0)
        prefetch = getattr(self.store, "prefetch", None)
        if prefetch is not None:
            ahead = self.rank * self.views_per_rank  # where the next step's first view of this rank sits
            if self.pending:
                prefetch(self.pending[0])
            elif len(self.inner.order) > ahead:
                prefetch(self.inner.order[-1 - ahead])
        return index

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
        self.pending = []


class DataParallel:
    """The data-parallel parts of a distillation run (single-rank identity in a plain process).

    Args:
        trainer: the method's trainer (its optimisers' parameters are the ones averaged).
        views_per_rank: views each rank renders per step (the loop's ``views_per_step``).
        store: the training views, when a :class:`~gags.distill.targets.ViewTargetStore` (read ahead).
    """

    def __init__(self, trainer: FieldTrainer, views_per_rank: int = 1, store: Any = None) -> None:
        self.trainer, self.views_per_rank, self.store = trainer, views_per_rank, store
        self.rank, self.world = dist.rank(), dist.world_size()
        device = trainer.channels().device
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if self.world > 1 and device.type == "cuda" and per_node > torch.cuda.device_count():
            raise GagsError(
                f"{per_node} ranks on this node but {torch.cuda.device_count()} GPU(s): data-parallel "
                "distillation needs one GPU per rank (torchrun --nproc-per-node <= the GPUs, or --device cpu)"
            )

    @property
    def views_per_step(self) -> int:
        """Views that make up one optimiser step, over all ranks."""
        return self.world * self.views_per_rank

    @property
    def first_draw(self) -> int:
        """Position of this rank's first view among the step's (``train_field(first_draw=...)``)."""
        return self.rank * self.views_per_rank

    def sampler(self, inner: ViewSampler) -> ShardedSampler:
        """Wrap the run's view sampler (put the result in the :class:`~gags.distill.train.LoopState`)."""
        return ShardedSampler(inner, self.rank, self.world, self.views_per_rank, self.store)

    def start(self) -> None:
        """Before the first step (after any resume): give every rank rank 0's trainer state."""
        if self.world > 1:
            saved = dist.broadcast_object(_cpu(self.trainer.state_dict()) if dist.is_main() else None)
            if not dist.is_main():
                self.trainer.load_state_dict(saved)

    def after_backward(self) -> None:
        """The ``after_backward`` hook of :func:`~gags.distill.train.train_field`."""
        params = [p for opt in self.trainer.optimizers for group in opt.param_groups for p in group["params"]]
        dist.average_gradients(params)

    def mean_records(self, records: list[dict[str, float]]) -> list[dict[str, float]]:
        """Per-step records (or one statistics dict in a list) averaged over the ranks, key by key.

        One all-reduce for all of them (collective; identity in a plain process). Every rank must pass
        records with the same keys in the same number (the loop's are).
        """
        if self.world == 1 or not records:
            return records
        keys = sorted(k for k, v in records[0].items() if isinstance(v, float))  # not the step
        table = torch.tensor([[float(r[k]) for k in keys] for r in records], dtype=torch.float64)
        dist.all_reduce(table, "mean")
        return [
            {**r, **dict(zip(keys, row, strict=True))} for r, row in zip(records, table.tolist(), strict=True)
        ]
