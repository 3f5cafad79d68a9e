"""The ``gags`` command: a thin, lazy face over :mod:`gags.stages`.

``gags`` and ``gags --help`` list the subcommands without importing any stage (no torch: it answers
in a fraction of a second). ``gags NAME ...`` imports only that stage's module, lets tyro parse the
stage's configuration dataclass (nested sub-configs become ``--group.option`` flags) and calls the
stage's ``main``. Errors meant for users (:class:`gags.errors.GagsError`) and operating-system errors
(read-only folder, full disk, ...) are printed as one line, exit code 2; ``--debug`` or
``GAGS_DEBUG=1`` shows the full traceback instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: where its stage lives and what it does."""

    module: str
    config: str
    function: str
    help: str


#: every subcommand, in pipeline order
COMMANDS: dict[str, Command] = {
    "process-data": Command(
        "gags.stages.process_data",
        "ProcessDataConfig",
        "main",
        "Photos or a video -> camera poses with pycolmap, undistorted COLMAP data set (stage 0).",
    ),
    "train-rgb": Command(
        "gags.stages.train_rgb",
        "TrainConfig",
        "main",
        "Train RGB 3D Gaussian splatting from posed images (stage 1).",
    ),
    "import": Command(
        "gags.stages.train_rgb",
        "ImportConfig",
        "main_import",
        "Import a splat PLY (3DGS / gsplat) into a run folder.",
    ),
    "prepare": Command(
        "gags.stages.prepare",
        "PrepareConfig",
        "main",
        "GaS: depth-aware SAM prompts, 3 granularities, CLIP features.",
    ),
    "distill": Command(
        "gags.stages.distill",
        "DistillConfig",
        "main",
        "GaD: distil the 16-d language field (or a baseline's).",
    ),
    "query": Command(
        "gags.stages.query",
        "QueryConfig",
        "main",
        "Query with text: heatmap, point, mask per view; 3D selection.",
    ),
    "eval": Command(
        "gags.stages.evaluate",
        "EvalConfig",
        "main",
        "LERF-OVS protocol: mIoU and localisation accuracy by level.",
    ),
    "view": Command(
        "gags.viewer.app",
        "ViewConfig",
        "main",
        "Web viewer (viser): live render, text box, relevance, alpha map, 3D selection.",
    ),
    "render": Command(
        "gags.stages.render",
        "RenderConfig",
        "main",
        "RGB + relevance video along an orbit, the training path or a camera_path.json.",
    ),
    "run": Command(
        "gags.stages.run", "RunConfig", "main", "Photos, a video or a data set -> queryable run, resumable."
    ),
    "demo": Command(
        "gags.stages.demo",
        "DemoConfig",
        "main",
        "Every stage on the built-in synthetic scene (offline, CPU).",
    ),
    "ablation": Command(
        "gags.stages.ablation",
        "AblationConfig",
        "main",
        "The paper's Table 4 (+ LangSplat) on the synthetic scene.",
    ),
    "scene": Command(
        "gags.stages.scene",
        "SceneConfig",
        "main",
        "Describe a data set folder (format, cameras, split) as JSON.",
    ),
}


def usage() -> str:
    """The top-level help text (built without importing any stage)."""
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: gags [--debug] COMMAND [--help] ...",
        "",
        "Open-vocabulary 3D scene understanding with GAGS (language Gaussian splatting).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "`gags COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def run_command(name: str, args: list[str]) -> None:
    """Parse ``args`` into the stage's config and run it.

    Stages with ``PRESETS`` take ``--preset paper|quick|auto`` (default auto: paper on CUDA, else
    quick); the preset's values become flags placed before the user's, so the user's win.
    """
    import tyro

    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    config_type = getattr(module, command.config)
    function = getattr(module, command.function)
    description = command.help
    presets = getattr(module, "PRESETS", None)
    if presets is not None:
        from gags.stages.presets import preset_flags, resolve_preset

        requested, args = _take_option(args, "--preset", "auto")
        description += " Presets: --preset paper|quick|auto (auto: paper on CUDA, else quick)."
        if not ({"-h", "--help"} & set(args)):
            device = _peek_option(args, "--device", "auto")
            preset = resolve_preset(requested, device)
            args = preset_flags(presets[preset]) + args
            print(f"gags {name}: preset {preset}{' (auto)' if requested == 'auto' else ''}, device {device}")
    cfg = tyro.cli(config_type, args=args, prog=f"gags {name}", description=description)
    function(cfg)


def _take_option(args: list[str], flag: str, default: str) -> tuple[str, list[str]]:
    """(value of ``flag`` (last one wins), args without it)."""
    value, rest, i = default, [], 0
    while i < len(args):
        if args[i] == flag and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif args[i].startswith(flag + "="):
            value, i = args[i].split("=", 1)[1], i + 1
        else:
            rest.append(args[i])
            i += 1
    return value, rest


def _peek_option(args: list[str], flag: str, default: str) -> str:
    return _take_option(args, flag, default)[0]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``gags`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("GAGS_DEBUG", "") not in ("", "0")
    if "--debug" in args[:1]:
        debug, args = True, args[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name = args[0]
    if name not in COMMANDS:
        print(f"gags: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    from gags.errors import GagsError

    try:
        run_command(name, args[1:])
    except GagsError as e:
        if debug:
            raise
        print(f"gags: error: {one_line(str(e))}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:
        if debug:
            raise
        print(f"gags: error: {os_error_message(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("gags: interrupted; finished outputs are kept and the stage can be resumed", file=sys.stderr)
        raise SystemExit(130) from None


def one_line(message: str) -> str:
    """``message`` on one line (embedded line breaks, e.g. from a library's error text, become spaces)."""
    return " ".join(message.split())


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: the path(s) and the reason (no traceback)."""
    import errno

    hints = {
        errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "no space left on the device",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EEXIST: "it already exists",
        errno.ENOTDIR: "a path component is a file, not a folder",
        errno.EISDIR: "it is a folder, not a file",
        errno.ENOENT: "no such file or folder",
    }
    reason = hints.get(e.errno or -1, e.strerror or type(e).__name__)
    if e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename is not None:
        reason = _file_in_the_way(str(e.filename)) or reason
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    return one_line(f"{paths}: {reason}" if paths else f"{reason} ({e})")


def _file_in_the_way(path: str) -> str | None:
    """For EEXIST/ENOTDIR: the file that stands where a folder is needed, if there is one."""
    from pathlib import Path

    for p in [Path(path), *Path(path).parents]:
        if p.exists():
            return None if p.is_dir() else f"{p} is a file where a folder is needed"
    return None


if __name__ == "__main__":
    main()
