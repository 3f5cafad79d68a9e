"""Presets: named sets of a stage's settings, applied before the user's own flags.

- ``paper``: the paper's and the authors' settings (30k RGB steps, no Gaussian cap, 100k random
  initial Gaussians, 30k distillation steps at ``-r 2``, ViT-H SAM, ViT-B-16 CLIP); the default on CUDA.
- ``quick``: settings that finish in minutes on a CPU (2,000 RGB steps, at most 50,000 Gaussians,
  3,000 distillation steps); the default elsewhere. Each deviation is documented at its field.

A stage module declares ``PRESETS: dict[str, dict[str, object]]`` mapping a preset name to dotted
field paths and values (``{"densify.max_gaussians": 0}``). The CLI turns them into flags placed
before the user's (argparse keeps the last value, so every preset value stays overridable);
``gags run`` applies the same dicts to config objects with :func:`apply_preset`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

PresetName = Literal["auto", "paper", "quick"]
PRESET_NAMES: tuple[str, ...] = ("paper", "quick")


def resolve_preset(name: str, device: str = "auto") -> str:
    """``auto`` -> ``paper`` on a CUDA machine (or when ``device`` names CUDA), else ``quick``."""
    if name not in ("auto", *PRESET_NAMES):
        from gags.errors import GagsError

        raise GagsError(f"unknown preset {name!r}; choose auto, {', '.join(PRESET_NAMES)}")
    if name != "auto":
        return name
    if device.startswith("cuda"):
        return "paper"
    if device != "auto":
        return "quick"
    import torch

    return "paper" if torch.cuda.is_available() else "quick"


def preset_flags(values: dict[str, Any]) -> list[str]:
    """Dotted settings as flags: ``{"densify.max_gaussians": 0}`` -> ``["--densify.max-gaussians", "0"]``."""
    flags: list[str] = []
    for path, value in values.items():
        flag = "--" + path.replace("_", "-")
        if isinstance(value, bool):
            head, _, leaf = flag.rpartition(".")
            flags.append(flag if value else (f"{head}.no-{leaf}" if head else f"--no-{flag[2:]}"))
        elif isinstance(value, list | tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def apply_preset(cfg: Any, values: dict[str, Any]) -> Any:
    """A copy of the config dataclass ``cfg`` with the dotted ``values`` set (frozen or nested configs
    are rebuilt with :func:`dataclasses.replace`)."""
    for path, value in values.items():
        cfg = _replace_path(cfg, path.split("."), value, path)
    return cfg


def _replace_path(obj: Any, parts: list[str], value: Any, path: str) -> Any:
    if not dataclasses.is_dataclass(obj) or parts[0] not in {f.name for f in dataclasses.fields(obj)}:
        raise AttributeError(f"{type(obj).__name__} has no setting {parts[0]!r} (preset path {path!r})")
    if len(parts) > 1:
        value = _replace_path(getattr(obj, parts[0]), parts[1:], value, path)
    return dataclasses.replace(obj, **{parts[0]: value})
