"""Bed v2 of the oracle segmenter: the documented behaviour of SAM's three multimask outputs.

Selected by ``"bed": "v2"`` in the oracle spec (see :mod:`gags.synthetic.bed`); v1
(:class:`~gags.synthetic.oracle_segmenter.OracleSegmenter`) is unchanged. What SAM does, and where
it is documented:

- **Three nested outputs per point.** SAM predicts three masks for one point because nested masks
  rarely go deeper than whole, part and subpart; it trains them with the minimum loss over the
  three and ranks them by a predicted IoU (SAM paper, Sec. 3, "Resolving ambiguity"); the
  outputs come out ordered from small to large (segment-anything issue #550), and are often
  near-duplicates of each other (issue #168). As in v1, the outputs are the three smallest
  *resolvable* nested regions around the point, ``[fragment, subpart, part, whole]``, with the last
  repeated when fewer remain; how resolvable a region is depends on its apparent size.
- **(a) The coarsest output of a small object takes its support or neighbours in.** A region SAM
  cannot separate from its surroundings at the largest scale comes back together with them: in
  one reported case the highest-scoring of the three masks for a small hand was the background
  around it (CLIP_Surgery issue #4); proposal recall is lower for small objects than for large ones
  (SAM paper, Sec. 7.3) and SAM can miss fine structures (Sec. 8, Limitations). Here a fifth
  candidate, *context* = the whole plus the part of another object it borders most in this view
  (the place mat it stands on, the table top, a touching neighbour), is offered with probability
  ``context_rate * sigmoid(ln(context_size_px / size_w) / softness)``, drawn once per whole and
  view (every prompt on the object sees the same picture). When it is, it takes the
  coarsest output and the two outputs below it are the next coarser kept candidates, so the object's
  own whole moves to the middle output (the outputs shift up a level, as near views shift them down).
  "Whole" is then the wrong level for that object in that view.
- **(b) The finest output of a near object fragments** (v1): a subpart well above ``split_size_px``
  comes back as a piece of itself. In v2 the piece is a disc of radius ``fragment_radius_px`` around
  the prompt, cut by the subpart, because SAM's smallest output is the smallest region *around the
  point*; its centre is snapped to a lattice ``fragment_radius_px`` apart (random offset per view),
  so prompts close together get the same piece (as SAM gives for one texture patch) and prompts
  farther apart get different, overlapping pieces.
- **(c) Which output a point yields varies from view to view** beyond apparent size (the GAGS paper's
  Fig. 1, the ramen bowl segmented at different granularities in different views, and Fig. 5):
  every region's log apparent size is offset by ``N(0, view_jitter)`` per view before the
  resolvability, split and context draws, so the prompts of one view agree more with each other
  than with another view of the same region.
- **SAM's own filtering** before anything is returned, as the automatic generator with the reference
  settings does (spec section 1): predicted IoU > ``pred_iou_thresh``, stability >=
  ``stability_thresh``, then box NMS at ``box_nms_thresh`` ranked by predicted IoU; the masks come
  out in that order (descending predicted IoU), which is the order the clean-up paints them in.

**Prompt density.** The GAGS paper observes that dense prompts give small regions and sparse ones
large regions (Sec. 3.1, Fig. 1) but names no mechanism. The only documented mechanism we found is
coverage: regions no prompt falls in get no mask, so a sparse grid misses small objects and a
denser one finds them (segment-anything issues #587 and #596, sam2 issue #314). Nothing here reads
the prompt count. Two consequences of the pipeline follow on their own:
dense prompts on a near, split subpart give many overlapping prompt-centred fragments, which survive
box NMS and the clean-up's IoU test (they overlap less than 0.8) and, painted after the larger masks
(lower predicted IoU), overwrite them; but the clean-up's containment rule
(:mod:`gags.segment.cleanup`) drops every fragment that lies inside another mask of the same level
that it covers less than half of, so wherever some prompt's finest output is the subpart itself
(more likely the more prompts land on it), the fragments inside it are removed. We found no
documented mechanism beyond coverage, so no other density effect is modelled.

Imperfections as v1: boundaries moved by a smooth random field (``boundary_px``), misses
(``miss_rate``) and size-dependent scores. Deterministic given ``seed``, the image name and the
prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gags.features.crops import mask_boxes
from gags.models.segmenter import MaskProposals
from gags.synthetic.oracle_segmenter import SAM_LONG_SIDE, OracleSegmenter, _sigmoid, view_rng

#: candidate kinds, finest first
FRAGMENT, SUBPART, PART, WHOLE, CONTEXT = range(5)
KIND_NAMES = ("fragment", "subpart", "part", "whole", "context")


class OracleSegmenterV2(OracleSegmenter):
    """Ground-truth-backed stand-in for SAM, bed v2 (see the module docstring for the evidence).

    Sizes are ``sqrt(pixel area)`` in SAM's input resolution (1024 px on the long side), so the model
    behaves the same at any image size.

    Args:
        scene_dir: a folder made by :func:`gags.synthetic.generate.generate_scene`.
        seed: randomness of every draw.
        min_size_px: apparent size at which a subpart or part is resolved half the time; 40 SAM px,
            as v1 (about 4% of the image side: COCO calls objects under 32 x 32 px of a 640 px image,
            51 SAM px, "small", the range where SAM's proposal recall drops, SAM paper Sec. 7.3).
        split_size_px: apparent size at which a subpart's finest output is a fragment half the time;
            200 SAM px, as v1 (a fifth of the image side).
        softness: width of every size transition in ln-size units; 0.25, as v1 (about x1.3 in size).
        boundary_px: typical boundary displacement; 5 SAM px, as v1 (SAM's masks are predicted at a
            quarter of its 1024 px input, 256 x 256, and upsampled: a few SAM pixels of edge error).
        miss_rate: probability that a distinct mask is not returned at all; 0.05, as v1.
        view_jitter: standard deviation of the per-view, per-region offset of the log apparent size
            in every draw (c); 0.35 (x1.4 in size). No published measure of SAM's view-to-view
            variation exists that we found; 0.35 makes a region at the threshold flip level in about
            a third of the views, the order of what the GAGS paper's Fig. 1 and 5 show.
        fragment_radius_px: radius of a prompt-centred fragment (b); 50 SAM px, so fragments have the
            size of v1's 100 px cells (a highlight or texture patch about a tenth of the image side).
        context_size_px: apparent size of a whole below which its coarsest output tends to take its
            support or neighbour in (a); 100 SAM px (a tenth of the image side, twice COCO's "small").
        context_rate: the probability of that for a whole much smaller than ``context_size_px``; 0.5
            ("often", issue 8; no rate is published: CLIP_Surgery #4 shows one case, and which of the
            three outputs is right changes from point to point, which is why the SAM paper also scores
            single-point masks against the best of the three, Sec. 7.1). What reaches the index
            maps after SAM's box NMS and the clean-up is measured by benchmarks/bench_bed.py.
        context_ring_px: width of the ring around a whole in which its neighbour is looked for;
            10 SAM px (two pixels of a 200 px wide view).
        pred_iou_thresh / stability_thresh / box_nms_thresh: SAM's filters with the reference
            settings, 0.7 / 0.85 / 0.7 (preprocess.py:227-237, spec section 1).
    """

    def __init__(
        self,
        scene_dir: str | Path,
        *,
        seed: int = 0,
        min_size_px: float = 40.0,
        split_size_px: float = 200.0,
        softness: float = 0.25,
        boundary_px: float = 5.0,
        miss_rate: float = 0.05,
        view_jitter: float = 0.35,
        fragment_radius_px: float = 50.0,
        context_size_px: float = 100.0,
        context_rate: float = 0.5,
        context_ring_px: float = 10.0,
        pred_iou_thresh: float = 0.7,
        stability_thresh: float = 0.85,
        box_nms_thresh: float = 0.7,
    ) -> None:
        super().__init__(
            scene_dir,
            seed=seed,
            min_size_px=min_size_px,
            split_size_px=split_size_px,
            softness=softness,
            boundary_px=boundary_px,
            miss_rate=miss_rate,
        )
        self.view_jitter = view_jitter
        self.fragment_radius_px = fragment_radius_px
        self.context_size_px = context_size_px
        self.context_rate = context_rate
        self.context_ring_px = context_ring_px
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_thresh = stability_thresh
        self.box_nms_thresh = box_nms_thresh

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "kind": "oracle",
            "bed": "v2",
            "scene": str(self.store.root),
            "seed": self.seed,
            "min_size_px": self.min_size_px,
            "split_size_px": self.split_size_px,
            "softness": self.softness,
            "boundary_px": self.boundary_px,
            "miss_rate": self.miss_rate,
            "view_jitter": self.view_jitter,
            "fragment_radius_px": self.fragment_radius_px,
            "context_size_px": self.context_size_px,
            "context_rate": self.context_rate,
            "context_ring_px": self.context_ring_px,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_thresh": self.stability_thresh,
            "box_nms_thresh": self.box_nms_thresh,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> OracleSegmenterV2:
        from gags.errors import GagsError

        if "scene" not in spec:
            raise GagsError(f"oracle segmenter spec {spec} has no 'scene' folder")
        params = {k: v for k, v in spec.items() if k not in ("kind", "scene", "bed")}
        return cls(spec["scene"], **params)

    # ------------------------------------------------------------------ the Segmenter interface

    def segment(self, image: np.ndarray, points: np.ndarray, *, image_name: str) -> MaskProposals:
        """Masks for prompts ``points`` (P, 2) pixel (x, y) on ``image`` (H, W, 3) -> three levels."""
        H, W = image.shape[:2]
        choice = self.choose(points, image_name, H, W)
        scale = SAM_LONG_SIDE / max(H, W)
        radius = max(1, int(round(self.boundary_px / scale)))
        masks, ious, stabs = [], [], []
        for level in range(3):
            keys = self._drop_missed(np.unique(choice["outputs"][:, level]), image_name, level)
            frag = keys >= choice["fragment_base"]  # sorted keys: regions and contexts first
            full = self._region_masks(keys[~frag], choice)  # (A, H, W)
            windows, origin = self._fragment_windows(keys[frag], choice, radius)  # (F, S, S), (F, 2)
            area = torch.cat([full.flatten(1).sum(1), windows.flatten(1).sum(1)]).numpy()
            iou, stab = self._scores_v2(np.sqrt(area.astype(np.float64)) * scale, frag, image_name, level)
            good = ((iou > self.pred_iou_thresh) & (stab >= self.stability_thresh)).numpy()
            A = len(full)
            rng = view_rng(self.seed, image_name, f"boundary{level}")
            full = roughen(full[torch.from_numpy(good[:A])], rng, radius)
            windows, origin = roughen(windows[torch.from_numpy(good[A:])], rng, radius), origin[good[A:]]
            boxes = torch.cat([_boxes(full), _boxes(windows) + torch.from_numpy(origin).repeat(1, 2)])
            nonempty = torch.cat([full.flatten(1).any(1), windows.flatten(1).any(1)])
            iou, stab = iou[torch.from_numpy(good)], stab[torch.from_numpy(good)]
            order = _box_nms(boxes, iou, nonempty, self.box_nms_thresh)
            masks.append(_paste(full, windows, origin, order, H, W))
            ious.append(iou[order])
            stabs.append(stab[order])
        return MaskProposals(masks=masks, pred_iou=ious, stability=stabs)

    def choose(self, points: np.ndarray, image_name: str, height: int, width: int) -> dict[str, Any]:
        """What each prompt returns, before masks are drawn.

        Returns a dict with ``labels`` (3, H, W) region ids, ``outputs`` (P', 3) int64 keys of the three
        outputs of every prompt not on the background, ``kinds`` (P', 3) their kind (0 fragment,
        1 subpart, 2 part, 3 whole, 4 context), ``prompts`` (P', 2) the prompts' pixel (col, row),
        ``neighbour`` (R,) the part each whole's context adds (-1: none), and the key layout
        (``context_base``, ``fragment_base``, ``nodes`` (N, 2) lattice centres, pixel (x, y)): keys
        below R are region ids, ``context_base + w`` is the context of whole w, and
        ``fragment_base + subpart * N + node`` the fragment of that subpart around that lattice node.
        """
        labels = self.store.labels_at(image_name, height, width).astype(np.int64)
        n = len(self.store.hierarchy)
        scale = SAM_LONG_SIDE / max(height, width)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        cols = np.clip(pts[:, 0].astype(int), 0, width - 1)
        rows = np.clip(pts[:, 1].astype(int), 0, height - 1)
        on = labels[0, rows, cols] >= 0  # prompts on the background get nothing
        cols, rows = cols[on], rows[on]
        chain = labels[:, rows, cols].T  # (P, 3) subpart, part, whole
        P = len(chain)
        neighbour = self._neighbours(labels, scale)
        nodes, node_of = self._fragment_lattice(image_name, height, width, cols, rows, scale)
        base = {"context_base": n, "fragment_base": 2 * n, "nodes": nodes}
        result = {"labels": labels, "prompts": np.stack([cols, rows], -1), "neighbour": neighbour, **base}
        if P == 0:
            empty = np.zeros((0, 3), np.int64)
            return {**result, "outputs": empty, "kinds": empty}

        area = np.bincount(labels[labels >= 0].ravel(), minlength=n).astype(np.float64)
        jitter = view_rng(self.seed, image_name, "jitter").normal(0.0, self.view_jitter, n)
        log_size = np.log(np.maximum(np.sqrt(area) * scale, 1e-6)) + jitter  # (R,) this view's
        s, p, w = chain.T
        resolved = lambda r: _sigmoid((log_size[r] - np.log(self.min_size_px)) / self.softness)  # noqa: E731
        has_context = neighbour[w] >= 0
        prob = np.stack(
            [
                _sigmoid((log_size[s] - np.log(self.split_size_px)) / self.softness),
                resolved(s),
                resolved(p),
                np.ones(P),  # the whole is always a valid answer
            ],
            -1,
        )
        keep = view_rng(self.seed, image_name, "chain").uniform(size=prob.shape) < prob
        # the context is drawn once per whole and view: one picture of a small object on its support
        # reads the same way from wherever on the object the prompt is
        p_context = self.context_rate * _sigmoid((np.log(self.context_size_px) - log_size) / self.softness)
        context = view_rng(self.seed, image_name, "context").uniform(size=n) < p_context
        keep = np.concatenate([keep, (context[w] & has_context)[:, None]], 1)
        fragment = base["fragment_base"] + s * len(nodes) + node_of
        candidates = np.stack([fragment, s, p, w, base["context_base"] + w], -1)
        kinds = np.empty((P, 3), np.int64)
        # no context: the first three kept of (fragment, subpart, part, whole), the last repeated
        rank = np.cumsum(keep[:, :4], axis=1) - 1
        for slot in range(3):
            has = keep[:, :4] & (rank == slot)
            kinds[:, slot] = np.where(has.any(1), has.argmax(1), WHOLE)
        # context: it is the coarsest output, the two below are the next coarser kept candidates
        ctx = keep[:, CONTEXT]
        rev = keep[:, ::-1]
        rank_rev = np.cumsum(rev, axis=1) - 1
        below = np.full(P, CONTEXT)
        for slot in (2, 1, 0):
            has = rev & (rank_rev == 2 - slot)
            below = np.where(has.any(1), CONTEXT - has.argmax(1), below)
            kinds[:, slot] = np.where(ctx, below, kinds[:, slot])
        outputs = np.take_along_axis(candidates, kinds, axis=1)
        return {**result, "outputs": outputs, "kinds": kinds}

    # ------------------------------------------------------------------ pieces

    def _neighbours(self, labels: np.ndarray, scale: float) -> np.ndarray:
        """(R,) the part of another object that borders each visible whole most (-1 where none)."""
        n = len(self.store.hierarchy)
        out = np.full(n, -1, np.int64)
        wholes = np.unique(labels[2][labels[2] >= 0])
        if len(wholes) == 0:
            return out
        r = max(1, int(round(self.context_ring_px / scale)))
        own = torch.from_numpy(labels[2][None] == wholes[:, None, None]).float()  # (K, H, W)
        ring = torch.nn.functional.max_pool2d(own[:, None], 2 * r + 1, stride=1, padding=r)[:, 0] > 0
        ring = ring.numpy() & (labels[2][None] >= 0) & (labels[2][None] != wholes[:, None, None])
        for k, w in enumerate(wholes):
            parts = labels[1][ring[k]]
            if parts.size:
                out[w] = int(np.bincount(parts).argmax())
        return out

    def _fragment_lattice(
        self, image_name: str, H: int, W: int, cols: np.ndarray, rows: np.ndarray, scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lattice of fragment centres (N, 2) pixel (x, y), and the node nearest each prompt (P,)."""
        step = self.fragment_radius_px / scale
        offset = view_rng(self.seed, image_name, "lattice").uniform(0, step, 2)
        nx, ny = int(np.ceil(W / step)) + 2, int(np.ceil(H / step)) + 2
        gy, gx = np.mgrid[0:ny, 0:nx]
        nodes = np.stack([gx.ravel(), gy.ravel()], -1) * step + offset - step
        ix = np.clip(np.round((cols + 0.5 - offset[0]) / step).astype(int) + 1, 0, nx - 1)
        iy = np.clip(np.round((rows + 0.5 - offset[1]) / step).astype(int) + 1, 0, ny - 1)
        return nodes, iy * nx + ix

    def _region_masks(self, keys: np.ndarray, choice: dict[str, Any]) -> torch.Tensor:
        """(M, H, W) bool ground-truth masks of region and context keys."""
        labels = choice["labels"]
        n, level = choice["context_base"], self.store.hierarchy.level
        out = np.zeros((len(keys), *labels.shape[1:]), bool)
        for i, key in enumerate(keys.tolist()):
            if key < n:
                out[i] = labels[level[key]] == key
            else:
                whole = key - n
                out[i] = (labels[2] == whole) | (labels[1] == choice["neighbour"][whole])
        return torch.from_numpy(out)

    def _fragment_windows(
        self, keys: np.ndarray, choice: dict[str, Any], margin: int
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Fragment keys -> (F, S, S) bool masks in square windows and their (F, 2) origins (x0, y0).

        A fragment is local, so it is drawn in a window around its lattice node (with room for the
        boundary noise) instead of the whole image."""
        sub_map = choice["labels"][0]
        H, W = sub_map.shape
        r = self.fragment_radius_px / (SAM_LONG_SIDE / max(H, W))  # image pixels
        half = int(np.ceil(r)) + margin + 1
        side = 2 * half + 1
        if len(keys) == 0:
            return torch.zeros(0, side, side, dtype=torch.bool), np.zeros((0, 2), np.int64)
        sub, node = np.divmod(keys - choice["fragment_base"], len(choice["nodes"]))
        centre = choice["nodes"][node]  # (F, 2) x, y
        origin = np.floor(centre).astype(np.int64) - half
        pad = 2 * half + int(np.ceil(r)) + 2  # lattice nodes lie up to one step outside the image
        padded = np.pad(sub_map, pad, constant_values=-1)
        wy, wx = np.mgrid[0:side, 0:side]
        ys = origin[:, 1, None, None] + wy[None] + pad
        xs = origin[:, 0, None, None] + wx[None] + pad
        dx = origin[:, 0, None, None] + wx[None] + 0.5 - centre[:, 0, None, None]
        dy = origin[:, 1, None, None] + wy[None] + 0.5 - centre[:, 1, None, None]
        inside = (padded[ys, xs] == sub[:, None, None]) & (np.hypot(dx, dy) <= r)
        return torch.from_numpy(inside), origin

    def _scores_v2(
        self, size: np.ndarray, fragment: np.ndarray, image_name: str, level: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) predicted IoU and stability, v1's formula (see :meth:`OracleSegmenter._scores`)."""
        rng = view_rng(self.seed, image_name, f"scores{level}")
        small = np.exp(-size / (2 * self.min_size_px))
        iou = 0.95 - 0.3 * small - 0.08 * fragment.astype(float) + rng.normal(0, 0.03, len(size))
        stab = 0.97 - 0.2 * small + rng.normal(0, 0.02, len(size))
        as_t = lambda a: torch.tensor(np.clip(a, 0, 1), dtype=torch.float32)  # noqa: E731
        return as_t(iou), as_t(stab)


def roughen(exact: torch.Tensor, rng: np.random.Generator, radius: int) -> torch.Tensor:
    """(M, H, W) bool masks with boundaries moved by a smooth random field (v1's boundary model: the
    field varies over about 8 pixels)."""
    M, H, W = exact.shape
    if M == 0:
        return exact.clone()
    soft = torch.nn.functional.avg_pool2d(
        exact.float()[:, None], 2 * radius + 1, stride=1, padding=radius, count_include_pad=False
    )
    coarse = torch.tensor(rng.uniform(-1, 1, (M, 1, max(2, H // 8), max(2, W // 8))), dtype=torch.float32)
    field = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    noisy = soft > 0.5 + 0.45 * field
    return noisy[:, 0] | (exact & (soft[:, 0] > 0.999))  # interiors never get holes


def _boxes(masks: torch.Tensor) -> torch.Tensor:
    """(M, H, W) bool -> (M, 4) int64 boxes (x0, y0, x1, y1), end exclusive (none for M = 0)."""
    return mask_boxes(masks) if len(masks) else torch.zeros(0, 4, dtype=torch.int64)


def _box_nms(
    boxes: torch.Tensor, scores: torch.Tensor, nonempty: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Indices of the non-empty masks kept by box NMS ranked by ``scores`` (descending), as in SAM."""
    from torchvision.ops import nms

    index = torch.nonzero(nonempty).reshape(-1)
    if len(index) == 0:
        return index
    return index[nms(boxes[index].float(), scores[index].float(), threshold)]


def _paste(
    full: torch.Tensor, windows: torch.Tensor, origin: np.ndarray, order: torch.Tensor, H: int, W: int
) -> torch.Tensor:
    """(K, H, W) bool: the masks ``order`` indexes in ``full`` then ``windows`` (pasted at ``origin``)."""
    out = torch.zeros(len(order), H, W, dtype=torch.bool)
    A, side = len(full), windows.shape[-1]
    for k, i in enumerate(order.tolist()):
        if i < A:
            out[k] = full[i]
            continue
        x0, y0 = (int(v) for v in origin[i - A])
        ys, xs = slice(max(y0, 0), min(y0 + side, H)), slice(max(x0, 0), min(x0 + side, W))
        out[k, ys, xs] = windows[i - A, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out
