"""``gags render RUN --path orbit|train|FILE.json --query TEXT --out video.mp4``: RGB and relevance side
by side along a camera path, encoded as H.264 MP4 with imageio-ffmpeg.

Paths (:mod:`gags.scene.paths`): ``orbit`` (``--frames`` cameras on a circle around the scene centre,
at the training cameras' mean height and distance), ``train`` (the training cameras in order), or a
nerfstudio ``camera_path.json``. Each frame is the plain RGB render on the left and, on the right,
the query's relevance composited over RGB (or its mask, ``--mode mask``) through the same
:class:`~gags.query.live.LiveRenderer` as the web viewer. Without ``--query`` the video is RGB only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro
from tqdm import tqdm

from gags.errors import GagsError
from gags.query.postprocess import MASK_THRESHOLD


@dataclasses.dataclass(kw_only=True)
class RenderConfig:
    """Render a video of RGB and query relevance side by side along a camera path."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run folder with ``splats.ply`` (and ``language.pt`` for a query)."""
    path: str = "orbit"
    """``orbit``, ``train`` (the training trajectory) or a nerfstudio ``camera_path.json`` file."""
    query: str = ""
    """Query text; several comma-separated texts are overlaid together. Empty: RGB only."""
    out: Path | None = None
    """Output video (default ``RUN/renders/<path>[-<query>].mp4``)."""
    frames: int = 120
    """Frames of the orbit (``train`` uses every training camera, a JSON file its own cameras)."""
    fps: float = 24.0
    """Frames per second of the video (a camera_path.json's own ``fps`` is used when it has one)."""
    width: int | None = None
    """Frame width in pixels (default: the first training camera's, or the JSON's ``render_width``)."""
    height: int | None = None
    """Frame height in pixels (default: follows the width and the camera's aspect)."""
    mode: Literal["relevance", "mask"] = "relevance"
    """Right half: the relevance over RGB (turbo) with the localisation point, or the mask."""
    source: Literal["pixel", "gaussian"] = "pixel"
    """``pixel``: each pixel's decoded feature (the paper's protocol, as gags query); ``gaussian``: each
    Gaussian's own decoded feature scored once and rendered (fast preview, as the viewer's)."""
    threshold: float = MASK_THRESHOLD
    """Mask threshold on the normalised relevance (reference 0.4)."""
    quality: int = 8
    """imageio-ffmpeg quality, 0 (smallest) to 10 (best)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ..."""


def path_cameras(cfg: RenderConfig, scene) -> tuple[list, float]:
    """The cameras of ``cfg.path`` and the frame rate to encode them at."""
    from gags.scene.paths import orbit_path, read_camera_path

    fps = cfg.fps
    width = cfg.width
    if cfg.path == "orbit":
        base = scene.train_cameras or scene.cameras
        height = cfg.height or (round(width * base[0].height / base[0].width) if width else None)
        cameras = orbit_path(base, cfg.frames, width, height)
    elif cfg.path == "train":
        cameras = list(scene.train_cameras or scene.cameras)
        if width:
            cameras = [c.resized(width, cfg.height or round(width * c.height / c.width)) for c in cameras]
    else:
        file = Path(cfg.path)
        if not file.exists():
            raise GagsError(f"--path {cfg.path!r}: not orbit, train or an existing camera_path.json file")
        import json

        cameras = read_camera_path(file, cfg.width, cfg.height)
        fps = float(json.loads(file.read_text()).get("fps") or fps)
    if not cameras:
        raise GagsError(f"--path {cfg.path!r} gives no cameras")
    return cameras, fps


def default_out(cfg: RenderConfig, run_root: Path) -> Path:
    from gags.stages.query import slugify

    stem = "path" if cfg.path not in ("orbit", "train") else cfg.path
    if cfg.path not in ("orbit", "train"):
        stem = Path(cfg.path).stem
    suffix = f"-{slugify(cfg.query)}" if cfg.query.strip() else ""
    return run_root / "renders" / f"{stem}{suffix}.mp4"


def render_video(cfg: RenderConfig) -> dict[str, Any]:
    """Render and encode; returns a summary (frames, size, fps, output path)."""
    import imageio.v2 as imageio

    from gags.devices import resolve_device
    from gags.io import atomic_path
    from gags.query.live import FrameSettings, split_texts
    from gags.query.pictures import put_label, side_by_side
    from gags.runfolder import RunFolder
    from gags.scene.load import load_run_scene

    if cfg.frames < 1:
        raise GagsError(f"--frames must be at least 1, got {cfg.frames}")
    if not 0 <= cfg.quality <= 10:
        raise GagsError(f"--quality must be in 0..10, got {cfg.quality}")
    run = RunFolder(cfg.run)
    run.require(run.splats, "gags train-rgb")
    texts = split_texts(cfg.query)
    if texts:
        run.require(run.language, "gags distill")
    device = resolve_device(cfg.device)
    scene = load_run_scene(run)
    cameras, fps = path_cameras(cfg, scene)
    draw = _frame_function(run, device, scene.background, texts)
    settings = FrameSettings(mode=cfg.mode, texts=texts, threshold=cfg.threshold, source=cfg.source)
    out = Path(cfg.out) if cfg.out is not None else default_out(cfg, run.root)
    right = f"{cfg.mode}: {', '.join(texts)}"

    size = (0, 0)
    with atomic_path(out) as tmp:
        writer = imageio.get_writer(
            tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=cfg.quality, macro_block_size=2
        )
        try:
            for camera in tqdm(cameras, desc="render", unit="frame"):
                rgb, picture = draw(camera, settings)
                image = rgb if picture is None else side_by_side([rgb, put_label(picture, right)])
                image = _even(image)
                size = image.shape[1], image.shape[0]
                writer.append_data(image)
        finally:
            writer.close()
    return {
        "out": str(out),
        "frames": len(cameras),
        "fps": fps,
        "width": size[0],
        "height": size[1],
        "path": cfg.path,
        "query": list(texts),
        "source": cfg.source,
    }


def _frame_function(run, device, background, texts: tuple[str, ...]):
    """camera, settings -> (RGB (H, W, 3) uint8, query picture or None)."""
    if texts:
        from gags.query.live import LiveRenderer
        from gags.query.maps import open_engine

        renderer = LiveRenderer(open_engine(run.root, device), background)

        def draw(camera, settings):
            frame = renderer.frame(camera, settings)
            return frame.rgb, frame.image

        return draw
    from gags.query.live import render_rgb
    from gags.splats.ply import load_ply

    gaussians = load_ply(run.splats).detach().to(device)
    return lambda camera, settings: (render_rgb(gaussians, camera, background), None)


def _even(image: np.ndarray) -> np.ndarray:
    """Pad to even width and height (H.264 with yuv420p needs them)."""
    H, W = image.shape[:2]
    return np.pad(image, ((0, H % 2), (0, W % 2), (0, 0)), mode="edge") if (H % 2 or W % 2) else image


def main(cfg: RenderConfig) -> None:
    """``gags render``: render and print where the video went."""
    result = render_video(cfg)
    print(
        f"gags render: wrote {result['out']} ({result['frames']} frames, "
        f"{result['width']}x{result['height']}, {result['fps']:g} fps)"
    )
