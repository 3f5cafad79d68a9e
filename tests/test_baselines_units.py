"""Baselines: LangSplat's autoencoder and loss, the method table, the ablation table's formatting."""

from __future__ import annotations

import pytest
import torch

from gags.baselines.methods import DISTILL_METHODS, METHOD_SPECS, TABLE4
from gags.distill.autoencoder import (
    Autoencoder,
    autoencoder_loss,
    train_autoencoder,
)
from gags.distill.decoders import build_decoder
from gags.distill.langsplat import level_codes, masked_l1
from gags.distill.views import ViewTargets
from gags.stages.ablation import ablation_markdown


@pytest.mark.parametrize("dim", [384, 20])
def test_autoencoder_shapes_and_unit_outputs(dim):
    ae = Autoencoder(dim).eval()
    x = torch.nn.functional.normalize(torch.randn(5, dim), dim=-1)
    z = ae.encoder(x)
    assert z.shape == (5, 3)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))
    out = ae.decoder(torch.randn(2, 4, 3))  # any leading shape, e.g. a rendered map
    assert out.shape == (2, 4, dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 4))


def test_autoencoder_learns_a_few_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    x = torch.nn.functional.normalize(
        centres.repeat(32, 1) + 0.01 * torch.randn(128, 16, generator=g), dim=-1
    )
    untrained = autoencoder_loss(Autoencoder(16).eval()(x), x)
    ae, last = train_autoencoder(x, epochs=60, lr=7e-3, batch_size=32, seed=0)
    with torch.no_grad():
        trained = autoencoder_loss(ae(x), x)
    assert trained < 0.25 * untrained
    assert last == pytest.approx(float(trained), rel=0.5)
    decoder = build_decoder({"form": "langsplat-autoencoder", "embed_dim": 16, "in_dim": 3})
    decoder.load_state_dict(ae.decoder.state_dict())
    with torch.no_grad():
        cos = (decoder(ae.encoder(centres)) * centres).sum(-1)
    assert cos.min() > 0.9


def test_masked_l1_matches_hand_computation():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (1, 2, 2)
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    # only pixel 0 counts: |1| + |2| = 3, averaged over all 4 (pixel, channel) entries
    assert float(masked_l1(pred, target, mask)) == pytest.approx(0.75)


def test_level_codes_gathers_the_code_of_each_pixels_mask():
    maps = torch.tensor([[[0, 1]], [[2, -1]], [[3, 3]]])  # (3 levels, 1, 2)
    view = ViewTargets(camera=None, maps=maps, features=torch.zeros(4, 5), valid=torch.tensor([0]))
    codes = torch.arange(12.0).reshape(4, 3)
    target, mask = level_codes(view, codes, 1)
    assert mask.tolist() == [[True, False]]
    torch.testing.assert_close(target, torch.tensor([[[6.0, 7.0, 8.0], [0.0, 0.0, 0.0]]]))


def test_method_table_is_the_papers_table4():
    assert [m.model for m in TABLE4] == ["1", "2", "3", "4", "5", "6", "7"]
    assert [(m.prompts, m.distill_method) for m in TABLE4] == [
        ("uniform", "average"),
        ("uniform", "gags"),
        ("gas", "gags"),
        ("gas", "single-subpart"),
        ("gas", "single-part"),
        ("gas", "single-whole"),
        ("gas", "average"),
    ]
    assert all(m.distill_method in DISTILL_METHODS for m in METHOD_SPECS.values())


def test_ablation_markdown_formats_percentages_and_missing_levels():
    rows = [
        {
            "model": "3",
            "method": "gags",
            "prompts": "gas",
            "distill": "gags",
            "overall": {"miou": 0.5, "macc": 0.75},
            "by_level": {"part": {"miou": 0.25, "macc": 1.0}},
        }
    ]
    table = ablation_markdown(rows).splitlines()
    assert table[0].startswith("| model | method | prompts | distill | mIoU overall | mIoU subpart")
    assert table[2] == "| 3 | gags | gas | gags | 50.0 | - | 25.0 | - | 75.0 | - | 100.0 | - |"


def test_seed_rows_average_into_mean_and_std_cells():
    from gags.stages.ablation import mean_rows

    def row(miou: float) -> dict:
        block = {"overall": {"miou": miou, "macc": 0.5}, "by_level": {"whole": {"miou": miou, "macc": 1.0}}}
        return {
            "method": "gags",
            "model": "3",
            "prompts": "gas",
            "distill": "gags",
            "label_sets": {"q": block},
        }

    (mean,) = mean_rows([[row(0.2)], [row(0.4)]], "q")
    assert mean["overall"]["miou"] == pytest.approx((0.3, 0.1))
    assert mean["by_level"]["part"]["miou"] is None
    table = ablation_markdown([mean], with_std=True)
    assert "| 30.0 ± 10.0 |" in table and "| 50.0 ± 0.0 |" in table and "| - |" in table


def test_convergence_and_granularity_sections_summarise_the_seeds():
    from gags.stages.ablation import convergence_markdown, granularity_markdown

    def row(plateaued: bool, tail: float, seconds: float) -> dict:
        plateau = {"plateaued": plateaued, "tail_change": tail, "steps_to_plateau": 800}
        return {"method": "gags", "plateau": plateau, "distill_seconds": seconds, "iterations": 1000}

    table = convergence_markdown([[row(True, 0.004, 50.0)], [row(False, 0.012, 70.0)]], [0, 1])
    assert "| gags | 1/2 | 0.80% | 800 | 0.060 |" in table
    alpha = {"by_ring": {"far": {"alpha": {"subpart": 0.1, "part": 0.2, "whole": 0.7}}}}
    floors = {
        "gas": {
            "scene": {
                "floor": {"subpart": 0.3, "part": 0.25, "whole": 0.2},
                "lowest_for_subparts": {"subpart": 0, "part": 1, "whole": 5},
            }
        }
    }
    text = granularity_markdown([{"method": "gags", "alpha": alpha}, {"method": "average"}], floors)
    assert "- alpha, gags: far 0.10/0.20/0.70" in text and "average" not in text
    assert "0.300 / 0.250 / 0.200; lowest for subpart 0, part 1, whole 5 subparts" in text
