"""GaD losses against hand computations, decoders' shapes and forms, and the fixed-alpha methods."""

from __future__ import annotations

import math

import pytest
import torch

from gags.distill.decoders import (
    FeatureDecoder,
    GaDDecoders,
    GranularityDecoder,
    build_decoder,
    decoder_config,
)
from gags.distill.gad import GaD
from gags.distill.langsplat import LangSplat
from gags.distill.losses import (
    consistency_loss,
    distill_error,
    entropy_loss,
    fused_regions,
    loss_weights,
    mixed_target,
    region_average,
)


def _two_pixels():
    f_clip = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    levels = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],  # pixel 0: f_s, f_p, f_w
            [[0.0, 1.0], [0.6, 0.8], [0.0, -1.0]],
        ]
    )
    alpha = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    return f_clip, levels, alpha


def test_paper_l2_distillation_matches_hand_computation():
    f_clip, levels, alpha = _two_pixels()
    e = distill_error(f_clip, levels, alpha, "paper-l2")
    # pixel 0: ||f - f_s||^2 = 0, ||f - f_p||^2 = 2, ||f - f_w||^2 = 4 -> 0.25*2 + 0.25*4 = 1.5
    # pixel 1: 0, (0.36 + 0.04) = 0.4, 4 -> 0.3*0.4 + 0.5*4 = 2.12
    torch.testing.assert_close(e, torch.tensor([1.5, 2.12]))


def test_reference_l1_distillation_matches_hand_computation():
    f_clip, levels, alpha = _two_pixels()
    target = mixed_target(alpha, levels)
    torch.testing.assert_close(target, torch.tensor([[0.25, 0.25], [0.18, -0.06]]))
    e = distill_error(f_clip, levels, alpha, "reference-l1")
    # pixel 0: |1 - .25|, |0 - .25| -> mean 0.5; pixel 1: |0 - .18|, |1 + .06| -> mean 0.62
    torch.testing.assert_close(e, torch.tensor([0.5, 0.62]))


def test_region_average_counts_regions_equally():
    values = torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0])
    region = torch.tensor([7, 7, 7, 7, 2])
    # plain mean 1.8; region-aware: (1 + 5) / 2 = 3
    assert float(region_average(values, region)) == pytest.approx(3.0)
    # Eq. 5 as written: beta_r = sum S(R_i) / (n_r S(R)) applied per region == mean of regional means
    sizes = torch.tensor([4.0, 1.0])
    sums = torch.tensor([4.0, 5.0])
    assert float((sums / sizes).mean()) == pytest.approx(float(region_average(values, region)))


def test_entropy_matches_hand_computation_and_is_zero_for_one_hot():
    alpha = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    expected = (-(0.5 * math.log(0.5 + 1e-6)) * 2 - 1.0 * math.log(1.0 + 1e-6)) / 6
    assert float(entropy_loss(alpha)) == pytest.approx(expected, rel=1e-5)
    assert float(entropy_loss(torch.tensor([[0.0, 1.0, 0.0]]))) == pytest.approx(0.0, abs=1e-5)


def test_consistency_paper_form_matches_eq6():
    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    region = torch.tensor([3, 3, 3, 9])  # region 9 has one pixel: skipped (and contributes 0 anyway)
    # region 3: mean (1, 1/3); squared distances: 1 + 1/9, 1 + 1/9, 0 + 4/9 -> sum 8/3, / S = 3 -> 8/9
    assert float(consistency_loss(feats, region, "paper-sum")) == pytest.approx(8 / 9, rel=1e-6)
    assert float(consistency_loss(feats, region, "paper")) == pytest.approx(8 / 9, rel=1e-6)  # one region


