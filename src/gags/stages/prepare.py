"""``gags prepare RUN``: GaS prompts, SAM masks at three levels, clean-up, CLIP features per image.

Pipeline for each training view (one image at a time, the SAM image embedding computed once):

1. depth D of the view and, once for the whole run, every Gaussian's minimum visible depth MD
   (:mod:`gags.segment.depth`);
2. prompts per patch (paper Eq. 1 or a variant) placed by visible-Gaussian density
   (:mod:`gags.segment.prompts`);
3. SAM (or the synthetic oracle) -> subpart / part / whole candidates (:mod:`gags.models.sam`);
4. per-level clean-up and index maps (:mod:`gags.segment.cleanup`);
5. one CLIP feature per kept mask (:mod:`gags.features.crops`);
6. ``segments/IMAGE.npz`` and ``features/IMAGE.npz``, written atomically (:mod:`gags.features.store`).

Resumable: a view whose two files exist and are valid is skipped. A view where no Gaussian is
visible is skipped with the reason logged (and returned), never written with made-up prompts.

Under ``torchrun`` every rank checks the settings and the run folder before anything is written,
then takes its :func:`~gags.distributed.shard` of the views still to do (and of the chunks of the
minimum-depth pass, min-reduced); rank 0 alone records the stage: as running before any rank
writes, as finished (with its input fingerprints) once every rank is done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro
from tqdm import tqdm

from gags import distributed as dist
from gags.devices import resolve_device
from gags.errors import GagsError, file_error, suggest
from gags.features.crops import embed_masks
from gags.features.store import ImageFeatures, ImageSegments, is_valid_pair, save_features, save_segments
from gags.models.encoder import TextImageEncoder
from gags.models.sam import SamConfig, sam_spec
from gags.models.segmenter import LEVELS, MaskProposals, Segmenter
from gags.runfolder import RunFolder, locked
from gags.scene.cameras import Camera, stack_cameras
from gags.segment.cleanup import CleanupConfig, mask_nms, paint_index_maps
from gags.segment.depth import md_map, min_visible_depth, render_depths, view_visibility
from gags.segment.prompts import PromptConfig, make_prompts
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend

log = logging.getLogger(__name__)

STAGES = ("depth", "prompts", "sam_encoder", "sam_decoder", "cleanup", "clip", "write")


#: ``--preset``: both use the paper's models (SAM ViT-H, OpenCLIP ViT-B-16 laion2b_s34b_b88k); on a CPU,
#: ``--sam.model vit_b`` is about 4x faster per image
PRESETS: dict[str, dict[str, object]] = {"paper": {"sam.model": "vit_h"}, "quick": {}}


@dataclasses.dataclass
class PrepareConfig:
    """``gags prepare``: segment every training view at three granularities and embed each mask.

    Defaults reproduce the paper and the authors' settings (spec sections 1-2) except where noted.
    Model and algorithm settings are grouped: ``--prompts.*`` (GaS, Eq. 1), ``--sam.*`` (SAM and its
    thresholds), ``--cleanup.*`` (per-level mask clean-up).
    """

    run: Annotated[Path, tyro.conf.Positional]
    """the run folder (needs splats.ply and config.json["scene"] from `gags train-rgb`)"""
    prompts: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    """prompt counts per patch (paper Eq. 1 or a variant) and their placement"""
    sam: SamConfig = dataclasses.field(default_factory=SamConfig)
    """SAM backbone, weights and the reference's mask-quality thresholds"""
    cleanup: CleanupConfig = dataclasses.field(default_factory=CleanupConfig)
    """per-level clean-up of the masks before they are painted into index maps"""
    device: str = "auto"
    """torch device: auto (CUDA when available), cpu, cuda, cuda:1, ..."""
    backend: Backend = "auto"
    """render backend for depth maps"""
    depth_tolerance: float = 0.25
    """relative depth agreement for the visibility test (reference 0.25)"""
    view_chunk: int = 8
    """views rendered at once for the minimum-depth pass"""
    segmenter: Literal["sam", "oracle"] = "sam"
    """segmenter: sam, or oracle (synthetic scenes only)"""
    encoder: Literal["openclip", "oracle"] = "openclip"
    """encoder: openclip, or oracle (synthetic scenes only)"""
    oracle_bed: Literal["v1", "v2"] = "v2"
    """test bed of the oracle models (gags.synthetic.bed): v2 = SAM's and CLIP's failure modes, v1 = the
    original oracles (what a recorded spec without a "bed" key means)"""
    clip_model: str = "ViT-B-16"
    """open_clip model name"""
    clip_pretrained: str = "laion2b_s34b_b88k"
    """open_clip pretrained tag or weights file; `none` = random weights (tests only)"""
    clip_batch_size: int = 64
    """mask crops encoded per batch"""
    seed: int = 42
    """seed of the prompt placement (reference 42)"""
    overwrite: bool = False
    """redo views whose outputs already exist"""
    limit: int = 0
    """only the first N training views (0 = all)"""


