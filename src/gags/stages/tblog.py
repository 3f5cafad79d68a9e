"""TensorBoard logging for the training stages (``train-rgb``, ``distill``): ``RUN/tensorboard/STAGE/``.

TensorBoard is optional (``pip install tensorboard`` or ``gags[log]``): without it a stage prints one
line and trains as usual. ``--log.no-tensorboard`` turns it off; ``--log.dir`` moves it. Progress bars
are unaffected. View with ``tensorboard --logdir RUN/tensorboard``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from gags.errors import GagsError

if TYPE_CHECKING:  # torch is imported by the stages that log; this module stays light for run.py
    import torch

#: the folder inside a run that holds one TensorBoard subfolder per stage
TENSORBOARD_DIR = "tensorboard"


@dataclasses.dataclass
class LogConfig:
    """Where and how often a training stage writes TensorBoard records."""

    tensorboard: bool = True
    """write scalars (and evaluation images) for TensorBoard; needs the tensorboard package"""
    dir: Path | None = None
    """TensorBoard folder (default RUN/tensorboard); each stage writes into its own subfolder"""
    every: int = 10
    """steps between scalar records (>= 1); evaluations are logged whenever they run"""
    images_every: int = 500
    """steps between image records (train-rgb: render | target of the first evaluation view; distill:
    the field's PCA colours and the alpha-argmax map of the first training view), and at the last
    step; 0: at the last step only"""


class ScalarLog:
    """One stage's TensorBoard writer, or a no-op when logging is off or TensorBoard is missing."""

    def __init__(
        self,
        writer: Any | None,
        every: int = 10,
        folder: Path | None = None,
        keep: tuple[Path, ...] = (),
        created: tuple[Path, ...] = (),
        images_every: int = 0,
    ) -> None:
        self.writer, self.every = writer, max(1, int(every))
        self.images_every = max(0, int(images_every))
        self.folder, self.keep = folder, set(keep)  # keep: what the folder held before this log
        self.created = created  # folders made for this log, innermost first

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def due(self, step: int, last: bool = False) -> bool:
        """Whether scalars of ``step`` (1-based) should be written: every ``every`` steps and the last."""
        return self.enabled and (last or step % self.every == 0)

    def images_due(self, step: int, last: bool = False) -> bool:
        """Whether images of ``step`` (1-based) should be written: every ``images_every`` and the last."""
        return self.enabled and (last or (self.images_every > 0 and step % self.images_every == 0))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Write ``{tag: value}`` at ``step``; non-finite values are skipped."""
        if self.writer is None:
            return
        for tag, value in values.items():
            value = float(value)
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, step: int, image: torch.Tensor) -> None:
        """Write an (H, W, 3) float image in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, image.detach().cpu().clamp(0, 1), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file (safe to call twice)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def discard(self) -> None:
        """Close and delete what this log wrote (the stage failed: the run folder stays as it was)."""
        self.close()
        if self.folder is None or not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if path not in self.keep and path.is_file():
                path.unlink()
        for folder in self.created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def log_dir(cfg: LogConfig, run_root: Path, stage: str) -> Path:
    """``--log.dir/STAGE`` or ``RUN/tensorboard/STAGE``."""
    base = Path(cfg.dir) if cfg.dir is not None else Path(run_root) / TENSORBOARD_DIR
    return base / stage


def validate_log_config(cfg: LogConfig) -> None:
    """Reject a non-positive ``--log.every`` or a negative ``--log.images-every`` before any write."""
    if cfg.every < 1:
        raise GagsError(f"--log.every must be >= 1 step, got {cfg.every}")
    if cfg.images_every < 0:
        raise GagsError(f"--log.images-every must be >= 0 steps (0: last step only), got {cfg.images_every}")


def open_log(cfg: LogConfig, run_root: Path, stage: str, start_step: int = 0) -> ScalarLog:
    """A writer into :func:`log_dir`; a no-op (with a one-line note) when TensorBoard is not installed.

    ``start_step`` is the step training starts from (0, or a resumed checkpoint's): TensorBoard then
    hides what earlier runs in the same folder logged from that step on, so a re-run or a resume after a
    crash shows one curve.
    """
    if not cfg.tensorboard:
        return ScalarLog(None)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        tqdm.write(
            "gags: TensorBoard logging is off: the tensorboard package is not installed "
            "(pip install tensorboard, or pass --log.no-tensorboard to silence this)"
        )
        return ScalarLog(None)
    folder = log_dir(cfg, run_root, stage)
    created = tuple(p for p in (folder, folder.parent) if not p.exists())
    keep = tuple(folder.iterdir()) if folder.is_dir() else ()
    folder.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(folder), purge_step=int(start_step))
    return ScalarLog(writer, cfg.every, folder, keep, created, cfg.images_every)


def optimizer_lrs(optimizers: Mapping[str, torch.optim.Optimizer] | list[torch.optim.Optimizer]) -> dict:
    """``{"lr/NAME": current learning rate}`` of every parameter group (names: dict keys, the group's
    ``name`` or its index)."""
    items = optimizers.items() if isinstance(optimizers, Mapping) else enumerate(optimizers)
    out: dict[str, float] = {}
    for key, opt in items:
        for i, group in enumerate(opt.param_groups):
            name = group.get("name") or (str(key) if len(opt.param_groups) == 1 else f"{key}_{i}")
            out[f"lr/{name}"] = float(group["lr"])
    return out
