"""The comparison methods as configurations of the one pipeline (no forks).

A method is a choice of SAM prompts (``gas``: GaS, paper Eq. 1; ``uniform``: a regular grid, no GaS)
for ``gags prepare`` and of what ``gags distill --method`` fits:

| name               | prompts | distill method   | paper                          |
|--------------------|---------|------------------|--------------------------------|
| ``gags``           | gas     | gags             | Table 4 model 3 (full GAGS)    |
| ``uniform-average``| uniform | average          | Table 4 model 1 (baseline)     |
| ``uniform-gad``    | uniform | gags             | Table 4 model 2 (+GaD)         |
| ``single-subpart`` | gas     | single-subpart   | Table 4 model 4                |
| ``single-part``    | gas     | single-part      | Table 4 model 5                |
| ``single-whole``   | gas     | single-whole     | Table 4 model 6                |
| ``average``        | gas     | average          | Table 4 model 7                |
| ``langsplat``      | uniform | langsplat        | LangSplat (3 fields, AE 3-d)   |
"""

from __future__ import annotations

import dataclasses

from gags.distill.gad import GaD
from gags.distill.langsplat import LangSplat
from gags.distill.methods import DistillMethod
from gags.errors import GagsError
from gags.segment.prompts import PromptMode

#: the distillation method of each name used in the table (``gags distill`` takes them as
#: ``method:gad --alpha ...`` / ``method:langsplat``)
DISTILL_METHODS: dict[str, DistillMethod] = {
    "gags": GaD(),
    "average": GaD(alpha="average"),
    "single-subpart": GaD(alpha="subpart"),
    "single-part": GaD(alpha="part"),
    "single-whole": GaD(alpha="whole"),
    "langsplat": LangSplat(),
}


def distill_method(name: str) -> DistillMethod:
    """The method of a table name (``gags``, ``average``, ``single-part``, ``langsplat``, ...)."""
    if name not in DISTILL_METHODS:
        raise GagsError(f"unknown method {name!r}; choose one of {', '.join(DISTILL_METHODS)}")
    return DISTILL_METHODS[name]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison: a name, the prompt mode of prepare, the distillation method."""

    name: str
    prompts: PromptMode
    distill_method: str
    model: str
    """the paper's label (e.g. ``Table 4 model 3``)"""

    @property
    def method(self) -> DistillMethod:
        """The distillation method of this row."""
        return distill_method(self.distill_method)


#: the paper's Table 4 ablation, in its row order
TABLE4: tuple[MethodSpec, ...] = (
    MethodSpec("uniform-average", "uniform", "average", "1"),
    MethodSpec("uniform-gad", "uniform", "gags", "2"),
    MethodSpec("gags", "gas", "gags", "3"),
    MethodSpec("single-subpart", "gas", "single-subpart", "4"),
    MethodSpec("single-part", "gas", "single-part", "5"),
    MethodSpec("single-whole", "gas", "single-whole", "6"),
    MethodSpec("average", "gas", "average", "7"),
)

#: LangSplat on the same engine (uniform grid prompts, as LangSplat)
LANGSPLAT = MethodSpec("langsplat", "uniform", "langsplat", "LangSplat")

METHOD_SPECS: dict[str, MethodSpec] = {m.name: m for m in (*TABLE4, LANGSPLAT)}