@locked("prepare", lambda cfg: cfg.run)
def prepare(
    cfg: PrepareConfig, segmenter: Segmenter | None = None, encoder: TextImageEncoder | None = None
) -> dict[str, Any]:
    """Run ``gags prepare`` on ``cfg.run``; returns counts and per-stage timings (seconds)."""
    from gags.scene.images import load_image
    from gags.scene.load import load_run_scene
    from gags.splats.ply import load_ply

    validate_prepare_config(cfg)
    run = RunFolder(cfg.run)
    run.require(run.splats, "gags train-rgb")
    device = resolve_device(cfg.device)
    scene = load_run_scene(run)
    cameras = scene.train_cameras
    if not cameras:
        raise GagsError(f"{run.config}: the run's scene has no training cameras")
    validate_prepare_config(cfg, cameras)
    gaussians = load_ply(run.splats).to(device)
    if len(gaussians) == 0:
        raise GagsError(f"{run.splats}: holds no Gaussians")
    if segmenter is None:
        segmenter = _default_segmenter(cfg, scene, device)
    if encoder is None:
        encoder = _default_encoder(cfg, scene, device)

    def load_rgb(cam: Camera) -> np.ndarray:
        return (load_image(cam, scene.background).numpy() * 255.0).round().astype(np.uint8)

    return prepare_views(run, cameras, gaussians, load_rgb, segmenter, encoder, cfg)


def prepare_views(
    run: RunFolder,
    cameras: list[Camera],
    gaussians: Gaussians,
    load_rgb: Callable[[Camera], np.ndarray],
    segmenter: Segmenter,
    encoder: TextImageEncoder,
    cfg: PrepareConfig,
) -> dict[str, Any]:
    """The work of :func:`prepare` on given cameras, splats and models (also the test entry point).

    ``load_rgb(camera)`` returns the view as (H, W, 3) uint8 at the camera's size.
    Under torchrun each rank does its :func:`~gags.distributed.shard` of the views still to do;
    the summary counts every rank's.
    """
    validate_prepare_config(cfg, cameras)
    _check_outputs(run, cfg, encoder)  # every rank refuses stale or mixed outputs before any write
    dist.barrier()  # ... before rank 0 marks the stage as running
    if dist.is_main():
        _record(run, cfg, segmenter, encoder)
    summary = _prepare_share(run, cameras, gaussians, load_rgb, segmenter, encoder, cfg)
    summary = _merge_summaries(dist.all_gather_objects(summary))  # waits for every rank
    if dist.is_main():
        run.finish_stage("prepare", inputs=[run.splats])
    dist.barrier()  # no rank goes on before the stage is recorded as finished
    return summary


