"""The distillation's loss curve and when it plateaus.

Each step's loss terms are recorded (``distill``, ``entropy``, ``consistency``, ``loss``, the learning-rate
factor ``lr`` and the mean alpha per level); :func:`plateau` reads a curve.

Plateau, concretely: a step draws one view (or ``views_per_step``) from a sampler that draws every view once
per epoch (reference train.py:134-137), and views differ in loss (near views fit worse than far ones): on
the demo scene one step's loss varies by about 19% around its mean, so a trailing mean over 50 steps still
moves from which views it holds alone (by 1.7-5.5% a hundred steps apart late in a 1000-step demo run). The
curve is therefore read in **epochs**: ``epoch_means`` averages the loss over each complete epoch of
``steps_per_epoch`` steps, in which every view counts once, and :func:`plateau` averages those over blocks
of 10% of the run's epochs (pixel subsampling leaves about 0.8% of noise on one epoch's mean). The run has
*plateaued* when the last block's mean differs by less than ``tol`` (1%) from the block that ends at 80% of
the run (``tail``: the last 20%); *steps to plateau* is the end of the first block from which every block's
mean stays within ``tol`` of the last one.

A decaying learning rate flattens any curve at its end, so a flat tail alone does not show that a
longer run would not do better; the README therefore also compares runs of different lengths (final
loss and metrics).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: the plateau's defaults (module docstring): relative tolerance, tail of the run, block of epochs
TOL, TAIL, BLOCK = 0.01, 0.2, 0.1


def steps_per_epoch(num_views: int, views_per_step: int = 1) -> int:
    """Steps in which the sampler draws every one of ``num_views`` views once (rounded up when the step's
    ``views_per_step`` (times the ranks) does not divide it)."""
    return max(1, math.ceil(num_views / max(views_per_step, 1)))


def epoch_means(values, epoch: int, first_step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over each complete epoch.

    Args:
        values: per-step values of steps ``first_step, first_step + 1, ...`` (1-based; a resumed run's
            curve starts after its checkpoint).
        epoch: steps per epoch (:func:`steps_per_epoch`); epoch k holds steps k * epoch + 1 ..
            (k + 1) * epoch.
    Returns:
        (E,) means and (E,) the 1-based step that ends each epoch; epochs the curve holds only in part
        are left out.
    """
    v = np.asarray(values, dtype=float)
    epoch = max(int(epoch), 1)
    skip = (-(first_step - 1)) % epoch  # steps before the first epoch boundary the curve holds
    n = (v.size - skip) // epoch
    if n <= 0:
        return np.zeros(0), np.zeros(0, dtype=int)
    means = v[skip : skip + n * epoch].reshape(n, epoch).mean(axis=1)
    ends = first_step + skip - 1 + epoch * np.arange(1, n + 1)
    return means, ends


def plateau(
    values, epoch: int = 50, tol: float = TOL, tail: float = TAIL, block: float = BLOCK, first_step: int = 1
) -> dict[str, Any]:
    """Plateau statistics of one loss term's per-step ``values`` read in epochs (module docstring).

    The epoch means are averaged over blocks of ``block`` (10%) of the run's epochs (at least one): with
    a few hundred pixels per step an epoch's mean still moves by about 0.8% from epoch to epoch.

    Returns ``plateaued`` (bool), ``tail_change`` (relative change of the block mean over the last ``tail``
    of the steps), ``steps_to_plateau`` (1-based step), ``final`` (the last block's mean), ``epoch`` (steps
    per epoch); ``plateaued`` is False and the others None when the tail holds no complete epoch.
    """
    means, ends = epoch_means(values, epoch, first_step)
    return _plateau_of_epochs(means, ends, first_step, len(values), int(epoch), tol, tail, block)


def _plateau_of_epochs(
    means: np.ndarray,
    ends: np.ndarray,
    first_step: int,
    n_steps: int,
    epoch: int,
    tol: float,
    tail: float,
    block: float,
) -> dict[str, Any]:
    """:func:`plateau` from the epoch means and end steps of a curve of ``n_steps`` steps."""
    mark = first_step - 1 + (1.0 - tail) * n_steps  # the step at which the tail begins
    before = np.nonzero(ends <= mark + 1e-9)[0]
    if means.size < 2 or before.size == 0 or before[-1] == means.size - 1:
        return {
            "plateaued": False,
            "tail_change": None,
            "steps_to_plateau": None,
            "final": None,
            "epoch": epoch,
        }
    last = int(before[-1])  # the last epoch before the tail
    width = max(1, min(round(block * means.size), last + 1, means.size - 1 - last))
    c = np.cumsum(np.insert(means, 0, 0.0))
    blocks = (c[width:] - c[:-width]) / width  # blocks[i]: mean of epochs i .. i + width - 1
    final = float(blocks[-1])
    scale = max(abs(final), 1e-12)
    tail_change = float(abs(final - blocks[last - width + 1]) / scale)
    outside = np.nonzero(np.abs(blocks - final) > tol * scale)[0]
    steps = int(ends[outside[-1] + width]) if outside.size else int(ends[width - 1])
    return {
        "plateaued": bool(tail_change < tol),
        "tail_change": tail_change,
        "steps_to_plateau": min(steps, first_step + n_steps - 1),
        "final": final,
        "epoch": epoch,
    }


def summarise_curve(curve: list[dict[str, float]], epoch: int, start: int = 0) -> dict[str, Any]:
    """Per loss term of a run's per-step records (each with its 1-based ``step``): its epoch means with the
    step that ends each epoch, and its :func:`plateau`. ``start`` > 0 is a resumed run's first step - 1.

    Returns ``{"start", "epoch", "plateau": {term: ...}, "epoch_means": {term: {"end_steps", "means"}}}``.
    """
    keys = [k for k in ("loss", "distill", "entropy", "consistency") if curve and k in curve[-1]]
    plateaus, means = {}, {}
    for k in keys:  # a term may start late (the consistency term after the switch)
        records = [c for c in curve if k in c]
        first = int(records[0].get("step", start + 1))
        m, ends = epoch_means([c[k] for c in records], epoch, first)
        plateaus[k] = _plateau_of_epochs(m, ends, first, len(records), int(epoch), TOL, TAIL, BLOCK)
        means[k] = {"end_steps": ends.tolist(), "means": m.tolist()}
    return {"start": start, "epoch": int(epoch), "plateau": plateaus, "epoch_means": means}


def write_curve(run, curve: list[dict[str, float]], summary: dict[str, Any]) -> None:
    """Write ``RUN/distill_curve.json``: the :func:`summarise_curve` ``summary`` and the per-step records."""
    from gags.io import write_json_atomic

    write_json_atomic(run.root / "distill_curve.json", {**summary, "steps": curve})
