"""An oracle in place of CLIP: a mask's embedding is the text embedding of the region it shows.

This is test bed v1 (a spec with ``"bed": "v1"`` or without the key, bit for bit as before beds
existed); :meth:`OracleEncoder.from_spec` returns bed v2 (:mod:`gags.synthetic.oracle_encoder_v2`,
CLIP-like crop features) for ``"bed": "v2"``. See :mod:`gags.synthetic.bed`.

It implements :class:`gags.models.encoder.TextImageEncoder`. For each mask, the ground-truth
region (of any level) with the highest IoU is found; its name is embedded with the offline
sentence model (all-MiniLM-L6-v2, D = 384) and perturbed:

    f = normalise(t_region + (noise + mismatch_noise * (1 - IoU)) * n),   n ~ N(0, I / D)

``noise`` (0.25) models CLIP's view-to-view variation for a clean crop of one region;
``mismatch_noise`` (1.0) makes a mask that matches no region well (a fragment, a mask straddling
two regions) carry a feature far from any name, as a CLIP crop of a meaningless piece does.
A mask overlapping no region (background) gets pure noise. Texts go through the same sentence
model, so free text and paraphrases ("cup" for "mug") behave as they would with CLIP's text tower.

``encode_images`` has no ground truth to look up (crops carry no position) and raises.
Everything is deterministic given ``seed``, the image name and the order of the masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gags.errors import GagsError
from gags.models.encoder import TextImageEncoder
from gags.synthetic.groundtruth import GroundTruthStore
from gags.synthetic.oracle_segmenter import view_rng
from gags.synthetic.text import SentenceEmbedder


class OracleEncoder(TextImageEncoder):
    """Ground-truth-backed stand-in for CLIP (see the module docstring).

    Args:
        scene_dir: a folder made by :func:`gags.synthetic.generate.generate_scene`.
        seed: randomness of the noise.
        noise: noise scale of a perfectly matching mask; 0.25.
        mismatch_noise: extra noise scale per unit of (1 - IoU); 1.0.
        device: device of the sentence model.
    """

    def __init__(
        self,
        scene_dir: str | Path,
        *,
        seed: int = 0,
        noise: float = 0.25,
        mismatch_noise: float = 1.0,
        device: str = "cpu",
    ) -> None:
        self.store = GroundTruthStore(scene_dir)
        self.seed = seed
        self.noise = noise
        self.mismatch_noise = mismatch_noise
        self.text = SentenceEmbedder(device)
        self._region_embeddings: torch.Tensor | None = None

    @property
    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this encoder (see :meth:`from_spec`)."""
        return {
            "kind": "oracle",
            "bed": "v1",
            "scene": str(self.store.root),
            "seed": self.seed,
            "noise": self.noise,
            "mismatch_noise": self.mismatch_noise,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: str = "cpu") -> OracleEncoder:
        """The encoder of ``spec``: bed v1 (this class; also when there is no "bed" key) or v2."""
        from gags.synthetic.bed import bed_of

        if bed_of(spec) == "v2":
            from gags.synthetic.oracle_encoder_v2 import OracleEncoderV2

            return OracleEncoderV2.from_spec(spec, device=device)
        if "scene" not in spec:
            raise GagsError(f"oracle encoder spec {spec} has no 'scene' folder")
        params = {k: v for k, v in spec.items() if k not in ("kind", "scene", "device", "bed")}
        return cls(spec["scene"], device=str(device), **params)

    @property
    def embed_dim(self) -> int:
        return self.text.dim

    def encode_images(self, crops: torch.Tensor) -> torch.Tensor:
        raise GagsError(
            "the synthetic oracle encoder embeds masks from the ground truth (encode_masks) and cannot "
            "embed bare image crops; use an OpenCLIP encoder for that"
        )

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """T texts -> (T, D) L2-normalised float32 sentence embeddings."""
        return self.text.embed(list(texts))

    def region_embeddings(self) -> torch.Tensor:
        """(R, D) text embeddings of every region name, indexed by region id."""
        if self._region_embeddings is None:
            self._region_embeddings = self.text.embed(self.store.hierarchy.names)
        return self._region_embeddings

    def best_regions(self, masks: torch.Tensor, image_name: str) -> tuple[np.ndarray, np.ndarray]:
        """For (M, H, W) bool masks: the (M,) id of the best-matching region of any level and its IoU."""
        M, H, W = masks.shape
        R = len(self.store.hierarchy)
        labels = torch.from_numpy(self.store.labels_at(image_name, H, W).astype(np.int64)).reshape(3, -1)
        flat = masks.reshape(M, -1).float()
        inter = torch.zeros(M, R + 1)
        for level in range(3):  # three levels, vectorised over masks and pixels
            ids = torch.where(labels[level] >= 0, labels[level], R)  # background -> spare column R
            inter.index_add_(1, ids, flat)
        area_r = torch.bincount(torch.where(labels >= 0, labels, R).reshape(-1), minlength=R + 1).float()
        area_m = flat.sum(1, keepdim=True)
        iou = inter / (area_m + area_r[None] - inter).clamp(min=1.0)
        iou = iou[:, :R]
        best = iou.argmax(1)
        return best.numpy(), iou.gather(1, best[:, None])[:, 0].numpy()

    def encode_masks(self, image: np.ndarray, masks: torch.Tensor, *, image_name: str) -> torch.Tensor:
        """(M, H, W) bool masks of ``image`` -> (M, D) L2-normalised embeddings (see the module docstring)."""
        masks = torch.as_tensor(masks).bool()
        D = self.embed_dim
        if masks.shape[0] == 0:
            return torch.zeros(0, D)
        best, iou = self.best_regions(masks, image_name)
        rng = view_rng(self.seed, image_name, "encoder")
        n = torch.tensor(rng.normal(0, 1 / np.sqrt(D), (len(best), D)), dtype=torch.float32)
        scale = torch.tensor(self.noise + self.mismatch_noise * (1 - iou), dtype=torch.float32)[:, None]
        target = self.region_embeddings()[torch.from_numpy(best)]
        target = torch.where(torch.from_numpy(iou > 0)[:, None], target, torch.zeros_like(target))
        return torch.nn.functional.normalize(target + scale * n, dim=-1)
