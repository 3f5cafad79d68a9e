"""LERF-OVS label reader and metrics on hand-made files, masks and boxes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.evaluate.labels import find_levels, match_cameras, polygon_mask, read_labels
from gags.evaluate.metrics import localisation_hit, mask_iou, mean


def _frame(name, objects, h=10, w=12):
    return {"info": {"height": h, "width": w, "name": name}, "objects": objects}


def _write(folder, file, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file).write_text(json.dumps(data))


def test_polygon_fill_includes_the_boundary_like_cv2_fillpoly():
    mask = polygon_mask(10, 12, torch.tensor([[2.7, 2], [5, 2], [5, 4.9], [2, 4]]).numpy())
    assert mask.sum() == 12  # rows 2..4 x cols 2..5 after truncation
    assert mask[2:5, 2:6].all()


def _noisy_star(n: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.where(np.arange(n) % 2 == 0, 28.0, 11.0) + rng.normal(0, 2.5, n)
    return np.stack([40.3 + r * np.cos(t), 31.7 + r * np.sin(t)], 1).tolist()


REFERENCE_POLYGONS = {
    "slanted": [[3.2, 10.9], [50.7, 2.4], [58.99, 14.5], [11.5, 40.01]],
    "concave": [[5.5, 5.5], [70.2, 5.1], [70.9, 55.3], [40.4, 20.6], [6.1, 58.8]],
    "self_touching": [[10.5, 10.2], [40.7, 30.3], [70.1, 10.9], [70.6, 50.2], [40.7, 30.3], [10.2, 50.8]],
    "bow_tie": [[4.4, 4.4], [60.6, 50.1], [60.2, 4.9], [4.9, 50.6]],
    "thin_sliver": [[2.1, 3.3], [77.8, 9.6], [2.6, 4.2]],
    "star_200": _noisy_star(200),
    "outside_image": [[-12.7, -3.5], [95.3, 8.2], [60.6, 71.9], [-0.6, 40.4], [-30.2, 66.0]],
}


@pytest.mark.parametrize("name", list(REFERENCE_POLYGONS))
def test_polygon_mask_equals_reference_cv2_fillpoly(name):
    points = REFERENCE_POLYGONS[name]
    expected = np.zeros((60, 80), dtype=np.uint8)  # LangSplat eval/utils.py polygon_to_mask
    cv2.fillPoly(expected, [np.asarray(points, dtype=np.int32)], 1)
    got = polygon_mask(60, 80, np.asarray(points, dtype=np.float64))
    assert got.dtype == bool and got.shape == (60, 80)
    np.testing.assert_array_equal(got, expected.astype(bool))
    assert 0 < got.sum() < got.size


def test_read_labels_merges_repeated_categories(tmp_path):
    square = [[1, 1], [3, 1], [3, 3], [1, 3]]
    other = [[6, 5], [8, 5], [8, 7], [6, 7]]
    objects = [
        {"category": "mug", "bbox": [1, 1, 3, 3], "segmentation": square},
        {"category": "plate", "bbox": [0, 0, 11, 9], "segmentation": [[0, 0], [11, 0], [11, 9]]},
        {"category": "mug", "bbox": [8, 7, 6, 5], "segmentation": other},
    ]
    _write(tmp_path, "frame_00002.json", _frame("frame_00002.jpg", objects))
    _write(tmp_path, "frame_00001.json", _frame("frame_00001.jpg", []))
    _write(tmp_path, "levels.json", {"mug": "whole", "plate": "part"})
    frames = read_labels(tmp_path)
    assert [f.name for f in frames] == ["frame_00001.jpg", "frame_00002.jpg"]
    assert frames[0].categories == {}
    mug = frames[1].categories["mug"]
    assert list(frames[1].categories) == ["mug", "plate"]
    assert mug.mask.shape == (10, 12) and int(mug.mask.sum()) == 18
    assert mug.boxes.tolist() == [[1, 1, 3, 3], [8, 7, 6, 5]]
    assert find_levels(tmp_path) == {"mug": "whole", "plate": "part"}


@pytest.mark.parametrize(
    "obj,needle",
    [
        (
            {"category": "mug", "bbox": [0, 0, 1, 1], "segmentation": []},
            'category "mug" (object 0) has no polygon',
        ),
        ({"category": "mug", "bbox": [0, 0, 1], "segmentation": [[0, 0], [1, 0], [1, 1]]}, "bbox must be"),
        ({"bbox": [0, 0, 1, 1], "segmentation": [[0, 0], [1, 0], [1, 1]]}, "has no category"),
    ],
)
def test_bad_objects_name_the_file_and_category(tmp_path, obj, needle):
    _write(tmp_path, "frame_00001.json", _frame("frame_00001.jpg", [obj]))
    with pytest.raises(GagsError, match="frame_00001.json") as info:
        read_labels(tmp_path)
    assert needle in str(info.value)


def test_bad_folders_and_files(tmp_path):
    with pytest.raises(GagsError, match="does not exist"):
        read_labels(tmp_path / "nope")
    with pytest.raises(GagsError, match="no label files"):
        read_labels(tmp_path)
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(GagsError, match="a.json: cannot read"):
        read_labels(tmp_path)
    (tmp_path / "a.json").write_text("[]")
    with pytest.raises(GagsError, match="not a LERF-OVS label file"):
        read_labels(tmp_path)
    _write(tmp_path, "levels.json", {"mug": "huge"})
    with pytest.raises(GagsError, match="levels must be one of"):
        find_levels(tmp_path)
    with pytest.raises(GagsError, match="category-to-level file does not exist"):
        find_levels(tmp_path, tmp_path / "missing.json")


def test_match_cameras_by_name_with_or_without_extension(tmp_path):
    _write(tmp_path, "a.json", _frame("frame_00002.jpg", []))
    _write(tmp_path, "b.json", _frame("frame_00001", []))
    frames = read_labels(tmp_path)
    assert match_cameras(frames, ["frame_00001.png", "frame_00002.jpg"]) == [1, 0]
    with pytest.raises(GagsError, match=r"a.json: labels frame \"frame_00002.jpg\", which is not an image"):
        match_cameras(frames, ["frame_00001.png"])


def test_mask_iou_on_hand_made_masks():
    pred = torch.zeros(4, 4, dtype=torch.bool)
    gt = torch.zeros(4, 4, dtype=torch.bool)
    pred[:2, :2] = True  # 4 px
    gt[1:3, 1:3] = True  # 4 px, overlap 1 px
    assert mask_iou(pred, gt) == pytest.approx(1 / 7)
    assert mask_iou(gt, gt) == 1.0
    assert mask_iou(torch.zeros_like(gt), gt) == 0.0
    with pytest.raises(ValueError):
        mask_iou(pred, gt[:3])


def test_localisation_hit_inclusive_any_point_any_box():
    boxes = torch.tensor([[10.0, 10, 20, 20], [50, 40, 30, 30]])  # second with swapped corners
    assert localisation_hit(torch.tensor([[20, 20]]), boxes)  # on the corner
    assert localisation_hit(torch.tensor([[0, 0], [35, 39]]), boxes)  # second point, second box
    assert not localisation_hit(torch.tensor([[21, 15], [29, 35]]), boxes)
    assert not localisation_hit(torch.zeros(0, 2), boxes)
    assert mean([1.0, 0.0, 0.5]) == 0.5
