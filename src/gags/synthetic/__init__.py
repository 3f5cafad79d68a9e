"""Procedural scenes with known ground truth, and oracle models in place of SAM and CLIP.

Nothing of the real pipeline imports this package: it is reached only through the stages
(``gags demo``, ``gags ablation``, and the ``oracle`` model kind that :mod:`gags.synthetic.oracles`
registers) and tests. Attributes load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SyntheticConfig": "gags.synthetic.generate",
    "generate_scene": "gags.synthetic.generate",
    "OracleSegmenter": "gags.synthetic.oracle_segmenter",
    "OracleEncoder": "gags.synthetic.oracle_encoder",
    "OracleSegmenterV2": "gags.synthetic.oracle_segmenter_v2",
    "OracleEncoderV2": "gags.synthetic.oracle_encoder_v2",
    "label_folder": "gags.synthetic.labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gags.synthetic' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
