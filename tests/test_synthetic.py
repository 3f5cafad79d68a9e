"""The synthetic scene, its ground truth and labels, and the oracle segmenter and encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.synthetic.generate import (
    SyntheticConfig,
    build_cameras,
    build_gaussians,
    generate_scene,
    table_top_scene,
)
from gags.synthetic.groundtruth import GroundTruthStore, Hierarchy, render_view_truth
from gags.synthetic.labels import hole_free_pieces, trace_polygons
from gags.synthetic.oracle_segmenter import OracleSegmenter

#: small but not tiny: the oracle's thresholds are in SAM pixels, so near/far behaviour holds here too
SMALL = dict(width=160, height=120, n_far=2, n_mid=2, near_per_object=1, density=0.5, n_label_frames=5)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return generate_scene(SyntheticConfig(cache_dir=tmp_path_factory.mktemp("cache"), **SMALL))


@pytest.fixture(scope="module")
def views(scene_dir) -> list[dict]:
    return json.loads((scene_dir / "views.json").read_text())["views"]


def _view(views: list[dict], ring: str, target: str = "scene") -> str:
    return next(v["name"] for v in views if v["ring"] == ring and v["target"] == target)


# ----------------------------------------------------------------------------- generator


def test_same_seed_same_scene_other_seed_other_scene():
    cfg = SyntheticConfig(**SMALL)
    g1, r1, h1 = build_gaussians(table_top_scene(), cfg)
    g2, r2, h2 = build_gaussians(table_top_scene(), cfg)
    assert torch.equal(g1.means, g2.means) and torch.equal(g1.sh, g2.sh) and torch.equal(r1, r2)
    assert h1.names == h2.names
    c1, _ = build_cameras(table_top_scene(), g1, r1, h1, cfg)
    c2, _ = build_cameras(table_top_scene(), g2, r2, h2, cfg)
    assert all(np.array_equal(a.world_to_cam, b.world_to_cam) for a, b in zip(c1, c2, strict=True))
    other = SyntheticConfig(**{**SMALL, "seed": 1})
    g3, _, _ = build_gaussians(table_top_scene(), other)
    assert g3.means.shape != g1.means.shape or not torch.equal(g3.means, g1.means)
    assert cfg.key() == SyntheticConfig(**SMALL, cache_dir=Path("/elsewhere")).key() != other.key()


def test_rendered_ground_truth_is_deterministic():
    cfg = SyntheticConfig(**{**SMALL, "width": 64, "height": 48, "density": 0.2})
    g, r, h = build_gaussians(table_top_scene(), cfg)
    cams, _ = build_cameras(table_top_scene(), g, r, h, cfg)
    a = render_view_truth(g, r, len(h), cams[0])
    b = render_view_truth(g, r, len(h), cams[0])
    assert np.array_equal(a.subpart, b.subpart) and np.array_equal(a.rgb, b.rgb)
    assert (a.subpart >= 0).mean() > 0.3  # the table fills a good part of a far view


def test_scene_has_enough_distinct_objects_with_three_levels():
    hier, _ = __import__("gags.synthetic.generate", fromlist=["x"]).build_hierarchy(table_top_scene())
    assert len(set(hier.names)) == len(hier.names)
    wholes = np.flatnonzero(hier.level == 2)
    assert len(wholes) >= 7  # >= 6 objects plus the table
    for w in wholes:
        parts = np.flatnonzero(hier.parent == w)
        assert len(parts) >= 1 and (hier.level[parts] == 1).all()
        for p in parts:
            subs = np.flatnonzero(hier.parent == p)
            assert len(subs) >= 1 and (hier.level[subs] == 0).all() and (hier.object[subs] == w).all()


def test_scene_folder_loads_with_the_generated_cameras(scene_dir, views):
    from gags.scene.load import SceneConfig, load_scene

    scene = load_scene(SceneConfig(data=scene_dir, holdout_every=0))
    assert len(scene.cameras) == len(views) == 2 + 2 + 7
    assert scene.points is not None and len(scene.points) > 100
    cfg = SyntheticConfig(**SMALL)
    g, r, h = build_gaussians(table_top_scene(), cfg)
    cams, _ = build_cameras(table_top_scene(), g, r, h, cfg)
    for ours, loaded in zip(cams, scene.cameras, strict=True):
        assert ours.name == loaded.name and (loaded.width, loaded.height) == (160, 120)
        np.testing.assert_allclose(loaded.world_to_cam, ours.world_to_cam, atol=1e-6)
        np.testing.assert_allclose(loaded.K, ours.K, atol=1e-6)


def test_generate_reuses_the_cache(scene_dir):
    stamp = (scene_dir / "transforms_train.json").stat().st_mtime_ns
    again = generate_scene(SyntheticConfig(cache_dir=scene_dir.parent, **SMALL))
    assert again == scene_dir and (scene_dir / "transforms_train.json").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- ground truth


def test_hierarchy_invariants_hold_in_every_view(scene_dir, views):
    store = GroundTruthStore(scene_dir)
    hier = store.hierarchy
    parent = np.append(hier.parent, -1)
    for v in views:
        labels, depth = store.view(v["name"])
        fg = labels[0] >= 0
        assert ((labels >= 0) == fg).all()  # every labelled pixel has a subpart, a part and a whole
        assert (parent[labels[0]] == labels[1])[fg].all() and (parent[labels[1]] == labels[2])[fg].all()
        for level in range(3):
            assert (hier.level[labels[level][fg]] == level).all()
        assert (depth[fg] > 0).all() and np.isfinite(depth).all()


def test_near_views_make_their_object_big_and_far_views_small(scene_dir, views):
    store = GroundTruthStore(scene_dir)
    mug = store.hierarchy.names.index("mug")
    near = (store.view(_view(views, "near", "mug"))[0][2] == mug).mean()
    far = (store.view(_view(views, "far"))[0][2] == mug).mean()
    assert near > 0.15 and far < 0.02 and near > 10 * far


def test_ground_truth_store_rejects_bad_input(scene_dir, tmp_path):
    with pytest.raises(GagsError, match="does not exist"):
        GroundTruthStore(tmp_path / "missing")
    (tmp_path / "hierarchy.json").write_text("{not json")
    with pytest.raises(GagsError, match="hierarchy.json"):
        GroundTruthStore(tmp_path)
    with pytest.raises(GagsError, match="no ground truth"):
        GroundTruthStore(scene_dir).view("frame_9999.png")


# ----------------------------------------------------------------------------- labels


def test_traced_polygons_fill_back_to_the_mask():
    from scipy.ndimage import binary_fill_holes, gaussian_filter

    from gags.evaluate.labels import polygon_mask

    rng = np.random.default_rng(0)

    mask = gaussian_filter(rng.normal(size=(40, 60)), 2) > -0.3  # blobs with holes
    mask[0, :] = mask[:, 0] = True  # touches the border
    assert (binary_fill_holes(mask) & ~mask).any()
    filled = np.zeros_like(mask)
    pieces = hole_free_pieces(mask)
    assert len(pieces) > 1 and not any((binary_fill_holes(p) & ~p).any() for p in pieces)
    for poly in (p for piece in pieces for p in trace_polygons(piece)):
        filled |= polygon_mask(40, 60, poly)
    assert np.array_equal(filled, mask)


def _check_label_set(folder: Path, store: GroundTruthStore) -> tuple[dict[str, str], set[str]]:
    """Read a label folder back; every category's mask and box match the ground truth. -> levels, seen."""
    from gags.evaluate.labels import read_labels

    levels = json.loads((folder / "levels.json").read_text())
    frames = read_labels(folder)
    assert len(frames) == SMALL["n_label_frames"]
    seen = set()
    for frame in frames:
        labels = store.view(frame.name)[0]
        assert (frame.height, frame.width) == labels.shape[1:]
        for category, label in frame.categories.items():
            rid = store.hierarchy.names.index(category)
            truth = labels[store.hierarchy.level[rid]] == rid
            got = label.mask.numpy()
            iou = (got & truth).sum() / (got | truth).sum()
            assert iou > 0.98, (frame.name, category, iou)  # exact up to regions under MIN_LABEL_AREA
            box = label.boxes.numpy()
            ys, xs = np.nonzero(truth)
            assert box[:, 0].min() == xs.min() and box[:, 3].max() == ys.max()
            seen.add(category)
    return levels, seen


