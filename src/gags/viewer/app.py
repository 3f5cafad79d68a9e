"""The web viewer (viser): a live render of a run from the browser's camera, with a text box.

A thin face: frames come from :class:`gags.query.live.LiveRenderer` (the query core of ``gags query``
and ``gags eval``), 3D selection from :meth:`gags.query.maps.QueryEngine.select` and
:func:`gags.query.select3d.apply_selection` (the rule of ``gags query --extract``). What lives here
is the GUI, the camera conversion and the render loop:

- each connected browser gets a render thread; any change (camera, text, settings) first gives a
  *preview* frame (``preview_size`` pixels on the longer side; relevance from the per-Gaussian
  preview when the source is ``auto``), and once the camera has rested for ``rest_seconds`` a
  *full* frame (``full_size``; the pixel-space decoder with ``auto``). A full frame still being
  computed is abandoned as soon as the camera moves again, so a CPU stays interactive;
- the status line says what the frame shows: mode, texts, relevance source, size and time.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np

from gags.query.live import MODES, SOURCE_LABELS, FrameCancelled, FrameSettings, LiveRenderer, split_texts
from gags.query.relevance import CANONICAL_NEGATIVES
from gags.scene.cameras import Camera
from gags.scene.paths import camera_from_fov, scene_centre, vertical_fov, world_up
from gags.stages.view import ViewConfig, open_view

__all__ = ["ViewConfig", "ViewerApp", "main", "start_viewer"]

#: display names of the modes, in the dropdown's order
MODE_LABELS: dict[str, str] = {
    "rgb": "RGB",
    "relevance": "Relevance over RGB",
    "mask": "Mask",
    "granularity": "Granularity (alpha argmax)",
    "pca": "PCA of the feature field",
}
#: relevance sources offered in the dropdown
SOURCE_CHOICES: dict[str, str] = {
    "auto": "auto (preview: per-Gaussian, at rest: pixel-space)",
    "pixel": SOURCE_LABELS["pixel"],
    "gaussian": SOURCE_LABELS["gaussian"],
}
#: at most this many training cameras are drawn as frustums
MAX_FRUSTUMS = 120


@dataclasses.dataclass
class ViewerOptions:
    """How the viewer renders (see :class:`gags.stages.view.ViewConfig` for the meaning)."""

    preview_size: int = 256
    full_size: int = 640
    rest_seconds: float = 0.3
    jpeg_quality: int = 90
    query: str = ""
    mode: str = "relevance"
    source: str = "auto"


def viser_pose(camera: Camera, look_distance: float = 1.0) -> dict[str, np.ndarray | float]:
    """A camera as viser's camera state: position, look_at, up direction (world) and vertical fov."""
    R = camera.world_to_cam[:3, :3]
    centre = camera.center
    return {
        "position": centre,
        "look_at": centre + R[2] * look_distance,
        "up": -R[1],
        "fov": vertical_fov(camera),
    }


def camera_from_viser(
    position: np.ndarray, wxyz: np.ndarray, fov: float, width: int, height: int, max_side: int
) -> Camera:
    """The pinhole camera of a browser view: viser's ``wxyz`` is the rotation of ``P_world = R p_camera``
    in OpenCV axes, ``fov`` the vertical field of view; the image is scaled to ``max_side`` pixels."""
    import viser.transforms as vtf

    scale = min(1.0, max_side / max(width, height, 1))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    return camera_from_fov("viewer", c2w, float(fov), w, h)


