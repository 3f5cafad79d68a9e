"""Registers the synthetic scene's oracle models as the ``oracle`` kind of :mod:`gags.models.registry`.

Importing this module is what makes ``{"kind": "oracle", "scene": ..., "seed": ...}`` specs buildable;
the stages import it, the real pipeline's libraries never do.
"""

from __future__ import annotations

from typing import Any

from gags.models.registry import register_encoder, register_segmenter


def _oracle_segmenter(spec: dict[str, Any], device: str):
    from gags.synthetic.oracle_segmenter import OracleSegmenter

    return OracleSegmenter.from_spec(spec)


def _oracle_encoder(spec: dict[str, Any], device: str):
    from gags.synthetic.oracle_encoder import OracleEncoder

    return OracleEncoder.from_spec(spec, device=device)


register_segmenter("oracle", _oracle_segmenter)
register_encoder("oracle", _oracle_encoder)
