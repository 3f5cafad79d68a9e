"""Learning-rate schedules, the plateau measure of the loss curve, pixel subsampling of a view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gags.distill.curve import epoch_means, plateau, steps_per_epoch, summarise_curve
from gags.distill.schedule import SCHEDULES, lr_factor, peak_lr
from gags.distill.views import ViewTargets


def test_reference_schedule_is_constant_at_the_authors_rates():
    assert [lr_factor("reference", s, 30000) for s in (0, 1, 15000, 29999)] == [1.0] * 4
    p = SCHEDULES["reference"]
    assert (p.feature_lr, p.decoder_lr, p.langsplat_lr) == (1e-3, 1e-4, 2.5e-3)


def test_short_schedule_warms_up_then_decays_to_its_floor():
    total = 1000
    f = np.array([lr_factor("short", s, total) for s in range(total)])
    warm = int(round(SCHEDULES["short"].warmup * total))
    assert f[0] == pytest.approx(1 / warm) and f[warm - 1] == pytest.approx(1.0)
    assert np.all(np.diff(f[:warm]) > 0) and np.all(np.diff(f[warm:]) <= 1e-12)
    assert f[-1] == pytest.approx(SCHEDULES["short"].final)
    # the shape scales with the run: the same fraction gives the same factor
    assert lr_factor("short", 500, 1000) == pytest.approx(lr_factor("short", 1500, 3000), abs=1e-3)
    with pytest.raises(ValueError):
        lr_factor("nope", 0, 10)


def test_explicit_rates_override_the_schedule():
    assert peak_lr("short", "feature") == SCHEDULES["short"].feature_lr
    assert peak_lr("short", "decoder", 5e-4) == 5e-4
    assert peak_lr("reference", "langsplat") == 2.5e-3


def _per_view_noise(steps: int, views: int, spread: float, seed: int = 0) -> np.ndarray:
    """Each view's fixed loss offset (relative ``spread``), drawn in a fresh random order every epoch."""
    rng = np.random.default_rng(seed)
    offsets = spread * rng.standard_normal(views)
    order = np.concatenate([rng.permutation(views) for _ in range(steps // views + 1)])
    return offsets[order[:steps]]


def test_plateau_of_a_decaying_curve_and_of_a_falling_one():
    steps = np.arange(1000)
    flat_end = 1.0 + np.exp(-steps / 50.0)  # converged long before the end
    p = plateau(flat_end, epoch=52)
    assert p["plateaued"] and 150 < p["steps_to_plateau"] < 400 and p["epoch"] == 52
    falling = 2.0 - steps / 1000.0  # still falling linearly at the end
    assert not plateau(falling, epoch=52)["plateaued"]


def test_plateau_reads_epochs_so_that_which_views_were_drawn_does_not_count():
    # a converged loss whose steps differ only by which of 52 views they drew (19% spread, as on the demo)
    flat = 0.3 * (1.0 + _per_view_noise(1000, 52, 0.19))
    assert plateau(flat, epoch=52)["tail_change"] < 1e-9  # every epoch holds each view once
    # the same views under a loss still falling by 5% over the last fifth
    falling = flat * np.linspace(1.2, 0.95, 1000)
    assert not plateau(falling, epoch=52)["plateaued"]
    # pixel subsampling: every step's loss off by 6% at random (an epoch's mean by about 0.8%); blocks
    # of epochs average it out, where one epoch against another would differ by more than 1% in 5 of 10
    steps = 3000
    pixel_noise = 1.0 + 0.06 * np.random.default_rng(1).standard_normal(steps)
    noisy = 0.3 * (1.0 + _per_view_noise(steps, 52, 0.19)) * pixel_noise
    assert plateau(noisy, epoch=52)["plateaued"]
    assert not plateau(noisy * np.linspace(1.1, 0.95, steps), epoch=52)["plateaued"]


def test_epoch_means_align_to_epoch_boundaries_after_a_resume():
    values = np.arange(1.0, 21.0)  # steps 1..20, epochs of 4
    means, ends = epoch_means(values[5:], 4, first_step=6)  # resumed at step 6: steps 6-8 are a partial epoch
    assert ends.tolist() == [12, 16, 20]
    np.testing.assert_allclose(means, [values[8:12].mean(), values[12:16].mean(), values[16:20].mean()])
    assert steps_per_epoch(52, 1) == 52 and steps_per_epoch(53, 2) == 27
    assert plateau(values[:6], 4)["plateaued"] is False  # no complete epoch in the tail


def test_curve_summary_matches_plateau_per_term_and_a_late_term_starts_at_its_own_step():
    values = 1.0 + np.exp(-np.arange(400) / 40.0)
    curve = [
        {"step": i + 1, "distill": float(v), **({"consistency": float(v)} if i >= 200 else {})}
        for i, v in enumerate(values)
    ]
    summary = summarise_curve(curve, epoch=10)
    assert summary["plateau"]["distill"] == plateau(values, 10)
    assert summary["plateau"]["consistency"] == plateau(values[200:], 10, first_step=201)
    means = summary["epoch_means"]["consistency"]
    assert means["end_steps"][0] == 210 and means["means"][0] == pytest.approx(values[200:210].mean())


def test_subsample_keeps_a_sorted_subset_and_is_deterministic():
    maps = torch.zeros(3, 4, 5, dtype=torch.long)
    view = ViewTargets(camera=None, maps=maps, features=torch.zeros(1, 2), valid=torch.arange(20))
    a, b = view.subsample(7, seed=3), view.subsample(7, seed=3)
    assert a.valid.tolist() == b.valid.tolist() and len(a.valid) == 7
    assert a.valid.tolist() == sorted(set(a.valid.tolist()))
    assert view.subsample(0, seed=3) is view and view.subsample(50, seed=3) is view
