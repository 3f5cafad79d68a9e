"""``gags prepare`` end to end: synthetic scene + oracle models (GaS on and off), resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.features.store import check_pair, load_features, load_segments
from gags.models.segmenter import MaskProposals
from gags.runfolder import RunFolder
from gags.scene.cameras import Camera
from gags.segment.prompts import PromptConfig
from gags.splats.gaussians import Gaussians
from gags.stages.prepare import PrepareConfig, prepare, prepare_views

# ----------------------------------------------------------------------------- a tiny hand-built view

SIZE = (48, 64)  # H, W


def tiny_camera(name: str = "view.png") -> Camera:
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    return Camera(name, K, np.eye(4), SIZE[1], SIZE[0])


def tiny_gaussians(n: int = 150, seed: int = 0) -> Gaussians:
    """Gaussians filling the view of :func:`tiny_camera`, 2-4 units away."""
    g = torch.Generator().manual_seed(seed)
    z = 2 + 2 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([1.1, 0.8]) * z[:, None]
    return Gaussians(
        means=torch.cat([xy, z[:, None]], 1),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), float(np.log(0.08))),
        opacity_logits=torch.full((n,), 3.0),
        sh=torch.rand(n, 1, 3, generator=g),
    )


def tiny_image() -> np.ndarray:
    """(H, W, 3) uint8: coloured blocks."""
    img = np.zeros((*SIZE, 3), dtype=np.uint8)
    img[:24, :32] = (200, 40, 40)
    img[24:, 32:] = (40, 200, 40)
    img[10:40, 20:44] = (40, 40, 200)
    return img


class BlockSegmenter:
    """Stand-in segmenter: per level, fixed nested blocks that contain at least one prompt."""

    spec = {"kind": "blocks"}

    def segment(self, image: np.ndarray, points: np.ndarray, *, image_name: str) -> MaskProposals:
        H, W = image.shape[:2]
        masks = []
        for cells in (4, 2, 1):  # subpart: 4x4 blocks, part: 2x2, whole: the image
            ys, xs = np.meshgrid(np.arange(H) * cells // H, np.arange(W) * cells // W, indexing="ij")
            block = ys * cells + xs
            hit = np.unique(block[points[:, 1].astype(int), points[:, 0].astype(int)])
            masks.append(torch.from_numpy(block[None] == hit[:, None, None]))
        ones = [torch.ones(m.shape[0]) for m in masks]
        return MaskProposals(masks=masks, pred_iou=ones, stability=[o.clone() for o in ones])


def run_tiny(tmp_path: Path, segmenter, encoder, **cfg) -> tuple[RunFolder, dict]:
    """prepare_views on the tiny view; returns the run folder and the summary."""
    run = RunFolder(tmp_path / "run")
    cam = tiny_camera()
    config = PrepareConfig(run=run.root, device="cpu", backend="dense", **cfg)
    summary = prepare_views(run, [cam], tiny_gaussians(), lambda c: tiny_image(), segmenter, encoder, config)
    return run, summary


def assert_valid_outputs(run: RunFolder, name: str, embed_dim: int) -> None:
    check_pair(run.segment_file(name), run.feature_file(name), SIZE)
    seg, feats = load_segments(run.segment_file(name)), load_features(run.feature_file(name))
    assert seg.maps.shape == (3, *SIZE) and seg.maps.dtype == np.int32
    assert feats.features.shape[1] == embed_dim and feats.features.dtype == np.float16
    norms = np.linalg.norm(feats.features.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    assert seg.points.shape[0] == int(seg.patch_counts.sum())


class MeanColourEncoder:
    """Cheap stand-in encoder (D = 3) for the orchestration tests."""

    spec = {"kind": "mean-colour"}
    embed_dim = 3

    def encode_masks(self, image: np.ndarray, masks: torch.Tensor, *, image_name: str) -> torch.Tensor:
        img = torch.from_numpy(image).float()
        sums = torch.einsum("mhw,hwc->mc", masks.float(), img) + 1.0
        return torch.nn.functional.normalize(sums, dim=-1)


# ----------------------------------------------------------------------------- orchestration


def test_prepare_views_writes_valid_files_and_resumes(tmp_path: Path) -> None:
    run, summary = run_tiny(
        tmp_path, BlockSegmenter(), MeanColourEncoder(), prompts=PromptConfig(grid=4, n=2)
    )
    assert summary["done"] == 1 and summary["skipped"] == {}
    assert_valid_outputs(run, "view.png", 3)
    seg, feats = load_segments(run.segment_file("view.png")), load_features(run.feature_file("view.png"))
    assert feats.levels.tolist().count(2) == 1 and np.all(seg.maps[2] == seg.maps[2].flat[0])  # one whole
    assert seg.patch_counts.shape == (4, 4) and seg.patch_counts.min() >= 2
    config = json.loads(run.config.read_text())["prepare"]
    assert config["encoder"] == {"kind": "mean-colour"} and config["segmenter"] == {"kind": "blocks"}
    before = run.feature_file("view.png").stat().st_mtime_ns
    _, again = run_tiny(tmp_path, BlockSegmenter(), MeanColourEncoder(), prompts=PromptConfig(grid=4, n=2))
    assert again["resumed"] == 1 and again["done"] == 0
    assert run.feature_file("view.png").stat().st_mtime_ns == before
    run.feature_file("view.png").write_bytes(b"broken")  # an invalid output is redone
    _, redo = run_tiny(tmp_path, BlockSegmenter(), MeanColourEncoder(), prompts=PromptConfig(grid=4, n=2))
    assert redo["done"] == 1
    assert_valid_outputs(run, "view.png", 3)


def test_view_without_visible_gaussians_is_skipped_with_a_reason(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    behind = tiny_gaussians()
    behind.means = behind.means * torch.tensor([1.0, 1.0, -1.0])  # all behind the camera
    config = PrepareConfig(run=run.root, device="cpu", backend="dense")
    summary = prepare_views(
        run, [tiny_camera()], behind, lambda c: tiny_image(), BlockSegmenter(), MeanColourEncoder(), config
    )
    assert summary["done"] == 0 and "no Gaussian is visible" in summary["skipped"]["view.png"]
    assert not run.segment_file("view.png").exists()


def test_image_of_the_wrong_size_is_an_error(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    config = PrepareConfig(run=run.root, device="cpu", backend="dense")
    with pytest.raises(GagsError, match="camera 'view.png' is 64x48"):
        prepare_views(
            run,
            [tiny_camera()],
            tiny_gaussians(),
            lambda c: tiny_image()[:40],
            BlockSegmenter(),
            MeanColourEncoder(),
            config,
        )


def test_missing_splats_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GagsError, match="splats.ply does not exist"):
        prepare(PrepareConfig(run=tmp_path / "empty"))


# ----------------------------------------------------------------------------- synthetic scene + oracle


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A run folder on a small synthetic scene, with its ground-truth splats as splats.ply."""
    synthetic = pytest.importorskip("gags.synthetic")
    root = tmp_path_factory.mktemp("synthetic")
    cfg = synthetic.SyntheticConfig(
        width=80,
        height=60,
        n_far=3,
        n_mid=3,
        near_per_object=1,
        density=0.3,
        n_label_frames=2,
        cache_dir=root,
    )
    scene_dir = synthetic.generate_scene(cfg)
    run = root / "run"
    run.mkdir()
    shutil.copy(scene_dir / "gt_splats.ply", run / "splats.ply")
    RunFolder(run).record_stage("scene", {"data": str(scene_dir), "holdout_every": 0})
    return run


