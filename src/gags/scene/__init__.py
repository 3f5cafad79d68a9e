"""Scenes: cameras, loaders for COLMAP, Blender/nerfstudio and LLFF data, splits and images."""

from gags.scene.cameras import Camera, stack_cameras
from gags.scene.images import load_image
from gags.scene.load import SceneConfig, load_run_scene, load_scene
from gags.scene.scene import Scene

__all__ = ["Camera", "Scene", "SceneConfig", "load_image", "load_run_scene", "load_scene", "stack_cameras"]