def test_label_files_round_trip_through_the_evaluation_reader(scene_dir):
    from gags.synthetic.labels import label_folder

    store = GroundTruthStore(scene_dir)
    levels, seen = _check_label_set(label_folder(scene_dir, "hierarchy"), store)
    assert levels == store.hierarchy.levels_of_names()
    assert {levels[c] for c in seen} == {"subpart", "part", "whole"}


def test_default_label_set_is_the_lerf_like_query_set(scene_dir):
    """labels/ asks each object once or twice, at levels fixed in the scene; labels_hierarchy/ everything."""
    from gags.evaluate.labels import find_levels
    from gags.synthetic.labels import label_folder
    from gags.synthetic.scene import query_names

    store = GroundTruthStore(scene_dir)
    folder = label_folder(scene_dir)
    assert folder == scene_dir / "labels" and label_folder(scene_dir, "hierarchy") != folder
    queries = query_names(table_top_scene())
    levels, seen = _check_label_set(folder, store)
    assert levels == find_levels(folder) == {q: store.hierarchy.levels_of_names()[q] for q in queries}
    assert seen <= set(queries) and len(seen) >= 0.6 * len(queries)
    per_object = np.bincount([store.hierarchy.object[store.hierarchy.names.index(q)] for q in queries])
    assert set(per_object[per_object > 0].tolist()) <= {1, 2}  # each object once or twice
    assert sorted(levels.values()).count("whole") > len(queries) / 2  # mostly objects, as LERF-OVS


