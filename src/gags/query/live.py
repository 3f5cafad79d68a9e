"""One frame of a query as a picture, for the web viewer and ``gags render``.

:class:`LiveRenderer` wraps a :class:`~gags.query.maps.QueryEngine` and turns (camera, settings) into
an (H, W, 3) image in one of the display modes: RGB, relevance composited over RGB, mask, the learned
granularity (alpha-argmax, paper Fig. 6) and a PCA colouring of the low-dimensional field.

Per frame there is **one** rasterisation: RGB, the low-dimensional field(s) and any per-Gaussian
channels are composited together by :func:`gags.splats.render.render`. Relevance comes from one of
two sources:

- ``pixel``: the paper's protocol, as ``gags query`` and ``gags eval`` compute it: decode every
  pixel's rendered feature, then the LERF relevance (cost grows with the pixel count);
- ``gaussian``: the fast preview: each Gaussian's own decoded feature is scored once per query (as
  3D selection does, :mod:`gags.query.select3d`) and the relevance is rendered as one channel per
  query and level, ``r(p) = sum_i w_i r_i + (1 - alpha(p)) r_background`` where ``r_background`` is
  the relevance of the decoded empty feature (what the pixel-space path sees where nothing is).

Both go through the same :func:`gags.query.postprocess.postprocess` (levels chosen as the reference
does), so LangSplat's three fields pick their level the way ``gags query`` does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from gags.query.maps import QueryEngine, TextQueries
from gags.query.pictures import (
    OVERLAY_OPACITY,
    QUERY_COLORS,
    SELECTION_COLOR,
    PCABasis,
    composite_relevance,
    draw_point,
    granularity_picture,
    mask_picture,
    tint,
    to_uint8,
)
from gags.query.postprocess import BOX_SIZE, MASK_THRESHOLD, QueryMaps, postprocess
from gags.query.relevance import CANONICAL_NEGATIVES, relevance
from gags.scene.cameras import Camera, stack_cameras
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend, render

Mode = Literal["rgb", "relevance", "mask", "granularity", "pca"]
Source = Literal["pixel", "gaussian"]

MODES: tuple[str, ...] = ("rgb", "relevance", "mask", "granularity", "pca")
#: how each relevance source is named to users
SOURCE_LABELS: dict[str, str] = {
    "pixel": "pixel-space decoder (paper protocol)",
    "gaussian": "per-Gaussian preview (fast)",
}


#: pixels decoded between two checks of a frame's ``cancel`` callback
CANCEL_CHUNK = 16384


class FrameCancelled(Exception):
    """Raised by :meth:`LiveRenderer.frame` when its ``cancel`` callback answers True."""


def box_size_for(width: int) -> int:
    """The relevance averaging window for a ``width``-pixel frame: the reference's 30 px per 1000 px,
    at least 3 (``gags query`` and ``gags eval`` take ``--box-size``; frames of any size need a rule)."""
    return max(3, round(BOX_SIZE * width / 1000))


def split_texts(text: str) -> tuple[str, ...]:
    """``"mug, teapot spout"`` -> ``("mug", "teapot spout")`` (empty entries dropped)."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


@dataclasses.dataclass(frozen=True)
class FrameSettings:
    """What a frame shows.

    Attributes:
        mode: one of :data:`MODES`.
        texts: query phrases (relevance and mask modes).
        negatives: canonical negative phrases.
        threshold: mask threshold on the normalised relevance.
        opacity: of the relevance colormap over RGB.
        source: ``pixel`` or ``gaussian`` (see the module docstring).
        box_size: relevance averaging window; None scales it with the frame width (:func:`box_size_for`).
    """

    mode: str = "rgb"
    texts: tuple[str, ...] = ()
    negatives: tuple[str, ...] = CANONICAL_NEGATIVES
    threshold: float = MASK_THRESHOLD
    opacity: float = OVERLAY_OPACITY
    source: str = "pixel"
    box_size: int | None = None