def _prepare_share(
    run: RunFolder,
    cameras: list[Camera],
    gaussians: Gaussians,
    load_rgb: Callable[[Camera], np.ndarray],
    segmenter: Segmenter,
    encoder: TextImageEncoder,
    cfg: PrepareConfig,
) -> dict[str, Any]:
    """This rank's share of :func:`prepare_views` (all of it in a plain process)."""
    device = resolve_device(cfg.device)
    gaussians = gaussians.to(device)
    views = cameras[: cfg.limit] if cfg.limit > 0 else list(cameras)
    # the views still to do, checked by the ranks in turn; collective, so no rank writes before
    # rank 0 has recorded the stage as running
    todo = dist.filter_sharded(
        views,
        lambda cam: (
            cfg.overwrite
            or not is_valid_pair(
                run.segment_file(cam.name), run.feature_file(cam.name), (cam.height, cam.width)
            )
        ),
    )
    timings = dict.fromkeys(STAGES, 0.0)
    summary: dict[str, Any] = {
        "views": len(views),
        "done": 0,
        "resumed": len(views) - len(todo),
        "skipped": {},
    }
    if not todo:
        return {**summary, "timings": timings}

    md = None
    if cfg.prompts.mode != "uniform":
        t0 = time.perf_counter()
        with tqdm(total=len(cameras), desc="min visible depth", unit="view", leave=False) as bar:
            md = min_visible_depth(
                gaussians,
                cameras,
                tolerance=cfg.depth_tolerance,
                view_chunk=cfg.view_chunk,
                backend=cfg.backend,
                progress=bar.update,
                shard=dist.shard,  # each rank takes its chunks of views; the minimum is reduced below
            )
            md = dist.all_reduce(md.cpu(), "min").to(device)  # on gloo: ranks may share a GPU
        timings["depth"] += time.perf_counter() - t0

    bar = tqdm(dist.shard(todo), desc="prepare", unit="img")
    for cam in bar:
        stage = _prepare_view(run, cam, gaussians, md, load_rgb, segmenter, encoder, cfg, device)
        if isinstance(stage, str):
            log.warning("skipping %s: %s", cam.name, stage)
            summary["skipped"][cam.name] = stage
            for stale in (run.segment_file(cam.name), run.feature_file(cam.name)):
                stale.unlink(missing_ok=True)  # outdated or invalid: never kept as if fresh
            continue
        for k, v in stage.items():
            timings[k] = timings.get(k, 0.0) + v
        summary["done"] += 1
        bar.set_postfix({k: f"{v:.2f}s" for k, v in stage.items() if v >= 0.005})
    done = max(summary["done"], 1)
    return {**summary, "timings": timings, "per_image": {k: v / done for k, v in timings.items()}}


