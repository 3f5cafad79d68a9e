"""LangSplat's scene-specific autoencoder: encoder_dim -> 3 -> encoder_dim (LangSplat autoencoder/model.py).

- Encoder: Linear D -> 256 -> 128 -> 64 -> 32 -> 3, BatchNorm1d + ReLU between layers, then L2 norm.
- Decoder: Linear 3 -> 16 -> 32 -> 64 -> 128 -> 256 -> 256 -> D, ReLU between layers, then L2 norm.
- Training: every mask feature of the scene, loss MSE + 0.001 (1 - cos), Adam lr 7e-4, batch 64, 100 epochs.
  DEVIATION: LangSplat keeps the best of epochs 96-99 by loss; here the last epoch's weights are kept.

D is the encoder's dimension (512 for CLIP ViT-B-16, 384 for the synthetic oracle), never assumed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_WIDTHS: tuple[int, ...] = (256, 128, 64, 32)
DECODER_WIDTHS: tuple[int, ...] = (16, 32, 64, 128, 256, 256)
LATENT_DIM = 3


class AutoencoderEncoder(nn.Module):
    """(..., D) -> (..., 3) unit vectors."""

    def __init__(self, embed_dim: int, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        widths = [embed_dim, *ENCODER_WIDTHS, latent_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers += [nn.BatchNorm1d(b), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return F.normalize(self.net(flat), dim=-1).reshape(*x.shape[:-1], -1)


class AutoencoderDecoder(nn.Module):
    """(..., 3) -> (..., D) unit vectors."""

    def __init__(self, embed_dim: int, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        widths = [latent_dim, *DECODER_WIDTHS, embed_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(z), dim=-1)


class Autoencoder(nn.Module):
    """Encoder and decoder together; ``forward`` reconstructs (B, D) -> (B, D)."""

    def __init__(self, embed_dim: int, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.encoder = AutoencoderEncoder(embed_dim, latent_dim)
        self.decoder = AutoencoderDecoder(embed_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def autoencoder_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LangSplat's MSE + 0.001 (1 - cos) over a (B, D) batch."""
    return F.mse_loss(recon, target) + 0.001 * (1 - F.cosine_similarity(recon, target, dim=-1)).mean()


def train_autoencoder(
    features: torch.Tensor,
    epochs: int = 100,
    lr: float = 7e-4,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Autoencoder, float]:
    """Fit the autoencoder to (M, D) features; returns it (in eval mode) and the last epoch's mean loss."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Autoencoder(features.shape[1]).to(features.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    last = float("nan")
    for _ in tqdm(range(epochs), desc="autoencoder", disable=not progress):
        order = torch.randperm(features.shape[0], generator=g).to(features.device)
        batches = [b for b in order.split(batch_size) if b.numel() > 1]  # BatchNorm needs 2 rows
        total = 0.0
        for idx in batches:
            loss = autoencoder_loss(model(features[idx]), features[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        last = total / max(1, len(batches))
    return model.eval(), last


def autoencoder_config(embed_dim: int, latent_dim: int = LATENT_DIM) -> dict:
    """The ``decoder_config`` stored in a LangSplat ``language.pt``."""
    return {"form": "langsplat-autoencoder", "embed_dim": int(embed_dim), "in_dim": int(latent_dim)}
