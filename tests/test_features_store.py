"""segments/ and features/ files: round trip, validation, clear errors; encoder/segmenter registry errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.features.store import (
    ImageFeatures,
    ImageSegments,
    check_pair,
    is_valid_pair,
    load_features,
    load_segments,
    save_features,
    save_segments,
)
from gags.models import sam
from gags.models.registry import build_encoder, build_segmenter


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    maps = np.full((3, 6, 7), -1, dtype=np.int32)
    maps[0, :3] = 0
    maps[1, 3:] = 1
    maps[2] = 2
    feats = np.eye(3, 5, dtype=np.float32)
    seg_path, feat_path = tmp_path / "segments" / "a.npz", tmp_path / "features" / "a.npz"
    save_segments(seg_path, ImageSegments(maps, np.zeros((4, 2)), np.ones((2, 2))))
    save_features(feat_path, ImageFeatures(feats, np.array([0, 1, 2])))
    return seg_path, feat_path


def test_round_trip_and_dtypes(tmp_path: Path) -> None:
    seg_path, feat_path = _pair(tmp_path)
    seg, feats = load_segments(seg_path, (6, 7)), load_features(feat_path)
    assert (
        seg.maps.dtype == np.int32 and seg.points.dtype == np.float32 and seg.patch_counts.dtype == np.int32
    )
    assert feats.features.dtype == np.float16 and feats.levels.dtype == np.int8
    assert is_valid_pair(seg_path, feat_path, (6, 7))
    assert not is_valid_pair(seg_path, feat_path, (7, 7))  # another camera size
    assert not is_valid_pair(seg_path, tmp_path / "missing.npz")


def test_corrupt_and_inconsistent_files_raise_naming_the_file(tmp_path: Path) -> None:
    seg_path, feat_path = _pair(tmp_path)
    feat_path.write_bytes(b"not a zip")
    with pytest.raises(GagsError, match=str(feat_path)):
        load_features(feat_path)
    assert not is_valid_pair(seg_path, feat_path)
    save_features(feat_path, ImageFeatures(np.eye(2, 5), np.array([0, 1])))  # 2 rows, maps index row 2
    with pytest.raises(GagsError, match="indexes row 2"):
        check_pair(seg_path, feat_path)
    save_features(feat_path, ImageFeatures(np.eye(3, 5), np.array([0, 2, 1])))  # levels swapped
    with pytest.raises(GagsError, match="another level"):
        check_pair(seg_path, feat_path)
    with pytest.raises(GagsError, match="levels"):
        save_features(feat_path, ImageFeatures(np.eye(3, 5), np.array([0, 1])))
    with pytest.raises(GagsError, match="maps"):
        save_segments(
            seg_path, ImageSegments(np.zeros((2, 4, 4), np.int32), np.zeros((0, 2)), np.ones((1, 1)))
        )


def test_unknown_kinds_raise() -> None:
    with pytest.raises(GagsError, match="unknown encoder kind"):
        build_encoder({"kind": "nope"})
    with pytest.raises(GagsError, match="'kind'"):
        build_segmenter({})


def test_missing_sam_checkpoint_offline_names_file_size_and_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GAGS_CACHE", str(tmp_path))

    def offline(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(GagsError) as err:
        sam.resolve_sam_checkpoint("vit_h", None)
    msg = str(err.value)
    assert "sam_vit_h_4b8939.pth" in msg and "2.56 GB" in msg and sam.SAM_CHECKPOINTS["vit_h"][2] in msg
    assert str(tmp_path / "sam") in msg
    with pytest.raises(GagsError, match="375 MB"):
        sam.resolve_sam_checkpoint("vit_b", tmp_path / "nowhere.pth")


def test_corrupt_sam_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "sam_vit_b.pth"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(GagsError, match="not a valid SAM vit_b checkpoint"):
        sam.build_sam(sam.SamConfig(model="vit_b", checkpoint=bad))