def _merge_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from every rank's (counts and timings added, per-image times over all done)."""
    if len(parts) == 1:
        return parts[0]
    merged = {**parts[0], "done": sum(p["done"] for p in parts), "skipped": {}}
    timings = dict.fromkeys(STAGES, 0.0)
    for p in parts:
        merged["skipped"].update(p["skipped"])
        for k, v in p["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
    merged["timings"] = timings
    merged["per_image"] = {k: v / max(merged["done"], 1) for k, v in timings.items()}
    merged["ranks"] = len(parts)
    return merged


def validate_prepare_config(cfg: PrepareConfig, cameras: list[Camera] | None = None) -> None:
    """Reject settings that would crash or give no masks, before anything is written."""
    p, s, c = cfg.prompts, cfg.sam, cfg.cleanup
    at_least = [
        ("prompts.grid", p.grid, 1),
        ("prompts.n", p.n, 1),
        ("prompts.max-per-patch", p.max_per_patch, 1),
        ("prompts.subcells", p.subcells, 1),
        ("prompts.points-per-side", p.points_per_side, 1),
        ("sam.points-per-batch", s.points_per_batch, 1),
        ("sam.min-region-area", s.min_region_area, 0),
        ("cleanup.fallback-top-k", c.fallback_top_k, 0),
        ("cleanup.pixel-chunk", c.pixel_chunk, 1),
        ("view-chunk", cfg.view_chunk, 1),
        ("clip-batch-size", cfg.clip_batch_size, 1),
        ("limit", cfg.limit, 0),
    ]
    for name, value, low in at_least:
        if value < low:
            raise GagsError(f"--{name} must be at least {low}, got {value}")
    fractions = [
        ("sam.pred-iou-thresh", s.pred_iou_thresh),
        ("sam.stability-thresh", s.stability_thresh),
        ("sam.box-nms-thresh", s.box_nms_thresh),
        ("cleanup.iou-thr", c.iou_thr),
        ("cleanup.score-thr", c.score_thr),
        ("cleanup.inner-thr", c.inner_thr),
        ("cleanup.contain-thr", c.contain_thr),
    ]
    for name, value in fractions:
        if not 0.0 <= value <= 1.0:
            raise GagsError(f"--{name} must lie in [0, 1], got {value}")
    if not (np.isfinite(cfg.depth_tolerance) and cfg.depth_tolerance > 0):
        raise GagsError(f"--depth-tolerance must be a positive number, got {cfg.depth_tolerance}")
    if cameras:
        side = min(min(cam.width, cam.height) for cam in cameras)
        if p.mode != "uniform" and p.grid > side:
            raise GagsError(
                f"--prompts.grid {p.grid} is more patches than the {side} pixels of the smallest view"
            )


def _prepare_view(
    run: RunFolder,
    cam: Camera,
    gaussians: Gaussians,
    md: torch.Tensor | None,
    load_rgb: Callable[[Camera], np.ndarray],
    segmenter: Segmenter,
    encoder: TextImageEncoder,
    cfg: PrepareConfig,
    device: torch.device,
) -> dict[str, float] | str:
    """One view end to end -> its stage timings, or the reason it was skipped."""
    t: dict[str, float] = {}
    rgb = load_rgb(cam)
    if rgb.shape != (cam.height, cam.width, 3) or rgb.dtype != np.uint8:
        where = cam.image_path or cam.name
        raise GagsError(
            f"{where}: image is {rgb.dtype} {rgb.shape} but camera {cam.name!r} is "
            f"{cam.width}x{cam.height} RGB"
        )

    clock = time.perf_counter()
    depth = md_image = density = None
    if md is not None:
        depth = render_depths(gaussians, [cam], backend=cfg.backend)
        viewmats, Ks = stack_cameras([cam], device=device)
        vis = view_visibility(gaussians.means.detach(), viewmats, Ks, depth, cfg.depth_tolerance)
        if not bool(vis.visible.any()):
            return "no Gaussian is visible in this view (check the camera pose and the splats)"
        md_image, density = md_map(vis, md, cam.height, cam.width)
        depth = depth[0]
    t["depth"], clock = _lap(clock)

    generator = torch.Generator().manual_seed(cfg.seed ^ zlib.crc32(cam.name.encode()))
    points, patch_counts = make_prompts(
        depth, md_image, density, cam.height, cam.width, cfg.prompts, generator
    )
    t["prompts"], clock = _lap(clock)

    proposals = segmenter.segment(rgb, points.numpy(), image_name=cam.name)
    _check_proposals(proposals, cam)
    sam_t = dict(getattr(segmenter, "last_timings", {}) or {})
    seg_total, clock = _lap(clock)
    t["sam_encoder"] = sam_t.get("sam_encoder", 0.0)
    t["sam_decoder"] = sam_t.get("sam_decoder", seg_total - t["sam_encoder"])

    levels = [_clean_level(proposals, i, cfg.cleanup, device) for i in range(len(LEVELS))]
    maps = paint_index_maps(levels)
    t["cleanup"], clock = _lap(clock)

    masks = torch.cat(levels)
    features = embed_masks(encoder, rgb, masks, image_name=cam.name)
    level_ids = torch.cat([torch.full((m.shape[0],), i, dtype=torch.int8) for i, m in enumerate(levels)])
    t["clip"], clock = _lap(clock)

    save_features(run.feature_file(cam.name), ImageFeatures(features.cpu().numpy(), level_ids.numpy()))
    save_segments(
        run.segment_file(cam.name),
        ImageSegments(maps.cpu().numpy(), points.numpy(), patch_counts.numpy()),
    )
    t["write"], clock = _lap(clock)
    return t


def _clean_level(
    proposals: MaskProposals, level: int, cfg: CleanupConfig, device: torch.device
) -> torch.Tensor:
    """The level's masks that survive :func:`mask_nms` -> (K, H, W) bool on ``device``, in input order."""
    masks = proposals.masks[level].to(device=device, dtype=torch.bool)
    scores = (proposals.stability[level] * proposals.pred_iou[level]).to(device)
    return masks[mask_nms(masks, scores, cfg)]


def _check_proposals(proposals: MaskProposals, cam: Camera) -> None:
    for masks in proposals.masks:
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (cam.height, cam.width):
            raise GagsError(
                f"segmenter returned masks {tuple(masks.shape)} for {cam.name} "
                f"({cam.height}x{cam.width} expected)"
            )


def _lap(start: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now - start, now


def _spec(model: object) -> dict[str, Any]:
    spec = getattr(model, "spec", None)
    return dict(spec) if isinstance(spec, dict) else {"kind": type(model).__name__}


def _check_outputs(run: RunFolder, cfg: PrepareConfig, encoder: TextImageEncoder) -> None:
    """Refuse to mix features of another encoder or settings, or to add to outputs of changed splats."""
    enc_spec = _spec(encoder)
    previous = run.stage_entry("prepare") or {}
    old = previous.get("encoder")
    outputs = any(run.features.glob("*.npz")) or any(run.segments.glob("*.npz"))
    redo = suggest("gags", "prepare", run.root, "--overwrite")
    if old is not None and _with_bed(old) != _with_bed(enc_spec) and not cfg.overwrite and outputs:
        raise GagsError(
            f"{run.features} holds features from encoder {old}, not {enc_spec}; run {redo} to redo them"
        )
    changed = _changed_settings(previous.get("config"), dataclasses.asdict(cfg))
    if changed and not cfg.overwrite and outputs:
        raise file_error(
            run.segments,
            f"was prepared with other settings ({'; '.join(changed[:3])}): run {redo} to redo every view "
            "with the new ones, or use another run folder",
        )
    if outputs and not cfg.overwrite and run.finished("prepare"):
        run.check_unchanged("prepare", run.splats, f"run {redo}")


def _record(run: RunFolder, cfg: PrepareConfig, segmenter: Segmenter, encoder: TextImageEncoder) -> None:
    """Store the specs in config.json["prepare"], marked as running until :meth:`RunFolder.finish_stage`."""
    config = dataclasses.asdict(cfg)
    spec = {"encoder": _spec(encoder), "segmenter": _spec(segmenter), "config": config}
    run.record_stage("prepare", spec, running=True)


#: settings that change how prepare runs, not what it writes
_OPERATIONAL = {
    *("run", "device", "backend", "view_chunk", "clip_batch_size", "overwrite", "limit"),
    *("sam.points_per_batch", "cleanup.pixel_chunk"),
}


def _changed_settings(old: Any, new: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for each output-relevant setting that differs (none if ``old`` is absent)."""
    if not isinstance(old, dict):
        return []
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted((set(flat_old) | set(flat_new)) - _OPERATIONAL)
    return [
        f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}"
        for k in keys
        if str(flat_old.get(k)) != str(flat_new.get(k))
    ]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _with_bed(spec: dict) -> dict:
    """An oracle spec with its bed explicit (none recorded means v1, as before beds existed)."""
    return {**spec, "bed": spec.get("bed", "v1")} if spec.get("kind") == "oracle" else spec


def _oracle_spec(cfg: PrepareConfig, scene) -> dict:
    """The synthetic oracles of the run's scene and test bed, seeded with this stage's seed."""
    return {"kind": "oracle", "bed": cfg.oracle_bed, "scene": str(scene.source), "seed": cfg.seed}


def _default_segmenter(cfg: PrepareConfig, scene, device: torch.device) -> Segmenter:
    from gags.models.registry import build_segmenter

    if cfg.segmenter == "oracle":
        return build_segmenter(_oracle_spec(cfg, scene), str(device))
    return build_segmenter(sam_spec(cfg.sam), str(device))


def _default_encoder(cfg: PrepareConfig, scene, device: torch.device) -> TextImageEncoder:
    from gags.models.registry import build_encoder

    if cfg.encoder == "oracle":
        return build_encoder(_oracle_spec(cfg, scene), str(device))
    pretrained = None if cfg.clip_pretrained.lower() == "none" else cfg.clip_pretrained
    return build_encoder({"kind": "openclip", "model": cfg.clip_model, "pretrained": pretrained}, str(device))


def main(cfg: PrepareConfig) -> None:
    """``gags prepare``: run and print one summary line."""
    summary = prepare(cfg)
    for name, reason in summary["skipped"].items():
        print(f"gags prepare: skipped {name}: {reason}")
    per = " ".join(f"{k} {v:.2f}s" for k, v in summary.get("per_image", {}).items() if v > 0)
    print(
        f"gags prepare: {summary['done']} done, {summary['resumed']} already there, "
        f"{len(summary['skipped'])} skipped; per image: {per}"
    )
