"""Where a GaD field puts its learnt granularity alpha on the synthetic scene, by view distance and size.

The paper (Section 3.2, Fig. 6) expects alpha to vary across the scene: whole objects where the coarse
masks agree across views, parts or subparts where only those do. This module renders alpha
(:func:`gags.distill.alpha.render_alpha`) in every training view of a synthetic run and summarises it
against the scene's ground truth:

- ``by_ring``: per view ring (``far`` 1.1 m, ``mid`` 0.6 m, ``near`` close-ups; ``views.json``), the mean
  alpha (subpart, part, whole) over the rendered object pixels and the share of those pixels whose
  argmax is each level (the colours of Fig. 6);
- ``by_size``: the same per apparent object size, a whole object's visible area in a view as a fraction
  of the image: ``small`` under 2%, ``medium`` 2-10%, ``large`` above 10%.

The table and its mat are left out: they are background, queried by no label set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gags.models.segmenter import LEVELS

#: apparent-size buckets: upper bounds of a whole object's visible area as a fraction of the image
SIZE_BUCKETS = (("small", 0.02), ("medium", 0.10), ("large", 1.0))
#: whole regions that are background, not objects
BACKGROUND = ("table", "place mat")


def view_rings(scene_dir: Path) -> dict[str, str]:
    """Image name -> ring (``far``, ``mid``, ``near``) from the scene's ``views.json``."""
    views = json.loads((Path(scene_dir) / "views.json").read_text())["views"]
    return {v["name"]: v["ring"] for v in views}


def size_bucket(area_fraction: float) -> str:
    """The :data:`SIZE_BUCKETS` name of an object covering ``area_fraction`` of the image."""
    return next(name for name, upper in SIZE_BUCKETS if area_fraction <= upper)


class _Tally:
    """Sums of alpha and of argmax one-hots over pixels, per key."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}

    def add(self, key: str, alpha: np.ndarray) -> None:
        """Add (P, 3) alpha of P pixels to ``key``."""
        if alpha.shape[0] == 0:
            return
        row = np.concatenate(
            [alpha.sum(0), np.bincount(alpha.argmax(-1), minlength=len(LEVELS)), [alpha.shape[0]]]
        )
        self.sums[key] = self.sums.get(key, 0) + row

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per key: mean ``alpha`` and ``argmax_share`` per level (dicts by level name), ``pixels``."""
        out = {}
        for key, s in sorted(self.sums.items()):
            n = s[-1]
            out[key] = {
                "alpha": {lvl: round(float(v), 3) for lvl, v in zip(LEVELS, s[:3] / n, strict=True)},
                "argmax_share": {lvl: round(float(v), 3) for lvl, v in zip(LEVELS, s[3:6] / n, strict=True)},
                "pixels": int(n),
            }
        return out


def alpha_statistics(run_root: Path, scene_dir: Path, downscale: float = 2.0) -> dict[str, Any]:
    """``by_ring`` and ``by_size`` summaries of a learnt-alpha run's training views (module docstring).

    ``downscale`` is the distillation's (alpha is rendered at the supervision resolution).
    """
    from gags.distill.alpha import render_alpha
    from gags.distill.field import LanguageField
    from gags.runfolder import RunFolder
    from gags.scene.cameras import stack_cameras
    from gags.scene.load import load_run_scene
    from gags.synthetic.groundtruth import GroundTruthStore

    run = RunFolder(run_root)
    field = LanguageField.load(run.language)
    store = GroundTruthStore(scene_dir)
    names = store.hierarchy.names
    objects = {i for i, n in enumerate(names) if store.hierarchy.level[i] == 2 and n not in BACKGROUND}
    rings = view_rings(scene_dir)
    by_ring, by_size = _Tally(), _Tally()
    scene = load_run_scene(run)
    for cam in (scene.cameras[i] for i in scene.train_indices):
        c = cam.scaled(downscale)
        viewmats, Ks = stack_cameras([c])
        alpha = render_alpha(field, viewmats, Ks, c.width, c.height)[0][0].numpy()  # (H, W, 3)
        whole = store.labels_at(cam.name, c.height, c.width)[2]
        on_object = np.isin(whole, list(objects))
        by_ring.add(rings.get(cam.name, "other"), alpha[on_object])
        for obj in np.unique(whole[on_object]):
            mask = whole == obj
            by_size.add(size_bucket(mask.mean()), alpha[mask])
    return {"by_ring": by_ring.summary(), "by_size": by_size.summary()}


