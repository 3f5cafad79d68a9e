"""SAM ViT-B with random weights through the real code path to valid ``segments/`` files (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_prepare import SIZE, MeanColourEncoder, assert_valid_outputs, run_tiny

from gags.models.sam import SamConfig, SamSegmenter, build_sam
from gags.segment.cleanup import CleanupConfig
from gags.segment.prompts import PromptConfig


@pytest.mark.slow
def test_sam_vit_b_random_weights_to_segment_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # random weights: relax the thresholds so that masks survive
    cfg = SamConfig(
        model="vit_b", random_weights=True, pred_iou_thresh=-1e9, stability_thresh=0.0, min_region_area=20
    )
    segmenter = SamSegmenter(build_sam(cfg), cfg)
    assert segmenter.spec["kind"] == "sam" and segmenter.spec["model"] == "vit_b"
    run, summary = run_tiny(
        tmp_path,
        segmenter,
        MeanColourEncoder(),
        prompts=PromptConfig(grid=2, n=3),
        cleanup=CleanupConfig(score_thr=0.0),
    )
    assert summary["done"] == 1
    assert summary["timings"]["sam_encoder"] > 0 and summary["timings"]["sam_decoder"] > 0
    assert_valid_outputs(run, "view.png", 3)
    maps = np.load(run.segment_file("view.png"))["maps"]
    assert maps.shape == (3, *SIZE) and (maps >= 0).any()
