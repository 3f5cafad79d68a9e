"""The one query core (gags.query.maps.QueryEngine) and what `gags query` writes with it."""

from __future__ import annotations

import dataclasses
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gags.query.maps import QueryEngine
from gags.query.postprocess import postprocess
from gags.query.relevance import relevance
from gags.scene.cameras import Camera, stack_cameras
from gags.splats.gaussians import Gaussians
from gags.stages.query import slugify

D = 8


class CountingEncoder:
    """Texts -> fixed random unit vectors; counts how many texts it was asked to embed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        out = [torch.randn(D, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts]
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


@dataclasses.dataclass
class ConstantField:
    """A field whose every pixel decodes to ``feature`` (the LanguageField API the engine uses)."""

    feature: torch.Tensor
    method: str = "gags"
    gaussians: Gaussians | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def render_feature_maps(self, viewmats, Ks, width, height):
        return [self.feature.expand(viewmats.shape[0], height, width, D).clone()]

    def gaussian_features(self):
        return [self.feature[None].expand(5, D)]


def _camera(w: int = 40, h: int = 30) -> Camera:
    K = np.array([[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]])
    return Camera(name="v.png", K=K, world_to_cam=np.eye(4), width=w, height=h)


def test_engine_embeds_each_text_once_and_matches_the_direct_path():
    encoder = CountingEncoder()
    target = encoder.encode_texts(["mug"])[0]
    encoder.calls.clear()
    engine = QueryEngine(ConstantField(target), encoder)
    cam = _camera()
    a = engine.query([cam, cam], ["mug", "teapot"], box_size=5)
    b = engine.query([cam], ["mug"], box_size=5)
    assert sum(len(c) for c in encoder.calls) == 2 + 4  # two texts and four negatives, once each
    rel = a[0].relevance
    assert rel.shape == (2, 1, 30, 40)  # (texts, levels, H, W)
    queries = engine.embed(["mug"])
    viewmats, Ks = stack_cameras([cam])
    feat = engine.field.render_feature_maps(viewmats, Ks, 40, 30)[0][0]
    direct = relevance(feat, queries.embeddings[0], queries.negatives)
    torch.testing.assert_close(b[0].relevance[0, 0], direct)
    torch.testing.assert_close(b[0].maps[0].normalised, postprocess(direct[None], box_size=5).normalised)
    assert float(a[0].relevance[0].mean()) > float(a[0].relevance[1].mean())  # "mug" beats "teapot"


def test_engine_rejects_blank_texts_and_empty_negatives():
    from gags.errors import GagsError

    engine = QueryEngine(ConstantField(torch.ones(D) / D**0.5), CountingEncoder())
    with pytest.raises(GagsError, match="empty query"):
        engine.embed(["mug", "  "])
    with pytest.raises(GagsError, match="negative"):
        engine.embed(["mug"], negatives=())


def test_slugs_never_collide_for_texts_that_embed_differently():
    assert slugify("a red mug") == "a-red-mug"
    assert slugify("Cup") == slugify("cup") == "cup"  # tokenisers lower-case: same embedding
    assert len({slugify("cup"), slugify("cup!"), slugify("cup?"), slugify("tasse à café")}) == 4
    assert slugify("!!!").startswith("query-")


def test_query_writes_overlays_and_several_texts_in_one_call(tmp_path, monkeypatch):
    """Several texts: one folder each, one render per view for all; the folder keeps only the latest."""
    import gags.stages.query as stage
    from gags.runfolder import RunFolder

    encoder = CountingEncoder()
    field = ConstantField(encoder.encode_texts(["mug"])[0])
    monkeypatch.setattr(stage, "open_engine", lambda run, device: QueryEngine(field, encoder))
    monkeypatch.setattr(
        stage, "render_rgb", lambda g, cam: np.full((cam.height, cam.width, 3), 0.5, np.float32)
    )
    cams = tmp_path / "cams.json"
    cam = _camera()
    entry = {"K": cam.K.tolist(), "world_to_cam": cam.world_to_cam.tolist(), "width": 40, "height": 30}
    cams.write_text(json.dumps([{"name": "a.png", **entry}, {"name": "b.png", **entry}]))
    run = RunFolder(tmp_path / "run")
    result = stage.query(stage.QueryConfig(run=run.root, texts=("mug", "cup!"), camera=cams, box_size=5))
    folders = [run.root / "queries" / "mug", run.root / "queries" / slugify("cup!")]
    assert [q["out"] for q in result["queries"]] == [str(f) for f in folders]
    for folder in folders:
        record = json.loads((folder / "query.json").read_text())
        assert [v["view"] for v in record["views"]] == ["a.png", "b.png"]
        assert iio.imread(folder / "a_overlay.png").shape == (30, 40, 3)
    one = tmp_path / "cams_one.json"
    one.write_text(json.dumps([{"name": "c.png", **entry}]))
    stage.query(stage.QueryConfig(run=run.root, texts=("mug",), camera=one, box_size=5))
    assert sorted(p.name for p in folders[0].iterdir()) == [
        "c_heatmap.png",
        "c_mask.png",
        "c_overlay.png",
        "query.json",
    ]
