"""Learning-rate schedules of the distillation, scaled to ``--iterations``.

Two named schedules (``Schedule``):

- ``reference``: the authors' settings, made for 30,000 GPU steps: constant learning rates, per-Gaussian
  features 1e-3 (Adam eps 1e-15), decoders 1e-4 (GAGS train.py:72, 76; arguments/__init__.py:85);
  LangSplat's 3-d fields 2.5e-3 (LangSplat arguments). No warm-up, no decay.
- ``short`` (DEVIATION, the default): for runs of a few hundred to a few thousand steps. Adam moves each
  zero-initialised per-Gaussian feature by about one learning rate per step in which it is seen, so at
  1e-3 the field cannot travel far in a few hundred steps. ``short`` raises the feature rate 30x (3e-2)
  and keeps the decoders' 1e-4, ramps both up linearly over the first ``warmup`` (5%) of the run (Adam's
  first steps, taken with poorly estimated second moments, are the largest) and decays them with a
  half cosine to ``final`` (1%) of the peak at the last step. The decoders must stay slow: at 1e-3 the
  granularity head locks alpha onto one level for the whole scene within a few hundred steps, before
  the field has told the objects apart (bed v2, seed 0, 300 steps: alpha 1.00 "whole" on every pixel and
  2.9 mIoU, against alpha about 0.23 / 0.35 / 0.41 and 39.2 mIoU at 1e-4; the toy of
  ``tests/test_distill_alpha_regions.py`` shows the same lock-in). Measured with
  ``gags ablation``; figures in the README. LangSplat's 3-d fields keep LangSplat's own 2.5e-3: its
  result hardly depends on the rate (bed v2, seed 0, 1000 steps: 45.6 / 45.5 / 47.1 mIoU at
  2.5e-3 / 1e-2 / 3e-2).

Every method (gags, average, single-*, langsplat) uses the same schedule shape; only the base rates
of its parameter groups differ. The factor depends on the step alone, so resuming is exact.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

Schedule = Literal["reference", "short"]


@dataclasses.dataclass(frozen=True)
class SchedulePreset:
    """Peak learning rates and the shape of one schedule (see the module docstring)."""

    feature_lr: float
    """per-Gaussian 16-d features of GaD and the fixed-alpha methods"""
    decoder_lr: float
    """GaD decoders (feature and granularity)"""
    langsplat_lr: float
    """LangSplat's three 3-d per-Gaussian fields"""
    warmup: float
    """fraction of the run with a linear ramp from lr / (warmup steps) to lr"""
    decay: Literal["constant", "cosine"]
    """after the warm-up: constant, or a half cosine from the peak to ``final`` x peak"""
    final: float
    """the factor at the last step (cosine decay only)"""


SCHEDULES: dict[str, SchedulePreset] = {
    "reference": SchedulePreset(
        feature_lr=1e-3, decoder_lr=1e-4, langsplat_lr=2.5e-3, warmup=0.0, decay="constant", final=1.0
    ),
    "short": SchedulePreset(
        feature_lr=3e-2, decoder_lr=1e-4, langsplat_lr=2.5e-3, warmup=0.05, decay="cosine", final=0.01
    ),
}


def preset(schedule: str) -> SchedulePreset:
    """The :class:`SchedulePreset` named ``schedule``."""
    try:
        return SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown schedule {schedule!r}; choose {' or '.join(SCHEDULES)}") from None


def lr_factor(schedule: str | SchedulePreset, step: int, total: int) -> float:
    """Multiplier of the peak learning rates at 0-based ``step`` of a ``total``-step run, in (0, 1]."""
    p = preset(schedule) if isinstance(schedule, str) else schedule
    total = max(int(total), 1)
    warm = int(round(p.warmup * total))
    if step < warm:
        return (step + 1) / warm
    if p.decay == "constant":
        return 1.0
    span = max(total - 1 - warm, 1)
    t = min(max(step - warm, 0) / span, 1.0)
    return p.final + (1.0 - p.final) * 0.5 * (1.0 + math.cos(math.pi * t))


def peak_lr(schedule: str, group: str, override: float | None = None) -> float:
    """The peak rate of parameter ``group`` (``feature``, ``decoder`` or ``langsplat``): ``override``
    when a method's own setting gives one, else the schedule's."""
    return float(getattr(preset(schedule), f"{group}_lr") if override is None else override)
