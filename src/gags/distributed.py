"""Several processes on one run folder: ranks from ``torchrun``, one process group, sharding helpers.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address)
every helper here talks to the other ranks; in a plain process they are the single-rank identity
(``shard`` returns everything, ``barrier`` returns at once, ``is_main`` is True), so a stage calls
them unconditionally and runs the same code in both cases.

The process group is created on first use (:func:`init`), with gloo for CPU tensors and, when CUDA
is available, NCCL for CUDA tensors (``cpu:gloo,cuda:nccl``); object collectives and barriers go
through gloo. Its timeout is ``GAGS_DIST_TIMEOUT`` seconds (default 7200: ranks whose shares of
images take different times wait at the final barrier). Rules the stages follow:

- work is split with :func:`shard` (rank ``r`` of ``W`` takes items ``r, r + W, ...``: deterministic,
  and neighbouring images, which cost about the same, go to different ranks);
- every rank writes only its own per-item files (atomically); files that describe the whole run
  (``config.json``, checkpoints, ``language.pt``) are written by rank 0 alone (:func:`is_main`);
- a rank that fails raises; ``torchrun`` then stops the others.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

from gags.errors import GagsError

T = TypeVar("T")

#: default seconds a collective waits for the slowest rank (``GAGS_DIST_TIMEOUT`` overrides)
DEFAULT_TIMEOUT_S = 7200.0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise GagsError(f"environment variable {name}={value!r} is not an integer") from e


def world_size() -> int:
    """Number of ranks (``WORLD_SIZE`` set by torchrun; 1 in a plain process)."""
    if _initialized():
        return torch.distributed.get_world_size()
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's global rank (0 in a plain process)."""
    if _initialized():
        return torch.distributed.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``; picks its GPU). 0 in a plain process."""
    return _env_int("LOCAL_RANK", 0)


def is_distributed() -> bool:
    """True when running as one of several ranks."""
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0, the one rank that writes run-wide files."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index -> ``cuda:LOCAL_RANK`` (modulo the visible GPUs) under torchrun."""
    if device.type != "cuda" or device.index is not None or "LOCAL_RANK" not in os.environ:
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return torch.device("cuda", local_rank() % count) if count else device


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init() -> bool:
    """Join the process group when running under torchrun with several ranks (idempotent).

    Returns True when a group is active afterwards. Called by every collective below, so a stage
    need not call it; calling it early makes a broken rendezvous fail before any work.
    """
    if _initialized():
        return True
    if _env_int("WORLD_SIZE", 1) <= 1:
        return False
    if not torch.distributed.is_available():
        raise GagsError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise GagsError(f"WORLD_SIZE > 1 but {', '.join(missing)} unset: launch the command with torchrun")
    backend = "gloo"
    if torch.cuda.is_available() and torch.distributed.is_nccl_available():
        backend = "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    timeout = float(os.environ.get("GAGS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    torch.distributed.init_process_group(
        backend=backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout)
    )
    atexit.register(destroy)
    return True


def destroy() -> None:
    """Leave the process group (no-op when none is active)."""
    if _initialized():
        torch.distributed.destroy_process_group()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world_size()``-th item from index ``rank()``.

    Deterministic (only the order of ``items`` matters); the shares of all ranks partition ``items``.
    """
    return list(items[rank() :: world_size()])


def barrier() -> None:
    """Wait until every rank gets here (no-op in a plain process)."""
    if init():
        torch.distributed.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a plain process."""
    if not init():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a plain process)."""
    if not init():
        return obj
    box = [obj if rank() == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def filter_sharded(items: Sequence[T], keep: Callable[[T], bool]) -> list[T]:
    """``[x for x in items if keep(x)]``, with ``keep`` evaluated once per item across the ranks.

    Each rank tests its :func:`shard`; the results are gathered, so every rank returns the same list.
    """
    n, world, r = len(items), world_size(), rank()
    mine = [i for i in range(r, n, world) if keep(items[i])]
    kept = sorted(i for part in all_gather_objects(mine) for i in part)
    return [items[i] for i in kept]


_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over the ranks (``sum``, ``mean``, ``min``, ``max``); returns it."""
    if op not in (*_OPS, "mean"):
        raise ValueError(f"unknown reduction {op!r}")
    if not init():
        return tensor
    torch.distributed.all_reduce(tensor, op=getattr(torch.distributed.ReduceOp, _OPS.get(op, "SUM")))
    if op == "mean":
        tensor /= world_size()
    return tensor


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace each parameter's ``.grad`` by its mean over the ranks (one flat all-reduce per device).

    A parameter that has no gradient on some rank counts as zero there; it keeps ``grad = None``
    only when no rank has one (so optimisers skip it on every rank alike).
    """
    if not init():
        return
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for p in params:
        by_device.setdefault(p.device, []).append(p)
    world = world_size()
    for device, group in by_device.items():
        flags = torch.tensor([p.grad is not None for p in group], dtype=torch.float32, device=device)
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float32)
            for p in group
        ]
        flat = torch.cat([*grads, flags])
        torch.distributed.all_reduce(flat)
        values, seen = flat[: -len(group)], flat[-len(group) :]
        offset = 0
        for p, has in zip(group, seen.tolist(), strict=True):
            n = p.numel()
            if has > 0:
                grad = (values[offset : offset + n] / world).view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = grad
                else:
                    p.grad.copy_(grad)
            offset += n