def alpha_line(stats: dict[str, Any]) -> str:
    """One line: mean alpha (subpart / part / whole) per ring, e.g. ``far 0.05/0.20/0.75 · near ...``."""
    parts = []
    for ring in ("far", "mid", "near"):
        a = stats["by_ring"].get(ring)
        if a is not None:
            parts.append(f"{ring} " + "/".join(f"{a['alpha'][lvl]:.2f}" for lvl in LEVELS))
    return " · ".join(parts)


def level_floors(run_root: Path, scene_dir: Path, downscale: float = 2.0) -> dict[str, Any]:
    """Eq. 3's floor per level: how multi-view consistent each level's targets are, per object.

    A Gaussian's feature is the same in every view, so on the pixels of one ground-truth subpart s the
    best Eq. 3 can do with all of alpha on level n is the variance of that level's targets there:
    ``1 - ||mean_p f_n(p)||^2`` (targets are unit vectors; the mean runs over s's pixels in every
    training view). The level with the lowest floor is the one Eq. 3 rewards on s. Returns per whole
    object: the floors (by level) averaged over its subparts, weighted by pixels, and for how many of
    its subparts each level is lowest; and ``scene``: the same over every object's subparts.
    """
    import torch

    from gags.distill.views import load_all_view_targets
    from gags.runfolder import RunFolder
    from gags.scene.load import load_run_scene
    from gags.synthetic.groundtruth import GroundTruthStore

    run = RunFolder(run_root)
    scene = load_run_scene(run)
    store = GroundTruthStore(scene_dir)
    hier = store.hierarchy
    cameras = [scene.cameras[i] for i in scene.train_indices]
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    for view in load_all_view_targets(run, cameras, downscale):
        sub = store.labels_at(view.camera.name, view.camera.height, view.camera.width)[0].reshape(-1)
        sub = torch.from_numpy(sub.astype(np.int64))[view.valid]
        targets = view.level_features()  # (P, 3, D)
        ids, inverse = torch.unique(sub, return_inverse=True)
        block = torch.zeros(len(ids), *targets.shape[1:]).index_add(0, inverse, targets)
        n = torch.bincount(inverse, minlength=len(ids))
        for s_id, b, c in zip(ids.tolist(), block, n.tolist(), strict=True):
            if s_id >= 0:
                sums[s_id] = sums.get(s_id, 0) + b
                counts[s_id] = counts.get(s_id, 0) + c
    per_object: dict[str, dict[str, Any]] = {}
    totals = {"floor": np.zeros(3), "pixels": 0, "lowest": np.zeros(3, int)}
    for s_id, total in sums.items():
        floor = (1.0 - (total / counts[s_id]).norm(dim=-1).pow(2)).numpy()  # (3,)
        obj = hier.names[int(hier.object[s_id])]
        if obj in BACKGROUND:
            continue
        for e in (
            per_object.setdefault(obj, {"floor": np.zeros(3), "pixels": 0, "lowest": np.zeros(3, int)}),
            totals,
        ):
            e["floor"] += floor * counts[s_id]
            e["pixels"] += counts[s_id]
            e["lowest"][int(np.argmin(floor))] += 1

    def summary(e: dict[str, Any]) -> dict[str, Any]:
        return {
            "floor": {
                lvl: round(float(v), 3)
                for lvl, v in zip(LEVELS, e["floor"] / max(e["pixels"], 1), strict=True)
            },
            "lowest_for_subparts": dict(zip(LEVELS, e["lowest"].tolist(), strict=True)),
        }

    return {"by_object": {k: summary(e) for k, e in sorted(per_object.items())}, "scene": summary(totals)}
