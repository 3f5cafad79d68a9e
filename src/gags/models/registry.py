"""Build encoders and segmenters from the specs stored in ``config.json["prepare"]``.

A spec is a dict with a ``kind``. The registry knows two kinds of its own, ``openclip`` (``model``,
``pretrained``) and ``sam`` (the :class:`~gags.models.sam.SamConfig` fields); other packages add
theirs with :func:`register_encoder` / :func:`register_segmenter` (the synthetic scene's ``oracle``
models register when :mod:`gags.synthetic.oracles` is imported, which the stages do). Nothing here
imports another package to find a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gags.errors import GagsError
from gags.models.encoder import TextImageEncoder
from gags.models.segmenter import Segmenter

#: spec, device -> model
EncoderFactory = Callable[[dict[str, Any], str], TextImageEncoder]
SegmenterFactory = Callable[[dict[str, Any], str], Segmenter]


def _openclip(spec: dict[str, Any], device: str) -> TextImageEncoder:
    from gags.models.openclip import DEFAULT_MODEL, DEFAULT_PRETRAINED, OpenClipEncoder

    return OpenClipEncoder(
        spec.get("model", DEFAULT_MODEL), spec.get("pretrained", DEFAULT_PRETRAINED), device=device
    )


def _sam(spec: dict[str, Any], device: str) -> Segmenter:
    from gags.models.sam import SamConfig, SamSegmenter

    names = {f.name for f in dataclasses.fields(SamConfig)}
    values = {k: v for k, v in spec.items() if k in names}
    if values.get("checkpoint") is not None:
        values["checkpoint"] = Path(values["checkpoint"])
    return SamSegmenter.from_config(SamConfig(**values), device)


_ENCODERS: dict[str, EncoderFactory] = {"openclip": _openclip}
_SEGMENTERS: dict[str, SegmenterFactory] = {"sam": _sam}


def register_encoder(kind: str, factory: EncoderFactory) -> None:
    """Make ``build_encoder({"kind": kind, ...})`` call ``factory(spec, device)``."""
    _ENCODERS[kind] = factory


def register_segmenter(kind: str, factory: SegmenterFactory) -> None:
    """Make ``build_segmenter({"kind": kind, ...})`` call ``factory(spec, device)``."""
    _SEGMENTERS[kind] = factory


def build_encoder(spec: dict[str, Any], device: str = "cpu") -> TextImageEncoder:
    """The image-text encoder that ``spec`` describes, on ``device``."""
    return _lookup(_ENCODERS, spec, "encoder")(spec, str(device))


def build_segmenter(spec: dict[str, Any], device: str = "cpu") -> Segmenter:
    """The segmenter that ``spec`` describes, on ``device``."""
    return _lookup(_SEGMENTERS, spec, "segmenter")(spec, str(device))


def _lookup(table: dict[str, Callable], spec: dict[str, Any], what: str) -> Callable:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise GagsError(f"{what} spec {spec!r} needs a 'kind' key")
    kind = str(spec["kind"])
    if kind not in table:
        raise GagsError(f"unknown {what} kind {kind!r} in {spec}; known: {', '.join(sorted(table))}")
    return table[kind]
