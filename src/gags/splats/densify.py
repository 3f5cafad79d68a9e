"""Adaptive density control of 3DGS: clone, split, prune and opacity reset.

Follows the original 3DGS code and gsplat's ``DefaultStrategy`` (same thresholds and the same
normalisation of the screen-space gradient), written here on plain torch so that it runs on any
device without gsplat, which is an optional (CUDA) dependency. gsplat 1.5.3's strategy also never
resets opacities (``step % reset_every == 0 & step > 0`` parses as a chained comparison that is
always false); here the reset happens as in 3DGS. Additions for CPU training: a cap on the number
of Gaussians (the candidates with the largest gradients win).

Parameters live in a dict of ``torch.nn.Parameter`` (names below) with one Adam optimiser per
parameter; every operation rewrites the parameters and the optimisers' moment buffers together,
so optimiser state always has one row per Gaussian.

=============  ==========  ======================================
name           shape       meaning
=============  ==========  ======================================
``means``      (N, 3)      centres, world units
``quats``      (N, 4)      unnormalised (w, x, y, z)
``scales``     (N, 3)      log standard deviations
``opacities``  (N,)        opacity logits
``sh0``        (N, 1, 3)   SH DC term
``shN``        (N, K-1, 3) higher SH coefficients
=============  ==========  ======================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from gags.splats.projection import quat_to_rotmat

Params = dict[str, torch.nn.Parameter]
Optimizers = dict[str, torch.optim.Optimizer]


#: iteration count of the 3DGS schedule that unset step counts are scaled from
PAPER_ITERATIONS = 30_000


@dataclasses.dataclass
class DensifyConfig:
    """Thresholds and schedule of adaptive density control (3DGS / gsplat defaults).

    Step counts left at None follow the 3DGS schedule (refine from 500 to 15000 every 100, reset
    opacity every 3000, of 30000 steps) scaled to the run's length by :meth:`scaled`.

    Attributes:
        grad_threshold: mean screen-space gradient norm (NDC units, as 3DGS) above which a Gaussian grows.
        percent_dense: Gaussians with largest std-dev <= this x scene extent are cloned, larger ones split.
        prune_opacity: Gaussians below this opacity are removed.
        prune_world_size: after the first opacity reset, Gaussians larger than this x extent are removed.
        prune_screen_size: ... and those whose screen radius exceeded this fraction of the image size.
        start: first refinement step (default: 500/30000 of the run).
        stop: refinement stops here (default: 15000/30000 of the run).
        every: steps between refinements (default: 100/30000 of the run, at least 10).
        reset_every: steps between opacity resets, each above 2 x prune_opacity set down to it
            (default: 3000/30000 of the run, at least 3 refinements).
        max_gaussians: cap on the count; 0 = none (a CPU-budget addition, not in 3DGS).
    """

    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    prune_world_size: float = 0.1
    prune_screen_size: float = 0.15
    start: int | None = None
    stop: int | None = None
    every: int | None = None
    reset_every: int | None = None
    max_gaussians: int = 0

    def scaled(self, iterations: int) -> DensifyConfig:
        """This config with every unset step count taken from the 3DGS schedule scaled to ``iterations``."""
        f = iterations / PAPER_ITERATIONS

        def pick(value: int | None, paper: int, minimum: int = 1) -> int:
            return value if value is not None else max(minimum, round(paper * f))

        every = pick(self.every, 100, minimum=10)
        return dataclasses.replace(
            self,
            start=pick(self.start, 500),
            stop=pick(self.stop, 15_000),
            every=every,
            reset_every=pick(self.reset_every, 3000, minimum=3 * every),
        )


@dataclasses.dataclass
class DensifyStats:
    """Running statistics between two refinements, one row per Gaussian.

    Attributes:
        grad2d: (N,) sum of screen-space gradient norms (NDC units) over the views that saw the Gaussian.
        count: (N,) number of those views.
        max_radius: (N,) largest screen radius seen, as a fraction of max(width, height).
    """

    grad2d: torch.Tensor
    count: torch.Tensor
    max_radius: torch.Tensor

    @classmethod
    def zeros(cls, n: int, device: torch.device | str = "cpu") -> DensifyStats:
        return cls(*(torch.zeros(n, device=device) for _ in range(3)))

    def tensors(self) -> dict[str, torch.Tensor]:
        return dataclasses.asdict(self)

    def reset(self) -> None:
        for t in (self.grad2d, self.count, self.max_radius):
            t.zero_()


class Densifier:
    """Accumulates screen-space gradients and clones, splits, prunes and resets on schedule.

    Usage per training step, after ``loss.backward()`` with ``means2d.retain_grad()``::

        densifier.accumulate(out.means2d.grad, out.radii, width, height)
        ...optimiser steps...
        densifier.step(step, params, optimizers)
    """

    def __init__(
        self, config: DensifyConfig, scene_extent: float, n: int, device: torch.device | str = "cpu"
    ):
        self.config = config.scaled(PAPER_ITERATIONS)  # unset step counts: the 3DGS schedule
        self.scene_extent = float(scene_extent)
        self.stats = DensifyStats.zeros(n, device)
        self.generator = torch.Generator(device="cpu")

    @torch.no_grad()
    def accumulate(self, means2d_grad: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> None:
        """Add one batch of views to the statistics.

        Args:
            means2d_grad: (C, N, 2) gradient of the loss w.r.t. the projected centres, per pixel.
            radii: (C, N, 2) screen radii in pixels (0 = culled).
            width, height: image size in pixels.
        """
        C = means2d_grad.shape[0]
        scale = torch.tensor([width / 2.0 * C, height / 2.0 * C], device=means2d_grad.device)
        grads = means2d_grad * scale  # per-pixel -> NDC units, times C as gsplat (loss is a mean over views)
        visible = (radii > 0).all(dim=-1)  # (C, N)
        cam, ids = torch.nonzero(visible, as_tuple=True)
        self.stats.grad2d.index_add_(0, ids, grads[cam, ids].norm(dim=-1))
        self.stats.count.index_add_(0, ids, torch.ones_like(ids, dtype=self.stats.count.dtype))
        r = radii[cam, ids].max(dim=-1).values.to(self.stats.max_radius.dtype) / float(max(width, height))
        self.stats.max_radius.scatter_reduce_(0, ids, r, reduce="amax")

    def step(self, step: int, params: Params, optimizers: Optimizers) -> dict[str, int]:
        """Refine and/or reset opacities if ``step`` is on the schedule; returns what was done (counts)."""
        cfg = self.config
        done: dict[str, int] = {}
        if step >= cfg.stop:
            return done
        if step > cfg.start and step % cfg.every == 0:
            done.update(self.grow(params, optimizers))
            done["pruned"] = self.prune(step, params, optimizers)
            self.stats.reset()
        if step > 0 and step % cfg.reset_every == 0:
            reset_opacity(params, optimizers, 2.0 * cfg.prune_opacity)
            done["reset"] = 1
        return done

    @torch.no_grad()
    def grow(self, params: Params, optimizers: Optimizers) -> dict[str, int]:
        """Clone small and split large Gaussians whose mean gradient is above the threshold."""
        cfg = self.config
        grads = self.stats.grad2d / self.stats.count.clamp_min(1)
        high = grads > cfg.grad_threshold
        budget = cfg.max_gaussians - len(params["means"]) if cfg.max_gaussians > 0 else None
        if budget is not None and int(high.sum()) > max(budget, 0):
            high = _top_k_mask(torch.where(high, grads, -torch.inf), max(budget, 0))
        small = torch.exp(params["scales"]).max(dim=-1).values <= cfg.percent_dense * self.scene_extent
        clone_mask, split_mask = high & small, high & ~small
        n_clone, n_split = int(clone_mask.sum()), int(split_mask.sum())
        if n_clone:
            duplicate(params, optimizers, self.stats, clone_mask)
            split_mask = torch.cat([split_mask, split_mask.new_zeros(n_clone)])
        if n_split:
            split(params, optimizers, self.stats, split_mask, self.generator)
        return {"cloned": n_clone, "split": n_split}

    @torch.no_grad()
    def prune(self, step: int, params: Params, optimizers: Optimizers) -> int:
        """Remove transparent Gaussians, and after the first reset, too large ones."""
        cfg = self.config
        mask = torch.sigmoid(params["opacities"]) < cfg.prune_opacity
        if step > cfg.reset_every:
            mask |= torch.exp(params["scales"]).max(dim=-1).values > cfg.prune_world_size * self.scene_extent
            mask |= self.stats.max_radius > cfg.prune_screen_size
        n = int(mask.sum())
        if n:
            remove(params, optimizers, self.stats, mask)
        return n

    def state_dict(self) -> dict:
        return {"stats": self.stats.tensors(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        device = self.stats.grad2d.device
        self.stats = DensifyStats(**{k: v.to(device) for k, v in state["stats"].items()})
        self.generator.set_state(state["generator"])


def _top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) bool mask of the ``k`` largest finite ``scores``."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask[torch.topk(scores, k).indices] = True
    return mask & torch.isfinite(scores)


@torch.no_grad()
def update_params(
    params: Params,
    optimizers: Optimizers,
    param_fn: Callable[[str, torch.Tensor], torch.Tensor],
    state_fn: Callable[[torch.Tensor], torch.Tensor],
    names: list[str] | None = None,
) -> None:
    """Replace each parameter by ``param_fn(name, p)`` and each optimiser buffer by ``state_fn(buf)``.

    The replacement is a new ``nn.Parameter`` registered in place of the old one in its optimiser,
    keeping Adam's step count; ``exp_avg`` / ``exp_avg_sq`` go through ``state_fn``.
    """
    for name in names or list(params):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.data), requires_grad=old.requires_grad)
        params[name] = new
        opt = optimizers.get(name)
        if opt is None:
            continue
        state = opt.state.pop(old, {})
        for key, value in state.items():
            if key != "step" and isinstance(value, torch.Tensor) and value.shape == old.shape:
                state[key] = state_fn(value)
        for group in opt.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        if state:
            opt.state[new] = state


def duplicate(params: Params, optimizers: Optimizers, stats: DensifyStats, mask: torch.Tensor) -> None:
    """Append a copy of every Gaussian in ``mask`` (N,) bool; new optimiser moments are zero."""
    sel = torch.nonzero(mask).squeeze(1)
    update_params(
        params,
        optimizers,
        lambda _, p: torch.cat([p, p[sel]]),
        lambda v: torch.cat([v, v.new_zeros((len(sel),) + v.shape[1:])]),
    )
    _edit_stats(stats, lambda t: torch.cat([t, t[sel]]))


def split(
    params: Params,
    optimizers: Optimizers,
    stats: DensifyStats,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> None:
    """Replace every Gaussian in ``mask`` by two, sampled from it, with std-devs divided by 1.6.

    The originals are removed and the children appended (3DGS's order); children's moments are zero.
    """
    sel = torch.nonzero(mask).squeeze(1)
    rest = torch.nonzero(~mask).squeeze(1)
    scales = torch.exp(params["scales"].data[sel])  # (S, 3)
    rot = quat_to_rotmat(params["quats"].data[sel])  # (S, 3, 3)
    noise = torch.randn((2, len(sel), 3), generator=generator).to(scales.device)
    offsets = torch.einsum("sij,sj,bsj->bsi", rot, scales, noise)  # (2, S, 3)

    def param_fn(name: str, p: torch.Tensor) -> torch.Tensor:
        if name == "means":
            children = (p[sel] + offsets).reshape(-1, 3)
        elif name == "scales":
            children = torch.log(scales / 1.6).repeat(2, 1)
        else:
            children = p[sel].repeat((2,) + (1,) * (p.dim() - 1))
        return torch.cat([p[rest], children])

    update_params(
        params,
        optimizers,
        param_fn,
        lambda v: torch.cat([v[rest], v.new_zeros((2 * len(sel),) + v.shape[1:])]),
    )
    _edit_stats(stats, lambda t: torch.cat([t[rest], t[sel].repeat(2)]))


def remove(params: Params, optimizers: Optimizers, stats: DensifyStats, mask: torch.Tensor) -> None:
    """Delete every Gaussian in ``mask`` (N,) bool, with its optimiser moments and statistics."""
    keep = torch.nonzero(~mask).squeeze(1)
    update_params(params, optimizers, lambda _, p: p[keep], lambda v: v[keep])
    _edit_stats(stats, lambda t: t[keep])


def reset_opacity(params: Params, optimizers: Optimizers, value: float) -> None:
    """Clamp every opacity to at most ``value`` and zero the opacity optimiser's moments."""
    limit = float(torch.logit(torch.tensor(value)))
    update_params(params, optimizers, lambda _, p: p.clamp(max=limit), torch.zeros_like, names=["opacities"])


def _edit_stats(stats: DensifyStats, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    stats.grad2d, stats.count, stats.max_radius = fn(stats.grad2d), fn(stats.count), fn(stats.max_radius)