@pytest.mark.parametrize("mode", ["gas", "uniform"])
def test_prepare_synthetic_with_oracle_models(synthetic_run: Path, mode: str, tmp_path: Path) -> None:
    run = RunFolder(tmp_path / mode)
    shutil.copytree(synthetic_run, run.root)
    cfg = PrepareConfig(
        run=run.root,
        device="cpu",
        backend="dense",
        segmenter="oracle",
        encoder="oracle",
        prompts=PromptConfig(mode=mode, points_per_side=16),
        view_chunk=2,
        limit=3,
    )
    summary = prepare(cfg)
    assert summary["done"] == 3 and summary["views"] == 3
    config = run.read_config()["prepare"]
    assert config["encoder"]["kind"] == "oracle" and config["segmenter"]["kind"] == "oracle"
    for seg_file in sorted(run.segments.glob("*.npz")):
        seg = load_segments(seg_file)
        feats = load_features(run.feature_file(seg_file.name))
        check_pair(seg_file, run.feature_file(seg_file.name))
        assert (seg.maps >= 0).any(axis=(1, 2)).all()  # every level segments something
        assert set(feats.levels.tolist()) == {0, 1, 2}
        if mode == "uniform":
            assert seg.points.shape == (256, 2)
        else:
            assert seg.patch_counts.min() >= 16  # Eq. 1: never fewer than n per patch
