"""`gags query` and `gags eval` end to end on the synthetic scene, with an oracle language field.

The oracle field puts on every Gaussian the text embedding of the region it belongs to (one field per
level, as LangSplat; or only the whole level) and renders it with the real ``render()``; the text
encoder gives every phrase a fixed random unit vector. So the protocol code (labels, camera matching,
relevance, smoothing, masks, points, metrics, reports, PLY selection) runs for real on known truth.
"""

from __future__ import annotations

import dataclasses
import json
import zlib

import pytest
import torch

import gags.models.registry as registry
from gags.cli import main
from gags.distill.field import LanguageField
from gags.errors import GagsError
from gags.evaluate.labels import read_frame_labels
from gags.evaluate.metrics import mask_iou
from gags.runfolder import RunFolder
from gags.splats.ply import load_ply, save_ply
from gags.splats.render import render
from gags.stages.evaluate import EvalConfig, evaluate
from gags.stages.query import QueryConfig, query
from gags.synthetic.labels import HIERARCHY_LABELS  # every region of every level: the protocol test

SYNTHETIC = dict(width=80, height=60, n_far=4, n_mid=4, near_per_object=1, n_label_frames=4, density=0.5)
DIM = 48
#: the reference 30-pixel window is made for ~1000 x 730 frames; at 80 x 60 it blurs away every part
BOX = 8


