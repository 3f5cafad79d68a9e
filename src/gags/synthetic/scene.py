"""The built-in table-top scene: objects, their whole / part / subpart hierarchy, and their shapes.

Each object is a tree of named regions: a whole ("mug") has parts ("mug handle"), each part has
subparts ("top of the mug handle"); each subpart is a set of surface primitives. Every surface
point therefore belongs to exactly one subpart, one part and one whole. Names are distinct natural
phrases so that text queries embed sensibly.

Sizes span two orders of magnitude on purpose: the lamp is 35 cm tall, the pencil 1 cm thick, so
the pencil is a few pixels wide in the far views.
"""

from __future__ import annotations

import dataclasses
import math

from gags.synthetic.primitives import Box, Disk, Ellipsoid, Frustum, Primitive, TorusArc

LEVEL_NAMES: tuple[str, str, str] = ("subpart", "part", "whole")


@dataclasses.dataclass(frozen=True)
class SubpartSpec:
    """A leaf region: its name, its RGB colour in [0, 1], and the primitives of its surface."""

    name: str
    color: tuple[float, float, float]
    shapes: tuple[Primitive, ...]
    spacing: float | None = None  # overrides the object's spacing (metres)


@dataclasses.dataclass(frozen=True)
class PartSpec:
    name: str
    subparts: tuple[SubpartSpec, ...]


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """A whole object placed at ``position`` (x, y on the table, metres) rotated by ``yaw`` (radians).

    ``spacing`` is the mean distance between its Gaussians (metres): smaller objects get finer ones.
    ``queries`` names the regions of this object (any level) that the LERF-OVS-like label set asks
    for, fixed with the scene and never chosen from results (see :func:`query_names`).
    """

    name: str
    parts: tuple[PartSpec, ...]
    position: tuple[float, float]
    yaw: float
    spacing: float
    queries: tuple[str, ...] = ()


def _sub(
    name: str, color: tuple[float, float, float], *shapes: Primitive, spacing: float | None = None
) -> SubpartSpec:
    return SubpartSpec(name, color, tuple(shapes), spacing)


def _part(name: str, *subparts: SubpartSpec) -> PartSpec:
    return PartSpec(name, tuple(subparts))


PI = math.pi


