"""The one exception type users see: a message that names the file and what is wrong with it."""

from __future__ import annotations

import shlex
from pathlib import Path


class GagsError(RuntimeError):
    """A user-facing error: bad or missing input, a stage run out of order, a corrupt file.

    The CLI prints the message without a traceback and exits with status 2.
    """


def file_error(path: str | Path, problem: str) -> GagsError:
    """Build a :class:`GagsError` of the form ``"<path>: <problem>"``."""
    return GagsError(f"{path}: {problem}")


def suggest(*words: object) -> str:
    """A command to suggest in a message, shell-quoted and in backticks: ``suggest("gags", "prepare",
    Path("my run"))`` -> ``"`gags prepare 'my run'`"`` (safe to copy and paste)."""
    return "`" + shlex.join(str(w) for w in words) + "`"
