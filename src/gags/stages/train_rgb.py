"""Stage 1, ``gags train-rgb``: RGB 3D Gaussian splatting with the 3DGS recipe, resumable.

Writes into the run folder ``splats.ply``, ``config.json["scene"]`` / ``["train_rgb"]``,
``checkpoints/latest.pt`` (parameters, optimiser state, densification statistics, step, RNG) and
``eval/rgb_metrics.json`` with ``eval/rgb/NAME.png`` renders of the evaluation views.

The schedule is the 3DGS one (30k iterations: densify from 500 to 15000 every 100, opacity reset
every 3000, SH degree up every 1000, position learning rate decayed 100x) scaled to
``iterations``, so short CPU runs follow the same shape.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import imageio.v3 as iio
import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

from gags.devices import resolve_device
from gags.errors import GagsError, file_error
from gags.io import atomic_path, save_torch_atomic, write_json_atomic
from gags.runfolder import RunFolder, fingerprint_json, locked
from gags.scene.cameras import Camera, stack_cameras
from gags.scene.images import load_image
from gags.scene.load import SceneOptions, load_scene
from gags.scene.scene import Scene
from gags.splats.densify import PAPER_ITERATIONS, Densifier, DensifyConfig, Params
from gags.splats.frames import (
    Similarity,
    nerfstudio_data_frame,
    read_dataparser_transforms,
    transform_gaussians,
)
from gags.splats.gaussians import Gaussians
from gags.splats.init import from_points, random_in_frusta
from gags.splats.metrics import photometric_loss, psnr, ssim
from gags.splats.ply import load_ply, save_ply
from gags.splats.render import render
from gags.stages.tblog import LogConfig, ScalarLog, open_log, optimizer_lrs, validate_log_config

CHECKPOINT_NAME = "latest.pt"

#: ``--preset``: ``paper`` is 3DGS (30k steps, no cap, 100k random initial Gaussians); ``quick`` the defaults
PRESETS: dict[str, dict[str, object]] = {
    "paper": {"iterations": 30_000, "densify.max_gaussians": 0, "init_random": 100_000},
    "quick": {},
}

#: the data set options as top-level flags (--downscale, --images, ...), defined once in gags.scene.load
FlatSceneOptions = Annotated[SceneOptions, tyro.conf.arg(name="")]


@dataclasses.dataclass(kw_only=True)
class TrainConfig:
    """Train RGB 3D Gaussian splatting from posed images into a run folder."""

    data: tyro.conf.Positional[Path]
    """Data set folder (COLMAP, Blender/nerfstudio transforms, LLFF or points npz)."""
    out: Path
    """Run folder to write."""
    scene: FlatSceneOptions = dataclasses.field(default_factory=SceneOptions)
    """how to read the data set"""
    densify: DensifyConfig = dataclasses.field(default_factory=lambda: DensifyConfig(max_gaussians=50_000))
    """adaptive density control (3DGS); DEVIATION: at most 50,000 Gaussians (--densify.max-gaussians 0:
    no cap, as 3DGS) to bound CPU time"""
    iterations: int = 2000
    """Training steps. Deviation: 3DGS uses 30000; the quick CPU default keeps the same schedule, scaled."""
    sh_degree: int = 3
    """Largest SH degree (ignored with --import-ply: the file's degree is kept)."""
    lr_means: float = 1.6e-4
    """Initial position learning rate, times the scene extent (3DGS)."""
    lr_means_final: float = 1.6e-6
    """Final position learning rate (exponential decay over the run), times the scene extent (3DGS)."""
    lr_sh0: float = 2.5e-3
    """Learning rate of the SH DC colour term (3DGS)."""
    lr_shN: float = 2.5e-3 / 20
    """Learning rate of the higher SH coefficients (3DGS: lr_sh0 / 20)."""
    lr_opacity: float = 0.05
    """Learning rate of the opacity logits (3DGS)."""
    lr_scales: float = 5e-3
    """Learning rate of the log scales (3DGS)."""
    lr_quats: float = 1e-3
    """Learning rate of the rotations (3DGS)."""
    lambda_dssim: float = 0.2
    """Weight of (1 - SSIM) in the loss (3DGS)."""
    sh_up_every: int | None = None
    """Steps between SH degree increases (default: 1000/30000 of the run)."""
    init_random: int = 20_000
    """Random Gaussians when the scene has no SfM points. Deviation: 3DGS uses 100k (CPU budget)."""
    init_opacity: float = 0.1
    """Opacity of every initial Gaussian (3DGS)."""
    batch_size: int = 1
    """Views per step."""
    seed: int = 0
    """Seed of the camera order, random initialisation and splitting."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``mps``."""
    backend: Literal["auto", "torch", "gsplat", "dense"] = "auto"
    """Rasteriser (see gags.splats.render)."""
    resume: bool = False
    """Continue from checkpoints/latest.pt in the run folder (same data set and settings)."""
    overwrite: bool = False
    """Train anew into a run folder that already holds splats.ply; if the new splats differ, what later
    stages computed from the old ones is moved to RUN/stale-TIME/."""
    import_ply: Path | None = None
    """Start from this splat PLY instead of the scene's points (with --iterations 0: import only)."""
    import_transforms: Path | None = None
    """nerfstudio's dataparser_transforms.json of --import-ply: its splats are moved from that normalised
    frame back into the data set's (gags.splats.frames; gsplat: the same layout, see gags import --help)."""
    eval_every: int = 0
    """Evaluate held-out views every N steps (0: only before and after training)."""
    checkpoint_every: int = 500
    """Write checkpoints/latest.pt every N steps, N >= 1 (and at the end)."""
    evaluate: bool = True
    """Render the evaluation views and write eval/rgb_metrics.json."""
    progress: bool = True
    """Show a progress bar."""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """TensorBoard: loss, PSNR, Gaussian count, learning rates, eval renders (RUN/tensorboard/train_rgb)"""


@dataclasses.dataclass(kw_only=True)
class ImportConfig:
    """Import an existing splat PLY (3DGS, gsplat or nerfstudio splatfacto export) into a run folder,
    without training; then render a few training views and warn when they do not match the photos.

    nerfstudio: pass the run's dataparser_transforms.json (outputs/.../dataparser_transforms.json) with
    --dataparser-transforms. gsplat simple_trainer with normalize_world_space: write
    {"transform": parser.transform (4x4), "scale": 1} to a JSON file and pass that.
    """

    ply: tyro.conf.Positional[Path]
    """The splat PLY file."""
    out: Path
    """Run folder to write."""
    data: Path
    """Data set folder the splats were trained on (its cameras are needed by the later stages)."""
    scene: FlatSceneOptions = dataclasses.field(default_factory=SceneOptions)
    """how to read the data set"""
    evaluate: bool = True
    """Render the evaluation views and write eval/rgb_metrics.json."""
    overwrite: bool = False
    """Import into a run folder that already holds splats.ply (see train-rgb --overwrite)."""
    dataparser_transforms: Path | None = None
    """The frame the splats were trained in: nerfstudio's dataparser_transforms.json ({"transform": 3x4,
    "scale": s}, mapping the data's world to the splats'); the splats are moved back into the data's frame"""
    check_views: int = 2
    """Training views rendered after the import to check that splats and cameras share a frame (0: none)"""
    min_psnr: float = 15.0
    """Warn when those views' mean PSNR (dB) is below this: the sign of a frame mismatch"""
    backend: Literal["auto", "torch", "gsplat", "dense"] = "auto"
    """Rasteriser of the check (see gags.splats.render)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``mps``."""

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            data=self.data,
            out=self.out,
            scene=self.scene,
            import_ply=self.ply,
            import_transforms=self.dataparser_transforms,
            device=self.device,
            backend=self.backend,
            iterations=0,
            progress=False,  # no steps to show
            evaluate=self.evaluate,
            overwrite=self.overwrite,
            log=LogConfig(tensorboard=False),
        )


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Step counts of the run: the 3DGS ones scaled from 30000 iterations to ``iterations``."""

    iterations: int
    densify: DensifyConfig
    sh_up_every: int

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Schedule:
        f = cfg.iterations / PAPER_ITERATIONS
        sh_up = cfg.sh_up_every if cfg.sh_up_every is not None else max(1, round(1000 * f))
        return cls(cfg.iterations, cfg.densify.scaled(cfg.iterations), sh_up)


@locked("train_rgb", lambda cfg: cfg.out)
def train_rgb(cfg: TrainConfig) -> dict[str, Any]:
    """Run stage 1 and return the metrics written to ``eval/rgb_metrics.json``.

    Raises:
        GagsError: bad input, an existing ``splats.ply`` without ``--resume``/``--overwrite``, a
            checkpoint of another data set or other settings, or training diverged (NaN/inf); the last
            checkpoint and any existing ``splats.ply`` are left untouched.
    """
    validate_train_config(cfg)
    device = resolve_device(cfg.device)
    run = RunFolder(cfg.out)
    old_splats = _check_existing_run(run, cfg)
    scene_cfg = cfg.scene.at(cfg.data)
    scene = load_scene(scene_cfg)
    if not scene.train_indices:
        raise GagsError(f"{cfg.data}: the scene has no training images")
    if cfg.batch_size > len(scene.train_indices):
        raise GagsError(
            f"--batch-size {cfg.batch_size} is more than the {len(scene.train_indices)} training views"
        )
    trainer = Trainer(cfg, scene, run, device)
    metrics = trainer.fit()
    save_ply(run.splats, trainer.gaussians().detach().to("cpu"))
    if old_splats is not None and run.fingerprint(run.splats)["sha256"] != old_splats:
        moved = run.move_aside(
            run.computed_from_splats(),
            ["prepare", "distill", "eval"],
            f"`gags train-rgb` replaced {run.splats} on {time.strftime('%Y-%m-%d %H:%M:%S')}; these outputs "
            "were computed from the previous splats.",
        )
        if moved is not None:
            tqdm.write(f"gags: outputs computed from the previous splats.ply were moved to {moved}")
    if cfg.evaluate:
        write_json_atomic(run.eval / "rgb_metrics.json", metrics)
    run.record_stage("scene", scene_cfg)
    run.record_stage("train_rgb", cfg, outputs=[run.splats])
    return metrics


def validate_train_config(cfg: TrainConfig) -> None:
    """Reject settings that would crash or train nothing useful, before anything is written."""
    checks = [
        (cfg.iterations >= 0, f"--iterations must be >= 0, got {cfg.iterations}"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}"),
        (cfg.checkpoint_every >= 1, f"--checkpoint-every must be >= 1 step, got {cfg.checkpoint_every}"),
        (cfg.eval_every >= 0, f"--eval-every must be >= 0 (0: only before and after), got {cfg.eval_every}"),
        (0 <= cfg.sh_degree <= 3, f"--sh-degree must be 0, 1, 2 or 3, got {cfg.sh_degree}"),
        (
            cfg.sh_up_every is None or cfg.sh_up_every >= 1,
            f"--sh-up-every must be >= 1, got {cfg.sh_up_every}",
        ),
        (cfg.init_random >= 1, f"--init-random must be >= 1 Gaussian, got {cfg.init_random}"),
        (0 < cfg.init_opacity < 1, f"--init-opacity must lie in (0, 1), got {cfg.init_opacity}"),
        (0 <= cfg.lambda_dssim <= 1, f"--lambda-dssim must lie in [0, 1], got {cfg.lambda_dssim}"),
        (not (cfg.resume and cfg.overwrite), "--resume and --overwrite exclude each other: pick one"),
    ]
    for name in ("lr_means", "lr_means_final", "lr_sh0", "lr_shN", "lr_opacity", "lr_scales", "lr_quats"):
        value = getattr(cfg, name)
        flag = "--" + name.replace("_", "-")
        checks.append((math.isfinite(value) and value > 0, f"{flag} must be a positive number, got {value}"))
    for ok, message in checks:
        if not ok:
            raise GagsError(message)
    validate_log_config(cfg.log)
    if cfg.import_transforms is not None:
        if cfg.import_ply is None:
            raise GagsError("--import-transforms needs --import-ply (the splats it describes)")
        read_dataparser_transforms(cfg.import_transforms)  # a malformed file fails before anything is written
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise file_error(cfg.out, "is a file, not a run folder: pass another --out")


def splats_to_data(transforms: Path, scene: Scene) -> Similarity:
    """The similarity from the splats' (nerfstudio-normalised) frame to ``scene``'s world frame.

    nerfstudio's transform starts from the frame before a ``transforms.json``'s ``applied_transform``
    (:mod:`gags.splats.frames`); a data set read from such a file is in the frame after it.
    """
    original_to_splats = read_dataparser_transforms(transforms)
    original_to_data = Similarity.identity()
    if scene.format == "blender":
        from gags.scene.blender import find_transforms

        found = find_transforms(Path(scene.source))
        if found is not None:
            original_to_data = nerfstudio_data_frame(found)
    return original_to_splats.inverse().then(original_to_data)


def _check_existing_run(run: RunFolder, cfg: TrainConfig) -> str | None:
    """Refuse to replace an existing ``splats.ply`` unless asked; returns its sha256 (None if absent)."""
    if not run.splats.exists():
        return None
    command = "gags import" if cfg.iterations == 0 and cfg.import_ply is not None else "gags train-rgb"
    if not (cfg.resume or cfg.overwrite):
        raise file_error(
            run.splats,
            f"already exists: pass --resume to continue its training or --overwrite to replace it "
            f"(then what later stages computed from it is moved to {run.root}/stale-TIME/); "
            f"or give `{command}` another --out",
        )
    if cfg.resume and not (run.checkpoints / CHECKPOINT_NAME).exists():
        raise file_error(
            run.checkpoints / CHECKPOINT_NAME,
            "does not exist, so there is nothing to resume and training would restart from step 0 over "
            f"{run.splats}: pass --overwrite instead of --resume to do that",
        )
    return run.fingerprint(run.splats)["sha256"]


class Trainer:
    """Parameters, optimisers, densification and the loop; one instance per ``train_rgb`` call."""

    def __init__(self, cfg: TrainConfig, scene: Scene, run: RunFolder, device: torch.device):
        self.cfg, self.scene, self.run, self.device = cfg, scene, run, device
        self.extent = scene.scene_extent()
        self.schedule = Schedule.from_config(cfg)
        self.background = torch.tensor(scene.background, dtype=torch.float32, device=device)
        self.train_cams = scene.train_cameras
        self.step = 0
        self.wall_time = 0.0
        self.history: list[dict[str, float]] = []
        self.initial: dict[str, Any] | None = None
        init = self._initial_gaussians()
        self.imported_degree = init.sh_degree if cfg.import_ply is not None else None
        self.params = params_from(init.to(device))
        self.optimizers = self._make_optimizers()
        self.densifier = Densifier(self.schedule.densify, self.extent, len(init), device)
        self.densifier.generator.manual_seed(cfg.seed)
        self._images: dict[int, torch.Tensor] = {}
        self.tb = ScalarLog(None)
        self._preview_step = -1  # the step of the last render | target image written

    # ----- set-up -----------------------------------------------------------------------------
    def _initial_gaussians(self) -> Gaussians:
        cfg, scene = self.cfg, self.scene
        if cfg.import_ply is not None:
            g = load_ply(cfg.import_ply)
            if len(g) == 0:
                raise file_error(cfg.import_ply, "holds no Gaussians (its vertex element is empty)")
            if cfg.import_transforms is not None:
                g = transform_gaussians(g, splats_to_data(cfg.import_transforms, scene))
            return dataclasses.replace(g, features=None, feature_names=[])
        if scene.points is not None and len(scene.points) > 0:
            return from_points(scene.points, scene.point_colors, cfg.sh_degree, cfg.init_opacity)
        return random_in_frusta(self.train_cams, cfg.init_random, cfg.sh_degree, seed=cfg.seed)

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.cfg
        lrs = {
            "means": cfg.lr_means * self.extent,
            "quats": cfg.lr_quats,
            "scales": cfg.lr_scales,
            "opacities": cfg.lr_opacity,
            "sh0": cfg.lr_sh0,
            "shN": cfg.lr_shN,
        }
        return {name: torch.optim.Adam([self.params[name]], lr=lr, eps=1e-15) for name, lr in lrs.items()}

    @property
    def max_degree(self) -> int:
        return self.imported_degree if self.imported_degree is not None else self.cfg.sh_degree

    def active_degree(self, step: int) -> int:
        """SH degree used at ``step`` (imported splats start at their full degree)."""
        if self.imported_degree is not None:
            return self.max_degree
        return min(self.max_degree, step // self.schedule.sh_up_every)

    def gaussians(self) -> Gaussians:
        """The current Gaussians (differentiable views of the parameters)."""
        p = self.params
        return Gaussians(
            means=p["means"],
            quats=p["quats"],
            log_scales=p["scales"],
            opacity_logits=p["opacities"],
            sh=torch.cat([p["sh0"], p["shN"]], dim=1),
        )

    # ----- loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train from step 0 or the checkpoint up to ``iterations``; returns the metrics."""
        ckpt = self.run.checkpoints / CHECKPOINT_NAME
        if self.cfg.resume and ckpt.exists():
            self.load_checkpoint(ckpt)
        elif self.cfg.resume:
            tqdm.write(f"gags: no checkpoint at {ckpt}; starting from step 0")
        if self.cfg.iterations > self.step:
            self.tb = open_log(self.cfg.log, self.run.root, "train_rgb", self.step)
        try:
            return self._fit(ckpt)
        finally:
            self.tb.close()

    def _fit(self, ckpt: Path) -> dict[str, Any]:
        if self.initial is None and self.cfg.evaluate:
            self.initial = self.evaluate(step=0)
            self._log_eval(0, self.initial)
        start_time = time.perf_counter() - self.wall_time
        bar = tqdm(
            total=self.cfg.iterations,
            initial=self.step,
            desc="train-rgb",
            disable=not self.cfg.progress,
            dynamic_ncols=True,
        )
        while self.step < self.cfg.iterations:
            loss, train_psnr = self.train_step()
            self.step += 1
            self.wall_time = time.perf_counter() - start_time
            bar.update(1)
            if self.step % 10 == 0 or self.step == self.cfg.iterations:
                bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{train_psnr:.2f}", n=len(self.params["means"]))
            self._log_step(loss, train_psnr)
            if self.tb.images_due(self.step, last=self.step == self.cfg.iterations):
                self._log_preview(self.step)
            if self.cfg.eval_every and self.step % self.cfg.eval_every == 0 and self.cfg.evaluate:
                self.history.append({"step": self.step, **self.evaluate(self.step, summary_only=True)})
                self._log_eval(self.step, self.history[-1])
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.iterations:
                self.save_checkpoint(ckpt)
        bar.close()
        if self.cfg.iterations == 0 or not ckpt.exists():
            self.save_checkpoint(ckpt)
        if not self.cfg.evaluate:
            return {"n_gaussians": len(self.params["means"])}
        metrics = self.final_metrics()
        if not (self.history and self.history[-1]["step"] == self.step):  # not logged by --eval-every
            self._log_eval(self.step, metrics["final"])
        return metrics

    def _log_step(self, loss: float, train_psnr: float) -> None:
        """TensorBoard scalars of the step just taken: loss, batch PSNR (dB), Gaussian count, rates."""
        if not self.tb.due(self.step, last=self.step == self.cfg.iterations):
            return
        count = len(self.params["means"])
        values = {"train/loss": loss, "train/batch_psnr": train_psnr, "gaussians/count": count}
        self.tb.scalars(self.step, {**values, **optimizer_lrs(self.optimizers)})

    def _log_eval(self, step: int, summary: dict[str, Any]) -> None:
        """TensorBoard ``eval/*``: mean PSNR (dB) and SSIM of the evaluation views (held out, else the
        training views: ``eval/rgb_metrics.json`` says which) and the first one's render | target."""
        self.tb.scalars(step, {"eval/psnr": summary["psnr"], "eval/ssim": summary["ssim"]})
        self._log_preview(step)

    @torch.no_grad()
    def _log_preview(self, step: int) -> None:
        """TensorBoard ``eval/render_vs_target`` at ``step``: the first evaluation view's render | target,
        (H, 2W, 3); once per step (evaluations and ``--log.images-every`` may coincide)."""
        if not self.tb.enabled or self._preview_step == step:
            return
        cam = self.eval_cameras()[1][0]
        viewmats, Ks = stack_cameras([cam], self.device)
        out = render(
            self.gaussians().detach(), viewmats, Ks, cam.width, cam.height,
            sh_degree=self.active_degree(step), background=self.background, backend=self.cfg.backend,
        )  # fmt: skip
        target = load_image(cam, self.scene.background).to(self.device)
        self.tb.image("eval/render_vs_target", step, torch.cat([out.rgb[0].clamp(0, 1), target], dim=1))
        self._preview_step = step

    def train_step(self) -> tuple[float, float]:
        """One optimisation step on ``batch_size`` views; returns (loss, PSNR) of the batch."""
        step = self.step
        cams = self._batch_cameras(step)
        target = torch.stack([self._train_image(i) for i in cams])
        viewmats, Ks = stack_cameras([self.train_cams[i] for i in cams], self.device)
        cam0 = self.train_cams[cams[0]]
        out = render(
            self.gaussians(), viewmats, Ks, cam0.width, cam0.height,
            sh_degree=self.active_degree(step), background=self.background, backend=self.cfg.backend,
        )  # fmt: skip
        densifying = step < self.schedule.densify.stop and out.means2d.requires_grad
        if densifying:
            out.means2d.retain_grad()
        loss = photometric_loss(out.rgb, target, self.cfg.lambda_dssim)
        if not torch.isfinite(loss):
            raise self._diverged(step, "the loss")
        loss.backward()
        if densifying and out.means2d.grad is not None:
            self.densifier.accumulate(out.means2d.grad, out.radii, cam0.width, cam0.height)
        self._set_means_lr(step)
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        for name, p in self.params.items():
            if not torch.isfinite(p).all():
                raise self._diverged(step, f"parameter {name!r}")
        self.densifier.step(step, self.params, self.optimizers)
        with torch.no_grad():
            return float(loss), float(psnr(out.rgb.clamp(0, 1), target))

    def _batch_cameras(self, step: int) -> list[int]:
        """Training-camera indices for ``step``: epochs of seeded permutations (resume-safe)."""
        n, b = len(self.train_cams), self.cfg.batch_size
        out = []
        for k in range(step * b, step * b + b):
            epoch, pos = divmod(k, n)
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            out.append(int(torch.randperm(n, generator=gen)[pos]))
        return out

    def _train_image(self, index: int) -> torch.Tensor:
        """(H, W, 3) float image of training camera ``index``, cached as uint8 to bound memory."""
        if index not in self._images:
            cam = self.train_cams[index]
            image = load_image(cam, self.scene.background)
            if not torch.isfinite(image).all():
                raise GagsError(f"{cam.image_path}: image holds NaN/inf pixel values")
            self._images[index] = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return self._images[index].to(self.device, torch.float32) / 255.0

    def _set_means_lr(self, step: int) -> None:
        """Exponential decay of the position learning rate from lr_means to lr_means_final (x extent)."""
        t = min(step / max(self.cfg.iterations, 1), 1.0)
        lr = math.exp((1 - t) * math.log(self.cfg.lr_means) + t * math.log(self.cfg.lr_means_final))
        for group in self.optimizers["means"].param_groups:
            group["lr"] = lr * self.extent

    def _diverged(self, step: int, what: str) -> GagsError:
        ckpt = self.run.checkpoints / CHECKPOINT_NAME
        kept = (
            f"the last good checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint was written yet"
        )
        return GagsError(
            f"training diverged at step {step}: {what} became NaN/inf; {kept} and {self.run.splats} was not "
            "changed. Lower the learning rates or check the input images and poses."
        )

    # ----- evaluation -------------------------------------------------------------------------
    def eval_cameras(self) -> tuple[str, list[Camera]]:
        if self.scene.eval_indices:
            return "eval", self.scene.eval_cameras
        return "train", self.train_cams

    @torch.no_grad()
    def evaluate(self, step: int, summary_only: bool = False, save_dir: Path | None = None) -> dict[str, Any]:
        """PSNR and SSIM of the evaluation views (held out, else training); optionally save PNGs."""
        split, cams = self.eval_cameras()
        g = self.gaussians().detach()
        per_view = {}
        for cam in cams:
            viewmats, Ks = stack_cameras([cam], self.device)
            out = render(
                g, viewmats, Ks, cam.width, cam.height, sh_degree=self.active_degree(step),
                background=self.background, backend=self.cfg.backend,
            )  # fmt: skip
            image = out.rgb[0].clamp(0, 1)
            target = load_image(cam, self.scene.background).to(self.device)
            per_view[cam.name] = {"psnr": float(psnr(image, target)), "ssim": float(ssim(image, target))}
            if save_dir is not None:
                _save_png(save_dir / f"{Path(cam.name).stem}.png", image)
        summary = {
            "split": split,
            "psnr": float(np.mean([v["psnr"] for v in per_view.values()])),
            "ssim": float(np.mean([v["ssim"] for v in per_view.values()])),
            "n_gaussians": len(self.params["means"]),
        }
        return summary if summary_only else {**summary, "per_view": per_view}

    def final_metrics(self) -> dict[str, Any]:
        final = self.evaluate(self.step, save_dir=self.run.eval / "rgb")
        return {
            "initial": {k: v for k, v in (self.initial or {}).items() if k != "per_view"},
            "final": final,
            "history": self.history,
            "steps": self.step,
            "wall_time_s": round(self.wall_time, 2),
            "n_gaussians": len(self.params["means"]),
            "device": str(self.device),
            "image_size": [self.train_cams[0].width, self.train_cams[0].height],
        }

    # ----- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        """Everything needed to continue bit-for-bit: parameters, optimisers, statistics, step."""
        save_torch_atomic(
            path,
            {
                "step": self.step,
                "params": {k: v.detach().cpu() for k, v in self.params.items()},
                "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
                "densifier": self.densifier.state_dict(),
                "imported_degree": self.imported_degree,
                "initial": self.initial,
                "history": self.history,
                "wall_time": self.wall_time,
                "config": json.loads(json.dumps(dataclasses.asdict(self.cfg), default=str)),
                "resume_key": resume_key(self.cfg, self.scene),
            },
        )

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file (or a pickle with code) is refused
            raise file_error(
                path,
                f"is not a readable train-rgb checkpoint ({type(e).__name__}: {_first_line(e)}); "
                "pass --overwrite instead of --resume to train anew",
            ) from e
        if not isinstance(state, dict):
            raise file_error(
                path, f"holds a {type(state).__name__}, not a train-rgb checkpoint; drop --resume"
            )
        _check_resume_key(path, state.get("resume_key"), resume_key(self.cfg, self.scene))
        try:
            params = state["params"]
            self.params = {k: torch.nn.Parameter(params[k].to(self.device)) for k in _PARAM_NAMES}
            self.optimizers = self._make_optimizers()
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            self.densifier.load_state_dict(state["densifier"])
            self.step = int(state["step"])
        except (KeyError, RuntimeError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as e:
            raise file_error(
                path,
                f"is not a usable train-rgb checkpoint ({type(e).__name__}: {_first_line(e)}); drop --resume",
            ) from e
        self.imported_degree = state.get("imported_degree")
        self.initial, self.history = state.get("initial"), list(state.get("history", []))
        self.wall_time = float(state.get("wall_time", 0.0))
        if self.step > self.cfg.iterations:
            raise GagsError(
                f"{path}: checkpoint is at step {self.step}, beyond --iterations {self.cfg.iterations}"
            )


_PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")

#: settings that may change between a checkpoint and the run resuming it
_FREE_ON_RESUME = (
    *("data", "out", "resume", "overwrite", "device", "backend"),
    *("eval_every", "checkpoint_every", "evaluate", "progress", "log"),
)


def resume_key(cfg: TrainConfig, scene: Scene) -> dict[str, Any]:
    """What a checkpoint must agree on with the run that resumes it: the data set's cameras (names,
    sizes, intrinsics, poses) and every training setting."""
    plain = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    key = {k: v for k, v in plain.items() if k not in _FREE_ON_RESUME}
    cams = [[c.name, c.width, c.height, np.round(c.K, 6).tolist(), np.round(c.world_to_cam, 6).tolist()]
            for c in scene.cameras]  # fmt: skip
    key["cameras"] = fingerprint_json(cams)
    key["train_views"] = [scene.cameras[i].name for i in scene.train_indices][:3]
    return key


def _check_resume_key(path: Path, saved: Any, expected: dict[str, Any]) -> None:
    if not isinstance(saved, dict):
        raise file_error(
            path,
            "records no data set and settings (written by an older gags?), so it cannot be checked for "
            "resuming: pass --overwrite instead of --resume to train anew",
        )
    for key, value in expected.items():
        if key == "train_views":
            continue
        if saved.get(key) != value:
            if key == "cameras":
                what = (
                    f"another data set (its first views: {', '.join(map(str, saved.get('train_views', [])))})"
                )
            else:
                what = f"{key}={saved.get(key)!r}, not {value!r}"
            raise file_error(
                path,
                f"was written for {what}: resume with the same data set and settings, or pass --overwrite "
                "instead of --resume to train anew",
            )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def params_from(g: Gaussians) -> Params:
    """Trainable parameters (see :mod:`gags.splats.densify` for names and shapes)."""
    tensors = {
        "means": g.means,
        "quats": g.quats,
        "scales": g.log_scales,
        "opacities": g.opacity_logits,
        "sh0": g.sh[:, :1],
        "shN": g.sh[:, 1:],
    }
    return {k: torch.nn.Parameter(v.detach().clone().float().contiguous()) for k, v in tensors.items()}


def _save_png(path: Path, image: torch.Tensor) -> None:
    """Write an (H, W, 3) float image in [0, 1] as an 8-bit PNG, atomically."""
    pixels = (image.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, pixels, extension=".png")


def import_ground_truth(
    scene_dir: Path, out: Path, seed: int = 0, device: str = "cpu", overwrite: bool = False
) -> dict[str, Any]:
    """A run folder ``out`` whose splats are a synthetic scene's ground truth (``gt_splats.ply``, SH degree
    1, no training, no evaluation): what the ablation, the tests and the benchmarks start from."""
    return train_rgb(
        TrainConfig(
            data=scene_dir,
            out=out,
            import_ply=Path(scene_dir) / "gt_splats.ply",
            iterations=0,
            evaluate=False,
            sh_degree=1,
            seed=seed,
            device=device,
            overwrite=overwrite,
            progress=False,
        )
    )


def main(cfg: TrainConfig) -> None:
    """``gags train-rgb``."""
    train_rgb(cfg)


def import_splats(cfg: ImportConfig) -> dict[str, Any]:
    """``gags import``: the splat PLY into the run folder (in the data's frame), then the frame check.

    Returns the metrics of :func:`train_rgb` plus ``import_check`` (:func:`check_frame`).
    """
    if cfg.check_views < 0:
        raise GagsError(f"--check-views must be >= 0, got {cfg.check_views}")
    metrics = train_rgb(cfg.train_config())
    if cfg.check_views:
        check = check_frame(RunFolder(cfg.out), cfg.check_views, resolve_device(cfg.device), cfg.backend)
        metrics["import_check"] = check
        _report_frame_check(cfg, check)
    return metrics


@torch.no_grad()
def check_frame(run: RunFolder, views: int, device: torch.device, backend: str = "auto") -> dict[str, Any]:
    """Render ``views`` training views (evenly spread) of the run's splats; PSNR (dB) against the photos.

    Returns ``{"views": {name: psnr}, "psnr": mean}``.
    """
    from gags.scene.load import load_run_scene

    scene = load_run_scene(run)
    cams = scene.train_cameras
    indices = dict.fromkeys(np.linspace(0, len(cams) - 1, min(views, len(cams))).round().astype(int).tolist())
    g = load_ply(run.splats).to(device)
    background = torch.tensor(scene.background, dtype=torch.float32, device=device)
    scores = {}
    for cam in (cams[i] for i in indices):
        viewmats, Ks = stack_cameras([cam], device)
        out = render(
            g, viewmats, Ks, cam.width, cam.height, sh_degree=g.sh_degree, background=background,
            backend=backend,
        )  # fmt: skip
        target = load_image(cam, scene.background).to(device)
        scores[cam.name] = float(psnr(out.rgb[0].clamp(0, 1), target))
    return {"views": scores, "psnr": float(np.mean(list(scores.values())))}


def _report_frame_check(cfg: ImportConfig, check: dict[str, Any]) -> None:
    """One line with the check's PSNR; a loud warning when it is below ``--min-psnr``."""
    views = ", ".join(f"{name} {value:.1f} dB" for name, value in check["views"].items())
    if check["psnr"] >= cfg.min_psnr:
        tqdm.write(f"gags import: the splats render the training views at {check['psnr']:.1f} dB ({views})")
        return
    hint = (
        "check that --dataparser-transforms is the one of the run that trained these splats"
        if cfg.dataparser_transforms is not None
        else "a nerfstudio splatfacto export needs --dataparser-transforms RUN/dataparser_transforms.json "
        "(nerfstudio trains in a normalised frame); for gsplat's normalize_world_space pass its transform "
        "the same way"
    )
    print(
        f"gags: WARNING: {cfg.ply} renders the training views of {cfg.data} at only {check['psnr']:.1f} dB "
        f"PSNR ({views}; below {cfg.min_psnr:g}): the splats and the cameras probably do not belong to "
        f"the same frame; {hint}",
        file=sys.stderr,
    )


def main_import(cfg: ImportConfig) -> None:
    """``gags import``: an existing splat PLY into a run folder instead of training."""
    import_splats(cfg)