@dataclasses.dataclass
class Frame:
    """A rendered frame.

    Attributes:
        image: (H, W, 3) uint8 what to show. rgb: (H, W, 3) uint8 the plain render.
        maps: one post-processed result per text (relevance and mask modes), else empty.
        shown: a one-line description of what ``image`` shows (mode, texts, relevance source).
        seconds: wall time of :meth:`LiveRenderer.frame`.
    """

    image: np.ndarray
    rgb: np.ndarray
    maps: list[QueryMaps]
    shown: str
    seconds: float


def render_rgb(
    gaussians: Gaussians,
    camera: Camera,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    backend: Backend = "auto",
) -> np.ndarray:
    """(H, W, 3) uint8 RGB render of ``camera`` (for pictures beside query results)."""
    viewmats, Ks = stack_cameras([camera], device=gaussians.device)
    with torch.no_grad():
        out = render(
            gaussians,
            viewmats,
            Ks,
            camera.width,
            camera.height,
            background=torch.tensor(background, dtype=torch.float32, device=gaussians.device),
            backend=backend,
        )
    return to_uint8(out.rgb[0].clamp(0, 1).cpu().numpy())


@dataclasses.dataclass
class RenderedParts:
    """One rasterisation: ``rgb`` (H, W, 3) float CPU, ``alpha`` (H, W), ``fields`` one (H, W, F) per
    level (on the field's device, empty if not asked), ``extra`` (H, W, E) CPU or None."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    fields: list[torch.Tensor]
    extra: torch.Tensor | None


class LiveRenderer:
    """Frames of a query engine's field in any camera (see the module docstring).

    Args:
        engine: the :class:`QueryEngine` (field + text encoder).
        background: RGB the splats are composited on (the scene's).
        backend: renderer backend (``auto``: gsplat on CUDA, else the portable one).
    """

    def __init__(
        self, engine: QueryEngine, background: Sequence[float] = (0.0, 0.0, 0.0), backend: Backend = "auto"
    ) -> None:
        self.engine = engine
        self.field = engine.field
        self.background = torch.tensor(tuple(background), dtype=torch.float32, device=self.field.device)
        self.backend: Backend = backend
        self._gaussian_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pca: PCABasis | None = None
        self._eta = None
        self._eta_known = False

    @property
    def levels(self) -> int:
        return len(self.field.fields)

    # ------------------------------------------------------------------ rendering

    @torch.no_grad()
    def render(
        self, camera: Camera, fields: bool = False, extra: torch.Tensor | None = None
    ) -> RenderedParts:
        """RGB, alpha, the low-dimensional fields (``fields``) and per-Gaussian ``extra`` (N, E) channels
        of one camera, in one rasterisation."""
        g = self.field.gaussians
        channels = list(self.field.fields) if fields else []
        if extra is not None:
            channels.append(extra.to(g.device, torch.float32))
        widths = [c.shape[1] for c in channels]
        gaussians = dataclasses.replace(g, features=torch.cat(channels, dim=1) if channels else None)
        viewmats, Ks = stack_cameras([camera], device=g.device)
        out = render(
            gaussians,
            viewmats,
            Ks,
            camera.width,
            camera.height,
            render_features=bool(channels),
            background=self.background,
            backend=self.backend,
        )
        parts = list(torch.split(out.features[0], widths, dim=-1)) if channels else []
        extra_map = parts.pop().cpu() if extra is not None else None
        return RenderedParts(out.rgb[0].clamp(0, 1).cpu(), out.alpha[0].cpu(), parts, extra_map)

    # ------------------------------------------------------------------ relevance

    def embed(self, texts: Sequence[str], negatives: Sequence[str] = CANONICAL_NEGATIVES) -> TextQueries:
        return self.engine.embed(texts, negatives)

    @torch.no_grad()
    def gaussian_relevance(self, queries: TextQueries) -> tuple[torch.Tensor, torch.Tensor]:
        """((Q, L, N) relevance of every Gaussian's own decoded feature, (Q, L) relevance of the decoded
        empty feature), cached per (texts, negatives)."""
        key = (queries.texts, queries.negative_texts)
        if key not in self._gaussian_cache:
            feats = self.field.gaussian_features()  # L x (N, D)
            rel = torch.stack([relevance(f, queries.embeddings, queries.negatives) for f in feats], dim=1)
            empty = self.field.decode(self.field.fields[0].new_zeros(1, self.field.fields[0].shape[1]))
            bg = relevance(empty, queries.embeddings, queries.negatives)[:, 0]  # (Q,)
            self._gaussian_cache.clear()  # one query set at a time (N floats per text and level)
            self._gaussian_cache[key] = (rel, bg[:, None].expand(-1, rel.shape[1]).contiguous())
        return self._gaussian_cache[key]

    @torch.no_grad()
    def relevance(self, camera: Camera, queries: TextQueries, source: str = "pixel") -> torch.Tensor:
        """(Q, L, H, W) relevance of each text at each level (CPU), from ``source``."""
        return self._relevance_and_parts(camera, queries, source)[0]

    def _relevance_and_parts(
        self,
        camera: Camera,
        queries: TextQueries,
        source: str,
        extra: torch.Tensor | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> tuple[torch.Tensor, RenderedParts]:
        Q, L = len(queries.texts), self.levels
        if source == "gaussian":
            rel_g, bg = self.gaussian_relevance(queries)  # (Q, L, N), (Q, L)
            channels = rel_g.reshape(Q * L, -1).T  # (N, Q L)
            if extra is not None:
                channels = torch.cat([channels, extra.to(channels)], dim=1)
            parts = self.render(camera, fields=False, extra=channels)
            maps = parts.extra[..., : Q * L]
            parts.extra = parts.extra[..., Q * L :] if extra is not None else None
            rel = maps + (1.0 - parts.alpha[..., None]) * bg.reshape(1, 1, Q * L).cpu()
            return rel.permute(2, 0, 1).reshape(Q, L, camera.height, camera.width).contiguous(), parts
        if source != "pixel":
            raise ValueError(f"unknown relevance source {source!r}; choose pixel or gaussian")
        parts = self.render(camera, fields=True, extra=extra)
        rel = [self._pixel_relevance(m, queries, cancel) for m in parts.fields]  # L x (Q, H, W)
        return torch.stack(rel, dim=1).cpu(), parts

    @torch.no_grad()
    def _pixel_relevance(
        self, low: torch.Tensor, queries: TextQueries, cancel: Callable[[], bool] | None
    ) -> torch.Tensor:
        """(Q, H, W) relevance of a rendered (H, W, F) map: decode each pixel (in chunks, checking
        ``cancel`` between them), then LERF relevance; the same values as ``QueryEngine.relevance``."""
        flat = low.reshape(-1, low.shape[-1])
        out = []
        for chunk in flat.split(CANCEL_CHUNK):
            if cancel is not None and cancel():
                raise FrameCancelled
            out.append(relevance(self.field.decode(chunk), queries.embeddings, queries.negatives))
        return torch.cat(out, dim=1).reshape(-1, *low.shape[:2])

    # ------------------------------------------------------------------ granularity and PCA

    def eta_function(self):
        """The field's granularity decoder (:func:`gags.distill.alpha.granularity_decoder`), or None when
        the field does not learn alpha; looked up once."""
        if not self._eta_known:
            from gags.distill.alpha import granularity_decoder
            from gags.errors import GagsError

            try:
                self._eta = granularity_decoder(self.field)
            except (GagsError, AttributeError, KeyError):
                self._eta = None
            self._eta_known = True
        return self._eta

    @torch.no_grad()
    def alpha_levels(self, parts: RenderedParts) -> torch.Tensor:
        """(H, W) argmax of alpha = softmax(eta) of the rendered field (paper Fig. 6), -1 where the
        accumulated opacity is below 0.5 (:func:`gags.distill.alpha.alpha_argmax`)."""
        from gags.distill.alpha import alpha_argmax
        from gags.distill.field import DECODE_CHUNK

        eta_net = self.eta_function()
        low = parts.fields[0]
        flat = low.reshape(-1, low.shape[-1])
        eta = torch.cat([eta_net(c) for c in flat.split(DECODE_CHUNK)]) if flat.shape[0] else flat[:, :3]
        alpha = torch.softmax(eta, dim=-1).reshape(*low.shape[:-1], 3).cpu()
        return alpha_argmax(alpha, parts.alpha)

    @property
    def has_granularity(self) -> bool:
        return self.eta_function() is not None

    def pca(self) -> PCABasis:
        if self._pca is None:
            self._pca = PCABasis(self.field.fields[0].detach().cpu().numpy())
        return self._pca

    # ------------------------------------------------------------------ frames

    def frame(
        self,
        camera: Camera,
        settings: FrameSettings,
        selection: torch.Tensor | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Frame:
        """The picture of ``settings`` in ``camera``; ``selection`` (N,) bool Gaussians are highlighted.

        ``cancel`` is polled while the pixel-space decoder runs; :class:`FrameCancelled` is raised
        when it returns True (the viewer abandons a full frame when the camera moves).
        """
        start = time.perf_counter()
        extra = selection.float()[:, None] if selection is not None else None
        maps: list[QueryMaps] = []
        mode = settings.mode if settings.mode in MODES else "rgb"
        texts = settings.texts
        if mode in ("relevance", "mask") and not texts:
            mode, note = "rgb", "RGB (type a query for relevance)"
        else:
            note = ""

        if mode in ("relevance", "mask"):
            queries = self.embed(texts, settings.negatives)
            rel, parts = self._relevance_and_parts(camera, queries, settings.source, extra, cancel)
            rgb = to_uint8(parts.rgb.numpy())
            box = settings.box_size or box_size_for(camera.width)
            maps = [postprocess(r, settings.threshold, box) for r in rel]
            if mode == "relevance":
                normalised = np.max(np.stack([m.normalised.numpy() for m in maps]), axis=0)
                image = composite_relevance(rgb, normalised, settings.opacity)
                for k, m in enumerate(maps):
                    image = draw_point(
                        image, m.point, QUERY_COLORS[k % len(QUERY_COLORS)] if k else (255,) * 3
                    )
            else:
                image = mask_picture(rgb, [m.mask.numpy() for m in maps])
            quoted = ", ".join(f'"{t}"' for t in queries.texts)
            note = f"{mode} {quoted} from the {SOURCE_LABELS[settings.source]}"
        elif mode == "granularity" and self.has_granularity:
            parts = self.render(camera, fields=True, extra=extra)
            rgb = to_uint8(parts.rgb.numpy())
            image = granularity_picture(rgb, self.alpha_levels(parts).numpy(), parts.alpha.numpy())
            note = "granularity: argmax of alpha (red subpart, blue part, green whole)"
        elif mode == "pca":
            parts = self.render(camera, fields=True, extra=extra)
            rgb = to_uint8(parts.rgb.numpy())
            image = self.pca().colors(parts.fields[0].cpu().numpy(), parts.alpha.numpy())
            note = f"PCA of the {self.field.fields[0].shape[1]}-d field (first 3 components)"
        else:
            parts = self.render(camera, fields=False, extra=extra)
            rgb = to_uint8(parts.rgb.numpy())
            image = rgb
            if mode == "granularity":
                note = f"RGB: this run ({self.field.method}) has no learned granularity"
            note = note or "RGB"
        if parts.extra is not None:
            image = tint(image, parts.extra[..., 0].numpy(), SELECTION_COLOR, 0.6)
            note += f"; {int(selection.sum())} Gaussians selected in 3D"
        return Frame(image, rgb, maps, note, time.perf_counter() - start)
