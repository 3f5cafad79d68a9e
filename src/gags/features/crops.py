"""Per-mask square crops for the image encoder, as the reference (preprocess.py:338-371, spec section 2).

For each mask: zero the pixels outside it, crop its bounding box, zero-pad the box to a centred
square, resize to S x S (bilinear with half-pixel centres and replicated borders, like
``cv2.resize``). Done for a batch
of masks at once with one ``grid_sample`` per chunk: the square window of each mask becomes an
affine sampling grid, and out-of-image samples read zeros, which is the padding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gags.models.encoder import TextImageEncoder

#: masked-image elements per grid_sample chunk (bounds memory to ~256 MB of float32)
_CHUNK_ELEMENTS = 1 << 26


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(M, H, W) bool -> (M, 4) int64 tight boxes (x0, y0, x1, y1), end exclusive; zeros for empty masks."""
    M, H, W = masks.shape
    rows, cols = masks.any(2), masks.any(1)  # (M, H), (M, W)
    ys, xs = torch.arange(H, device=masks.device), torch.arange(W, device=masks.device)
    y0 = torch.where(rows, ys, H).amin(1)
    y1 = torch.where(rows, ys + 1, 0).amax(1)
    x0 = torch.where(cols, xs, W).amin(1)
    x1 = torch.where(cols, xs + 1, 0).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(masks.reshape(M, -1).any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def square_windows(boxes: torch.Tensor) -> torch.Tensor:
    """(M, 4) boxes -> (M, 3) (x0, y0, side): the box zero-padded to a centred square, pixel units."""
    x0, y0, x1, y1 = boxes.unbind(1)
    w, h = x1 - x0, y1 - y0
    side = torch.maximum(w, h).clamp(min=1)
    return torch.stack([x0 - (side - w) // 2, y0 - (side - h) // 2, side], dim=1)


def masked_square_crops(image: torch.Tensor, masks: torch.Tensor, size: int) -> torch.Tensor:
    """Crops of every mask -> (M, 3, size, size) float32 in [0, 1].

    Args:
        image: (H, W, 3) float in [0, 1] (or uint8, scaled here).
        masks: (M, H, W) bool, on the image's device.
    """
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    H, W, _ = image.shape
    M = masks.shape[0]
    if M == 0:
        return torch.zeros(0, 3, size, size, device=image.device)
    windows = square_windows(mask_boxes(masks)).to(image.dtype)
    chw = image.permute(2, 0, 1)
    chunk = max(1, _CHUNK_ELEMENTS // (3 * H * W))
    out = []
    for start in range(0, M, chunk):
        m = masks[start : start + chunk]
        win = windows[start : start + chunk]
        masked = chw[None] * m[:, None].to(image.dtype)  # (B, 3, H, W)
        out.append(F.grid_sample(masked, _window_grid(win, size, H, W), align_corners=False))
    return torch.cat(out).clamp(0, 1)


def _window_grid(windows: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """(B, 3) square windows -> (B, S, S, 2) grid_sample coordinates (x, y) in [-1, 1] image units."""
    t = (torch.arange(size, dtype=windows.dtype, device=windows.device) + 0.5) / size  # (S,)
    x0, y0, side = windows[:, 0:1], windows[:, 1:2], windows[:, 2:3]
    # sample positions in pixel-edge coordinates, clamped to the square's outermost pixel centres:
    # cv2.resize replicates the border of the padded square when it upsamples
    xs = torch.minimum(torch.maximum(x0 + t[None] * side, x0 + 0.5), x0 + side - 0.5)
    ys = torch.minimum(torch.maximum(y0 + t[None] * side, y0 + 0.5), y0 + side - 0.5)
    xs, ys = xs / width * 2 - 1, ys / height * 2 - 1  # -> grid_sample's [-1, 1]
    B = windows.shape[0]
    return torch.stack([xs[:, None, :].expand(B, size, size), ys[:, :, None].expand(B, size, size)], dim=-1)


def encode_masked_crops(
    encoder: TextImageEncoder, image: np.ndarray | torch.Tensor, masks: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Embed each masked region of ``image`` (H, W, 3) uint8 -> (M, D) L2-normalised float32."""
    device = masks.device
    img = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image).to(device)
    if masks.shape[0] == 0:
        return torch.zeros(0, encoder.embed_dim)
    out = []
    for start in range(0, masks.shape[0], batch_size):
        crops = masked_square_crops(img, masks[start : start + batch_size], encoder.image_size)
        out.append(encoder.encode_images(crops).float().cpu())
    return F.normalize(torch.cat(out), dim=-1)


def embed_masks(
    encoder: TextImageEncoder, image: np.ndarray, masks: torch.Tensor, *, image_name: str
) -> torch.Tensor:
    """(M, D) embeddings of the masked regions of ``image``: the encoder's own
    :meth:`~gags.models.encoder.TextImageEncoder.encode_masks` when it has one, else the reference's
    crops through :func:`encode_masked_crops`."""
    own = encoder.encode_masks(image, masks, image_name=image_name)
    return encode_masked_crops(encoder, image, masks) if own is None else own