# ----------------------------------------------------------------------------- oracle segmenter


def _grid(step: int, width: int = 160, height: int = 120) -> np.ndarray:
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    return np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)


def _levels_on(oracle: OracleSegmenter, name: str, whole: str, step: int = 2) -> np.ndarray:
    """(P, 3) granularity (-1 fragment .. 2 whole) of the three outputs of prompts on ``whole``."""
    keymap, outputs = oracle.assign(_grid(step), name, 120, 160)
    wid = oracle.store.hierarchy.names.index(whole)
    return oracle.key_level(outputs[oracle.store.hierarchy.object[outputs[:, 2].clip(0)] == wid])


def test_oracle_granularity_follows_apparent_size(scene_dir, views):
    """SAM's failure (a): the same object is segmented finer up close and coarser from afar."""
    oracle = OracleSegmenter(scene_dir)
    near = _levels_on(oracle, _view(views, "near", "teapot"), "teapot")
    far = _levels_on(oracle, _view(views, "far"), "teapot")
    assert len(near) > 100 and len(far) > 5
    # near: the finest output is often a fragment, and then the coarsest is not the whole teapot
    assert (near[:, 0] == -1).mean() > 0.3 and (near[:, 2] == 2).mean() < 0.75
    # far: few fragments, the coarsest output is the teapot, the finest is more often coarser than a subpart
    assert (far[:, 0] == -1).mean() < 0.25 * (near[:, 0] == -1).mean() and (far[:, 2] == 2).mean() > 0.9
    assert (far[:, 0] >= 1).mean() > (near[:, 0] >= 1).mean()
    assert near.mean() < far.mean() - 0.3


def test_oracle_prompt_density_misses_small_regions_and_over_segments(scene_dir, views):
    """SAM's failure (b): sparse prompts miss small regions far away; dense ones fragment near views."""
    oracle = OracleSegmenter(scene_dir, miss_rate=0.0)
    image = np.zeros((120, 160, 3), np.uint8)
    far, near = _view(views, "far"), _view(views, "near", "teapot")

    def regions_found(name: str, step: int) -> int:
        _, outputs = oracle.assign(_grid(step), name, 120, 160)
        return len(np.unique(outputs))

    assert regions_found(far, 40) < regions_found(far, 4)
    sparse = oracle.segment(image, _grid(60), image_name=near).masks[0].shape[0]
    dense = oracle.segment(image, _grid(4), image_name=near).masks[0].shape[0]
    assert dense >= 3 * max(sparse, 1)


