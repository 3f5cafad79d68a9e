"""The image-text encoder interface shared by OpenCLIP and the synthetic oracle."""

from __future__ import annotations

import abc

import numpy as np
import torch


class TextImageEncoder(abc.ABC):
    """Embeds image crops and texts into one L2-normalised space of size ``embed_dim``.

    Nothing downstream may assume a particular ``embed_dim`` (CLIP ViT-B-16 has 512, the oracle's
    sentence model 384).
    """

    #: side of the square crops ``encode_images`` expects, pixels
    image_size: int = 224

    @property
    @abc.abstractmethod
    def embed_dim(self) -> int:
        """Size D of the embeddings."""

    @abc.abstractmethod
    def encode_images(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float RGB crops in [0, 1] -> (B, D) L2-normalised float32 embeddings."""

    @abc.abstractmethod
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """T texts -> (T, D) L2-normalised float32 embeddings."""

    def encode_masks(self, image: np.ndarray, masks: torch.Tensor, *, image_name: str) -> torch.Tensor | None:
        """Embed each masked region of ``image`` (H, W, 3) uint8 directly; ``masks`` is (M, H, W) bool.

        Returns (M, D), or None (the default) to be embedded as CLIP sees a mask: through
        :func:`gags.features.crops.embed_masks`, which crops each region as the reference code does
        and calls :meth:`encode_images`. Models that see masks themselves (the synthetic oracle)
        override this.
        """
        return None
