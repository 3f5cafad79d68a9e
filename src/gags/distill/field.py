"""A trained language field, loaded from ``language.pt``: the one API queries and evaluation use.

Whatever the method, :meth:`LanguageField.render_feature_maps` returns one decoded, L2-normalised
(C, H, W, D) map per entry of :attr:`LanguageField.levels`: one for GAGS, average and single-level
fields (one render + one decode), three for LangSplat (one render + decode per level, as LangSplat
queries). Picking among several maps is the query's job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gags.distill.decoders import build_decoder
from gags.errors import file_error
from gags.models.segmenter import LEVELS
from gags.splats.gaussians import Gaussians
from gags.splats.render import Backend, render

#: pixels decoded per chunk (bounds the decoder's activations to ~ chunk * 256 floats per layer)
DECODE_CHUNK = 65536

_REQUIRED_KEYS = ("features", "decoder", "decoder_config", "embed_dim", "method")

#: ``language.pt`` files are read with ``torch.load(weights_only=True)``: tensors, dicts, lists,
#: numbers and strings only, so opening someone else's run folder never runs code.
REGENERATE = "re-run `gags distill` to regenerate it"


def decode_in_chunks(net: torch.nn.Module, feature_map: torch.Tensor, out_dim: int) -> torch.Tensor:
    """(..., F) -> (..., out_dim) through ``net``, :data:`DECODE_CHUNK` rows at a time (bounded memory)."""
    flat = feature_map.reshape(-1, feature_map.shape[-1])
    out = (
        torch.cat([net(c) for c in flat.split(DECODE_CHUNK)]) if flat.shape[0] else flat.new_zeros(0, out_dim)
    )
    return out.reshape(*feature_map.shape[:-1], out_dim)


@dataclasses.dataclass
class LanguageField:
    """Per-Gaussian low-dimensional features plus the decoder to the encoder's space.

    Attributes:
        gaussians: the frozen RGB Gaussians (geometry used for rendering).
        fields: one (N, F) per-Gaussian feature tensor per level (F = 16 for GaD, 3 for LangSplat).
        decoder: maps (..., F) -> (..., D) L2-normalised vectors.
        method: the method's name (``gags``, ``average``, ``single-part``, ``langsplat``, ...).
        levels: one name per rendered map (e.g. ``("gags",)`` or ``("subpart", "part", "whole")``).
        embed_dim: D, the encoder's dimension.
        encoder: the encoder spec from ``config.json["prepare"]`` (to embed query texts).
        payload: the whole ``language.pt`` dict.
    """

    gaussians: Gaussians
    fields: list[torch.Tensor]
    decoder: nn.Module
    method: str
    levels: tuple[str, ...]
    embed_dim: int
    encoder: dict[str, Any]
    payload: dict[str, Any]

    @classmethod
    def load(
        cls, path: str | Path, splats_path: str | Path | None = None, device: torch.device | str = "cpu"
    ) -> LanguageField:
        """Read ``language.pt`` and the splats it belongs to (default: ``splats.ply`` next to it)."""
        from gags.splats.ply import load_ply

        path = Path(path)
        if not path.exists():
            raise file_error(path, "does not exist: run `gags distill` first")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise file_error(
                path, f"is not a readable language field ({type(e).__name__}: {_first_line(e)}); {REGENERATE}"
            ) from e
        missing = [k for k in _REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
        if missing:
            raise file_error(
                path, f"is missing {', '.join(missing)}: not a language field written by gags distill"
            )
        splats_path = Path(splats_path) if splats_path is not None else path.parent / "splats.ply"
        return cls.from_payload(payload, load_ply(splats_path).detach(), path, splats_path).to(device)

    @classmethod
    def from_payload(
        cls,
        payload: dict[str, Any],
        gaussians: Gaussians,
        path: str | Path = "language.pt",
        splats_path: str | Path = "splats.ply",
    ) -> LanguageField:
        """The field of a ``language.pt`` dict (read from disk, or built in memory by ``gags distill``
        for its TensorBoard images) on ``gaussians``; ``path`` and ``splats_path`` name the files in
        errors."""
        levels = _levels(payload, Path(path))
        features = payload["features"]
        fields = list(features) if len(levels) > 1 else [features]
        if len(fields) != len(levels):
            raise file_error(path, f"has {len(fields)} feature fields for {len(levels)} levels")
        for f in fields:
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != len(gaussians):
                got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise file_error(path, f"has features {got} but {splats_path} has {len(gaussians)} Gaussians")
            if not torch.isfinite(f).all():
                raise file_error(path, f"holds NaN or infinite features; {REGENERATE}")
        decoder = _build_decoder(payload, Path(path))
        return cls(
            gaussians=gaussians,
            fields=[f.float() for f in fields],
            decoder=decoder.eval(),
            method=str(payload["method"]),
            levels=levels,
            embed_dim=int(payload["embed_dim"]),
            encoder=dict(payload.get("encoder") or {}),
            payload=payload,
        )

    def to(self, device: torch.device | str) -> LanguageField:
        return dataclasses.replace(
            self,
            gaussians=self.gaussians.to(device),
            fields=[f.to(device) for f in self.fields],
            decoder=self.decoder.to(device),
        )

    @property
    def device(self) -> torch.device:
        return self.gaussians.device

    @torch.no_grad()
    def decode(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(..., F) low-dimensional features -> (..., D) L2-normalised, decoded in bounded chunks."""
        return decode_in_chunks(self.decoder, feature_map, self.embed_dim)

    @torch.no_grad()
    def render_field(
        self,
        level: int,
        viewmats: torch.Tensor,
        Ks: torch.Tensor,
        width: int,
        height: int,
        backend: Backend = "auto",
    ):
        """Render field ``level`` (0 for GaD's single field) into C cameras: the renderer's output, with
        ``features`` (C, H, W, F) and accumulated opacity ``alpha`` (C, H, W)."""
        return render(
            dataclasses.replace(self.gaussians, features=self.fields[level]),
            viewmats.to(self.device),
            Ks.to(self.device),
            width,
            height,
            render_rgb=False,
            render_features=True,
            backend=backend,
        )

    @torch.no_grad()
    def render_low_dim(
        self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, backend: Backend = "auto"
    ) -> list[torch.Tensor]:
        """The raw rendered fields, one (C, H, W, F) per level (before decoding)."""
        return [
            self.render_field(i, viewmats, Ks, width, height, backend).features
            for i in range(len(self.fields))
        ]

    @torch.no_grad()
    def render_feature_maps(
        self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, backend: Backend = "auto"
    ) -> list[torch.Tensor]:
        """One decoded (C, H, W, D) L2-normalised map per level, for C cameras.

        Args:
            viewmats: (C, 4, 4) world-to-camera. Ks: (C, 3, 3) intrinsics in pixels of a width x height image.
        """
        return [self.decode(m) for m in self.render_low_dim(viewmats, Ks, width, height, backend)]

    @torch.no_grad()
    def gaussian_features(self) -> list[torch.Tensor]:
        """Per-Gaussian decoded features, one (N, D) L2-normalised tensor per level (for 3D queries)."""
        return [self.decode(f) for f in self.fields]


def _levels(payload: dict, path: Path) -> tuple[str, ...]:
    """The level names of a field: ``payload["levels"]`` (format 2), else derived from the method
    name as format 1 (gags <= 0.1) did."""
    if "levels" in payload:
        levels = payload["levels"]
        if not isinstance(levels, list | tuple) or not levels or not all(isinstance(x, str) for x in levels):
            raise file_error(path, f"has invalid levels {levels!r}; {REGENERATE}")
        return tuple(levels)
    method = str(payload["method"])
    if method == "langsplat":
        return LEVELS
    return (method.removeprefix("single-"),)


def _build_decoder(payload: dict, path: Path) -> nn.Module:
    config = payload["decoder_config"]
    try:
        decoder = build_decoder(config)
        decoder.load_state_dict(payload["decoder"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise file_error(path, f"has a decoder that does not match its decoder_config ({e})") from e
    return decoder


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]