class ViewerApp:
    """The viser server, its GUI and one render loop per browser.

    Args:
        renderer: frames of the run's field.
        scene: the run's scene (training cameras for frustums and "go to view").
        run_root: the run folder (exports go to ``RUN/queries/<slug>/``).
        host, port: where to listen.
        options: rendering options.
        initial_view: name of the training camera new browsers start at (default: the first).
    """

    def __init__(
        self,
        renderer: LiveRenderer,
        scene,
        run_root: Path,
        host: str = "127.0.0.1",
        port: int = 8080,
        options: ViewerOptions | None = None,
        initial_view: str | None = None,
    ) -> None:
        import viser

        self.renderer = renderer
        self.engine = renderer.engine
        self.scene = scene
        self.run_root = Path(run_root)
        self.options = options or ViewerOptions()
        self.lock = threading.Lock()  # one frame at a time (the CPU has few cores)
        self.selection = None  # gags.query.select3d.Selection3D
        self.selection_text = ""
        self.cameras = list(scene.train_cameras or scene.cameras)
        self.by_name = {c.name: c for c in scene.cameras}
        self.centre = scene_centre(self.cameras)
        self.initial = self.by_name[initial_view] if initial_view else self.cameras[0]
        self.loops: dict[int, _ClientLoop] = {}

        self.server = viser.ViserServer(host=host, port=port, label="gags", verbose=False)
        self.server.scene.set_up_direction(tuple(float(v) for v in world_up(self.cameras)))
        pose = viser_pose(self.initial, self._look_distance(self.initial))
        self.server.initial_camera.position = tuple(pose["position"])
        self.server.initial_camera.look_at = tuple(pose["look_at"])
        self.server.initial_camera.up = tuple(pose["up"])
        self.server.initial_camera.fov = float(pose["fov"])
        self._build_gui()
        self._add_frustums()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)

    # ------------------------------------------------------------------ setup

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.get_port()}"

    def _look_distance(self, camera: Camera) -> float:
        d = float(np.dot(self.centre - camera.center, camera.world_to_cam[2, :3]))
        return d if d > 1e-3 else 1.0

    def _build_gui(self) -> None:
        gui = self.server.gui
        field = self.engine.field
        gui.add_markdown(
            f"**{self.run_root.name}** · {field.method} · {len(field.gaussians):,} Gaussians · "
            f"{field.device.type}"
        )
        self.query = gui.add_text("Query", initial_value=self.options.query, hint="comma-separated texts")
        modes = [MODE_LABELS[m] for m in MODES]
        self.mode = gui.add_dropdown(
            "Display", modes, initial_value=MODE_LABELS.get(self.options.mode, modes[1])
        )
        self.source = gui.add_dropdown(
            "Relevance from", list(SOURCE_CHOICES.values()), initial_value=SOURCE_CHOICES[self.options.source]
        )
        self.negatives = gui.add_text("Negatives", initial_value=", ".join(CANONICAL_NEGATIVES))
        self.threshold = gui.add_slider("Threshold", min=0.0, max=0.99, step=0.01, initial_value=0.4)
        self.opacity = gui.add_slider("Opacity", min=0.0, max=1.0, step=0.05, initial_value=0.6)
        self.status = gui.add_markdown("Shown: waiting for the first frame")
        if not self.renderer.has_granularity:
            gui.add_markdown(f"_No learned granularity in this run ({field.method}): that mode shows RGB._")

        with gui.add_folder("Training views"):
            names = [c.name for c in self.cameras]
            self.view_choice = gui.add_dropdown("View", names, initial_value=self.initial.name)
            go = gui.add_button("Go to view")
            self.show_cameras = gui.add_checkbox("Show cameras", initial_value=True)
        with gui.add_folder("3D selection"):
            select = gui.add_button("Select in 3D", hint="the Gaussians that match the first query")
            self.highlight = gui.add_checkbox("Highlight selection", initial_value=True)
            export = gui.add_button("Export selection (PLY)")
            delete = gui.add_button("Export scene without selection (PLY)")
            clear = gui.add_button("Clear selection")
            self.selection_status = gui.add_markdown("No selection.")

        for handle in (self.query, self.mode, self.source, self.negatives, self.threshold, self.opacity):
            handle.on_update(lambda _: self._changed())
        self.highlight.on_update(lambda _: self._changed())
        self.show_cameras.on_update(lambda _: self._set_frustums_visible(self.show_cameras.value))
        go.on_click(lambda event: self.go_to(event.client, self.by_name[self.view_choice.value]))
        select.on_click(lambda _: self.select())
        export.on_click(lambda _: self.export("extract"))
        delete.on_click(lambda _: self.export("delete"))
        clear.on_click(lambda _: self.clear_selection())

    def _add_frustums(self) -> None:
        step = max(1, -(-len(self.cameras) // MAX_FRUSTUMS))
        spread = np.median([np.linalg.norm(c.center - self.centre) for c in self.cameras])
        self.frustums = []
        for camera in self.cameras[::step]:
            R = camera.world_to_cam[:3, :3]
            import viser.transforms as vtf

            handle = self.server.scene.add_camera_frustum(
                f"/training/{Path(camera.name).stem}",
                fov=vertical_fov(camera),
                aspect=camera.width / camera.height,
                scale=float(0.06 * spread),
                thickness=1.5,
                thickness_units="screen",
                color=(60, 60, 220),
                wxyz=vtf.SO3.from_matrix(R.T).wxyz,
                position=tuple(camera.center),
            )
            handle.on_click(lambda event, cam=camera: self.go_to(event.client, cam))
            self.frustums.append(handle)

    def _set_frustums_visible(self, visible: bool) -> None:
        for handle in self.frustums:
            handle.visible = visible

    # ------------------------------------------------------------------ state

    def settings(self) -> FrameSettings:
        """The GUI's current settings (source ``auto`` is resolved per frame by the loop)."""
        mode = {v: k for k, v in MODE_LABELS.items()}.get(self.mode.value, "rgb")
        source = {v: k for k, v in SOURCE_CHOICES.items()}.get(self.source.value, "auto")
        negatives = split_texts(self.negatives.value) or CANONICAL_NEGATIVES
        return FrameSettings(
            mode=mode,
            texts=split_texts(self.query.value),
            negatives=negatives,
            threshold=float(self.threshold.value),
            opacity=float(self.opacity.value),
            source=source,
        )

    def _changed(self) -> None:
        for loop in list(self.loops.values()):
            loop.changed()

    def _on_connect(self, client) -> None:
        loop = _ClientLoop(self, client)
        self.loops[client.client_id] = loop

        @client.camera.on_update
        def _(_camera) -> None:
            loop.changed(moved=True)

        loop.start()

    def _on_disconnect(self, client) -> None:
        loop = self.loops.pop(client.client_id, None)
        if loop is not None:
            loop.stop()

    def go_to(self, client, camera: Camera) -> None:
        """Move a browser's camera to a training view."""
        if client is None:
            return
        pose = viser_pose(camera, self._look_distance(camera))
        with client.atomic():
            client.camera.fov = float(pose["fov"])
            client.camera.position = pose["position"]
            client.camera.look_at = pose["look_at"]
            client.camera.up_direction = pose["up"]

    # ------------------------------------------------------------------ 3D selection

    def select(self) -> None:
        """Select the Gaussians that match the first query text (``gags query --extract``'s rule)."""
        settings = self.settings()
        if not settings.texts:
            self.selection_status.content = "Type a query first."
            return
        text = settings.texts[0]
        with self.lock:
            self.engine.negative_texts = settings.negatives
            selection = self.engine.select(text, settings.threshold)
        self.selection, self.selection_text = selection, text
        total = len(self.engine.field.gaussians)
        self.selection_status.content = (
            f'Selected **{selection.count:,}** of {total:,} Gaussians for "{text}".'
        )
        self._changed()

    def clear_selection(self) -> None:
        self.selection, self.selection_text = None, ""
        self.selection_status.content = "No selection."
        self._changed()

    def export(self, mode: str) -> Path | None:
        """Write ``RUN/queries/<slug>/extract.ply`` (the selection) or ``delete.ply`` (the rest)."""
        from gags.query.select3d import apply_selection
        from gags.splats.ply import load_ply, save_ply
        from gags.stages.query import slugify

        if self.selection is None:
            self.selection_status.content = 'Nothing selected: press "Select in 3D" first.'
            return None
        path = self.run_root / "queries" / slugify(self.selection_text) / f"{mode}.ply"
        gaussians = load_ply(self.run_root / "splats.ply")
        subset = apply_selection(gaussians, self.selection.mask.cpu(), mode)
        save_ply(path, subset)
        self.selection_status.content = (
            f'Selected **{self.selection.count:,}** for "{self.selection_text}". '
            f"Wrote `{path}` ({len(subset):,} Gaussians)."
        )
        return path


class _ClientLoop:
    """The render loop of one browser: preview on change, full frame after the camera rests."""

    def __init__(self, app: ViewerApp, client) -> None:
        self.app = app
        self.client = client
        self.event = threading.Event()
        self.alive = True
        self.version = 0
        self.preview_done = -1
        self.full_done = -1
        self.last_move = 0.0
        self.thread = threading.Thread(target=self._run, name=f"gags-view-{client.client_id}", daemon=True)

    def start(self) -> None:
        self.changed()
        self.thread.start()

    def stop(self) -> None:
        self.alive = False
        self.event.set()

    def changed(self, moved: bool = False) -> None:
        self.version += 1
        if moved:
            self.last_move = time.time()
        self.event.set()

    def _stale(self, version: int) -> bool:
        return not self.alive or self.version != version

    def _run(self) -> None:
        opts = self.app.options
        while self.alive:
            self.event.wait(timeout=opts.rest_seconds / 2)
            self.event.clear()
            version = self.version
            try:
                if self.preview_done < version:
                    self._frame(version, full=False)
                    self.preview_done = version
                elif self.full_done < version and time.time() - self.last_move >= opts.rest_seconds:
                    self._frame(version, full=True)
                    self.full_done = version
            except FrameCancelled:
                continue
            except Exception as e:  # noqa: BLE001 - shown to the user, the loop keeps serving
                self.app.status.content = f"Error: {type(e).__name__}: {e}"
                self.full_done = self.preview_done = version
                time.sleep(0.2)

    def _frame(self, version: int, full: bool) -> None:
        app, opts = self.app, self.app.options
        try:
            cam = self.client.camera
            camera = camera_from_viser(
                cam.position,
                cam.wxyz,
                cam.fov,
                cam.image_width,
                cam.image_height,
                opts.full_size if full else opts.preview_size,
            )
        except AssertionError:  # the browser has not reported its camera yet
            raise FrameCancelled from None
        settings = app.settings()
        if settings.source == "auto":
            settings = dataclasses.replace(settings, source="pixel" if full else "gaussian")
        selection = app.selection.mask if app.selection is not None and app.highlight.value else None
        with app.lock:
            if self._stale(version):
                raise FrameCancelled
            frame = app.renderer.frame(camera, settings, selection, cancel=lambda: self._stale(version))
        if self._stale(version) and not full:
            raise FrameCancelled
        self.client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=opts.jpeg_quality)
        kind = "full" if full else "preview"
        app.status.content = (
            f"**Shown** ({kind} {camera.width}×{camera.height}, {frame.seconds:.2f} s): {frame.shown}"
        )


def start_viewer(cfg: ViewConfig) -> ViewerApp:
    """Load the run (:func:`gags.stages.view.open_view`) and start the server (non-blocking)."""
    from gags.errors import GagsError

    try:
        import viser  # noqa: F401
    except ImportError as e:
        raise GagsError('the viewer needs viser: pip install "gags[view]" (or pip install viser)') from e
    session = open_view(cfg)
    options = ViewerOptions(
        preview_size=cfg.preview_size,
        full_size=session.full_size,
        rest_seconds=cfg.rest_seconds,
        jpeg_quality=cfg.jpeg_quality,
        query=cfg.query,
        mode=cfg.mode,
        source=cfg.source,
    )
    return ViewerApp(
        session.renderer, session.scene, session.run_root, cfg.host, cfg.port, options, session.initial_view
    )


def main(cfg: ViewConfig) -> None:
    """``gags view``: start the server, print its URL, serve until interrupted (Ctrl-C)."""
    app = start_viewer(cfg)
    field = app.engine.field
    print(f"gags view: {cfg.run} ({field.method}, {len(field.gaussians):,} Gaussians, {field.device.type})")
    print(f"gags view: open {app.url}", flush=True)
    if cfg.host in ("127.0.0.1", "localhost"):
        port = app.server.get_port()
        print(f"gags view: from another machine: ssh -L {port}:127.0.0.1:{port} HOST, then open {app.url}")
    try:
        while True:
            time.sleep(3600)
    finally:
        app.server.stop()
