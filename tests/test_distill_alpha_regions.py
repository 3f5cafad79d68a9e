"""GaD picks the multi-view consistent granularity per region, not one level for the whole scene.

Two objects, A and B, each made of 2 parts of 2 subparts: 8 subpart cells, each with its own
learnable 16-d feature (standing in for its Gaussians; no rendering). Every view shows both objects
with the cells in a new random layout. The targets (unit vectors, one per mask, as the oracle encoder
gives) are:

- object A is consistent at "whole": its whole target is the same in every view, while the targets
  of its parts and subparts are drawn afresh in every view (masks that disagree across views);
- object B is consistent at "part": each of its two parts has the same target in every view, while
  its subparts and its whole are redrawn per view.

Eq. 3 is minimised per cell by putting alpha on the level whose target the cell's (view-independent)
decoded feature can match in every view, so alpha must be "whole" on A's cells and "part" on B's.

Measured with seeds 0-3 (the tests below run 0 and 1), 8 cells, Adam:

- the reference's distillation loss (``reference-l1``: L1 to the alpha-mixed target) picks per region
  with either decoder form (4/4 seeds each; features 1e-2, decoders 2e-3, 150 steps);
- Eq. 3 (``paper-l2``) picks per region with either form (4/4) when the decoders learn much more
  slowly than the features: features 3e-2 and decoders 1e-4 (the ``short`` schedule's rates,
  :mod:`gags.distill.schedule`) or 1e-2 / 1e-4, 400 steps; also 3e-2 / 1e-3 in 150 steps;
- Eq. 3 with the experimental alpha warm-up (alpha = 1/3 for the first third) picks per region with
  either form (4/4) at 1e-2 / 2e-3;
- Eq. 3 from the start with fast decoders (1e-2 / 2e-3, 150 steps) does not: 1/4 seeds with the
  paper's default ``shared-two-heads``, 2/4 with ``reference-two-nets``; the others put one level on
  both objects. Eq. 3 is linear in alpha, so for any decoded feature its minimum over alpha is the
  one-hot of the level with the smallest current error, and its gradient on eta_n is
  alpha_n (e_n - sum_m alpha_m e_m), which vanishes for every level once one dominates. At the start
  all cells decode the same feature (the field is zero), so when the granularity head moves as fast as
  the features, the level that is best *on average over the scene* gains weight everywhere and alpha
  saturates globally before the cells' features have told the objects apart. With slow decoders the
  features separate the objects first, and alpha then follows each cell's own best level. That case
  is kept below as a strict xfail so that a change which alters it shows up.
"""

from __future__ import annotations

import pytest
import torch

from gags.distill.decoders import GaDDecoders
from gags.distill.gad import GaD
from gags.distill.objective import LossOptions, gad_loss
from gags.distill.schedule import SCHEDULES
from gags.distill.views import ViewTargets

D = 12  # embedding size
CELL = 3  # pixels per cell side
V = 8  # views
# cell c = 4 * object + 2 * part + subpart
OBJ = torch.arange(8) // 4
PART = torch.arange(8) // 2


def _views(seed: int = 0) -> tuple[list[ViewTargets], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)

    def unit(n: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=-1)

    whole_a = unit(1)[0]  # A's consistent target
    parts_b = unit(2)  # B's two consistent part targets
    views, layouts = [], []
    for _ in range(V):
        layout = torch.randperm(8, generator=g).reshape(2, 4)  # a 2 x 4 grid of cells
        cells = layout.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)  # (6, 12) cell id per pixel
        sub_t, part_t, whole_t = unit(8), unit(4), unit(2)  # fresh (inconsistent) targets
        whole_t[0] = whole_a
        part_t[2:] = parts_b
        # rows: subparts 0..7, parts 8..11, wholes 12..13 (ids unique across levels, as prepare writes)
        features = torch.cat([sub_t, part_t, whole_t])
        maps = torch.stack([cells, 8 + PART[cells], 12 + OBJ[cells]])
        valid = torch.arange(cells.numel())
        views.append(ViewTargets(camera=None, maps=maps, features=features, valid=valid))
        layouts.append(cells)
    return views, layouts


def _train(
    form: str,
    loss: str,
    steps: int = 150,
    seed: int = 0,
    alpha_warmup: float = 0.0,
    rates: tuple[float, float] = (1e-2, 2e-3),
):
    """Train the 8 cells' features and the decoders; ``rates`` = (feature, decoder) Adam learning rates.
    Returns alpha (8 cells, 3)."""
    torch.manual_seed(seed)
    views, layouts = _views(seed)
    emb = torch.zeros(8, 16, requires_grad=True)
    decoders = GaDDecoders(form, embed_dim=D, hidden=64)
    opt = torch.optim.Adam(
        [{"params": [emb], "lr": rates[0]}, {"params": decoders.parameters(), "lr": rates[1]}]
    )
    options = LossOptions(distill_loss=loss)
    warm = int(round(alpha_warmup * steps))
    for step in range(steps):
        v = step % V
        f16 = emb[layouts[v]]  # (H, W, 16)
        lam_cons = 0.1 if step >= steps // 2 else 0.0
        alpha = GaD(alpha="average").fixed_alpha() if step < warm else None  # as GaD.alpha_warmup
        total, _ = gad_loss(f16, views[v], decoders, alpha, options, 0.001, lam_cons)
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        _, eta = decoders(emb)
    return torch.softmax(eta, -1)  # (8 cells, 3)


def _assert_per_region(alpha: torch.Tensor) -> None:
    a_cells, b_cells = alpha[OBJ == 0], alpha[OBJ == 1]
    assert (a_cells.argmax(-1) == 2).all(), alpha  # object A: whole
    assert (b_cells.argmax(-1) == 1).all(), alpha  # object B: part
    assert a_cells[:, 2].min() > 0.8 and b_cells[:, 1].min() > 0.8, alpha


FORMS = ("shared-two-heads", "reference-two-nets")
WINNER_TAKES_ALL = "Eq. 3 with fast decoders: one level wins globally before the features differ"
SHORT_RATES = (SCHEDULES["short"].feature_lr, SCHEDULES["short"].decoder_lr)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("form", FORMS)
def test_reference_l1_picks_the_consistent_level_per_region(form, seed):
    _assert_per_region(_train(form, "reference-l1", seed=seed))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("form", FORMS)
def test_paper_l2_with_alpha_warmup_picks_the_consistent_level_per_region(form, seed):
    _assert_per_region(_train(form, "paper-l2", seed=seed, alpha_warmup=1 / 3))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("form", FORMS)
def test_paper_l2_with_slow_decoders_picks_the_consistent_level_per_region(form, seed):
    assert SHORT_RATES[0] >= 100 * SHORT_RATES[1]  # the regime measured above
    _assert_per_region(_train(form, "paper-l2", steps=400, seed=seed, rates=SHORT_RATES))


@pytest.mark.xfail(strict=True, reason=WINNER_TAKES_ALL)
@pytest.mark.parametrize("form", FORMS)
def test_paper_l2_with_fast_decoders_from_the_start_picks_the_consistent_level_per_region(form):
    _assert_per_region(_train(form, "paper-l2", seed=0))
