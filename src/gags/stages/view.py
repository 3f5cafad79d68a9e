"""``gags view RUN``: the interactive web viewer (viser) with a text box for queries.

Serves, at ``http://HOST:PORT``: a live render of the run from the browser's camera (preview size
while the camera moves, full size once it rests), a text box for one or several comma-separated
queries, editable negatives, a threshold slider, the display modes RGB / relevance over RGB / mask /
learned granularity (alpha argmax) / PCA of the field, the training cameras (click a frustum or use
"Go to view"), and "Select in 3D" with PLY export of the selection or of the scene without it into
``RUN/queries/<slug>/`` (the files ``gags query --extract/--delete`` writes). Works for GAGS runs and
the baselines' runs (LangSplat's three fields pick their level per frame as ``gags query`` does).

This stage holds the configuration and loads the run (:func:`open_view`); the server and its GUI
are the face :mod:`gags.viewer.app`, whose ``main`` is what ``gags view`` runs (stages never import
faces). On a remote machine, forward the port: ``ssh -L 8080:127.0.0.1:8080 HOST`` and open
``http://127.0.0.1:8080`` locally.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from gags.errors import GagsError


@dataclasses.dataclass(kw_only=True)
class ViewConfig:
    """Open a run in the web viewer: live render, text queries, granularity, 3D selection and export."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run folder with ``splats.ply`` and ``language.pt`` (after ``gags distill``)."""
    port: int = 8080
    """Port to listen on (the next free one is taken if it is busy; the URL printed is the real one)."""
    host: str = "127.0.0.1"
    """Address to listen on: 127.0.0.1 keeps it local (use ssh port forwarding); 0.0.0.0 opens it to
    the network."""
    query: str = ""
    """Initial query text (comma-separated for several)."""
    mode: Literal["rgb", "relevance", "mask", "granularity", "pca"] = "relevance"
    """Initial display mode."""
    source: Literal["auto", "pixel", "gaussian"] = "auto"
    """Relevance source: ``pixel`` decodes every pixel (the paper's protocol, as gags query);
    ``gaussian`` scores each Gaussian's decoded feature once per query and renders it (fast preview);
    ``auto`` uses the preview while the camera moves and pixel-space once it rests."""
    view: str | None = None
    """Training image the browser starts at (default: the first training camera)."""
    preview_size: int = 256
    """Longer side, pixels, of frames while the camera moves."""
    full_size: int | None = None
    """Longer side, pixels, of frames once the camera rests (default: 640 on a CPU, 1600 on CUDA;
    never more than the browser's canvas)."""
    rest_seconds: float = 0.3
    """How long the camera must rest before the full-size frame is rendered."""
    jpeg_quality: int = 90
    """JPEG quality of the frames sent to the browser."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ..."""


@dataclasses.dataclass
class ViewSession:
    """What the viewer serves: a frame renderer on the run's query engine, the scene, the run folder,
    the resolved full frame size and the training image to start at."""

    renderer: object
    scene: object
    run_root: Path
    full_size: int
    initial_view: str | None


def open_view(cfg: ViewConfig) -> ViewSession:
    """Check the options and load the run (query engine, scene); no server is started here.

    The server is the face :mod:`gags.viewer.app` (``gags view`` runs :func:`gags.viewer.app.main`).
    """
    from gags.devices import resolve_device
    from gags.query.live import LiveRenderer
    from gags.query.maps import open_engine
    from gags.runfolder import RunFolder
    from gags.scene.load import load_run_scene

    if cfg.preview_size < 16 or (cfg.full_size is not None and cfg.full_size < 16):
        raise GagsError("--preview-size and --full-size must be at least 16 pixels")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise GagsError(f"--jpeg-quality must be in 1..100, got {cfg.jpeg_quality}")
    run = RunFolder(cfg.run)
    device = resolve_device(cfg.device)
    engine = open_engine(run.root, device)
    scene = load_run_scene(run)
    view = cfg.view
    if view is not None and view not in {c.name for c in scene.cameras}:
        stems = {Path(c.name).stem: c.name for c in scene.cameras}
        if view not in stems:
            sample = ", ".join(c.name for c in scene.cameras[:5])
            raise GagsError(f'--view "{view}" is not an image of the scene ({sample}, ...)')
        view = stems[view]
    full = cfg.full_size or (1600 if device.type == "cuda" else 640)
    return ViewSession(LiveRenderer(engine, scene.background), scene, run.root, full, view)