def table_top_scene() -> list[ObjectSpec]:
    """The default scene: a table with a place mat and seven objects of very different sizes."""
    mug = ObjectSpec(
        "mug",
        (
            _part(
                "mug body",
                _sub(
                    "mug rim", (0.95, 0.95, 0.92), Frustum(0.045, 0.045, 0.085, 0.1), Disk(0.045, 0.1, 0.038)
                ),
                _sub(
                    "side of the mug", (0.2, 0.45, 0.8), Frustum(0.045, 0.045, 0.0, 0.085), Disk(0.038, 0.09)
                ),
            ),
            _part(
                "mug handle",
                _sub(
                    "top of the mug handle",
                    (0.85, 0.3, 0.2),
                    TorusArc((0.045, 0.0, 0.05), 0.03, 0.007, 0, PI / 2),
                ),
                _sub(
                    "bottom of the mug handle",
                    (0.95, 0.6, 0.15),
                    TorusArc((0.045, 0.0, 0.05), 0.03, 0.007, -PI / 2, 0),
                ),
            ),
        ),
        position=(0.14, 0.1),
        yaw=0.6,
        spacing=0.009,
        queries=("mug",),
    )
    teapot = ObjectSpec(
        "teapot",
        (
            _part(
                "teapot body",
                _sub(
                    "teapot lid",
                    (0.55, 0.75, 0.6),
                    Ellipsoid((0, 0, 0.09), (0.1, 0.1, 0.08), 0.55, 1.0),
                    Ellipsoid((0, 0, 0.175), (0.015, 0.015, 0.015)),
                ),
                _sub(
                    "belly of the teapot",
                    (0.3, 0.6, 0.45),
                    Ellipsoid((0, 0, 0.09), (0.1, 0.1, 0.08), -1.0, 0.55),
                ),
            ),
            _part(
                "teapot spout",
                _sub("spout neck", (0.8, 0.8, 0.35), Frustum(0.025, 0.017, 0.0, 0.06)),
                _sub("tip of the spout", (0.95, 0.45, 0.45), Frustum(0.017, 0.012, 0.06, 0.09)),
            ),
        ),
        position=(-0.16, 0.04),
        yaw=-0.3,
        spacing=0.013,
        queries=("teapot", "teapot spout"),
    )
    apple = ObjectSpec(
        "apple",
        (
            _part(
                "apple fruit",
                _sub(
                    "red apple skin",
                    (0.85, 0.12, 0.12),
                    Ellipsoid((0, 0, 0.035), (0.036, 0.036, 0.034), -0.4, 1),
                ),
                _sub(
                    "bottom of the apple",
                    (0.9, 0.8, 0.25),
                    Ellipsoid((0, 0, 0.035), (0.036, 0.036, 0.034), -1, -0.4),
                ),
            ),
            _part(
                "apple stem",
                _sub("brown stalk", (0.4, 0.25, 0.1), Frustum(0.004, 0.003, 0.065, 0.085)),
                _sub("green leaf", (0.2, 0.7, 0.2), Ellipsoid((0.015, 0, 0.08), (0.016, 0.008, 0.002))),
            ),
        ),
        position=(0.04, -0.12),
        yaw=0.2,
        spacing=0.006,
        queries=("apple", "green leaf"),
    )
    duck = ObjectSpec(
        "rubber duck",
        (
            _part(
                "duck head",
                _sub("duck beak", (1.0, 0.5, 0.05), Ellipsoid((0.045, 0, 0.075), (0.018, 0.012, 0.006))),
                _sub("duck face", (1.0, 0.85, 0.1), Ellipsoid((0.025, 0, 0.075), (0.025, 0.025, 0.025))),
            ),
            _part(
                "duck body",
                _sub(
                    "duck belly", (0.98, 0.9, 0.25), Ellipsoid((0, 0, 0.028), (0.045, 0.035, 0.028), -1, 0.2)
                ),
                _sub(
                    "duck back", (0.95, 0.75, 0.05), Ellipsoid((0, 0, 0.028), (0.045, 0.035, 0.028), 0.2, 1)
                ),
            ),
        ),
        position=(-0.1, -0.2),
        yaw=2.2,
        spacing=0.007,
        queries=("rubber duck", "duck beak"),
    )
    lamp = ObjectSpec(
        "table lamp",
        (
            _part(
                "lamp stand",
                _sub("round lamp foot", (0.2, 0.2, 0.22), Frustum(0.08, 0.07, 0.0, 0.02), Disk(0.07, 0.02)),
                _sub("lamp pole", (0.6, 0.6, 0.62), Frustum(0.01, 0.01, 0.02, 0.24)),
            ),
            _part(
                "lampshade",
                _sub("lower rim of the lampshade", (0.95, 0.85, 0.6), Frustum(0.12, 0.105, 0.22, 0.26)),
                _sub(
                    "upper lampshade", (0.9, 0.75, 0.45), Frustum(0.105, 0.07, 0.26, 0.34), Disk(0.07, 0.34)
                ),
            ),
        ),
        position=(-0.32, 0.3),
        yaw=0.0,
        spacing=0.016,
        queries=("table lamp",),
    )
    book = ObjectSpec(
        "book",
        (
            _part(
                "book cover",
                _sub("front cover of the book", (0.6, 0.1, 0.3), Box((0, 0, 0.015), (0.2, 0.14, 0.03), "+z")),
                _sub("book spine", (0.15, 0.1, 0.4), Box((0, 0, 0.015), (0.2, 0.14, 0.03), "-x")),
            ),
            _part(
                "book pages",
                _sub(
                    "white page edges", (0.96, 0.95, 0.88), Box((0, 0, 0.015), (0.2, 0.14, 0.03), "+x +y -y")
                ),
            ),
        ),
        position=(0.3, -0.12),
        yaw=0.5,
        spacing=0.012,
        queries=("book",),
    )
    pencil = ObjectSpec(
        "pencil",
        (
            _part(
                "pencil body",
                _sub(
                    "yellow pencil shaft",
                    (1.0, 0.8, 0.0),
                    Box((0.0, 0, 0.005), (0.13, 0.01, 0.01), "+y -y +z"),
                ),
                _sub(
                    "pink eraser",
                    (1.0, 0.55, 0.65),
                    Box((-0.075, 0, 0.005), (0.02, 0.01, 0.01), "-x +y -y +z"),
                ),
            ),
            _part(
                "pencil tip",
                _sub(
                    "sharpened wood",
                    (0.85, 0.7, 0.5),
                    Box((0.075, 0, 0.005), (0.02, 0.008, 0.008), "+y -y +z"),
                ),
                _sub(
                    "graphite point",
                    (0.15, 0.15, 0.15),
                    Box((0.09, 0, 0.005), (0.01, 0.004, 0.004), "+x +y -y +z"),
                ),
            ),
        ),
        position=(-0.2, -0.08),
        yaw=-0.9,
        spacing=0.004,
        queries=("pencil",),
    )
    table = ObjectSpec(
        "table",
        (
            _part(
                "tabletop",
                _sub(
                    "wooden tabletop",
                    (0.55, 0.38, 0.22),
                    Box((0, 0, -0.01), (1.4, 1.0, 0.02), "+z", hole=(0.0, 0.0, 0.18)),  # under the mat
                ),
            ),
            _part(
                "place mat",
                _sub("border of the place mat", (0.3, 0.3, 0.35), Disk(0.2, 0.004, 0.17), spacing=0.015),
                _sub("center of the place mat", (0.75, 0.72, 0.65), Disk(0.17, 0.004), spacing=0.025),
            ),
        ),
        position=(0.12, 0.08),
        yaw=0.0,
        spacing=0.035,
        queries=("place mat",),
    )
    return [table, lamp, teapot, mug, book, apple, duck, pencil]


def query_names(objects: list[ObjectSpec]) -> list[str]:
    """The region names of the LERF-OVS-like query set, in scene order.

    Chosen with the scene, before any method ran on it. LERF-OVS (the labels LangSplat published
    for LERF) asks mostly for whole objects ("coffee mug", "stuffed bear"), for a few parts ("bear
    nose", "spoon handle") and rarely for a part together with its parent; GAGS reports the same
    queries split by SAM granularity. Here every object is queried once or twice, mostly as a whole:
    seven wholes, two parts (the place mat, the teapot's spout) and two subparts (the apple's leaf,
    the duck's beak); three objects are asked for both as a whole and by a piece (teapot, apple, duck).
    """
    return [q for obj in objects for q in obj.queries]


#: subpart name -> (origin (3,), tilt about y in radians): a rigid frame applied to the subpart's
#: primitives before the object's pose (the teapot's spout leans out of the teapot's side)
LOCAL_FRAMES: dict[str, tuple[tuple[float, float, float], float]] = {
    "spout neck": ((0.085, 0.0, 0.05), PI / 4),
    "tip of the spout": ((0.085, 0.0, 0.05), PI / 4),
}
