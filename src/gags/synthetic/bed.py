"""Which test bed the oracle models reproduce: ``"bed": "v1"`` or ``"v2"`` in their spec.

- ``v1``: the original oracles (:class:`~gags.synthetic.oracle_segmenter.OracleSegmenter`,
  :class:`~gags.synthetic.oracle_encoder.OracleEncoder`): granularity follows apparent size only, and
  a mask's feature is the text embedding of its best-matching region plus zero-mean noise.
- ``v2``: SAM's and CLIP's documented failure modes
  (:class:`~gags.synthetic.oracle_segmenter_v2.OracleSegmenterV2`,
  :class:`~gags.synthetic.oracle_encoder_v2.OracleEncoderV2`): the coarsest output of a small object
  takes its support in, per-view variation of the chosen output, prompt-centred fragments, SAM's own
  filtering; crop features that mix the regions a crop shows, in a CLIP-like cone, with biased noise.

A spec without the key is v1, so run folders written before v2 existed keep their meaning and
rebuild bit for bit; ``gags prepare`` writes the key explicitly (default :data:`DEFAULT_BED`).
"""

from __future__ import annotations

from typing import Any

from gags.errors import GagsError

BEDS: tuple[str, str] = ("v1", "v2")
#: the bed of a spec that has no "bed" key (everything written before v2 existed)
LEGACY_BED = "v1"
#: the bed new runs get
DEFAULT_BED = "v2"


def bed_of(spec: dict[str, Any]) -> str:
    """The bed a spec asks for (missing key: :data:`LEGACY_BED`); raises on an unknown one."""
    bed = str(spec.get("bed", LEGACY_BED))
    if bed not in BEDS:
        raise GagsError(f"oracle spec {spec} asks for bed {bed!r}; choose {' or '.join(BEDS)}")
    return bed
