"""``gags scene --data DATA``: what a data set folder contains, as JSON."""

from __future__ import annotations

import json

from gags.scene.load import SceneConfig, load_scene, scene_summary

__all__ = ["SceneConfig", "main"]


def main(cfg: SceneConfig) -> None:
    """Load a data set and print a JSON summary: format, cameras, split, points, image sizes."""
    print(json.dumps(scene_summary(load_scene(cfg)), indent=2))
