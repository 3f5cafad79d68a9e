"""`gags query` through the real LanguageField loader and the real OpenCLIP text tower (random weights)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gags.cli import main
from gags.distill.decoders import build_decoder, decoder_config
from gags.distill.field import LanguageField
from gags.query.postprocess import normalise_relevance
from gags.query.relevance import CANONICAL_NEGATIVES, relevance
from gags.runfolder import RunFolder
from gags.splats.gaussians import Gaussians
from gags.splats.ply import load_ply, save_ply

SPEC = {"kind": "openclip", "model": "ViT-B-16", "pretrained": None}
N = 300


def _tiny_run(root) -> RunFolder:
    """Random splats in front of the camera and a random-weights GAGS language.pt (D = 512)."""
    g = torch.Generator().manual_seed(5)
    gaussians = Gaussians(
        means=torch.rand(N, 3, generator=g) * torch.tensor([1.0, 0.8, 0.5]) + torch.tensor([-0.5, -0.4, 2.0]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1),
        log_scales=torch.full((N, 3), -3.0),
        opacity_logits=torch.full((N,), 2.0),
        sh=torch.rand(N, 1, 3, generator=g),
    )
    run = RunFolder(root)
    save_ply(run.splats, gaussians)
    config = decoder_config("reference-two-nets", 512)
    torch.save(
        {
            "features": torch.randn(N, 16, generator=g),
            "decoder": build_decoder(config).state_dict(),
            "decoder_config": config,
            "granularity_decoder": None,
            "embed_dim": 512,
            "method": "gags",
            "encoder": SPEC,
            "config": {},
        },
        run.language,
    )
    return run


@pytest.mark.slow
def test_query_with_random_openclip_text_tower(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    run = _tiny_run(tmp_path / "run")
    camera = {
        "name": "front.png",
        "K": [[40, 0, 24], [0, 40, 18], [0, 0, 1]],
        "world_to_cam": np.eye(4).tolist(),
    }
    (tmp_path / "cam.json").write_text(json.dumps({**camera, "width": 48, "height": 36}))

    torch.manual_seed(123)
    main(
        [
            "query",
            str(run.root),
            "a red mug",
            "--camera",
            str(tmp_path / "cam.json"),
            "--extract",
            "--box-size",
            "8",
        ]
    )

    out = run.root / "queries" / "a-red-mug"
    result = json.loads((out / "query.json").read_text())
    (view,) = result["views"]
    assert view["view"] == "front.png" and result["method"] == "gags"
    assert iio.imread(out / "front_heatmap.png").shape == (36, 48, 3)
    assert iio.imread(out / "front_mask.png").shape == (36, 48)
    assert 0 <= view["point"][0] < 48 and 0 <= view["point"][1] < 36

    # the 3D selection equals an independent computation with the same random text tower (same seed,
    # same order of random initialisations as `gags query`: the field's decoder, then the CLIP model)
    torch.manual_seed(123)
    field = LanguageField.load(run.language, run.splats)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-16", pretrained=None)
    tokens = open_clip.get_tokenizer("ViT-B-16")(["a red mug", *CANONICAL_NEGATIVES])
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.eval().encode_text(tokens).float(), dim=-1)
    rel = relevance(field.gaussian_features()[0], text[0], text[1:])
    expected = normalise_relevance(rel.double(), dims=(-1,)) > 0.4
    assert result["gaussians"]["selected"] == int(expected.sum()) > 0
    assert len(load_ply(out / "extract.ply")) == int(expected.sum())
