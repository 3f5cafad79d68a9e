"""An oracle in place of SAM: point-prompted masks at three granularities from the ground truth.

This is test bed v1 (a spec with ``"bed": "v1"`` or without the key, bit for bit as before beds
existed); :meth:`OracleSegmenter.from_spec` returns bed v2
(:mod:`gags.synthetic.oracle_segmenter_v2`) for ``"bed": "v2"``. See :mod:`gags.synthetic.bed`.

It implements :class:`gags.models.segmenter.Segmenter` and reproduces, with explicit parameters,
the behaviour of SAM that GAGS exists to correct (paper, Sec. 3.1):

(a) **Granularity follows apparent size.** SAM's three outputs for a prompt are the three
    smallest *resolvable* nested regions around it, and what is resolvable depends on how big
    a region looks, not on what it is. Sizes are measured as ``sqrt(pixel area)`` in SAM's input
    resolution (SAM resizes every image to 1024 pixels on its long side), so the model behaves
    the same at any image size. For a prompt on subpart s of part p of whole w the candidate
    chain is ``[fragment, s, p, w]``:

    - a region whose apparent size ``sqrt(pixel area)`` is well below ``min_size_px`` cannot be
      isolated and is merged into its parent (kept with probability
      ``sigmoid(ln(size / min_size_px) / softness)``). In far views the subpart output therefore
      returns the part or the whole.
    - a subpart whose apparent size is well above ``split_size_px`` is split into *fragments*
      (shading / texture pieces: the subpart cut by a Voronoi partition of the image with cells
      ``fragment_cell_px`` SAM pixels apart), present with probability
      ``sigmoid(ln(size / split_size_px) / softness)``. In near views the outputs shift down a
      level (fragment, subpart, part) and the whole is never returned.

    The three outputs are the first three kept candidates (the last is repeated when fewer remain).
(b) **Prompt density matters** through the set of prompts, as in SAM's automatic generator:
    regions that no prompt falls in get no mask, so sparse prompts miss small regions in far
    views; every prompt inside a large region proposes the fragment it falls in, so dense prompts
    cover near views with many small fragment masks (over-segmentation). Nothing here reads the
    prompt count: the effect comes from where the prompts land.

Imperfections: boundaries are moved by a smooth random field of amplitude about ``boundary_px``
SAM pixels; each distinct mask is missed with probability ``miss_rate``; scores are lower for tiny
regions and fragments (see :meth:`OracleSegmenter._scores`).

Identical masks from different prompts are returned once per level (SAM's automatic generator
removes them by NMS too). Everything is deterministic given ``seed`` and the image name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gags.errors import GagsError
from gags.models.segmenter import MaskProposals
from gags.synthetic.groundtruth import GroundTruthStore

#: number of candidates in the chain (fragment, subpart, part, whole)
_CHAIN = 4
#: SAM's input resolution (long side, pixels); sizes and distances of the model are in these pixels
SAM_LONG_SIDE = 1024


def view_rng(seed: int, image_name: str, salt: str) -> np.random.Generator:
    """A generator that depends only on ``seed``, the image's stem and ``salt`` (process-independent)."""
    digest = hashlib.sha256(f"{seed}/{Path(image_name).stem}/{salt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class OracleSegmenter:
    """Ground-truth-backed stand-in for SAM (see the module docstring for the model).

    Args:
        scene_dir: a folder made by :func:`gags.synthetic.generate.generate_scene`.
        seed: randomness of the resolvability draws, boundaries, misses and scores.
        min_size_px: apparent size (sqrt of the area, SAM pixels) at which a region is resolved half
            the time; 40 (8 px in a 200 x 150 view).
        split_size_px: apparent size (SAM pixels) at which a subpart is split into fragments half the
            time; 200 (a fifth of the image side).
        softness: width of both transitions in ln-size units; 0.25 (about x1.3 in size).
        fragment_cell_px: spacing of the fragment partition, SAM pixels; 100.
        boundary_px: typical boundary displacement, SAM pixels; 5 (1 px in a 200 x 150 view).
        miss_rate: probability that a distinct mask is not returned at all; 0.05.
    """

    def __init__(
        self,
        scene_dir: str | Path,
        *,
        seed: int = 0,
        min_size_px: float = 40.0,
        split_size_px: float = 200.0,
        softness: float = 0.25,
        fragment_cell_px: float = 100.0,
        boundary_px: float = 5.0,
        miss_rate: float = 0.05,
    ) -> None:
        self.store = GroundTruthStore(scene_dir)
        self.seed = seed
        self.min_size_px = min_size_px
        self.split_size_px = split_size_px
        self.softness = softness
        self.fragment_cell_px = fragment_cell_px
        self.boundary_px = boundary_px
        self.miss_rate = miss_rate

    @property
    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this segmenter (see :meth:`from_spec`)."""
        return {
            "kind": "oracle",
            "bed": "v1",
            "scene": str(self.store.root),
            "seed": self.seed,
            "min_size_px": self.min_size_px,
            "split_size_px": self.split_size_px,
            "softness": self.softness,
            "fragment_cell_px": self.fragment_cell_px,
            "boundary_px": self.boundary_px,
            "miss_rate": self.miss_rate,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> OracleSegmenter:
        """The segmenter of ``spec``: bed v1 (this class; also when there is no "bed" key) or v2."""
        from gags.synthetic.bed import bed_of

        if bed_of(spec) == "v2":
            from gags.synthetic.oracle_segmenter_v2 import OracleSegmenterV2

            return OracleSegmenterV2.from_spec(spec)
        params = {k: v for k, v in spec.items() if k not in ("kind", "scene", "bed")}
        if "scene" not in spec:
            raise GagsError(f"oracle segmenter spec {spec} has no 'scene' folder")
        return cls(spec["scene"], **params)

    # ------------------------------------------------------------------ the Segmenter interface

    def segment(self, image: np.ndarray, points: np.ndarray, *, image_name: str) -> MaskProposals:
        """Masks for prompts ``points`` (P, 2) pixel (x, y) on ``image`` (H, W, 3) -> three levels."""
        H, W = image.shape[:2]
        keymap, outputs = self.assign(points, image_name, H, W)
        scale = SAM_LONG_SIDE / max(H, W)
        sizes = self._sizes(keymap) * scale
        masks, ious, stabs = [], [], []
        for level in range(3):
            keys = np.unique(outputs[:, level]) if len(outputs) else np.zeros(0, np.int64)
            keys = self._drop_missed(keys, image_name, level)
            masks.append(self._rasterise(keymap, keys, image_name, level, scale))
            iou, stab = self._scores(keys, sizes, image_name, level)
            ious.append(iou)
            stabs.append(stab)
        return MaskProposals(masks=masks, pred_iou=ious, stability=stabs)

    def assign(
        self, points: np.ndarray, image_name: str, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """What each prompt returns, before rasterisation and misses.

        Returns ``keymap`` (4, H, W) int64, the candidate keys (fragment, subpart, part, whole) at
        every pixel (-1 = none), and ``outputs`` (P', 3) the keys of the three outputs of every prompt
        that is not on the background. Region keys are region ids; see :meth:`key_level`.
        """
        labels = self.store.labels_at(image_name, height, width).astype(np.int64)  # (3, H, W)
        scale = SAM_LONG_SIDE / max(height, width)
        cells = self._fragment_cells(image_name, height, width, self.fragment_cell_px / scale)
        keymap = self._candidate_keymap(labels, cells, len(self.store.hierarchy), int(cells.max()) + 1)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        cols = np.clip(pts[:, 0].astype(int), 0, width - 1)
        rows = np.clip(pts[:, 1].astype(int), 0, height - 1)
        chain = keymap[:, rows, cols].T  # (P, 4) candidate keys per prompt
        chain = chain[chain[:, 1] >= 0]  # prompts on the background get nothing
        rng = view_rng(self.seed, image_name, "chain")
        return keymap, self._choose_outputs(chain, self._sizes(keymap) * scale, rng)

    def key_level(self, keys: np.ndarray) -> np.ndarray:
        """Granularity of keys: -1 fragment, 0 subpart, 1 part, 2 whole."""
        n = len(self.store.hierarchy)
        keys = np.asarray(keys)
        return np.where(keys >= n, -1, self.store.hierarchy.level[np.minimum(keys, n - 1)])

    @staticmethod
    def _sizes(keymap: np.ndarray) -> np.ndarray:
        """sqrt(pixel area) of every key (indexable by any key in ``keymap``), image pixels."""
        keys = keymap[keymap >= 0].ravel()
        return np.sqrt(np.bincount(keys, minlength=int(keys.max(initial=0)) + 1).astype(np.float64))

    # ------------------------------------------------------------------ pieces

    def _fragment_cells(self, image_name: str, H: int, W: int, step: float) -> np.ndarray:
        """(H, W) int64 Voronoi cell of every pixel; seeds on a jittered grid ``step`` image pixels apart."""
        rng = view_rng(self.seed, image_name, "cells")
        gy, gx = np.meshgrid(np.arange(0, H + step, step), np.arange(0, W + step, step), indexing="ij")
        seeds = np.stack([gx.ravel(), gy.ravel()], -1) + rng.uniform(-0.4, 0.4, (gx.size, 2)) * step
        ys, xs = np.mgrid[0:H, 0:W]
        pix = torch.tensor(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], -1), dtype=torch.float32)
        d = torch.cdist(pix, torch.tensor(seeds, dtype=torch.float32))  # (HW, S)
        return d.argmin(1).numpy().reshape(H, W)

    @staticmethod
    def _candidate_keymap(labels: np.ndarray, cells: np.ndarray, n_regions: int, n_cells: int) -> np.ndarray:
        """(4, H, W) keys of (fragment, subpart, part, whole) at every pixel.

        Region keys are region ids; fragment keys are ``n_regions + subpart * n_cells + cell``.
        """
        sub = labels[0]
        frag = np.where(sub >= 0, n_regions + sub * n_cells + cells, -1)
        return np.concatenate([frag[None], labels], 0)

    def _choose_outputs(self, chain: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(P, 4) candidate chains -> (P, 3) keys of SAM's three outputs (see the module docstring).

        ``sizes`` holds the apparent size sqrt(pixel area) of every key, SAM pixels.
        """
        if len(chain) == 0:
            return np.zeros((0, 3), np.int64)
        size = sizes[chain]  # (P, 4)
        log_size = np.log(np.maximum(size, 1e-6))
        p_keep = _sigmoid((log_size - np.log(self.min_size_px)) / self.softness)
        p_split = _sigmoid((log_size[:, 1] - np.log(self.split_size_px)) / self.softness)
        keep = rng.uniform(size=p_keep.shape) < p_keep
        keep[:, 0] &= rng.uniform(size=len(chain)) < p_split
        keep[:, 3] = True  # the whole is always a valid answer, however small it looks
        # first three kept candidates, repeating the last when fewer than three remain
        rank = np.cumsum(keep, axis=1) - 1  # (P, 4) position of each kept candidate
        out = np.empty((len(chain), 3), np.int64)
        for slot in range(3):
            has = keep & (rank == slot)
            idx = np.where(has.any(1), has.argmax(1), _CHAIN - 1)
            out[:, slot] = chain[np.arange(len(chain)), idx]
        return out

    def _drop_missed(self, keys: np.ndarray, image_name: str, level: int) -> np.ndarray:
        rng = view_rng(self.seed, image_name, f"miss{level}")
        draws = rng.uniform(size=len(keys))
        return keys[draws >= self.miss_rate]

    def _rasterise(
        self, keymap: np.ndarray, keys: np.ndarray, image_name: str, level: int, scale: float
    ) -> torch.Tensor:
        """(M, H, W) bool masks of ``keys`` with boundaries moved by a smooth random field."""
        H, W = keymap.shape[1:]
        if len(keys) == 0:
            return torch.zeros(0, H, W, dtype=torch.bool)
        row = self.key_level(keys) + 1  # the keymap row of each key
        exact = torch.from_numpy(keymap[row] == keys[:, None, None]).float()  # (M, H, W)
        r = max(1, int(round(self.boundary_px / scale)))
        soft = torch.nn.functional.avg_pool2d(
            exact[:, None], 2 * r + 1, stride=1, padding=r, count_include_pad=False
        )
        rng = view_rng(self.seed, image_name, f"boundary{level}")
        coarse = torch.tensor(
            rng.uniform(-1, 1, (len(keys), 1, max(2, H // 8), max(2, W // 8))), dtype=torch.float32
        )
        field = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
        noisy = soft > 0.5 + 0.45 * field
        return noisy[:, 0] | (exact.bool() & (soft[:, 0] > 0.999))  # interiors never get holes

    def _scores(
        self, keys: np.ndarray, sizes: np.ndarray, image_name: str, level: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) predicted IoU and stability in [0, 1].

        pred_iou = 0.95 - 0.3 exp(-size / (2 min_size_px)) - 0.08 [fragment] + N(0, 0.03);
        stability = 0.97 - 0.2 exp(-size / (2 min_size_px)) + N(0, 0.02): SAM is less sure of tiny
        regions and of texture fragments; with SAM's thresholds (0.7 / 0.85) some tiny ones are dropped.
        """
        rng = view_rng(self.seed, image_name, f"scores{level}")
        size = sizes[keys]
        small = np.exp(-size / (2 * self.min_size_px))
        frag = (self.key_level(keys) < 0).astype(float)
        iou = 0.95 - 0.3 * small - 0.08 * frag + rng.normal(0, 0.03, len(keys))
        stab = 0.97 - 0.2 * small + rng.normal(0, 0.02, len(keys))
        as_t = lambda a: torch.tensor(np.clip(a, 0, 1), dtype=torch.float32)  # noqa: E731
        return as_t(iou), as_t(stab)
