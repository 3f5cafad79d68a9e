"""Image-quality metrics and the 3DGS photometric loss.

SSIM is ``pytorch_msssim.ssim`` (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, valid
convolution): a small pure-torch library, differentiable, so it serves as metric and loss.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim as _ssim


def _nchw(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) -> (B, 3, H, W)."""
    if image.dim() == 3:
        image = image[None]
    return image.permute(0, 3, 1, 2)


def psnr(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1], (H, W, 3) or (B, H, W, 3); mean over B."""
    mse = ((image - target) ** 2).flatten(start_dim=image.dim() - 3).mean(dim=-1)
    return (-10.0 * torch.log10(mse.clamp_min(1e-10))).mean()


def ssim(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity of images in [0, 1], (H, W, 3) or (B, H, W, 3); mean over B (differentiable)."""
    return _ssim(_nchw(image), _nchw(target), data_range=1.0, size_average=True)


def photometric_loss(image: torch.Tensor, target: torch.Tensor, lambda_dssim: float = 0.2) -> torch.Tensor:
    """The 3DGS loss ``(1 - l) * L1 + l * (1 - SSIM)`` of (H, W, 3) or (B, H, W, 3) images."""
    l1 = (image - target).abs().mean()
    if lambda_dssim == 0:
        return l1
    return (1.0 - lambda_dssim) * l1 + lambda_dssim * (1.0 - ssim(image, target))
