"""The distillation's loss curve and when it plateaus.

Each step's loss terms are recorded (``distill``, ``entropy``, ``consistency``, ``loss``, the learning-rate
factor ``lr`` and the mean alpha per level); :func:`plateau` reads a curve.

Plateau, concretely: let ``ma(t)`` be the mean of the last ``window`` (50) per-step values of a term up
to step t (one view per step, so this averages out which view was drawn). The run has *plateaued*
when ``ma`` changes by less than ``tol`` (1%) of its final value over the last ``tail`` (20%) of the
steps. *Steps to plateau* is the first step from which ``ma`` stays within ``tol`` of its final value.

A decaying learning rate flattens any curve at its end, so a flat tail alone does not show that a
longer run would not do better; the README therefore also compares runs of different lengths (final
loss and metrics).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of the last ``window`` values at every position (fewer at the start)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plateau(values, window: int = 50, tol: float = 0.01, tail: float = 0.2) -> dict[str, Any]:
    """Plateau statistics of one loss term's per-step ``values`` (module docstring).

    Returns ``plateaued`` (bool), ``tail_change`` (relative change of the moving average over the last
    ``tail`` of the steps), ``steps_to_plateau`` (1-based step count, None when the curve is too short),
    ``final`` (the last moving-average value).
    """
    v = np.asarray(values, dtype=float)
    n = v.size
    if n < 2:
        return {"plateaued": False, "tail_change": None, "steps_to_plateau": None, "final": None}
    ma = moving_average(v, window)
    final = float(ma[-1])
    scale = max(abs(final), 1e-12)
    start = min(max(int(np.floor((1.0 - tail) * n)) - 1, 0), n - 1)
    tail_change = float(abs(ma[-1] - ma[start]) / scale)
    outside = np.nonzero(np.abs(ma - final) > tol * scale)[0]
    steps = int(outside[-1] + 2) if outside.size else 1
    return {
        "plateaued": bool(tail_change < tol),
        "tail_change": tail_change,
        "steps_to_plateau": min(steps, n),
        "final": final,
    }


def write_curve(run, curve: list[dict[str, float]], start: int = 0) -> None:
    """Write ``RUN/distill_curve.json``: the per-step records and the plateau of each loss term.

    ``start`` > 0 (a resumed run) is recorded so a reader knows the curve begins there.
    """
    from gags.io import write_json_atomic

    keys = [k for k in ("loss", "distill", "entropy", "consistency") if curve and k in curve[-1]]
    summary = {k: plateau([c[k] for c in curve if k in c]) for k in keys}
    write_json_atomic(run.root / "distill_curve.json", {"start": start, "plateau": summary, "steps": curve})