class HashEncoder:
    """Texts -> fixed random unit vectors (seeded by the text), D = 48."""

    embed_dim = DIM

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = [
            torch.randn(DIM, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts
        ]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@dataclasses.dataclass
class OracleField:
    """The LanguageField interface over per-level per-Gaussian embeddings (no decoder)."""

    gaussians: object
    level_features: list[torch.Tensor]
    method: str
    encoder: dict | None = dataclasses.field(default_factory=lambda: {"kind": "hash"})

    @property
    def levels(self) -> int:
        return len(self.level_features)

    @property
    def device(self) -> torch.device:
        return self.gaussians.device

    def render_feature_maps(self, viewmats, Ks, width, height) -> list[torch.Tensor]:
        g = dataclasses.replace(self.gaussians, features=torch.cat(self.level_features, 1), feature_names=[])
        maps = render(g, viewmats, Ks, width, height, render_rgb=False, render_features=True).features
        return list(maps.split(DIM, dim=-1))  # one render for every level (fewer CPU seconds in tests)

    def gaussian_features(self) -> list[torch.Tensor]:
        return self.level_features


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(scene folder, Gaussians, (3, N) region ids per level, hierarchy) of a small synthetic scene."""
    gen = pytest.importorskip("gags.synthetic.generate")
    from gags.synthetic.scene import table_top_scene

    cfg = gen.SyntheticConfig(**SYNTHETIC, cache_dir=tmp_path_factory.getbasetemp() / "gags_synthetic")
    folder = gen.generate_scene(cfg)
    gaussians, region, hier = gen.build_gaussians(table_top_scene(), cfg)
    return folder, gaussians, torch.from_numpy(hier.ancestors(region.numpy())), hier


def _oracle_field(synthetic, levels: tuple[int, ...], method: str) -> OracleField:
    _, gaussians, ancestors, hier = synthetic
    table = HashEncoder().encode_texts(list(hier.names))  # (R, D)
    return OracleField(gaussians, [table[ancestors[lv]] for lv in levels], method)


def _make_run(tmp_path, synthetic, monkeypatch, field) -> RunFolder:
    folder, gaussians, _, _ = synthetic
    run = RunFolder(tmp_path / "run")
    run.record_stage("scene", {"data": str(folder)})
    save_ply(run.splats, gaussians)
    torch.save({}, run.language)
    monkeypatch.setattr(LanguageField, "load", lambda *args, **kwargs: field)
    monkeypatch.setattr(registry, "build_encoder", lambda spec, device: HashEncoder())
    return run


def test_eval_three_level_oracle_scores_high_and_writes_reports(tmp_path, synthetic, monkeypatch):
    run = _make_run(tmp_path, synthetic, monkeypatch, _oracle_field(synthetic, (0, 1, 2), "langsplat"))
    metrics = evaluate(EvalConfig(run=run.root, labels=synthetic[0] / HIERARCHY_LABELS, box_size=BOX))
    assert metrics["frames"] == 4
    assert set(metrics["by_level"]) == {"subpart", "part", "whole"}
    assert metrics["overall"]["pairs"] == len(metrics["queries"]) > 50
    # measured 0.70/0.83 (whole), 0.33/0.67 (part), 0.27/0.61 (subpart): the 7x7 majority filter and the
    # box smoothing erase many subparts at 80 x 60; a wrong camera or label mapping gives < 0.1
    assert metrics["by_level"]["whole"]["miou"] > 0.6 and metrics["by_level"]["whole"]["macc"] > 0.7
    assert metrics["overall"]["miou"] > 0.3 and metrics["overall"]["macc"] > 0.55
    chosen = {(r["level"], r["mask_level"]) for r in metrics["queries"]}
    assert ("whole", 2) in chosen and ("subpart", 0) in chosen  # levels picked per query, as LangSplat
    saved = json.loads((run.eval / "metrics.json").read_text())
    assert saved["overall"]["pairs"] == metrics["overall"]["pairs"]
    table = (run.eval / "metrics.md").read_text()
    assert "| granularity | pairs | mIoU (%) | mAcc (%) |" in table and "| subpart |" in table
    assert (run.eval / "figure.png").stat().st_size > 1000
    assert run.read_config()["eval"]["threshold"] == 0.4
    # one panel per frame: a row per category, four tiles (render, truth, prediction, point vs box)
    import imageio.v3 as iio

    panels = sorted((run.eval / "frames").glob("*.png"))
    assert len(panels) == 4 and saved["panels"] == "frames"
    H, W = iio.imread(panels[0]).shape[:2]
    assert W == 4 * 80 + 3 * 2 and H > 80


def test_eval_whole_only_field_fails_on_subparts(tmp_path, synthetic, monkeypatch):
    run = _make_run(tmp_path, synthetic, monkeypatch, _oracle_field(synthetic, (2,), "gags"))
    main(["eval", str(run.root), "--labels", str(synthetic[0] / HIERARCHY_LABELS), "--box-size", str(BOX)])
    by_level = json.loads((run.eval / "metrics.json").read_text())["by_level"]
    assert by_level["whole"]["miou"] > 0.6
    assert by_level["subpart"]["miou"] < 0.15 and by_level["subpart"]["macc"] < 0.4


def test_query_cli_2d_and_3d_on_the_mug(tmp_path, synthetic, monkeypatch):
    folder, gaussians, ancestors, hier = synthetic
    run = _make_run(tmp_path, synthetic, monkeypatch, _oracle_field(synthetic, (0, 1, 2), "langsplat"))
    label = read_frame_labels(folder / "labels" / "frame_0005.json")
    main(
        [
            "query",
            str(run.root),
            "mug",
            "--view",
            "frame_0005",
            "--extract",
            "--delete",
            "--box-size",
            str(BOX),
        ]
    )
    out = run.root / "queries" / "mug"
    result = json.loads((out / "query.json").read_text())
    (view,) = result["views"]
    x, y = view["point"]
    assert label.categories["mug"].mask[y, x]
    import imageio.v3 as iio

    mask = torch.from_numpy(iio.imread(out / "frame_0005_mask.png") > 127)
    assert mask_iou(mask, label.categories["mug"].mask) > 0.6
    assert iio.imread(out / "frame_0005_heatmap.png").shape == (60, 80, 3)
    is_mug = ancestors[2] == hier.names.index("mug")
    extracted, kept = load_ply(out / "extract.ply"), load_ply(out / "delete.ply")
    assert len(extracted) + len(kept) == len(gaussians) == result["gaussians"]["total"]
    assert len(extracted) == int(is_mug.sum())
    picked = torch.isin(gaussians.means, extracted.means).all(dim=1)
    assert bool((picked == is_mug).all())


def test_query_errors_name_what_is_missing(tmp_path, synthetic, monkeypatch):
    field = _oracle_field(synthetic, (2,), "gags")
    run = _make_run(tmp_path, synthetic, monkeypatch, field)
    with pytest.raises(GagsError, match="empty query"):
        query(QueryConfig(run=run.root, texts=("  ",)))
    with pytest.raises(GagsError, match='--view "nope" is not an image'):
        query(QueryConfig(run=run.root, texts=("mug",), view=("nope",)))
    field.encoder = None
    with pytest.raises(GagsError, match="run `gags prepare`"):
        query(QueryConfig(run=run.root, texts=("mug",)))
    monkeypatch.undo()
    bare = RunFolder(tmp_path / "bare")
    bare.root.mkdir()
    with pytest.raises(GagsError, match=r"language.pt does not exist: run `gags distill "):
        query(QueryConfig(run=bare.root, texts=("mug",)))
    with pytest.raises(SystemExit) as exit_info:
        main(["query", str(bare.root), "mug"])
    assert exit_info.value.code == 2


def test_eval_rejects_labels_for_unknown_frames(tmp_path, synthetic, monkeypatch):
    run = _make_run(tmp_path, synthetic, monkeypatch, _oracle_field(synthetic, (2,), "gags"))
    labels = tmp_path / "labels"
    labels.mkdir()
    data = json.loads((synthetic[0] / "labels" / "frame_0005.json").read_text())
    data["info"]["name"] = "frame_9999.png"
    (labels / "frame_9999.json").write_text(json.dumps(data))
    with pytest.raises(
        GagsError, match=r"frame_9999.json: labels frame \"frame_9999.png\", which is not an image"
    ):
        evaluate(EvalConfig(run=run.root, labels=labels, box_size=BOX))
    assert not run.eval.exists()
