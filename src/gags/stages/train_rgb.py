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
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import imageio.v3 as iio
import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

from gags.devices import resolve_device
from gags.errors import GagsError
from gags.io import atomic_path, save_torch_atomic, write_json_atomic
from gags.runfolder import RunFolder
from gags.scene.cameras import Camera, stack_cameras
from gags.scene.images import load_image
from gags.scene.load import SceneOptions, load_scene
from gags.scene.scene import Scene
from gags.splats.densify import PAPER_ITERATIONS, Densifier, DensifyConfig, Params
from gags.splats.gaussians import Gaussians
from gags.splats.init import from_points, random_in_frusta
from gags.splats.metrics import photometric_loss, psnr, ssim
from gags.splats.ply import load_ply, save_ply
from gags.splats.render import render

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
    """Continue from checkpoints/latest.pt in the run folder."""
    import_ply: Path | None = None
    """Start from this splat PLY instead of the scene's points (with --iterations 0: import only)."""
    eval_every: int = 0
    """Evaluate held-out views every N steps (0: only before and after training)."""
    checkpoint_every: int = 500
    """Write checkpoints/latest.pt every N steps (and at the end)."""
    evaluate: bool = True
    """Render the evaluation views and write eval/rgb_metrics.json."""
    progress: bool = True
    """Show a progress bar."""


@dataclasses.dataclass(kw_only=True)
class ImportConfig:
    """Import an existing splat PLY (3DGS or gsplat export) into a run folder, without training."""

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

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            data=self.data,
            out=self.out,
            scene=self.scene,
            import_ply=self.ply,
            iterations=0,
            evaluate=self.evaluate,
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


def train_rgb(cfg: TrainConfig) -> dict[str, Any]:
    """Run stage 1 and return the metrics written to ``eval/rgb_metrics.json``.

    Raises:
        GagsError: bad input, or training diverged (NaN/inf); the last checkpoint and any existing
            ``splats.ply`` are left untouched.
    """
    if cfg.iterations < 0 or cfg.batch_size < 1:
        raise GagsError("--iterations must be >= 0 and --batch-size >= 1")
    device = resolve_device(cfg.device)
    run = RunFolder(cfg.out)
    scene_cfg = cfg.scene.at(cfg.data)
    scene = load_scene(scene_cfg)
    if not scene.train_indices:
        raise GagsError(f"{cfg.data}: the scene has no training images")
    trainer = Trainer(cfg, scene, run, device)
    run.record_stage("scene", scene_cfg)
    metrics = trainer.fit()
    save_ply(run.splats, trainer.gaussians().detach().to("cpu"))
    run.record_stage("train_rgb", cfg)
    if cfg.evaluate:
        write_json_atomic(run.eval / "rgb_metrics.json", metrics)
    return metrics


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

    # ----- set-up -----------------------------------------------------------------------------
    def _initial_gaussians(self) -> Gaussians:
        cfg, scene = self.cfg, self.scene
        if cfg.import_ply is not None:
            g = load_ply(cfg.import_ply)
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
        if self.initial is None and self.cfg.evaluate:
            self.initial = self.evaluate(step=0)
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
            if self.cfg.eval_every and self.step % self.cfg.eval_every == 0 and self.cfg.evaluate:
                self.history.append({"step": self.step, **self.evaluate(self.step, summary_only=True)})
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.iterations:
                self.save_checkpoint(ckpt)
        bar.close()
        if self.cfg.iterations == 0 or not ckpt.exists():
            self.save_checkpoint(ckpt)
        return self.final_metrics() if self.cfg.evaluate else {"n_gaussians": len(self.params["means"])}

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
            },
        )

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            params = state["params"]
            self.params = {k: torch.nn.Parameter(params[k].to(self.device)) for k in _PARAM_NAMES}
            self.optimizers = self._make_optimizers()
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            self.densifier.load_state_dict(state["densifier"])
            self.step = int(state["step"])
        except (KeyError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
            raise GagsError(f"{path}: not a usable train-rgb checkpoint ({type(e).__name__}: {e})") from e
        self.imported_degree = state.get("imported_degree")
        self.initial, self.history = state.get("initial"), list(state.get("history", []))
        self.wall_time = float(state.get("wall_time", 0.0))
        if self.step > self.cfg.iterations:
            raise GagsError(
                f"{path}: checkpoint is at step {self.step}, beyond --iterations {self.cfg.iterations}"
            )


_PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


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


def main(cfg: TrainConfig) -> None:
    """``gags train-rgb``."""
    train_rgb(cfg)


def main_import(cfg: ImportConfig) -> None:
    """``gags import``: an existing splat PLY into a run folder instead of training."""
    train_rgb(cfg.train_config())
