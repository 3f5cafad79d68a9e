"""Training targets streamed from the run folder: memory flat in the number of views.

:class:`ViewTargetStore` is a read-only sequence of :class:`~gags.distill.views.ViewTargets` (the
same objects :func:`~gags.distill.views.load_all_view_targets` returns) that reads a view's
``segments/`` and ``features/`` files when it is asked for and keeps only the ``cache_size`` most
recently used views (on the training device). A background thread reads the view the sampler will
ask for next (:meth:`ViewTargetStore.prefetch`), so the file read overlaps the current step.

Opening a store checks every view once (shapes, id ranges, finite features, one embedding size,
at least one supervised pixel in the scene), so a broken file fails before training, not at step
20,000; under torchrun each rank checks its :func:`~gags.distributed.shard` of the views and the
findings are gathered. Memory during that pass is one view plus the cache.

:func:`mask_features` collects the mask features for LangSplat's scene autoencoder one view at a
time, capped at ``max_rows`` (a seeded uniform subset beyond it).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import overload

import torch

from gags import distributed as dist
from gags.errors import GagsError, file_error
from gags.runfolder import RunFolder
from gags.scene.cameras import Camera

from .views import ViewTargets, load_view_targets

#: views kept in memory by default (a 988x731 view at downscale 2 is about 6 MB); the environment
#: variable ``GAGS_VIEW_CACHE`` overrides it
DEFAULT_CACHE_VIEWS = 16


def default_cache_views() -> int:
    """``GAGS_VIEW_CACHE`` when set (views kept in memory), else :data:`DEFAULT_CACHE_VIEWS`."""
    value = os.environ.get("GAGS_VIEW_CACHE", "")
    try:
        return int(value) if value else DEFAULT_CACHE_VIEWS
    except ValueError as e:
        raise GagsError(f"GAGS_VIEW_CACHE={value!r} is not a number of views") from e


def _to_device(view: ViewTargets, device: torch.device) -> ViewTargets:
    if view.maps.device == device:
        return view
    return dataclasses.replace(
        view, maps=view.maps.to(device), features=view.features.to(device), valid=view.valid.to(device)
    )


class ViewTargetStore(Sequence[ViewTargets]):
    """The training views' targets, read from ``run`` on demand with an LRU cache.

    Args:
        run: the run folder (``segments/``, ``features/`` from ``gags prepare``).
        cameras: the training cameras at full resolution (one view each, in this order).
        downscale: supervision resolution divisor (:meth:`Camera.scaled`).
        device: where the returned tensors live.
        cache_size: views kept in memory (at least 1; default :func:`default_cache_views`);
            ``len(cameras)`` or more keeps them all (as ``load_all_view_targets`` does).
    """

    def __init__(
        self,
        run: RunFolder,
        cameras: Sequence[Camera],
        downscale: float,
        device: torch.device | str = "cpu",
        cache_size: int | None = None,
    ) -> None:
        if not cameras:
            raise file_error(run.config, "the scene has no training cameras")
        self.run = run
        self.cameras = list(cameras)
        self.downscale = downscale
        self.device = torch.device(device)
        self.cache_size = max(1, int(default_cache_views() if cache_size is None else cache_size))
        self._cache: collections.OrderedDict[int, ViewTargets] = collections.OrderedDict()
        self._pending: dict[int, Future[ViewTargets]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self.loads = 0  # views read from disk (scan included): for tests and benchmarks
        self._scan()

    # ------------------------------------------------------------------ checks
    def _scan(self) -> None:
        """Read every view once (this rank's share), gather sizes, check the scene as a whole."""
        mine: list[tuple[int, int, int, int]] = []
        for i in range(dist.rank(), len(self.cameras), dist.world_size()):
            view = self[i]
            rows, dim = view.features.shape
            mine.append((i, int(rows), int(dim), int(view.valid.numel())))
        found = sorted(x for part in dist.all_gather_objects(mine) for x in part)
        self.rows = [rows for _, rows, _, _ in found]
        dims = sorted({dim for _, _, dim, _ in found})
        if len(dims) > 1:
            raise file_error(self.run.features, f"feature files disagree on the embedding size: {dims}")
        if sum(valid for *_, valid in found) == 0:
            raise file_error(
                self.run.segments, "no pixel has a mask at all three levels in any view: nothing to distil"
            )
        self.embed_dim = dims[0]

    @property
    def view_cameras(self) -> list[Camera]:
        """Every view's camera at the supervision resolution (``self[i].camera``, without reading it)."""
        return [cam.scaled(self.downscale) for cam in self.cameras]

    # ------------------------------------------------------------------ sequence
    def __len__(self) -> int:
        return len(self.cameras)

    @overload
    def __getitem__(self, index: int) -> ViewTargets: ...
    @overload
    def __getitem__(self, index: slice) -> list[ViewTargets]: ...
    def __getitem__(self, index: int | slice) -> ViewTargets | list[ViewTargets]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"view {index} of {len(self)}")
        view = self._cache.get(i)
        if view is not None:
            self._cache.move_to_end(i)
            return view
        pending = self._pending.pop(i, None)
        view = pending.result() if pending is not None else self._load(i)
        self._cache[i] = view
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return view

    def __iter__(self) -> Iterator[ViewTargets]:
        for i in range(len(self)):
            yield self[i]

    def _load(self, i: int) -> ViewTargets:
        self.loads += 1
        return _to_device(load_view_targets(self.run, self.cameras[i], self.downscale), self.device)

    # ------------------------------------------------------------------ prefetch
    def prefetch(self, index: int) -> None:
        """Start reading view ``index`` in the background unless it is cached or already coming."""
        if index in self._cache or index in self._pending or len(self) <= self.cache_size:
            return  # everything fits: the scan and the first epoch fill the cache
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gags-views")
        while len(self._pending) >= 2:  # read ahead but never asked for (a resume reordered): drop
            self._pending.pop(next(iter(self._pending)))
        self._pending[index] = self._executor.submit(self._load, index)

    def close(self) -> None:
        """Stop the background reader and drop the cache."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending.clear()
        self._cache.clear()

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def mask_features(views: Sequence[ViewTargets], max_rows: int = 0, seed: int = 0) -> torch.Tensor:
    """Every view's mask features stacked, (M, D), read one view at a time.

    ``max_rows`` > 0 caps M: beyond it a seeded uniform subset of the rows (in view order) is taken,
    so the memory of the result is bounded whatever the number of views. Below the cap the result
    is exactly ``torch.cat([v.features for v in views])``.
    """
    rows = getattr(views, "rows", None)
    if rows is None:
        rows = [int(v.features.shape[0]) for v in views]
    total = sum(rows)
    keep: list[torch.Tensor | None]
    if max_rows <= 0 or total <= max_rows:
        keep = [None] * len(rows)
    else:
        g = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(total, generator=g)[:max_rows].sort().values
        starts = torch.tensor([0, *rows]).cumsum(0)
        bounds = zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)
        keep = [chosen[(chosen >= a) & (chosen < b)] - a for a, b in bounds]
    parts = []
    for i, pick in enumerate(keep):
        if pick is not None and pick.numel() == 0:
            continue
        feats = views[i].features
        parts.append(feats if pick is None else feats[pick.to(feats.device)])
    return torch.cat(parts)
