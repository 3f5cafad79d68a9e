"""The ``gags`` command: one thin function per subcommand; the work lives in the stage modules.

Each subcommand takes its stage's configuration dataclass, flattened into ``--option`` flags by
tyro. Errors meant for users (:class:`gags.errors.GagsError`) are printed without a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import tyro

from gags.errors import GagsError


def Flat(cls):  # noqa: N802 - reads as a type annotation at the call sites
    """Annotate a config dataclass so its fields become top-level flags (no ``--cfg.`` prefix)."""
    return Annotated[cls, tyro.conf.arg(name="")]


def _commands() -> dict[str, Callable[..., object]]:
    """Name -> function for every subcommand, in pipeline order."""
    commands: dict[str, Callable[..., object]] = {}
    # Each stage registers its subcommand here (see the functions below).
    return commands


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``gags`` console script."""
    try:
        tyro.extras.subcommand_cli_from_dict(_commands(), args=argv, prog="gags")
    except GagsError as e:
        print(f"gags: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("gags: interrupted; finished outputs are kept and the stage can be resumed", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
