"""Bed v2 of the oracle encoder: a mask's feature behaves like CLIP's embedding of its crop.

Selected by ``"bed": "v2"`` in the oracle spec (see :mod:`gags.synthetic.bed`); v1
(:class:`~gags.synthetic.oracle_encoder.OracleEncoder`) is unchanged. Texts are still the sentence
model's embeddings (all-MiniLM-L6-v2), so paraphrases behave. For a mask M of a view:

1. **What the crop shows.** The region of any level with the highest IoU with M fixes the level the
   crop is read at (a mask that matches the mug reads as objects, one that matches its handle as
   parts); the regions of that level are then mixed by their visible area inside M, plus
   ``context_weight`` times their area in the rest of M's bounding box:
   ``t_mix = normalise(sum_r w_r t_r)``. The reference crop zeroes every pixel outside the mask
   (spec section 2), so the box context reaches CLIP only through the silhouette and what the
   mask's boundary errors let in, hence a small weight (OVSeg, Liang et al., CVPR 2023: CLIP does
   not read such blanked-out crops well; MAFT, Jiao et al., NeurIPS 2023: CLIP's predictions for
   different mask proposals of one image are alike, i.e. it sees more than the mask).
2. **Pieces are biased, not noisy.** Every region has a fixed random direction ``beta_r`` (its look:
   colour, texture) orthogonal to the texts. A crop that matches its best region only partly (IoU
   ``q``: a fragment, a mask straddling regions) reads as ``normalise(q t_mix + (1 - q) beta_mix)``:
   a texture fragment's CLIP feature is consistently off towards its appearance rather than
   scattered around its name (issue 8, item 4), so averaging views does not remove the error.
3. **A CLIP-like cone.**
   ``f = normalise(a s + b c + sigma_b beta_mix + sigma_v nu_mix)`` with ``s`` the reading of
   step 2, ``c`` one "image modality" direction orthogonal to the texts (CLIP's image and text
   embeddings sit in two separate cones, the modality gap: Liang et al., NeurIPS 2022, "Mind the
   Gap"; the gap is close to one vector orthogonal to both, arXiv 2603.29080), ``beta_mix`` the
   crop's regions' fixed looks and ``nu_mix`` their per-view variation (a fixed random vector per
   region and view: biased per region-view, shared by every mask of that region in that view, not
   independent per mask). The four weights follow from three target cosines of a clean crop:
   ``image_text_cos`` = cos(f, own text) = a, ``view_cos`` = cos(f, same region in another view) =
   a^2 + b^2 + sigma_b^2, ``cross_region_cos`` ~ cos(f, another region's image) = b^2 (+ a^2 times
   the two names' cosine), with a^2 + b^2 + sigma_b^2 + sigma_v^2 = 1.

Because the texts are untouched and ``c`` and ``beta`` are orthogonal to every region name and to
LERF's negatives, a clean crop's cosine with any region name is ``a`` times the two names' cosine
(up to ``nu``'s small projection), so LERF relevance still ranks a clean crop's own name first, but
no longer saturates (issue 8, item (ii): v1's 0.97 image-text cosine did).

Deterministic given ``seed`` and the view; the order of the masks does not matter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gags.synthetic.oracle_encoder import OracleEncoder
from gags.synthetic.oracle_segmenter import view_rng


class OracleEncoderV2(OracleEncoder):
    """Ground-truth-backed stand-in for CLIP's masked-crop embeddings, bed v2 (see the module docstring).

    Args:
        scene_dir: a folder made by :func:`gags.synthetic.generate.generate_scene`.
        seed: randomness of the looks, the modality direction and the per-view variation.
        image_text_cos: cosine of a clean crop with its region's name; 0.3. CLIP ViT-B image-text
            cosines of matching pairs are about 0.3 and rarely above 0.4 (CLIPScore, Hessel et al.,
            EMNLP 2021, rescales them by w = 2.5 for that reason); issue 8 gives 0.3 for ViT-B/16.
        view_cos: cosine of two clean crops of one region seen from two views; 0.9 (issue 8's
            figure for ViT-B/16; we found no published multi-view measure).
        cross_region_cos: cosine between crops of two different regions beyond what their names
            share; 0.5. CLIP's image embeddings share a narrow cone, so an image is nearer an
            unrelated image than its own caption (a photo of an orange is nearer a photo of an apple
            than the text "a fresh orange": Jina AI's modality-gap study; Liang et al. 2022), i.e.
            well above ``image_text_cos``; 0.5 is our choice within that, not a measured value.
        context_weight: weight of a box-context pixel relative to a mask pixel; 0.1 (see step 1).
        device: device of the sentence model.
    """

    def __init__(
        self,
        scene_dir: str | Path,
        *,
        seed: int = 0,
        image_text_cos: float = 0.3,
        view_cos: float = 0.9,
        cross_region_cos: float = 0.5,
        context_weight: float = 0.1,
        device: str = "cpu",
    ) -> None:
        super().__init__(scene_dir, seed=seed, device=device)
        a2, b2 = image_text_cos**2, cross_region_cos
        if not (0 < image_text_cos < 1 and a2 + b2 <= view_cos < 1):
            raise ValueError(
                f"need 0 < image_text_cos < 1 and image_text_cos^2 + cross_region_cos <= view_cos < 1, "
                f"got {image_text_cos}, {cross_region_cos}, {view_cos}"
            )
        self.image_text_cos = image_text_cos
        self.view_cos = view_cos
        self.cross_region_cos = cross_region_cos
        self.context_weight = context_weight
        #: weights of (own reading, modality, look, per-view variation); squares sum to 1
        self.weights = (
            image_text_cos,
            float(np.sqrt(b2)),
            float(np.sqrt(view_cos - a2 - b2)),
            float(np.sqrt(1 - view_cos)),
        )
        self._basis: torch.Tensor | None = None
        self._c = torch.zeros(0)
        self._looks: torch.Tensor | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "kind": "oracle",
            "bed": "v2",
            "scene": str(self.store.root),
            "seed": self.seed,
            "image_text_cos": self.image_text_cos,
            "view_cos": self.view_cos,
            "cross_region_cos": self.cross_region_cos,
            "context_weight": self.context_weight,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: str = "cpu") -> OracleEncoderV2:
        from gags.errors import GagsError

        if "scene" not in spec:
            raise GagsError(f"oracle encoder spec {spec} has no 'scene' folder")
        params = {k: v for k, v in spec.items() if k not in ("kind", "scene", "device", "bed")}
        return cls(spec["scene"], device=str(device), **params)

    # ------------------------------------------------------------------ fixed directions

    def _text_basis(self) -> torch.Tensor:
        """(D, T) orthonormal basis of the span of every region name, LERF's negatives and ``c``."""
        if self._basis is None:
            from gags.query.relevance import CANONICAL_NEGATIVES

            texts = torch.cat([self.region_embeddings(), self.encode_texts(list(CANONICAL_NEGATIVES))])
            basis = torch.linalg.qr(texts.double().T).Q
            rng = np.random.default_rng([self.seed, 0x0C11])
            raw = torch.tensor(rng.normal(size=self.embed_dim))
            c = F.normalize(raw - basis @ (basis.T @ raw), dim=0)
            self._c = c.float()
            self._basis = torch.cat([basis, c[:, None]], 1)
        return self._basis

    def _orthogonal_units(self, raw: np.ndarray) -> torch.Tensor:
        """Rows of ``raw`` (K, D) with the texts' and c's span projected out, unit length."""
        basis = self._text_basis()
        x = torch.tensor(raw, dtype=torch.float64)
        return F.normalize(x - (x @ basis) @ basis.T, dim=1).float()

    def directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(c (D,), looks (R + 1, D)): the modality direction and every region's look (last row: the
        background), unit vectors orthogonal to every region name and to LERF's negatives."""
        self._text_basis()
        if self._looks is None:
            rng = np.random.default_rng([self.seed, 0x100C])
            self._looks = self._orthogonal_units(
                rng.normal(size=(len(self.store.hierarchy) + 1, self.embed_dim))
            )
        return self._c, self._looks

    def view_variation(self, image_name: str) -> torch.Tensor:
        """(R + 1, D) unit vectors orthogonal to the texts: every region's (and the background's)
        variation in this view. Orthogonal so that it moves a crop within the image cone without
        reordering the region names it is close to (the crop's reading does that)."""
        rng = view_rng(self.seed, image_name, "clip-view")
        return self._orthogonal_units(rng.normal(size=(len(self.store.hierarchy) + 1, self.embed_dim)))

    # ------------------------------------------------------------------ masks

    def crop_contents(
        self, masks: torch.Tensor, image_name: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What each crop shows -> (weights (M, R + 1), best IoU (M,), best region (M,)).

        ``weights[m, r]`` is the area of region r inside mask m plus ``context_weight`` times its area in
        the rest of the mask's box, for the regions of the level the mask matches best (column R: the
        background).
        """
        from gags.features.crops import mask_boxes

        M, H, W = masks.shape
        R = len(self.store.hierarchy)
        labels = torch.from_numpy(self.store.labels_at(image_name, H, W).astype(np.int64)).reshape(3, -1)
        ids = torch.where(labels >= 0, labels, R)  # (3, HW), background -> R
        boxes = mask_boxes(masks)
        ys, xs = torch.arange(H)[None], torch.arange(W)[None]
        rows_in = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:4])  # (M, H)
        cols_in = (xs >= boxes[:, 0:1]) & (xs < boxes[:, 2:3])  # (M, W)
        in_box = rows_in[:, :, None] & cols_in[:, None, :]
        inside = masks.reshape(M, -1).float()
        around = (in_box & ~masks).reshape(M, -1).float()
        inter = torch.zeros(3, M, R + 1)
        ctx = torch.zeros(3, M, R + 1)
        for level in range(3):
            inter[level].index_add_(1, ids[level], inside)
            ctx[level].index_add_(1, ids[level], around)
        area_r = torch.bincount(labels[labels >= 0], minlength=R).float()
        overlap = inter.sum(0)[:, :R]  # a region's pixels are counted at its own level only
        iou = overlap / (inside.sum(1, keepdim=True) + area_r[None] - overlap).clamp(min=1.0)
        best_iou, best = iou.max(1)
        level = torch.from_numpy(self.store.hierarchy.level)[best]
        level = torch.where(best_iou > 0, level, torch.full_like(level, 2))
        pick = torch.arange(M)
        weights = inter[level, pick] + self.context_weight * ctx[level, pick]
        return weights, best_iou, best

    def encode_masks(self, image: np.ndarray, masks: torch.Tensor, *, image_name: str) -> torch.Tensor:
        """(M, H, W) bool masks of ``image`` -> (M, D) L2-normalised crop embeddings (module docstring)."""
        masks = torch.as_tensor(masks).bool()
        D = self.embed_dim
        if masks.shape[0] == 0:
            return torch.zeros(0, D)
        weights, q, _ = self.crop_contents(masks, image_name)
        texts = self.region_embeddings()
        c, looks = self.directions()
        text_w = weights[:, :-1]
        t_mix = F.normalize(text_w @ texts, dim=1)  # zero where the crop shows no region
        look = F.normalize(weights @ looks, dim=1)
        var = F.normalize(weights @ self.view_variation(image_name), dim=1)
        has_text = (text_w.sum(1, keepdim=True) > 0).float()
        q = q[:, None] * has_text
        reading = F.normalize(q * t_mix + (1 - q) * look, dim=1)
        a, b, s_look, s_view = self.weights
        return F.normalize(a * reading + b * c[None] + s_look * look + s_view * var, dim=1)
