"""Learning-rate schedules, the plateau measure of the loss curve, pixel subsampling of a view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gags.distill.curve import moving_average, plateau
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


def test_plateau_of_a_decaying_curve_and_of_a_falling_one():
    steps = np.arange(1000)
    flat_end = 1.0 + np.exp(-steps / 50.0)  # converged long before the end
    p = plateau(flat_end)
    assert p["plateaued"] and 150 < p["steps_to_plateau"] < 400
    falling = 2.0 - steps / 1000.0  # still falling linearly at the end
    assert not plateau(falling)["plateaued"]
    np.testing.assert_allclose(moving_average(np.array([1.0, 3.0, 5.0]), 2), [1.0, 2.0, 4.0])


def test_subsample_keeps_a_sorted_subset_and_is_deterministic():
    maps = torch.zeros(3, 4, 5, dtype=torch.long)
    view = ViewTargets(camera=None, maps=maps, features=torch.zeros(1, 2), valid=torch.arange(20))
    a, b = view.subsample(7, seed=3), view.subsample(7, seed=3)
    assert a.valid.tolist() == b.valid.tolist() and len(a.valid) == 7
    assert a.valid.tolist() == sorted(set(a.valid.tolist()))
    assert view.subsample(0, seed=3) is view and view.subsample(50, seed=3) is view
