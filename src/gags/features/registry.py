"""Build encoders and segmenters from the specs stored in ``config.json["prepare"]``.

A spec is a dict with a ``kind``: ``openclip`` (``model``, ``pretrained``), ``sam`` (the
:class:`~gags.segment.sam.SamConfig` fields) or ``oracle`` (the synthetic scene's models,
imported lazily from :mod:`gags.synthetic` with their own ``from_spec``).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from gags.errors import GagsError
from gags.features.encoder import TextImageEncoder
from gags.segment.segmenter import Segmenter


def build_encoder(spec: dict[str, Any], device: str = "cpu") -> TextImageEncoder:
    """The image-text encoder that ``spec`` describes, on ``device``."""
    kind = _kind(spec, "encoder")
    if kind == "openclip":
        from gags.features.openclip import DEFAULT_MODEL, DEFAULT_PRETRAINED, OpenClipEncoder

        return OpenClipEncoder(
            spec.get("model", DEFAULT_MODEL), spec.get("pretrained", DEFAULT_PRETRAINED), device=device
        )
    if kind == "oracle":
        return _from_spec(_oracle("OracleEncoder"), spec, device)
    raise GagsError(f"unknown encoder kind {kind!r} in {spec}; choose openclip or oracle")


def build_segmenter(spec: dict[str, Any], device: str = "cpu") -> Segmenter:
    """The segmenter that ``spec`` describes, on ``device``."""
    kind = _kind(spec, "segmenter")
    if kind == "sam":
        import dataclasses

        from gags.segment.sam import SamConfig, SamSegmenter

        names = {f.name for f in dataclasses.fields(SamConfig)}
        values = {k: v for k, v in spec.items() if k in names}
        if values.get("checkpoint") is not None:
            values["checkpoint"] = Path(values["checkpoint"])
        return SamSegmenter.from_config(SamConfig(**values), device)
    if kind == "oracle":
        return _from_spec(_oracle("OracleSegmenter"), spec, device)
    raise GagsError(f"unknown segmenter kind {kind!r} in {spec}; choose sam or oracle")


def _kind(spec: dict[str, Any], what: str) -> str:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise GagsError(f"{what} spec {spec!r} needs a 'kind' key")
    return str(spec["kind"])


def _oracle(name: str) -> type:
    """``gags.synthetic.<name>`` (or from its ``oracle`` module), imported only when asked for."""
    for module in ("gags.synthetic", "gags.synthetic.oracle"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if cls is not None:
            return cls
    raise GagsError(f"the synthetic oracle {name} is not available in gags.synthetic")


def _from_spec(cls: type, spec: dict[str, Any], device: str):
    """``cls.from_spec(spec[, device])``: device only when the method takes one."""
    if "device" in inspect.signature(cls.from_spec).parameters:
        return cls.from_spec(spec, device=device)
    return cls.from_spec(spec)
