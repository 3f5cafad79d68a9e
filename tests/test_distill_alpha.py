"""GaD selects the multi-view consistent granularity on a toy case (no rendering).

Four objects are seen in six views. An object's rendered 16-d feature is the same in every view
(one learnable vector per object, standing in for its Gaussians). Only the "part" level's target
feature is the same in every view; the subpart and whole targets are redrawn per view, as for a
level whose masks disagree across views. Alpha must converge to "part" for every object.
"""

from __future__ import annotations

import pytest
import torch

from gags.distill.decoders import GaDDecoders
from gags.distill.gad import GaD
from gags.distill.objective import LossOptions, gad_loss
from gags.distill.views import ViewTargets

K, V, S, D = 4, 6, 8, 10  # objects, views, image side, embedding size


def _toy_views(seed: int = 0) -> tuple[list[ViewTargets], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    consistent = torch.nn.functional.normalize(torch.randn(K, D, generator=g), dim=-1)
    views, layouts = [], []
    for _ in range(V):
        quadrant = torch.randperm(K, generator=g)  # which object sits in which quadrant
        obj = quadrant.reshape(2, 2).repeat_interleave(S // 2, 0).repeat_interleave(S // 2, 1)  # (S, S)
        obj[0, 0] = -1  # one pixel without masks: must be ignored
        rows = [
            torch.nn.functional.normalize(torch.randn(K, D, generator=g), dim=-1),
            consistent,
            torch.nn.functional.normalize(torch.randn(K, D, generator=g), dim=-1),
        ]
        features = torch.cat(rows)  # (3K, D): subpart rows 0..K-1, part K..2K-1, whole 2K..3K-1
        maps = torch.stack([torch.where(obj >= 0, obj + level * K, -1) for level in range(3)])
        valid = torch.nonzero((maps >= 0).all(0).reshape(-1)).squeeze(1)
        views.append(ViewTargets(camera=None, maps=maps, features=features, valid=valid))
        layouts.append(obj)
    return views, layouts


def _train(form, loss, steps=250, method="gags"):
    views, layouts = _toy_views()
    emb = torch.zeros(K, 16, requires_grad=True)
    decoders = GaDDecoders(form, embed_dim=D, hidden=64, learn_alpha=method == "gags")
    opt = torch.optim.Adam([{"params": [emb], "lr": 1e-2}, {"params": decoders.parameters(), "lr": 2e-3}])
    options = LossOptions(distill_loss=loss)
    alpha_const = GaD(alpha="learned" if method == "gags" else method).fixed_alpha()
    for step in range(steps):
        v = step % V
        obj = layouts[v]
        f16 = torch.where((obj >= 0)[..., None], emb[obj.clamp(min=0)], torch.zeros(()))  # (S, S, 16)
        lam_cons = 0.1 if step >= steps // 2 else 0.0
        total, stats = gad_loss(f16, views[v], decoders, alpha_const, options, 0.001, lam_cons)
        opt.zero_grad()
        total.backward()
        opt.step()
    return emb.detach(), decoders, stats


@pytest.mark.parametrize(
    "form,loss", [("shared-two-heads", "paper-l2"), ("reference-two-nets", "reference-l1")]
)
def test_alpha_converges_to_the_consistent_level(form, loss):
    emb, decoders, stats = _train(form, loss)
    with torch.no_grad():
        f_clip, eta = decoders(emb)
        alpha = torch.softmax(eta, -1)  # (K, 3)
    assert (alpha.argmax(-1) == 1).all(), alpha
    assert alpha[:, 1].min() > 0.8, alpha
    assert stats["alpha_part"] > 0.8
    assert _cosine_to_consistent(decoders, emb).min() > 0.9  # the decoded feature is the consistent one


def _cosine_to_consistent(decoders, emb) -> torch.Tensor:
    with torch.no_grad():
        f_clip, _ = decoders(emb)
    return (f_clip * _toy_views()[0][0].features[K : 2 * K]).sum(-1)  # (K,)


def test_averaged_features_stay_further_from_the_consistent_target_than_gad():
    emb, decoders, stats = _train("shared-two-heads", "paper-l2", method="average")
    assert stats["alpha_part"] == pytest.approx(1 / 3)
    average = _cosine_to_consistent(decoders, emb)
    emb, decoders, _ = _train("shared-two-heads", "paper-l2")
    gad = _cosine_to_consistent(decoders, emb)
    assert gad.mean() > average.mean() + 0.05