def test_oracle_masks_are_deterministic_noisy_and_scored(scene_dir, views):
    name = _view(views, "mid")
    image = np.zeros((120, 160, 3), np.uint8)
    a = OracleSegmenter(scene_dir, seed=3).segment(image, _grid(8), image_name=name)
    b = OracleSegmenter(scene_dir, seed=3).segment(image, _grid(8), image_name=name)
    c = OracleSegmenter(scene_dir, seed=4).segment(image, _grid(8), image_name=name)
    assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks, strict=True))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a.masks, c.masks, strict=True))
    for level in range(3):
        assert a.masks[level].dtype == torch.bool and a.masks[level].shape[1:] == (120, 160)
        for s in (a.pred_iou[level], a.stability[level]):
            assert s.shape == (a.masks[level].shape[0],) and ((s >= 0) & (s <= 1)).all()
    # boundary noise: masks are close to, but not exactly, ground-truth regions
    labels = GroundTruthStore(scene_dir).view(name)[0]
    exact = sum(bool((m.numpy() == (labels[1] == labels[1][m.numpy()][0])).all()) for m in a.masks[1])
    assert exact < a.masks[1].shape[0]
    assert OracleSegmenter(scene_dir).segment(image, np.zeros((0, 2)), image_name=name).masks[0].shape[0] == 0


def test_oracle_specs_rebuild_through_the_registry(scene_dir):
    from gags.models.registry import build_encoder, build_segmenter

    seg = OracleSegmenter(scene_dir, seed=5, miss_rate=0.1)
    rebuilt = build_segmenter(seg.spec, "cpu")
    assert isinstance(rebuilt, OracleSegmenter) and rebuilt.spec == seg.spec
    enc = build_encoder({"kind": "oracle", "scene": str(scene_dir), "noise": 0.1}, "cpu")
    assert enc.spec["noise"] == 0.1 and enc.spec["scene"] == str(scene_dir)


# ----------------------------------------------------------------------------- oracle encoder


@pytest.mark.slow
def test_oracle_encoder_embeds_regions_and_paraphrases(scene_dir, views):
    from gags.synthetic.oracle_encoder import OracleEncoder

    enc = OracleEncoder(scene_dir, seed=0)
    store = enc.store
    name = _view(views, "near", "mug")
    labels = store.view(name)[0]
    ids = [r for r in np.unique(labels) if r >= 0 and (labels[store.hierarchy.level[r]] == r).sum() > 30]
    masks = torch.from_numpy(np.stack([labels[store.hierarchy.level[r]] == r for r in ids]))
    # a part made of one subpart has the same mask as it: either name is right
    same = {
        i: {j for j, m in zip(ids, masks, strict=True) if torch.equal(m, masks[k])} for k, i in enumerate(ids)
    }
    image = np.zeros((120, 160, 3), np.uint8)
    feats = enc.encode_masks(image, masks, image_name=name)
    D = enc.embed_dim
    assert feats.shape == (len(ids), D) and D == enc.encode_texts(["x"]).shape[1]
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(ids)))
    torch.testing.assert_close(feats, enc.encode_masks(image, masks, image_name=name))  # deterministic
    names = enc.encode_texts(store.hierarchy.names)
    read_as = (feats @ names.T).argmax(1).tolist()
    assert all(r in same[i] for r, i in zip(read_as, ids, strict=True))  # each mask reads as its region
    wholes = [n for n, lv in zip(store.hierarchy.names, store.hierarchy.level, strict=True) if lv == 2]
    sims = enc.encode_texts(["cup", "duck toy"]) @ enc.encode_texts(wholes).T
    assert [wholes[i] for i in sims.argmax(1)] == ["mug", "rubber duck"]
    # a mask over nothing in particular is far from every name
    junk = torch.zeros(1, 120, 160, dtype=torch.bool)
    junk[0, ::3, ::3] = True
    assert float((enc.encode_masks(image, junk, image_name=name) @ names.T).max()) < 0.8
    with pytest.raises(GagsError):
        enc.encode_images(torch.zeros(1, 3, 224, 224))


def test_hierarchy_json_round_trip(scene_dir):
    h = Hierarchy.from_json(scene_dir / "hierarchy.json")
    assert h.to_json() == json.loads((scene_dir / "hierarchy.json").read_text())
