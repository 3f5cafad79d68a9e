"""Device selection shared by every stage."""

from __future__ import annotations

import torch

from gags.distributed import local_device
from gags.errors import GagsError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise as torch spells it (``cuda:1``, ``mps``).

    Under torchrun a bare ``cuda`` (also from ``auto``) is this rank's GPU, ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        return local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        return local_device(torch.device(name))
    except RuntimeError as e:
        raise GagsError(f"unknown --device {name!r}: {e}") from e
