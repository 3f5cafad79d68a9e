"""OpenCLIP ViT-B-16 with random weights (``pretrained=None``) to valid ``features/`` files (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_prepare import BlockSegmenter, assert_valid_outputs, run_tiny

from gags.models.openclip import OpenClipEncoder
from gags.models.registry import build_encoder
from gags.segment.prompts import PromptConfig


@pytest.mark.slow
def test_openclip_random_weights_to_feature_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_encoder({"kind": "openclip", "model": "ViT-B-16", "pretrained": None})
    assert isinstance(encoder, OpenClipEncoder)
    assert encoder.embed_dim == 512 and encoder.image_size == 224
    texts = encoder.encode_texts(["a ramen bowl", "chopsticks"])
    assert texts.shape == (2, 512) and torch.allclose(texts.norm(dim=1), torch.ones(2), atol=1e-5)
    run, summary = run_tiny(
        tmp_path, BlockSegmenter(), encoder, prompts=PromptConfig(mode="gas", grid=2, n=2)
    )
    assert summary["done"] == 1
    assert_valid_outputs(run, "view.png", 512)
    feats = np.load(run.feature_file("view.png"))["features"].astype(np.float32)
    assert feats.shape[0] >= 3 and np.abs(feats[0] - feats[-1]).max() > 1e-3  # distinct crops, distinct rows
    assert run.read_config()["prepare"]["encoder"] == {
        "kind": "openclip",
        "model": "ViT-B-16",
        "pretrained": None,
    }