def test_consistency_paper_form_is_eq6_over_the_number_of_regions():
    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [3.0, 3.0], [3.0, 5.0], [9.0, 9.0]])
    region = torch.tensor(
        [3, 3, 3, 4, 4, 9]
    )  # regions 3 (8/9) and 4 (mean (3, 4): 1 + 1 -> 2 / 2 = 1); 9 skipped
    assert float(consistency_loss(feats, region, "paper-sum")) == pytest.approx(8 / 9 + 1, rel=1e-6)
    assert float(consistency_loss(feats, region, "paper")) == pytest.approx((8 / 9 + 1) / 2, rel=1e-6)


def test_consistency_reference_form_matches_code():
    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    region = torch.tensor([3, 3, 3, 9])
    # region 3: unbiased var per channel: x: [0,2,1] -> 1; y: [0,0,1] -> 1/3; mean 2/3; times |R| = 3 -> 2
    # divided by H'W' = 10
    got = consistency_loss(feats, region, "reference", total_pixels=10)
    assert float(got) == pytest.approx(2 / 10, rel=1e-6)
    ref = 3 * torch.var(feats[:3], dim=0).mean() / 10
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_fused_regions_picks_the_level_of_largest_smoothed_alpha():
    H, W = 6, 6
    alpha = torch.zeros(H, W, 3)
    alpha[..., 1] = 1.0  # part everywhere...
    alpha[0, 0] = torch.tensor([1.0, 0.0, 0.0])  # ...except one isolated subpart pixel
    maps = torch.stack([torch.full((H, W), 10), torch.full((H, W), 20), torch.full((H, W), 30)])
    raw = fused_regions(alpha, maps, kernel=1)
    assert raw[0, 0] == 10 and (raw.reshape(-1)[1:] == 20).all()
    smoothed = fused_regions(alpha, maps, kernel=5)  # the 5x5 box filter removes the isolated pixel
    assert (smoothed == 20).all()


def test_loss_schedule_switches_at_the_fraction():
    assert loss_weights(0.49, (0.001, 0.002), 0.1, 0.5) == (0.001, 0.0)
    assert loss_weights(0.5, (0.001, 0.002), 0.1, 0.5) == (0.002, 0.1)


def test_fixed_alpha_methods():
    torch.testing.assert_close(GaD(alpha="average").fixed_alpha(), torch.full((3,), 1 / 3))
    torch.testing.assert_close(GaD(alpha="part").fixed_alpha(), torch.tensor([0.0, 1.0, 0.0]))
    assert GaD().fixed_alpha() is None
    with pytest.raises(ValueError):
        GaD(alpha="nothing").fixed_alpha()
    assert LangSplat().level_names == ("subpart", "part", "whole")
    assert GaD(alpha="whole").level_names == ("whole",)
    assert GaD(alpha="whole").name == "single-whole" and GaD().name == "gags"


@pytest.mark.parametrize("embed_dim", [384, 7])
def test_decoders_shapes_and_unit_norm(embed_dim):
    x = torch.randn(2, 5, 4, 16)
    dec = FeatureDecoder(16, embed_dim)
    out = dec(x)
    assert out.shape == (2, 5, 4, embed_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 5, 4))
    assert GranularityDecoder(16)(x).shape == (2, 5, 4, 3)


def test_reference_form_detaches_the_granularity_branch_and_shared_form_does_not():
    x = torch.randn(8, 16, requires_grad=True)
    ref = GaDDecoders("reference-two-nets", embed_dim=12)
    _, eta = ref(x)
    (gx,) = torch.autograd.grad(eta.sum(), x, allow_unused=True)
    assert gx is None  # alpha trains only its own network
    shared = GaDDecoders("shared-two-heads", embed_dim=12)
    _, eta = shared(x)
    (gx,) = torch.autograd.grad(eta.sum(), x)
    assert gx.abs().sum() > 0


def test_build_decoder_round_trips_state():
    for form in ("shared-two-heads", "reference-two-nets"):
        dec = GaDDecoders(form, embed_dim=9)
        config = decoder_config(form, 9)
        rebuilt = build_decoder(config)
        rebuilt.load_state_dict(dec.feature.state_dict())
        x = torch.randn(3, 16)
        torch.testing.assert_close(rebuilt(x), dec(x)[0])
