"""Per-mask square crops (background zeroed, box crop, centred square padding, resize)."""

from __future__ import annotations

import numpy as np
import torch

from gags.features.crops import (
    embed_masks,
    encode_masked_crops,
    mask_boxes,
    masked_square_crops,
    square_windows,
)
from gags.models.encoder import TextImageEncoder


def _loop_crop(image: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """The reference's steps one by one (numpy), with an exact integer-factor box-average resize."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = (image * mask[..., None])[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, 3), dtype=np.float64)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = crop
    f = side // size
    return square.reshape(size, f, size, f, 3).mean((1, 3)).transpose(2, 0, 1)


def test_boxes_and_square_windows() -> None:
    m = torch.zeros(2, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:9] = True
    assert mask_boxes(m).tolist() == [[3, 2, 9, 5], [0, 0, 0, 0]]
    assert square_windows(mask_boxes(m))[0].tolist() == [3, 1, 6]  # 6x3 box padded 1 above, 2 below


def test_crop_matches_the_reference_steps() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((40, 50, 3))
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:13, 10:26] = True  # 16 wide, 8 high -> a 16x16 square
    mask[6, 12] = False
    # size = side / 2: each output pixel centre sits between 2x2 input pixels, so bilinear = 2x2 mean
    out = masked_square_crops(torch.tensor(image, dtype=torch.float32), torch.tensor(mask[None]), 8)
    expect = _loop_crop(image, mask, 8)
    assert out.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(out[0].numpy(), expect, atol=1e-5)
    assert torch.all(out[0, :, :2] == 0) and torch.all(out[0, :, 6:] == 0)  # the padding bands


def test_uint8_input_and_constant_region() -> None:
    image = np.full((30, 30, 3), 200, dtype=np.uint8)
    masks = torch.zeros(3, 30, 30, dtype=torch.bool)
    masks[0, 0:30, 0:30] = True
    masks[1, 10:20, 5:25] = True
    masks[2, 29, 29] = True  # one pixel, at the corner
    out = masked_square_crops(torch.from_numpy(image), masks, 16)
    assert out.shape == (3, 3, 16, 16)
    assert torch.allclose(out[0], torch.tensor(200 / 255.0))
    assert torch.allclose(out[1, :, 4:12], torch.tensor(200 / 255.0))  # middle rows of a 2:1 box
    assert torch.allclose(out[2], torch.tensor(200 / 255.0))


class _MeanColour(TextImageEncoder):
    """Embeds a crop as its mean colour (D = 3), to check the batching of encode_masked_crops."""

    image_size = 8

    @property
    def embed_dim(self) -> int:
        return 3

    def encode_images(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(crops.mean((2, 3)) + 1e-3, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.zeros(len(texts), 3)


def test_encode_masks_batches_and_normalises() -> None:
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    image[:10, :, 0] = 255  # top red, bottom green
    image[10:, :, 1] = 255
    masks = torch.zeros(5, 20, 20, dtype=torch.bool)
    masks[0::2, :10] = True
    masks[1::2, 10:] = True
    feats = embed_masks(_MeanColour(), image, masks, image_name="x")
    assert feats.shape == (5, 3)
    assert torch.allclose(feats.norm(dim=1), torch.ones(5))
    assert feats[0].argmax() == 0 and feats[1].argmax() == 1
    assert torch.allclose(encode_masked_crops(_MeanColour(), image, masks, batch_size=2), feats)
    assert embed_masks(_MeanColour(), image, masks[:0], image_name="x").shape == (0, 3)
