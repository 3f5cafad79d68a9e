"""The one query core: render a language field in cameras, score texts, post-process per level.

Every face that answers a text query goes through :class:`QueryEngine`: ``gags query`` (heatmaps,
masks, points, 3D selection), ``gags eval`` (the LERF-OVS protocol), the demo figure, ``gags render``
and the web viewer. The path is always

    render the field (L maps: 1 for GaD, 3 for LangSplat)  ->  decode to the encoder's space
    ->  LERF relevance of each text against the canonical negatives (Q, L, H, W)
    ->  :func:`gags.query.postprocess.postprocess` per text (levels chosen as the reference does)

and text embeddings are computed once per engine (cached), so several texts or several views cost
one text-encoder call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from gags.errors import GagsError
from gags.query.postprocess import BOX_SIZE, MASK_THRESHOLD, QueryMaps, postprocess
from gags.query.relevance import CANONICAL_NEGATIVES, relevance
from gags.query.select3d import Selection3D, select_gaussians
from gags.scene.cameras import Camera, stack_cameras


@dataclasses.dataclass
class TextQueries:
    """Embedded query texts and negatives.

    Attributes:
        texts: Q query phrases (stripped).
        embeddings: (Q, D) L2-normalised text embeddings.
        negative_texts: K negative phrases. negatives: (K, D) their embeddings.
    """

    texts: tuple[str, ...]
    embeddings: torch.Tensor
    negative_texts: tuple[str, ...]
    negatives: torch.Tensor


@dataclasses.dataclass
class ViewQuery:
    """The answer of one camera to Q texts.

    Attributes:
        camera: the camera rendered.
        relevance: (Q, L, H, W) float32 raw LERF relevance per text and level (CPU).
        maps: Q post-processed results (heatmap, mask, point; levels chosen).
    """

    camera: Camera
    relevance: torch.Tensor
    maps: list[QueryMaps]


class QueryEngine:
    """A language field plus its text encoder, answering text queries in views and in 3D.

    Args:
        field: a :class:`gags.distill.field.LanguageField`.
        encoder: the :class:`gags.models.encoder.TextImageEncoder` the field was distilled from.
        negatives: canonical negative phrases (LERF's by default).
    """

    def __init__(self, field, encoder, negatives: Sequence[str] = CANONICAL_NEGATIVES) -> None:
        self.field = field
        self.encoder = encoder
        self.negative_texts = tuple(negatives)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.field.device

    def embed(self, texts: Sequence[str], negatives: Sequence[str] | None = None) -> TextQueries:
        """Embed ``texts`` (and the negatives, default the engine's), reusing earlier embeddings."""
        negs = self.negative_texts if negatives is None else tuple(negatives)
        if not negs:
            raise GagsError(
                "at least one negative phrase is needed (LERF uses object, things, stuff, texture)"
            )
        cleaned = tuple(t.strip() for t in texts)
        if not cleaned or any(not t for t in cleaned):
            raise GagsError(f'empty query text in {list(texts)!r}: give a non-empty phrase such as "mug"')
        missing = [t for t in dict.fromkeys(cleaned + negs) if t not in self._cache]
        if missing:
            embedded = self.encoder.encode_texts(missing).float().to(self.device)
            self._cache.update(zip(missing, embedded, strict=True))
        return TextQueries(
            texts=cleaned,
            embeddings=torch.stack([self._cache[t] for t in cleaned]),
            negative_texts=negs,
            negatives=torch.stack([self._cache[t] for t in negs]),
        )

    @torch.no_grad()
    def relevance(self, camera: Camera, queries: TextQueries) -> torch.Tensor:
        """(Q, L, H, W) float32 relevance of each text at each level of the field, on the CPU."""
        viewmats, Ks = stack_cameras([camera], device=self.device)
        maps = self.field.render_feature_maps(viewmats, Ks, camera.width, camera.height)  # L x (1, H, W, D)
        rel = [relevance(m[0], queries.embeddings, queries.negatives) for m in maps]  # L x (Q, H, W)
        return torch.stack(rel, dim=1).cpu()

    def query_view(
        self,
        camera: Camera,
        queries: TextQueries,
        threshold: float = MASK_THRESHOLD,
        box_size: int = BOX_SIZE,
    ) -> ViewQuery:
        """Relevance and post-processed maps of every text in one camera (one render for all texts)."""
        rel = self.relevance(camera, queries)
        return ViewQuery(camera, rel, [postprocess(r, threshold, box_size) for r in rel])

    def query(
        self,
        cameras: Sequence[Camera],
        texts: Sequence[str],
        threshold: float = MASK_THRESHOLD,
        box_size: int = BOX_SIZE,
    ) -> list[ViewQuery]:
        """:meth:`query_view` for each camera."""
        queries = self.embed(texts)
        return [self.query_view(c, queries, threshold, box_size) for c in cameras]

    @torch.no_grad()
    def select(self, text: str, threshold: float = MASK_THRESHOLD) -> Selection3D:
        """The Gaussians that match ``text`` (each Gaussian's own decoded feature; see select3d)."""
        queries = self.embed([text])
        return select_gaussians(
            self.field.gaussian_features(), queries.embeddings[0], queries.negatives, threshold
        )


def open_engine(run_root: str | Path, device: torch.device | str = "cpu") -> QueryEngine:
    """The query engine of a run folder: ``language.pt`` + ``splats.ply`` + the encoder it names.

    Raises :class:`GagsError` naming what is missing: ``language.pt`` (run ``gags distill``),
    ``splats.ply`` (``gags train-rgb``), or the encoder spec (``gags prepare``). The spec comes
    from ``language.pt["encoder"]``, else from ``config.json["prepare"]["encoder"]``.
    """
    from gags.distill.field import LanguageField
    from gags.models.registry import build_encoder
    from gags.runfolder import RunFolder

    run = RunFolder(run_root)
    run.require(run.language, "gags distill")
    run.require(run.splats, "gags train-rgb")
    device = torch.device(device)
    field = LanguageField.load(run.language, run.splats, device=device)
    spec = field.encoder or run.read_config().get("prepare", {}).get("encoder")
    if not spec:
        raise GagsError(
            f"{run.language} and {run.config} name no text encoder: run `gags prepare` on {run.root} first"
        )
    return QueryEngine(field, build_encoder(spec, str(device)))
